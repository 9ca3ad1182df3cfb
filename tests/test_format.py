"""Container parsing: every header field and section is validated (docs/format.md, 'Validation')."""
import struct
import zlib

import pytest

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
    (patched(4, b"\x02"), "unsupported format version 2"),
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
