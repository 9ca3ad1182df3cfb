#!/usr/bin/env python3
"""Region decoding: the time to decode a box of a file against the whole image.

    python benchmarks/region.py [--sizes kodak,24mp] [--quality 75] [--repeat 3] [--threads 2]

Each size's test image is made as in benchmarks/speed.py (Kodak as is, larger sizes from
mosaics of Kodak images resized with Lanczos), compressed once with the default encoder, then
decoded whole and with boxes of several sizes (centred, and one in the top-left corner) by the
default decoder. Times are the best of --repeat, in seconds; "entropy decoding only" is the part
every decode pays whatever the box (parsing the entropy streams, which needs the scale bins of the
whole image), measured with a 16x16 box's means. Every box's pixels are checked against the same region of the whole decode.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from speed import KODAK, make_image  # noqa: E402


def best(fn, repeat):
    t = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        t.append(time.perf_counter() - t0)
    return min(t), out


def boxes(w, h):
    out = []
    for s in (64, 256, 1024):
        if s < min(w, h):
            l, u = (w - s) // 2, (h - s) // 2
            out.append((f"{s}x{s} centre", (l, u, l + s, u + s)))
    out.append(("256x256 corner", (0, 0, min(256, w), min(256, h))))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="kodak,24mp")
    ap.add_argument("--quality", type=float, default=75)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not KODAK.is_dir():
        sys.exit(f"needs the Kodak images in {KODAK}")
    import fastcodec
    codec = fastcodec.Codec(threads=args.threads)
    print(f"fastcodec {fastcodec.__version__}, quality {args.quality:g}, {args.threads} threads, "
          f"best of {args.repeat}\n")
    print("| image | what | seconds | share of whole |")
    print("|---|---|---:|---:|")
    for size in args.sizes.split(","):
        img = make_image(size)
        h, w = img.shape[:2]
        data = codec.compress(img, quality=args.quality)
        reps = args.repeat if h * w < 4e6 else max(1, args.repeat - 1)
        t_whole, whole = best(lambda: codec.decompress(data), reps)
        t_sym, _ = best(lambda: codec._decode_symbols(data, {}, (0, 0, 16, 16)), reps)
        name = f"{w}x{h} ({len(data) * 8 / (w * h):.2f} bpp)"
        print(f"| {name} | whole image | {t_whole:.3f} | 1.00 |")
        print(f"| {name} | entropy decoding only | {t_sym:.3f} | {t_sym / t_whole:.2f} |")
        for label, box in boxes(w, h):
            t, crop = best(lambda: codec.decompress(data, box=box), reps)
            l, u, r, b = box
            if not np.array_equal(crop, whole[u:b, l:r]):
                sys.exit(f"{size} {label}: the region differs from the whole decode")
            print(f"| {name} | {label} | {t:.3f} | {t / t_whole:.2f} |", flush=True)


if __name__ == "__main__":
    main()
