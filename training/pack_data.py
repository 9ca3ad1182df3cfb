"""Pack the training photos as high-quality JPEGs (4:4:4) for a remote training machine whose
upload is size-limited: 175 MB of PNGs become about 44 MB at quality 92.

    python training/pack_data.py ../shared/data/train .gpudata --quality 92
"""
from __future__ import annotations

import argparse
import glob
import os

from PIL import Image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--quality", type=int, default=92)
    args = ap.parse_args()
    os.makedirs(args.dst, exist_ok=True)
    total = 0
    files = sorted(glob.glob(os.path.join(args.src, "*.png")))
    for f in files:
        if "kodim" in os.path.basename(f):
            raise SystemExit("refusing to pack Kodak images")
        out = os.path.join(args.dst, os.path.splitext(os.path.basename(f))[0] + ".jpg")
        Image.open(f).convert("RGB").save(out, "JPEG", quality=args.quality, subsampling=0)
        total += os.path.getsize(out)
    print(f"{len(files)} images, {total / 1e6:.1f} MB in {args.dst}")


if __name__ == "__main__":
    main()
