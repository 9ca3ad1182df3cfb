#!/usr/bin/env python3
"""Entropy-coding overhead: bits on disk against the model's information content.

    python benchmarks/overhead.py [FOLDER] [--qualities 1,25,50,75,100]

For every image and quality: information content = sum of -log2 p over every coded symbol under
the discretised distributions the coder uses (Codec.inspect); the table gives, per quality, the
mean ratio file bits / (information + header bits) and the per-section overheads.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--qualities", default="1,25,50,75,100")
    ap.add_argument("--limit", type=int, default=0)
    args = ap.parse_args(argv)
    import fastcodec
    codec = fastcodec.Codec()
    files = sorted(Path(args.folder).glob("*.png"))[: args.limit or None]
    print(f"model {codec.model.id}, {len(files)} images\n")
    print("| quality | mean bpp | file bits / (info + header) | latent bits / info | hyper-latent bits / info | worst image |")
    print("|---:|---:|---:|---:|---:|---:|")
    for q in map(float, args.qualities.split(",")):
        tot, lat, hyp, bpp = [], [], [], []
        for f in files:
            data = codec.compress(str(f), quality=q)
            d = codec.inspect(data)
            tot.append(d["total"]["bits"] / (d["total"]["information_bits"] + d["total"]["header_bits"]))
            lat.append(d["latent"]["bits"] / d["latent"]["information_bits"])
            hyp.append(d["hyper_latent"]["bits"] / d["hyper_latent"]["information_bits"])
            bpp.append(codec.info(data).bpp)
        print(f"| {q:g} | {np.mean(bpp):.3f} | {np.mean(tot):.4f} | {np.mean(lat):.4f} | {np.mean(hyp):.4f} "
              f"| {np.max(tot):.4f} |", flush=True)


if __name__ == "__main__":
    main()
