"""Writes the golden *invalid* files of tests/golden/invalid/: files that every decoder must reject
(docs/format.md "Validation"), each beside the words its error must contain and what is wrong
with it (expected.json), as zstd keeps streams that must be rejected. They are made from the
golden valid files by changing one thing each (checksums recomputed where the point is
another rule). A file that exists is kept as it is; run once per new rule.

    PYTHONPATH=python python tests/golden/make_invalid.py
"""
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from fastcodec import format as fmt

HERE = Path(__file__).resolve().parent
OUT = HERE / "invalid"
LEARNED = HERE / "075beab6d60022d3"
PIXELS = HERE / "pixels"


def header_patched(data: bytes, hs: int, offset: int, value: bytes) -> bytes:
    """data with header bytes [offset, offset + len(value)) replaced and the header CRC recomputed."""
    head = bytearray(data[:hs - 4])
    head[offset:offset + len(value)] = value
    return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[hs:]


def stripe_replaced(data: bytes, i: int, payload: bytes, ext=None, flags=None) -> bytes:
    hdr, _, stripes, e = fmt.parse_all(data)
    stripes = [bytes(s) for s in stripes]
    stripes[i] = payload
    ext = [(t, bytes(v)) for t, v in e.items()] if ext is None else ext
    return fmt.pack_pixels(hdr.width, hdr.height, hdr.channels, hdr.max_error, hdr.stripe_rows, stripes, ext,
                           hdr.flags if flags is None else flags)


def cases() -> dict:
    v1 = (LEARNED / "rgb_q50.fcc").read_bytes()
    v2 = (LEARNED / "rgba_meta_q50.fcc").read_bytes()
    v3 = (PIXELS / "rgb_lossless.fcc").read_bytes()
    deep = (PIXELS / "gray16_lossless.fcc").read_bytes()
    mapped = (PIXELS / "rgb16_map.fcc").read_bytes()
    h1 = fmt.parse(v1)[0].header_size
    h3 = fmt.parse(v3)[0].header_size
    hdr2, z2, chunks2, ext2 = fmt.parse_all(v2)
    out = {}

    def add(name, data, error, why):
        out[name] = (data, error, why)

    add("magic.fcc", b"\x89FCD" + v1[4:], "magic number", "the magic number is wrong")
    add("version_9.fcc", v1[:4] + b"\x09" + v1[5:], "unsupported format version 9", "a version no fastcodec wrote")
    add("v1_header_crc.fcc", v1[:h1 - 1] + bytes([v1[h1 - 1] ^ 1]) + v1[h1:], "header checksum",
        "the header's CRC-32 does not match")
    add("v1_chunks_0.fcc", header_patched(v1, h1, 7, b"\x00"), "chunk count 0", "no latent chunk")
    add("v1_quality_0.fcc", header_patched(v1, h1, 16, struct.pack("<H", 0)), "quality field 0",
        "quality below 1.00")
    add("v1_truncated.fcc", v1[:-1], "truncated", "one byte short of what the sections declare")
    add("v1_trailing.fcc", v1 + b"\x00", "trailing data", "one byte more than the sections declare")
    add("v1_chunk_crc.fcc", v1[:-1] + bytes([v1[-1] ^ 0x40]), "checksum mismatch in the latent chunk",
        "a latent chunk's CRC-32 does not match")
    add("v1_unknown_model.fcc", header_patched(v1, h1, 18, b"\x00" * 8), "model", "a model id no bundle has")
    ext = [(t, bytes(v)) for t, v in ext2.items()]
    add("v2_unknown_critical.fcc",
        fmt.pack(hdr2.width, hdr2.height, hdr2.channels, hdr2.quality, hdr2.model_id, bytes(z2),
                 [bytes(c) for c in chunks2], ext + [(3, b"\x00")]),
        "unknown critical extension type 3", "a critical extension type this version does not know")
    bad_alpha = [(t, b"\x00" + zlib.compress(b"\x00" * 10) if t == fmt.EXT_ALPHA else v) for t, v in ext]
    add("v2_alpha_size.fcc",
        fmt.pack(hdr2.width, hdr2.height, hdr2.channels, hdr2.quality, hdr2.model_id, bytes(z2),
                 [bytes(c) for c in chunks2], bad_alpha),
        "inflate to exactly", "the alpha plane does not inflate to H x W bytes")
    add("v2_sample_map.fcc",
        fmt.pack(hdr2.width, hdr2.height, hdr2.channels, hdr2.quality, hdr2.model_id, bytes(z2),
                 [bytes(c) for c in chunks2], ext + [(fmt.EXT_MAP, fmt.encode_map(np.ones(65536, bool)))]),
        "16-bit files only", "a sample map in a learned file")
    add("v3_flags_8.fcc", header_patched(v3, h3, 5, b"\x08"), "reserved header flags", "an unknown flag bit")
    add("v3_flags_3.fcc", header_patched(v3, h3, 5, b"\x03"), "never set together",
        "copies and 16-bit samples together")
    add("v3_max_error_33.fcc", header_patched(v3, h3, 7, b"\x21"), "max_error 33", "max_error above 32")
    add("v3_stripe_rows_0.fcc", header_patched(v3, h3, 16, struct.pack("<I", 0)), "stripe height 0",
        "a stripe height below 16 rows")
    payload = bytes(fmt.parse_all(v3)[2][0])
    add("v3_stripe_left_over.fcc", stripe_replaced(v3, 0, payload + b"\x00\x00"), "left over",
        "more than 7 bits after the last pixel")
    add("v3_stripe_truncated.fcc", stripe_replaced(v3, 0, payload[:len(payload) // 2]), "truncated",
        "a stripe that ends early")
    dpay = bytes(fmt.parse_all(deep)[2][0])
    add("v3_deep_scale_15.fcc", stripe_replaced(deep, 0, bytes([dpay[0] | 0xF0]) + dpay[1:]), "sample scale 15",
        "a 16-bit stripe whose sample scale is above 8")
    add("v3_deep_alpha.fcc",
        stripe_replaced(deep, 0, dpay, ext=[(fmt.EXT_ALPHA, fmt.encode_alpha(np.zeros((40, 48), np.uint8)))]),
        "alpha plane", "a 16-bit file with an alpha plane")
    used = np.zeros(65536, bool)
    used[fmt.decode_map(fmt.parse_all(mapped)[3][fmt.EXT_MAP])[:-1]] = True  # one value too few
    mpay = [bytes(s) for s in fmt.parse_all(mapped)[2]]
    mh = fmt.parse(mapped)[0]
    add("v3_map_short.fcc",
        fmt.pack_pixels(mh.width, mh.height, 3, 0, mh.stripe_rows, mpay, [(fmt.EXT_MAP, fmt.encode_map(used))],
                        fmt.FLAG_DEEP),
        "outside the sample map", "a rank past the values the sample map lists")
    add("v3_map_empty.fcc",
        fmt.pack_pixels(mh.width, mh.height, 3, 0, mh.stripe_rows, mpay,
                        [(fmt.EXT_MAP, fmt.encode_map(np.zeros(65536, bool)))], fmt.FLAG_DEEP),
        "lists no value", "a sample map without any value")
    v3p = fmt.parse_all(v3)
    add("v3_map_8bit.fcc",
        fmt.pack_pixels(v3p[0].width, v3p[0].height, 3, 0, v3p[0].stripe_rows, [bytes(s) for s in v3p[2]],
                        [(fmt.EXT_MAP, fmt.encode_map(np.ones(65536, bool)))]),
        "16-bit files only", "a sample map in an 8-bit file")
    return out


def main():
    OUT.mkdir(exist_ok=True)
    expected = {}
    for name, (data, error, why) in cases().items():
        if not (OUT / name).exists():
            (OUT / name).write_bytes(data)
        expected[name] = {"error": error, "why": why}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{len(expected)} invalid files in {OUT}")


if __name__ == "__main__":
    main()
