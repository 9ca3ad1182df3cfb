"""The .fcc container (see docs/format.md): build and parse, validating every field.

Layout (little-endian):
    fixed header (26 bytes) | section table: (size, crc32) for z and each latent chunk |
    [version 2: extension count, then (type, size, crc32) per extension] |
    header crc32 | z payload | chunk payloads | [extension payloads]
Every section has its own CRC-32, so damage is reported per section (and chunk), and chunks
decode independently (in parallel). Version 2 adds extension sections (alpha plane, EXIF, XMP);
a file without any is written as version 1, byte for byte as fastcodec 0.1-0.2 wrote it.

Version 3 (since fastcodec 0.14) holds a lossless or near-lossless image coded pixel by pixel
(no model):
    fixed header (20 bytes: magic, version, flags, channels, max_error, width, height, stripe rows) |
    extension count | (size, crc32) per stripe | (type, size, crc32) per extension | header crc32 |
    stripe payloads | extension payloads
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError, LimitError

MAGIC = b"\x89FCC"
VERSION = 1  # the version of files without extension sections
VERSION_EXT = 2  # with extension sections
VERSION_PIXELS = 3  # lossless / near-lossless pixel coding
SUPPORTED_VERSIONS = (1, 2, 3)
_FIXED = struct.Struct("<4sBBBBIIH8s")  # magic, version, flags, channels, nchunks, w, h, q100, model
FIXED_SIZE = _FIXED.size  # 26
_FIXED3 = struct.Struct("<4sBBBBIII")  # magic, version, flags, channels, max_error, w, h, stripe rows
FIXED3_SIZE = _FIXED3.size  # 20
MAX_ERROR = 32  # version 3: max_error 0 (lossless) .. 32
FLAG_COPIES = 0x01  # version 3: each stripe starts with a bit saying whether it copies earlier pixels
FLAG_DEEP = 0x02  # version 3: 16-bit samples (0..65535); never with FLAG_COPIES
FLAG_CONTEXTS2 = 0x04  # version 3: contexts 2 (expected-error activity classes, blue from red and green)
_ENTRY = struct.Struct("<II")  # size, crc32
_EXT_ENTRY = struct.Struct("<BII")  # type, size, crc32
MAX_DIMENSION = 1 << 20
MAX_CHUNKS = 255
MAX_EXTENSIONS = 8
DEFAULT_MAX_PIXELS = 100_000_000

# Extension types (docs/format.md, "Extensions"). Types below 128 are critical: a decoder that
# does not know one must reject the file. Types from 128 up are ancillary: skipped when unknown.
EXT_ALPHA, EXT_MAP, EXT_EXIF, EXT_XMP, EXT_ICC = 1, 2, 128, 129, 130
EXT_NAMES = {EXT_ALPHA: "alpha", EXT_MAP: "sample map", EXT_EXIF: "exif", EXT_XMP: "xmp", EXT_ICC: "icc"}
METADATA = (("exif", EXT_EXIF), ("xmp", EXT_XMP), ("icc", EXT_ICC))  # the ancillary types, by name
ALPHA_ZLIB_LEFT = 0  # alpha method 0: zlib stream of the row-wise left differences
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def header_size(nchunks: int, next: int = 0) -> int:
    """Bytes before the first payload: fixed part, table of 1 + nchunks sections, the extension
    table (version 2 only: a count byte and next entries), header CRC."""
    ext = 1 + _EXT_ENTRY.size * next if next else 0
    return FIXED_SIZE + _ENTRY.size * (1 + nchunks) + ext + 4


def pixel_header_size(nstripes: int, next: int = 0) -> int:
    """Bytes before the first payload of a version-3 file."""
    return FIXED3_SIZE + 1 + _ENTRY.size * nstripes + _EXT_ENTRY.size * next + 4


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    channels: int  # 3 = RGB, 1 = grayscale (coded as RGB, returned as one channel)
    quality: float | None  # 1.00 .. 100.00, hundredths; None in version 3
    model_id: bytes  # 8 bytes
    z_size: int
    chunk_sizes: tuple
    version: int = VERSION
    extension_sizes: tuple = ()  # ((type, size), ...) in file order
    max_error: int | None = None  # version 3: 0 (lossless) .. 32; None for learned (version 1, 2) files
    stripe_rows: int = 0  # version 3: rows per stripe (chunk_sizes are the stripes' sizes)
    flags: int = 0  # version 3: FLAG_COPIES, FLAG_DEEP, FLAG_CONTEXTS2 (or 0)

    @property
    def bits(self) -> int:
        """Bits per sample of the decoded image: 16 for a 16-bit version-3 file, else 8."""
        return 16 if self.flags & FLAG_DEEP else 8

    @property
    def pixel_coded(self) -> bool:
        """A version-3 file: pixels coded losslessly (max_error 0) or within max_error, no model."""
        return self.max_error is not None

    @property
    def y_size(self) -> int:
        return sum(self.chunk_sizes)

    @property
    def ext_size(self) -> int:
        return sum(size for _, size in self.extension_sizes)

    @property
    def has_alpha(self) -> bool:
        return any(t == EXT_ALPHA for t, _ in self.extension_sizes)

    @property
    def header_size(self) -> int:
        if self.pixel_coded:
            return pixel_header_size(len(self.chunk_sizes), len(self.extension_sizes))
        return header_size(len(self.chunk_sizes), len(self.extension_sizes))

    @property
    def file_size(self) -> int:
        return self.header_size + self.z_size + self.y_size + self.ext_size


def pack(width, height, channels, quality, model_id: bytes, z: bytes, chunks, extensions=()) -> bytes:
    """extensions: ((type, payload), ...); with none the file is version 1, else version 2."""
    if not 1 <= len(chunks) <= MAX_CHUNKS:
        raise ValueError("1..255 chunks")
    if len(extensions) > MAX_EXTENSIONS or len({t for t, _ in extensions}) != len(extensions):
        raise ValueError(f"at most {MAX_EXTENSIONS} extensions, each type once")
    if any(not p for _, p in extensions):
        raise ValueError("extension payloads are never empty")
    q100 = int(round(quality * 100))
    version = VERSION_EXT if extensions else VERSION
    head = [_FIXED.pack(MAGIC, version, 0, channels, len(chunks), width, height, q100, model_id),
            _ENTRY.pack(len(z), zlib.crc32(z))]
    head += [_ENTRY.pack(len(c), zlib.crc32(c)) for c in chunks]
    if extensions:
        head.append(bytes([len(extensions)]))
        head += [_EXT_ENTRY.pack(t, len(p), zlib.crc32(p)) for t, p in extensions]
    head = b"".join(head)
    return b"".join([head, struct.pack("<I", zlib.crc32(head)), z, *chunks, *(p for _, p in extensions)])


def pack_pixels(width, height, channels, max_error: int, stripe_rows: int, stripes, extensions=(),
                flags: int = 0) -> bytes:
    """A version-3 file: stripes are the coded payloads of rows [i * stripe_rows, ...); flags
    FLAG_COPIES when they start with their mode bits, FLAG_DEEP when they hold 16-bit samples,
    FLAG_CONTEXTS2 when they are coded with contexts 2."""
    if flags & ~(FLAG_COPIES | FLAG_DEEP | FLAG_CONTEXTS2) or flags & (FLAG_COPIES | FLAG_DEEP) == FLAG_COPIES | FLAG_DEEP:
        raise ValueError(f"unknown version-3 flags {flags:#04x}")
    if not min(16, height) <= stripe_rows or len(stripes) != -(-height // stripe_rows):
        raise ValueError("one stripe per stripe_rows rows")
    if len(extensions) > MAX_EXTENSIONS or len({t for t, _ in extensions}) != len(extensions):
        raise ValueError(f"at most {MAX_EXTENSIONS} extensions, each type once")
    if any(not p for _, p in extensions) or any(not p for p in stripes):
        raise ValueError("payloads are never empty")
    head = [_FIXED3.pack(MAGIC, VERSION_PIXELS, flags, channels, max_error, width, height, stripe_rows),
            bytes([len(extensions)])]
    head += [_ENTRY.pack(len(p), zlib.crc32(p)) for p in stripes]
    head += [_EXT_ENTRY.pack(t, len(p), zlib.crc32(p)) for t, p in extensions]
    head = b"".join(head)
    return b"".join([head, struct.pack("<I", zlib.crc32(head)), *stripes, *(p for _, p in extensions)])


def is_pixel_file(data) -> bool:
    """Whether bytes start like a version-3 (lossless / near-lossless) file; parse validates it."""
    return len(data) > 4 and bytes(data[:4]) == MAGIC and data[4] == VERSION_PIXELS


def parse(data, max_pixels: int = DEFAULT_MAX_PIXELS, verify_crc: bool = True):
    """Returns (Header, z payload, [chunk payloads]) as memoryviews. Raises FormatError/LimitError.

    Everything is validated before any payload is looked at; per-section checksums are verified
    here too (verify_crc=False skips them, for inspection tools). The extension payloads are
    checked as well; ``parse_all`` returns them."""
    hdr, z, chunks, _ = parse_all(data, max_pixels, verify_crc)
    return hdr, z, chunks


def parse_all(data, max_pixels: int = DEFAULT_MAX_PIXELS, verify_crc: bool = True):
    """Like ``parse``, plus a dict {extension type: payload memoryview} of the known extensions
    (unknown ancillary ones are checked and skipped)."""
    mv = memoryview(data).cast("B")
    n = mv.nbytes
    if n < 4 or bytes(mv[:4]) != MAGIC:
        raise FormatError("not a fastcodec file: missing magic number 89 46 43 43 ('\\x89FCC')")
    if n < 5:
        raise FormatError(f"truncated file: {n} bytes")
    version = mv[4]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"unsupported format version {version}: this fastcodec reads versions "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))}; upgrade fastcodec to read newer files")
    if version == VERSION_PIXELS:
        return _parse_pixels(mv, max_pixels, verify_crc)
    if n < FIXED_SIZE:
        raise FormatError(f"truncated file: {n} bytes, the header alone has at least {header_size(1)}")
    _, _, flags, channels, nchunks, w, h, q100, model_id = _FIXED.unpack_from(mv, 0)
    _check_flags_channels(flags, channels)
    if not 1 <= nchunks <= MAX_CHUNKS:
        raise FormatError(f"invalid chunk count {nchunks}: allowed 1..{MAX_CHUNKS}")
    next = 0
    if version >= VERSION_EXT:
        pos = header_size(nchunks) - 4
        if n <= pos:
            raise FormatError(f"truncated file: {n} bytes, its header needs more than {pos}")
        next = mv[pos]
        if not 1 <= next <= MAX_EXTENSIONS:
            raise FormatError(f"invalid extension count {next}: a version-2 file has 1..{MAX_EXTENSIONS}")
    hs = header_size(nchunks, next)
    _check_header_crc(mv, hs, verify_crc)
    _check_dimensions(w, h)
    _check_max_pixels(w, h, max_pixels)
    if not 100 <= q100 <= 10000:
        raise FormatError(f"invalid quality field {q100}: allowed 100..10000 (hundredths of 1..100)")
    entries = [_ENTRY.unpack_from(mv, FIXED_SIZE + _ENTRY.size * i) for i in range(1 + nchunks)]
    ext_base = header_size(nchunks) - 4 + 1
    ext_entries = [_EXT_ENTRY.unpack_from(mv, ext_base + _EXT_ENTRY.size * i) for i in range(next)]
    _check_extension_table(ext_entries)
    if any(t == EXT_MAP for t, _, _ in ext_entries):
        raise FormatError("invalid file: a sample map belongs to 16-bit files only")
    views, ext = _payloads(mv, hs, entries, ext_entries, verify_crc,
                           lambda i: "the hyper-latent section" if i == 0 else f"the latent chunk {i} of {nchunks}")
    hdr = Header(width=w, height=h, channels=channels, quality=q100 / 100.0, model_id=bytes(model_id),
                 z_size=entries[0][0], chunk_sizes=tuple(s for s, _ in entries[1:]), version=version,
                 extension_sizes=tuple((t, size) for t, size, _ in ext_entries))
    return hdr, views[0], views[1:], ext


def _check_flags_channels(flags: int, channels: int, known: int = 0):
    if flags & ~known:
        raise FormatError(f"reserved header flags are set ({flags & ~known:#04x}); they must be 0"
                          + (f" (this version knows flags {known:#04x})" if known else ""))
    if channels not in (1, 3):
        raise FormatError(f"invalid channel count {channels}: allowed are 1 (grayscale) and 3 (RGB)")


def _check_dimensions(w: int, h: int):
    if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
        raise FormatError(f"invalid image size {w}x{h}: width and height must be 1..{MAX_DIMENSION}")


def _check_header_crc(mv, hs: int, verify_crc: bool):
    """A header of hs bytes (its CRC-32 last) is all there and, unless verify_crc is False, intact."""
    if mv.nbytes < hs:
        raise FormatError(f"truncated file: {mv.nbytes} bytes, its header needs {hs}")
    (hcrc,) = struct.unpack_from("<I", mv, hs - 4)
    if verify_crc and zlib.crc32(mv[:hs - 4]) != hcrc:
        raise FormatError("header checksum mismatch: the header is corrupted")


def _check_max_pixels(w: int, h: int, max_pixels: int):
    if w * h > max_pixels:
        raise LimitError(f"image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}")


def _check_extension_table(ext_entries):
    seen = set()
    for t, size, _ in ext_entries:
        if t in seen:
            raise FormatError(f"extension type {t} appears twice; each type is allowed once")
        seen.add(t)
        if t < 128 and t not in EXT_NAMES:
            raise FormatError(f"unknown critical extension type {t}: this fastcodec reads "
                              f"{', '.join(f'{k} ({v})' for k, v in EXT_NAMES.items())}; "
                              "upgrade fastcodec to read this file")
        if size == 0:
            raise FormatError(f"empty extension section (type {t}): extension payloads are never empty")


def _payloads(mv, hs: int, entries, ext_entries, verify_crc: bool, name):
    """The sections after a header of hs bytes, once the file's length is what its tables declare:
    ([views of the (size, crc) entries], {known extension type: view}), each CRC verified
    (name(i) names section i in the error)."""
    n = mv.nbytes
    expected = hs + sum(size for size, _ in entries) + sum(size for _, size, _ in ext_entries)
    if expected != n:
        what = "truncated" if n < expected else "trailing data after"
        raise FormatError(f"{what} file: sections declare {expected} bytes, file has {n}")
    views, pos = [], hs
    for i, (size, crc) in enumerate(entries):
        v = mv[pos:pos + size]
        if verify_crc and zlib.crc32(v) != crc:
            raise FormatError(f"checksum mismatch in {name(i)}: the file is corrupted")
        views.append(v)
        pos += size
    return views, _extension_payloads(mv, pos, ext_entries, verify_crc)


def _extension_payloads(mv, pos: int, ext_entries, verify_crc: bool) -> dict:
    """{type: payload view} of the known extensions starting at pos, each checked."""
    ext = {}
    for t, size, crc in ext_entries:
        v = mv[pos:pos + size]
        name = EXT_NAMES.get(t, f"type {t}")
        if verify_crc and zlib.crc32(v) != crc:
            raise FormatError(f"checksum mismatch in the {name} extension section: the file is corrupted")
        if t == EXT_EXIF and bytes(v[:4]) not in _TIFF_SIGNATURES:
            raise FormatError("invalid EXIF extension: it must start with a TIFF header (II*\\0 or MM\\0*)")
        if t == EXT_ICC and not is_icc_profile(v):
            raise FormatError("invalid ICC extension: it must be an ICC profile (at least 132 bytes, 'acsp' at "
                              "byte 36, its declared size equal to the payload's)")
        if t == EXT_MAP and v[0] != MAP_ZLIB_BITMAP:
            raise FormatError(f"unknown sample map method {v[0]}: this fastcodec reads method {MAP_ZLIB_BITMAP}")
        if t == EXT_ALPHA and v[0] != ALPHA_ZLIB_LEFT:
            raise FormatError(f"unknown alpha coding method {v[0]}: this fastcodec reads method {ALPHA_ZLIB_LEFT}")
        if t in EXT_NAMES:
            ext[t] = v
        pos += size
    return ext


def _parse_pixels(mv, max_pixels: int, verify_crc: bool):
    """parse_all for a version-3 file: (Header, empty z view, [stripe payloads], extensions)."""
    n = mv.nbytes
    if n < FIXED3_SIZE + 1:
        raise FormatError(f"truncated file: {n} bytes, a version-3 header has at least {pixel_header_size(1)}")
    _, _, flags, channels, max_error, w, h, rows = _FIXED3.unpack_from(mv, 0)
    next = mv[FIXED3_SIZE]
    _check_flags_channels(flags, channels, FLAG_COPIES | FLAG_DEEP | FLAG_CONTEXTS2)
    if flags & FLAG_COPIES and flags & FLAG_DEEP:
        raise FormatError("invalid flags: copies (bit 0) and 16-bit samples (bit 1) are never set together")
    if max_error > MAX_ERROR:
        raise FormatError(f"invalid max_error {max_error}: allowed 0 (lossless) .. {MAX_ERROR}")
    _check_dimensions(w, h)  # before the stripe height, whose range depends on h
    if not min(16, h) <= rows <= h:  # at least 16 rows: at most 65536 stripes, none of them tiny
        raise FormatError(f"invalid stripe height {rows}: allowed {min(16, h)}..{h} (16 rows, or the image's "
                          "height if smaller, up to the image's height)")
    if next > MAX_EXTENSIONS:
        raise FormatError(f"invalid extension count {next}: allowed 0..{MAX_EXTENSIONS}")
    nstripes = -(-h // rows)
    hs = pixel_header_size(nstripes, next)
    _check_header_crc(mv, hs, verify_crc)
    _check_max_pixels(w, h, max_pixels)
    base = FIXED3_SIZE + 1
    entries = [_ENTRY.unpack_from(mv, base + _ENTRY.size * i) for i in range(nstripes)]
    ext_base = base + _ENTRY.size * nstripes
    ext_entries = [_EXT_ENTRY.unpack_from(mv, ext_base + _EXT_ENTRY.size * i) for i in range(next)]
    _check_extension_table(ext_entries)
    if any(size == 0 for size, _ in entries):
        raise FormatError("empty stripe: a stripe's payload is never empty")
    if flags & FLAG_DEEP and any(t == EXT_ALPHA for t, _, _ in ext_entries):
        raise FormatError("invalid 16-bit file: it has an alpha plane, which 16-bit files never have")
    if not flags & FLAG_DEEP and any(t == EXT_MAP for t, _, _ in ext_entries):
        raise FormatError("invalid file: a sample map belongs to 16-bit files only")
    views, ext = _payloads(mv, hs, entries, ext_entries, verify_crc, lambda i: f"stripe {i + 1} of {nstripes}")
    hdr = Header(width=w, height=h, channels=channels, quality=None, model_id=b"", z_size=0,
                 chunk_sizes=tuple(s for s, _ in entries), version=VERSION_PIXELS,
                 extension_sizes=tuple((t, size) for t, size, _ in ext_entries), max_error=max_error,
                 stripe_rows=rows, flags=flags)
    return hdr, mv[0:0], views, ext


def is_icc_profile(b) -> bool:
    """Whether bytes look like an ICC profile: a 128-byte header with the 'acsp' signature and a
    tag count, whose first field (the profile size, big-endian) is the length of the bytes."""
    n = len(b)
    head = bytes(b[:40])
    return n >= 132 and head[36:40] == b"acsp" and int.from_bytes(head[:4], "big") == n


def metadata_of(ext: dict) -> dict:
    """{"exif": bytes, "xmp": bytes, "icc": bytes} (those present) of the extension payloads
    parse_all returned."""
    return {EXT_NAMES[t]: bytes(v) for t, v in ext.items() if t in (EXT_EXIF, EXT_XMP, EXT_ICC)}


def repack(data, **changes) -> bytes:
    """Rebuilds a file with fresh checksums, optionally with changed header fields (width, height,
    channels, quality, model_id): for tests and fuzzing, which damage files on purpose and still
    want to get past the CRCs. The known extension sections are kept, unknown ones dropped."""
    hdr, z, chunks, ext = parse_all(data, max_pixels=1 << 40, verify_crc=False)
    if hdr.pixel_coded:
        f = dict(width=hdr.width, height=hdr.height, channels=hdr.channels, max_error=hdr.max_error,
                 stripe_rows=hdr.stripe_rows, flags=hdr.flags)
        f.update(changes)
        return pack_pixels(f["width"], f["height"], f["channels"], f["max_error"], f["stripe_rows"],
                           [bytes(c) for c in chunks], [(t, bytes(v)) for t, v in ext.items()], f["flags"])
    f = dict(width=hdr.width, height=hdr.height, channels=hdr.channels, quality=hdr.quality,
             model_id=hdr.model_id)
    f.update(changes)
    return pack(f["width"], f["height"], f["channels"], f["quality"], f["model_id"], bytes(z),
                [bytes(c) for c in chunks], [(t, bytes(v)) for t, v in ext.items()])


def encode_alpha(alpha) -> bytes:
    """Alpha plane (H, W) uint8 -> extension payload: method byte 0, then a zlib stream of each
    row's left differences (a[x] - a[x - 1] mod 256, with a[-1] = 0)."""
    import numpy as np

    a = np.ascontiguousarray(alpha, dtype=np.uint8)
    d = a.copy()
    d[:, 1:] -= a[:, :-1]  # uint8 arithmetic wraps mod 256
    return bytes([ALPHA_ZLIB_LEFT]) + zlib.compress(d.tobytes(), 9)


def _inflate_exactly(stream, n: int, what: str, size: str) -> bytes:
    """A zlib stream that must inflate to exactly n bytes and end there (FormatError naming what
    and its size otherwise); inflating stops after n + 1 bytes, so no stream makes it allocate more."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(stream, n + 1)
        if len(raw) == n and not d.eof:  # the stream may still hold its end marker
            rest = d.decompress(d.unconsumed_tail, 1)
            if rest:
                raw += rest
    except zlib.error as e:
        raise FormatError(f"invalid {what}: the zlib stream is damaged ({e})") from None
    if len(raw) != n or not d.eof or d.unused_data or d.unconsumed_tail:
        raise FormatError(f"invalid {what}: it must inflate to exactly {size} bytes and end there")
    return raw


def decode_alpha(payload, width: int, height: int):
    """Extension payload -> alpha plane (height, width) uint8. The inflated size is capped at
    width * height bytes, so a hostile stream cannot make it allocate more."""
    import numpy as np

    n = width * height
    raw = _inflate_exactly(memoryview(payload)[1:], n, "alpha extension", f"{width}x{height} = {n}")
    a = np.frombuffer(raw, np.uint8).reshape(height, width)
    return np.cumsum(a, axis=1, dtype=np.uint8)  # undo the left differences (mod 256)


MAP_ZLIB_BITMAP = 0  # sample map method: a zlib stream of a bitmap of the 65536 sample values
_MAP_BYTES = 65536 // 8


def encode_map(used) -> bytes:
    """Sample map extension payload of a bool array of 65536 (True: the value occurs): method byte
    0, then a zlib stream of the bitmap (bit v of byte v // 8, least significant bit first)."""
    import numpy as np

    bits = np.packbits(np.asarray(used, dtype=bool), bitorder="little")
    return bytes([MAP_ZLIB_BITMAP]) + zlib.compress(bits.tobytes(), 9)


def decode_map(payload):
    """Sample map extension payload -> the sample values it lists, ascending (uint16, at least
    one). The inflated size is capped at the bitmap's 8192 bytes."""
    import numpy as np

    raw = _inflate_exactly(memoryview(payload)[1:], _MAP_BYTES, "sample map", str(_MAP_BYTES))
    values = np.flatnonzero(np.unpackbits(np.frombuffer(raw, np.uint8), bitorder="little")).astype(np.uint16)
    if values.size == 0:
        raise FormatError("invalid sample map: it lists no value")
    return values
