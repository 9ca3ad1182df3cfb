"""Container parsing: every header field is validated (docs/format.md, 'Validation')."""
import struct
import zlib

import pytest

from fastcodec import format as fmt
from fastcodec.errors import FormatError, LimitError


def make(**kw):
    h = dict(width=7, height=5, channels=3, quality=75.0, model_id=bytes(range(8)), z_size=3, y_size=2)
    h.update(kw)
    return fmt.pack(fmt.Header(**h), b"zzz"[:h["z_size"]], b"yy"[:h["y_size"]])


def test_known_answer_header_bytes():
    data = make()
    assert data[:34] == bytes.fromhex(
        "89464343" "01" "00" "03" "00" "07000000" "05000000" "4c1d" "0001020304050607" "03000000" "02000000")
    assert data[34:39] == b"zzzyy"
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    assert len(data) == 34 + 5 + 4


def test_roundtrip_fields():
    hdr, z, y = fmt.parse(make(width=1 << 20, height=1, quality=1.0, channels=1))
    assert (hdr.width, hdr.height, hdr.quality, hdr.channels) == (1 << 20, 1, 1.0, 1)
    assert bytes(z) == b"zzz" and bytes(y) == b"yy"


def resign(b):
    b = bytearray(b[:-4])
    return bytes(b) + struct.pack("<I", zlib.crc32(b))


def patched(offset, value):
    b = bytearray(make())
    b[offset:offset + len(value)] = value
    return resign(b)


@pytest.mark.parametrize("data,msg", [
    (b"", "magic"),
    (b"PNG\x89", "magic"),
    (b"\x89FCC", "truncated"),
    (b"\x89FCC\x01" + b"\0" * 10, "truncated"),
    (patched(4, b"\x02"), "unsupported format version 2"),
    (patched(5, b"\x01"), "reserved"),
    (patched(7, b"\x01"), "reserved"),
    (patched(6, b"\x04"), "channel count 4"),
    (patched(8, struct.pack("<I", 0)), "invalid image size"),
    (patched(12, struct.pack("<I", (1 << 20) + 1)), "invalid image size"),
    (patched(16, struct.pack("<H", 99)), "quality"),
    (patched(16, struct.pack("<H", 10001)), "quality"),
    (patched(26, struct.pack("<I", 4)), "truncated file"),
    (patched(26, struct.pack("<I", 0xFFFFFFFF)), "truncated file"),
    (resign(make()[:-4] + b"x" + b"\0\0\0\0"), "trailing data"),
    (make()[:-1], "truncated"),
])
def test_rejects_invalid(data, msg):
    with pytest.raises(FormatError, match=msg):
        fmt.parse(data)


def test_crc_detects_every_single_bit_flip():
    good = make()
    for i in range(len(good) * 8):
        b = bytearray(good)
        b[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FormatError):
            fmt.parse(bytes(b))


def test_pixel_limit_checked_before_anything():
    data = make(width=20000, height=20000)
    with pytest.raises(LimitError, match="max_pixels"):
        fmt.parse(data, max_pixels=10 ** 8)
    assert isinstance(LimitError("x"), ValueError)
