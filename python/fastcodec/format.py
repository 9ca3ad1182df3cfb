"""The .fcc container (see docs/format.md): parse and build, validating every field."""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import FormatError, LimitError

MAGIC = b"\x89FCC"
VERSION = 1
SUPPORTED_VERSIONS = (1,)
_HEADER = struct.Struct("<4sBBBBIIH8sII")  # magic, version, flags, channels, reserved, w, h, q100, model, zlen, ylen
HEADER_SIZE = _HEADER.size  # 34
CRC_SIZE = 4
MAX_DIMENSION = 1 << 20
DEFAULT_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    channels: int  # 3 = RGB, 1 = grayscale (coded as RGB, returned as one channel)
    quality: float  # 1.00 .. 100.00, hundredths
    model_id: bytes  # 8 bytes
    z_size: int
    y_size: int
    version: int = VERSION

    @property
    def file_size(self) -> int:
        return HEADER_SIZE + self.z_size + self.y_size + CRC_SIZE


def pack(h: Header, z: bytes, y: bytes) -> bytes:
    q100 = int(round(h.quality * 100))
    head = _HEADER.pack(MAGIC, VERSION, 0, h.channels, 0, h.width, h.height, q100, h.model_id, len(z), len(y))
    body = b"".join((head, z, y))
    return body + struct.pack("<I", zlib.crc32(body))


def parse(data, max_pixels: int = DEFAULT_MAX_PIXELS, verify_crc: bool = True):
    """Returns (Header, z_payload memoryview, y_payload memoryview). Raises FormatError/LimitError."""
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    n = mv.nbytes
    if n < 4 or bytes(mv[:4]) != MAGIC:
        raise FormatError("not a fastcodec file: missing magic number 89 46 43 43 ('\\x89FCC')")
    if n < 5:
        raise FormatError(f"truncated file: {n} bytes, header needs {HEADER_SIZE}")
    version = mv[4]
    if version not in SUPPORTED_VERSIONS:
        raise FormatError(f"unsupported format version {version}: this fastcodec reads versions "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))}; upgrade fastcodec to read newer files")
    if n < HEADER_SIZE + CRC_SIZE:
        raise FormatError(f"truncated file: {n} bytes, a version-{version} file has at least "
                          f"{HEADER_SIZE + CRC_SIZE}")
    _, _, flags, channels, reserved, w, h, q100, model_id, zlen, ylen = _HEADER.unpack_from(mv, 0)
    if flags != 0 or reserved != 0:
        raise FormatError(f"reserved header bits are set (flags={flags}, reserved={reserved}); they must be 0")
    if channels not in (1, 3):
        raise FormatError(f"invalid channel count {channels}: allowed are 1 (grayscale) and 3 (RGB)")
    if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
        raise FormatError(f"invalid image size {w}x{h}: width and height must be 1..{MAX_DIMENSION}")
    if w * h > max_pixels:
        raise LimitError(f"image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}")
    if not 100 <= q100 <= 10000:
        raise FormatError(f"invalid quality field {q100}: allowed 100..10000 (hundredths of 1..100)")
    expected = HEADER_SIZE + zlen + ylen + CRC_SIZE
    if expected != n:
        what = "truncated" if n < expected else "trailing data after"
        raise FormatError(f"{what} file: sections declare {expected} bytes, file has {n}")
    if verify_crc:
        (crc,) = struct.unpack_from("<I", mv, n - CRC_SIZE)
        actual = zlib.crc32(mv[:n - CRC_SIZE])
        if crc != actual:
            raise FormatError(f"checksum mismatch (stored {crc:08x}, computed {actual:08x}): the file is corrupted")
    hdr = Header(width=w, height=h, channels=channels, quality=q100 / 100.0, model_id=bytes(model_id),
                 z_size=zlen, y_size=ylen, version=version)
    z = mv[HEADER_SIZE:HEADER_SIZE + zlen]
    y = mv[HEADER_SIZE + zlen:HEADER_SIZE + zlen + ylen]
    return hdr, z, y
