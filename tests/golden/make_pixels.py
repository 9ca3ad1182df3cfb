"""Writes the golden lossless / near-lossless files (format version 3) of tests/golden/pixels/:
each .fcc beside the SHA-256 of the pixels it must decode to (expected.json). Run once per
format change (never to make a failing test pass: the files are what old encoders wrote, so a
file that exists is kept as it is; only new ones are written, and expected.json is made from
decoding all of them).

    PYTHONPATH=python python tests/golden/make_pixels.py
"""
import hashlib
import json
from pathlib import Path

import numpy as np

import fastcodec
from fastcodec import codec as codec_mod

OUT = Path(__file__).resolve().parent / "pixels"


def source(h, w):
    """Integer-only test pattern (no random generator, so it never changes): gradients, a sharp
    edge, a flat area and a pseudo-random texture."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    r = (x * 255) // max(w - 1, 1)
    g = np.where(x + y < (h + w) // 2, 40, 200) + ((x * 7 + y * 13) * 2654435761 >> 13) % 9
    b = np.where((y // 8) % 2 == 0, 128, (x * y) % 256)
    return np.stack([r, g, b], axis=2).clip(0, 255).astype(np.uint8)


def tiles(h, w):
    """A synthetic image that repeats itself (glyph-like 5x7 tiles on a flat background, a bar):
    what copies of earlier pixels are for (fastcodec 0.15, version-3 flag 1)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    glyph = ((x % 6) * 7 + (y % 9) * 3 + (x // 6) % 4 * 11) % 5 == 0
    r = np.where(glyph & (y % 9 < 7) & (x % 6 < 5), 20, 246)
    r = np.where(y < 4, 60, r)
    return np.stack([r, r, np.where(y < 4, 120, r + 4).clip(0, 255)], axis=2).astype(np.uint8)


def deep(h, w, c):
    """A 16-bit pattern (integers only): 12-bit gradients scaled up, with a pseudo-random texture
    in the low bits and both ends of the range (fastcodec 0.16, version-3 flag 2)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    v = ((x * 4095) // max(w - 1, 1)) * 16 + ((x * 7 + y * 13) * 2654435761 >> 13) % 61
    v = np.where((x + y) % 11 == 0, 65535, v)
    v = np.where((x * y) % 17 == 3, 0, v)
    planes = [v, (v * 3 + y * 500) % 65536, np.clip(v - y * 900, 0, 65535)][:c]
    out = np.stack(planes, axis=2).astype(np.uint16)
    return out[..., 0] if c == 1 else out


def main():
    OUT.mkdir(exist_ok=True)
    c = fastcodec.Codec()
    rgb = source(40, 48)
    rgba = np.dstack([rgb, ((np.arange(48) * 5) % 256).astype(np.uint8)[None].repeat(40, 0)])
    files = {
        "rgb_lossless.fcc": c.compress(rgb, lossless=True),
        "rgb_max_error_3.fcc": c.compress(rgb, max_error=3),
        "gray_alpha_max_error_1.fcc": c.compress(np.dstack([rgb[..., 1], rgba[..., 3]]), max_error=1),
        "rgba_lossless.fcc": c.compress(rgba, lossless=True),
    }
    old = codec_mod.STRIPE_PIXELS
    codec_mod.STRIPE_PIXELS = 16 * 48  # 16-row stripes: three of them
    try:
        files["rgb_stripes.fcc"] = c.compress(source(40, 48)[::-1], lossless=True)
    finally:
        codec_mod.STRIPE_PIXELS = old
    files["rgb_copies.fcc"] = c.compress(tiles(40, 48), lossless=True)
    codec_mod.STRIPE_PIXELS = 16 * 48
    try:  # three stripes: copies in the first two, none in the noisy third (its mode bit 0)
        mixed = np.concatenate([tiles(32, 48), source(16, 48)[:, :, ::-1] ^ 0x5A], axis=0)
        files["rgb_copies_stripes.fcc"] = c.compress(mixed, lossless=True)
    finally:
        codec_mod.STRIPE_PIXELS = old
    files["gray16_lossless.fcc"] = c.compress(deep(40, 48, 1), lossless=True)
    files["rgb16_max_error_5.fcc"] = c.compress(deep(40, 48, 3), max_error=5)
    ten = (deep(40, 48, 3).astype(np.int64) >> 6) * 64 + 16  # every 64th value: ranks and a sample map
    files["rgb16_map.fcc"] = c.compress(ten.astype(np.uint16), lossless=True)
    codec_mod.STRIPE_PIXELS = 16 * 48
    try:
        files["rgb16_stripes.fcc"] = c.compress(deep(40, 48, 3)[::-1], lossless=True)
    finally:
        codec_mod.STRIPE_PIXELS = old
    # fastcodec 0.16 writes contexts 2 (flag 4) in every file: the same kinds again
    files["rgb_c2_lossless.fcc"] = c.compress(rgb, lossless=True)
    files["rgb_c2_max_error_3.fcc"] = c.compress(rgb, max_error=3)
    files["gray_c2_alpha_max_error_1.fcc"] = c.compress(np.dstack([rgb[..., 1], rgba[..., 3]]), max_error=1)
    files["gray16_c2_max_error_4.fcc"] = c.compress(deep(40, 48, 1), max_error=4)
    files["rgb16_c2_map.fcc"] = c.compress(ten.astype(np.uint16), lossless=True)
    codec_mod.STRIPE_PIXELS = 16 * 48
    try:
        files["rgb_c2_copies_stripes.fcc"] = c.compress(mixed, lossless=True)
    finally:
        codec_mod.STRIPE_PIXELS = old
    expected = {}
    for name, data in files.items():
        if (OUT / name).exists():
            data = (OUT / name).read_bytes()  # as an earlier version wrote it
        else:
            (OUT / name).write_bytes(data)
        px = fastcodec.decompress(data)
        # samples hashed little-endian, so the digests are the same on every machine
        expected[name] = {"shape": list(px.shape), "dtype": str(px.dtype),
                          "sha256": hashlib.sha256(px.astype(px.dtype.newbyteorder("<")).tobytes()).hexdigest(),
                          "max_error": fastcodec.info(data).max_error}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(json.dumps(expected, indent=1))


if __name__ == "__main__":
    main()
