"""The .fcc container (see docs/format.md): build and parse, validating every field.

Layout (little-endian):
    fixed header (26 bytes) | section table: (size, crc32) for z and each latent chunk |
    header crc32 | z payload | chunk payloads
Every section has its own CRC-32, so damage is reported per section (and chunk), and chunks
decode independently (in parallel).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError, LimitError

MAGIC = b"\x89FCC"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
_FIXED = struct.Struct("<4sBBBBIIH8s")  # magic, version, flags, channels, nchunks, w, h, q100, model
FIXED_SIZE = _FIXED.size  # 26
_ENTRY = struct.Struct("<II")  # size, crc32
MAX_DIMENSION = 1 << 20
MAX_CHUNKS = 255
DEFAULT_MAX_PIXELS = 100_000_000


def header_size(nchunks: int) -> int:
    """Bytes before the first payload: fixed part, table of 1 + nchunks sections, header CRC."""
    return FIXED_SIZE + _ENTRY.size * (1 + nchunks) + 4


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    channels: int  # 3 = RGB, 1 = grayscale (coded as RGB, returned as one channel)
    quality: float  # 1.00 .. 100.00, hundredths
    model_id: bytes  # 8 bytes
    z_size: int
    chunk_sizes: tuple
    version: int = VERSION

    @property
    def y_size(self) -> int:
        return sum(self.chunk_sizes)

    @property
    def header_size(self) -> int:
        return header_size(len(self.chunk_sizes))

    @property
    def file_size(self) -> int:
        return self.header_size + self.z_size + self.y_size


def pack(width, height, channels, quality, model_id: bytes, z: bytes, chunks) -> bytes:
    if not 1 <= len(chunks) <= MAX_CHUNKS:
        raise ValueError("1..255 chunks")
    q100 = int(round(quality * 100))
    head = [_FIXED.pack(MAGIC, VERSION, 0, channels, len(chunks), width, height, q100, model_id),
            _ENTRY.pack(len(z), zlib.crc32(z))]
    head += [_ENTRY.pack(len(c), zlib.crc32(c)) for c in chunks]
    head = b"".join(head)
    return b"".join([head, struct.pack("<I", zlib.crc32(head)), z, *chunks])


def parse(data, max_pixels: int = DEFAULT_MAX_PIXELS, verify_crc: bool = True):
    """Returns (Header, z payload, [chunk payloads]) as memoryviews. Raises FormatError/LimitError.

    Everything is validated before any payload is looked at; per-section checksums are verified
    here too (verify_crc=False skips them, for inspection tools)."""
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
    if n < FIXED_SIZE:
        raise FormatError(f"truncated file: {n} bytes, the header alone has at least {header_size(1)}")
    _, _, flags, channels, nchunks, w, h, q100, model_id = _FIXED.unpack_from(mv, 0)
    if flags != 0:
        raise FormatError(f"reserved header flags are set ({flags:#04x}); they must be 0")
    if channels not in (1, 3):
        raise FormatError(f"invalid channel count {channels}: allowed are 1 (grayscale) and 3 (RGB)")
    if not 1 <= nchunks <= MAX_CHUNKS:
        raise FormatError(f"invalid chunk count {nchunks}: allowed 1..{MAX_CHUNKS}")
    hs = header_size(nchunks)
    if n < hs:
        raise FormatError(f"truncated file: {n} bytes, its header needs {hs}")
    (hcrc,) = struct.unpack_from("<I", mv, hs - 4)
    if verify_crc and zlib.crc32(mv[:hs - 4]) != hcrc:
        raise FormatError("header checksum mismatch: the header is corrupted")
    if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
        raise FormatError(f"invalid image size {w}x{h}: width and height must be 1..{MAX_DIMENSION}")
    if w * h > max_pixels:
        raise LimitError(f"image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}")
    if not 100 <= q100 <= 10000:
        raise FormatError(f"invalid quality field {q100}: allowed 100..10000 (hundredths of 1..100)")
    entries = [_ENTRY.unpack_from(mv, FIXED_SIZE + _ENTRY.size * i) for i in range(1 + nchunks)]
    expected = hs + sum(size for size, _ in entries)
    if expected != n:
        what = "truncated" if n < expected else "trailing data after"
        raise FormatError(f"{what} file: sections declare {expected} bytes, file has {n}")
    views, pos = [], hs
    for i, (size, crc) in enumerate(entries):
        v = mv[pos:pos + size]
        if verify_crc and zlib.crc32(v) != crc:
            what = "hyper-latent section" if i == 0 else f"latent chunk {i} of {nchunks}"
            raise FormatError(f"checksum mismatch in the {what}: the file is corrupted")
        views.append(v)
        pos += size
    hdr = Header(width=w, height=h, channels=channels, quality=q100 / 100.0, model_id=bytes(model_id),
                 z_size=entries[0][0], chunk_sizes=tuple(s for s, _ in entries[1:]), version=version)
    return hdr, views[0], views[1:]
