#!/usr/bin/env python3
"""Reduced-size decoding (thumbnails): ``decompress(data, reduce=F)`` against decoding the whole
image and reducing it.

    python benchmarks/reduce.py [--qualities 10,40,75] [--every 1] [--sizes 24mp] [--repeat 3] [--threads 2] [--speed-only]

Quality: on the Kodak images (every --every'th), each compressed at each quality with the
default encoder, PSNR of the reduced decode against the original reduced the same way
(``PIL.Image.reduce``, the mean of each F x F block), for the reduce heads and for the whole
decode (default decoder and post-filter) reduced afterwards. Speed: the best of --repeat on
kodim23 and on the --sizes test images (made as in benchmarks/speed.py, mosaics of Kodak
images), at quality 75, and of a 256x256 tile at each scale (``decompress(data, box=..., reduce=F)``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from region import best  # noqa: E402
from speed import KODAK, make_image  # noqa: E402

FACTORS = (2, 4, 8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def reduce(a, f):
    return np.asarray(Image.fromarray(a).reduce(f))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qualities", default="10,40,75")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--sizes", default="24mp")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-only", action="store_true", help="only the timings")
    args = ap.parse_args(argv)
    if not KODAK.is_dir():
        sys.exit(f"needs the Kodak images in {KODAK}")
    import fastcodec
    codec = fastcodec.Codec(threads=args.threads)
    if args.speed_only:
        return speed(codec, args)
    files = sorted(KODAK.glob("kodim*.png"))[::args.every]
    print(f"fastcodec {fastcodec.__version__}, model {codec.model.id}, reduce heads for "
          f"{codec.model.reduce_factors() or 'no factor'}, {args.threads} threads\n")
    print(f"Quality: {len(files)} Kodak images, PSNR (dB) against the original reduced by PIL.Image.reduce\n")
    print("| quality | bpp | " + " | ".join(f"reduce={f} heads | reduce={f} whole decode reduced" for f in FACTORS)
          + " |")
    print("|---:|---:|" + "---:|---:|" * len(FACTORS))
    for q in (float(v) for v in args.qualities.split(",")):
        rows, bpp = [], []
        for path in files:
            img = np.asarray(Image.open(path).convert("RGB"))
            data = codec.compress(img, quality=q)
            bpp.append(8 * len(data) / (img.shape[0] * img.shape[1]))
            whole = codec.decompress(data)
            row = []
            for f in FACTORS:
                ref = reduce(img, f)
                row += [psnr(codec.decompress(data, reduce=f), ref), psnr(reduce(whole, f), ref)]
            rows.append(row)
        m = np.mean(rows, axis=0)
        print(f"| {q:g} | {np.mean(bpp):.3f} | " + " | ".join(f"{v:.2f}" for v in m) + " |", flush=True)
    speed(codec, args)


def speed(codec, args):
    print("\nSpeed: seconds, best of", args.repeat, "(quality 75)\n")
    print("| image | whole decode | " + " | ".join(f"reduce={f}" for f in FACTORS)
          + " | whole decode + PIL reduce=8 |")
    print("|---|---:|" + "---:|" * len(FACTORS) + "---:|")
    imgs = [("kodim23", np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB")))]
    imgs += [(s, make_image(s)) for s in args.sizes.split(",") if s]
    tiles = []
    for name, img in imgs:
        h, w = img.shape[:2]
        data = codec.compress(img, quality=75)
        reps = args.repeat if h * w < 4e6 else max(1, args.repeat - 1)
        t_whole, _ = best(lambda: codec.decompress(data), reps)
        ts = [best(lambda: codec.decompress(data, reduce=f), reps)[0] for f in FACTORS]
        t_pil, _ = best(lambda: reduce(codec.decompress(data), 8), 1)
        print(f"| {name} ({w}x{h}) | {t_whole:.3f} | " + " | ".join(f"{t:.3f} ({t_whole / t:.1f}x)" for t in ts)
              + f" | {t_pil:.3f} |", flush=True)
        tiles.append((name, w, h, data, reps))
    print("\nA 256x256 tile of the image at each scale (box in the reduced image's pixels, centred; "
          "checked against cropping the whole reduced decode)\n")
    print("| image | " + " | ".join(f"reduce={f}" for f in (1,) + FACTORS) + " |")
    print("|---|" + "---:|" * (1 + len(FACTORS)))
    for name, w, h, data, reps in tiles:
        row = []
        for f in (1,) + FACTORS:
            hr, wr = -(-h // f), -(-w // f)
            s = min(256, hr, wr)
            box = ((wr - s) // 2, (hr - s) // 2, (wr - s) // 2 + s, (hr - s) // 2 + s)
            t, tile = best(lambda: codec.decompress(data, box=box, reduce=f), reps)
            whole = codec.decompress(data, reduce=f)
            if not np.array_equal(tile, whole[box[1]:box[3], box[0]:box[2]]):
                sys.exit(f"{name}: the tile at reduce={f} differs from the whole reduced decode")
            row.append(t)
        print(f"| {name} ({w}x{h}) | " + " | ".join(f"{t:.3f}" for t in row) + " |", flush=True)


if __name__ == "__main__":
    main()
