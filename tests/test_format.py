"""Container parsing: every header field and section is validated (docs/format.md, 'Validation')."""
import struct
import zlib

import numpy as np
import pytest

from conftest import icc_profile
from fastcodec import format as fmt
from fastcodec.errors import FormatError, LimitError

Z, CHUNKS = b"zzz", [b"yy", b"c"]


def make(width=7, height=5, channels=3, quality=75.0, z=Z, chunks=CHUNKS):
    return fmt.pack(width, height, channels, quality, bytes(range(8)), z, chunks)


def test_known_answer_bytes():
    data = make()
    crc = lambda b: struct.pack("<I", zlib.crc32(b))  # noqa: E731
    fixed = bytes.fromhex("89464343" "01" "00" "03" "02" "07000000" "05000000" "4c1d" "0001020304050607")
    table = struct.pack("<I", 3) + crc(Z) + struct.pack("<I", 2) + crc(b"yy") + struct.pack("<I", 1) + crc(b"c")
    assert data == fixed + table + crc(fixed + table) + b"zzzyyc"
    assert fmt.header_size(2) == len(fixed + table) + 4 == 54


def test_roundtrip_fields():
    hdr, z, chunks = fmt.parse(make(width=1 << 20, height=1, quality=1.0, channels=1))
    assert (hdr.width, hdr.height, hdr.quality, hdr.channels) == (1 << 20, 1, 1.0, 1)
    assert bytes(z) == Z and [bytes(c) for c in chunks] == CHUNKS
    assert hdr.chunk_sizes == (2, 1) and hdr.file_size == 54 + 6


def resign_header(b, nchunks=2):
    hs = fmt.header_size(nchunks)
    b = bytearray(b)
    b[hs - 4:hs] = struct.pack("<I", zlib.crc32(bytes(b[:hs - 4])))
    return bytes(b)


def patched(offset, value):
    b = bytearray(make())
    b[offset:offset + len(value)] = value
    return resign_header(b)


@pytest.mark.parametrize("data,msg", [
    (b"", "magic"),
    (b"PNG\x89", "magic"),
    (b"\x89FCC", "truncated"),
    (b"\x89FCC\x01" + b"\0" * 10, "truncated"),
    (patched(4, b"\x04"), "unsupported format version 4"),
    (patched(4, b"\x00"), "unsupported format version 0"),
    (patched(5, b"\x01"), "reserved"),
    (patched(6, b"\x04"), "channel count 4"),
    (make()[:20], "truncated"),
    (make()[:50], "truncated"),
    (patched(8, struct.pack("<I", 0)), "invalid image size"),
    (patched(12, struct.pack("<I", (1 << 20) + 1)), "invalid image size"),
    (patched(16, struct.pack("<H", 99)), "quality"),
    (patched(16, struct.pack("<H", 10001)), "quality"),
    (patched(26, struct.pack("<I", 4)), "truncated file"),
    (patched(26, struct.pack("<I", 0xFFFFFFFF)), "truncated file"),
    (make() + b"x", "trailing data"),
    (make()[:-1], "truncated"),
])
def test_rejects_invalid(data, msg):
    with pytest.raises(FormatError, match=msg):
        fmt.parse(data)


def test_zero_chunks_rejected():
    b = bytearray(make(chunks=[b"c"]))
    b[7] = 0
    with pytest.raises(FormatError, match="chunk count 0"):
        fmt.parse(resign_header(b, 0))


def test_every_single_bit_flip_is_detected_and_located():
    good = make()
    hs = fmt.header_size(2)
    for i in range(len(good) * 8):
        b = bytearray(good)
        b[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FormatError) as e:
            fmt.parse(bytes(b))
        byte = i // 8
        if byte >= hs + 3 + 2:
            assert "latent chunk 2 of 2" in str(e.value)
        elif byte >= hs + 3:
            assert "latent chunk 1 of 2" in str(e.value)
        elif byte >= hs:
            assert "hyper-latent" in str(e.value)


def test_pixel_limit_checked_before_anything():
    data = make(width=20000, height=20000)
    with pytest.raises(LimitError, match="max_pixels"):
        fmt.parse(data, max_pixels=10 ** 8)
    assert isinstance(LimitError("x"), ValueError)


# -- version 2: extension sections (alpha plane, EXIF, XMP) -------------------------------------

EXIF = b"II*\x00\x08\x00\x00\x00\x00\x00"  # a TIFF header and an empty first directory


ICC = icc_profile()


def test_icc_extension_is_read_back():
    hdr, _, _, ext = fmt.parse_all(make_ext([(fmt.EXT_XMP, b"<x/>"), (fmt.EXT_ICC, ICC)]))
    assert hdr.extension_sizes == ((129, 4), (130, len(ICC)))
    assert fmt.metadata_of(ext) == {"xmp": b"<x/>", "icc": ICC}
    assert fmt.is_icc_profile(ICC) and not fmt.is_icc_profile(ICC + b"\0") and not fmt.is_icc_profile(ICC[:131])


def make_ext(extensions, chunks=CHUNKS):
    return fmt.pack(7, 5, 3, 75.0, bytes(range(8)), Z, chunks, extensions)


def test_known_answer_bytes_with_extensions():
    alpha = fmt.encode_alpha(np.array([[255, 0, 7]], np.uint8))
    data = fmt.pack(3, 1, 1, 50.0, bytes(8), b"z", [b"y"], [(fmt.EXT_ALPHA, alpha), (fmt.EXT_EXIF, EXIF)])
    crc = lambda b: struct.pack("<I", zlib.crc32(b))  # noqa: E731
    fixed = bytes.fromhex("89464343" "02" "00" "01" "01" "03000000" "01000000" "8813" "0000000000000000")
    table = struct.pack("<I", 1) + crc(b"z") + struct.pack("<I", 1) + crc(b"y")
    ext = bytes([2]) + bytes([1]) + struct.pack("<I", len(alpha)) + crc(alpha) \
        + bytes([128]) + struct.pack("<I", len(EXIF)) + crc(EXIF)
    assert data == fixed + table + ext + crc(fixed + table + ext) + b"zy" + alpha + EXIF
    assert fmt.header_size(1, 2) == len(fixed + table + ext) + 4 == 65
    # the alpha payload: method 0, then zlib of the left differences 255, 0 - 255, 7 - 0 (mod 256)
    assert alpha[0] == 0 and zlib.decompress(alpha[1:]) == bytes([255, 1, 7])
    hdr, z, chunks, ext = fmt.parse_all(data)
    assert hdr.version == 2 and hdr.has_alpha and hdr.file_size == len(data)
    assert hdr.extension_sizes == ((1, len(alpha)), (128, len(EXIF)))
    assert bytes(ext[fmt.EXT_EXIF]) == EXIF
    assert fmt.decode_alpha(ext[fmt.EXT_ALPHA], 3, 1).tolist() == [[255, 0, 7]]


def test_files_without_extensions_stay_version_1():
    assert make_ext([]) == make() and fmt.parse(make())[0].version == 1


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 700), (64, 1)])
def test_alpha_plane_roundtrip(rows, cols):
    a = np.random.default_rng(rows * cols).integers(0, 256, (rows, cols), dtype=np.uint8)
    assert np.array_equal(fmt.decode_alpha(fmt.encode_alpha(a), cols, rows), a)


def ext_patched(ext_index, field, value, extensions=((fmt.EXT_EXIF, EXIF), (fmt.EXT_XMP, b"<x/>"))):
    """A valid two-extension file with one byte of an extension entry (type) or the count changed."""
    b = bytearray(make_ext(list(extensions)))
    base = fmt.header_size(2) - 4  # the count byte
    off = base if field == "count" else base + 1 + 9 * ext_index
    b[off] = value
    n = value if field == "count" and 1 <= value <= 8 else len(extensions)
    hs = fmt.header_size(2, n)
    b[hs - 4:hs] = struct.pack("<I", zlib.crc32(bytes(b[:hs - 4])))
    return bytes(b)


def with_alpha(payload):
    return make_ext([(fmt.EXT_ALPHA, payload)])


@pytest.mark.parametrize("data,msg", [
    (ext_patched(0, "count", 0), "extension count 0"),
    (ext_patched(0, "count", 9), "extension count 9"),
    (ext_patched(1, "type", 128), "appears twice"),
    (ext_patched(0, "type", 3), "unknown critical extension type 3"),
    (ext_patched(0, "type", 2), "sample map belongs to 16-bit files only"),
    (ext_patched(0, "type", 127), "unknown critical extension type 127"),
    (make_ext([(fmt.EXT_EXIF, b"Exif\x00\x00" + EXIF)]), "TIFF header"),
    (make_ext([(fmt.EXT_ICC, b"not an ICC profile" * 10)]), "invalid ICC extension"),
    (make_ext([(fmt.EXT_ICC, ICC[:-4])]), "invalid ICC extension"),  # its declared size is 4 more
    (make_ext([(fmt.EXT_ALPHA, b"\x01" + zlib.compress(bytes(35)))]), "alpha coding method 1"),
    (make_ext([(fmt.EXT_EXIF, EXIF)])[:-1], "truncated"),
    (make_ext([(fmt.EXT_EXIF, EXIF)]) + b"\x00", "trailing data"),
    (make_ext([(fmt.EXT_EXIF, EXIF)])[:fmt.header_size(2) - 4], "truncated file: 50 bytes, its header needs more than 50"),  # before the count
    (make_ext([(fmt.EXT_EXIF, EXIF)])[:fmt.header_size(2, 1) - 1], "truncated file: 63 bytes, its header needs 64"),
])
def test_rejects_invalid_extensions(data, msg):
    with pytest.raises(FormatError, match=msg):
        fmt.parse(data)


def test_empty_extension_rejected():
    b = bytearray(make_ext([(fmt.EXT_EXIF, EXIF)]))
    base = fmt.header_size(2) - 4 + 1
    b[base + 1:base + 5] = struct.pack("<I", 0)  # size 0: the payload becomes trailing data
    hs = fmt.header_size(2, 1)
    b[hs - 4:hs] = struct.pack("<I", zlib.crc32(bytes(b[:hs - 4])))
    with pytest.raises(FormatError, match="empty extension"):
        fmt.parse(bytes(b))


def test_unknown_ancillary_extension_is_checked_and_skipped():
    data = make_ext([(fmt.EXT_EXIF, EXIF), (200, b"future")])
    hdr, _, _, ext = fmt.parse_all(data)
    assert set(ext) == {fmt.EXT_EXIF} and hdr.extension_sizes[1] == (200, 6)
    bad = bytearray(data)
    bad[-1] ^= 1
    with pytest.raises(FormatError, match="type 200"):  # its checksum still counts
        fmt.parse(bytes(bad))


@pytest.mark.parametrize("payload,msg", [
    (b"\x00" + zlib.compress(bytes(34)), "exactly 7x5 = 35 bytes"),
    (b"\x00" + zlib.compress(bytes(36)), "exactly"),
    (b"\x00" + zlib.compress(bytes(35)) + b"x", "exactly"),
    (b"\x00" + zlib.compress(bytes(35))[:-3], "exactly|damaged"),
    (b"\x00" + b"not zlib at all", "damaged"),
    (b"\x00" + zlib.compress(bytes(10 ** 7)), "exactly"),  # a bomb: inflation stops at 35 + 1 bytes
])
def test_rejects_invalid_alpha_planes(payload, msg):
    _, _, _, ext = fmt.parse_all(with_alpha(payload))
    with pytest.raises(FormatError, match=msg):
        fmt.decode_alpha(ext[fmt.EXT_ALPHA], 7, 5)


def test_every_bit_flip_in_a_version_2_file_is_detected():
    good = make_ext([(fmt.EXT_ALPHA, fmt.encode_alpha(np.zeros((5, 7), np.uint8))), (fmt.EXT_XMP, b"<x/>")])
    for i in range(len(good) * 8):
        b = bytearray(good)
        b[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FormatError):
            fmt.parse(bytes(b))
    tail = len(good) - 4
    b = bytearray(good)
    b[tail] ^= 1
    with pytest.raises(FormatError, match="xmp extension"):
        fmt.parse(bytes(b))
