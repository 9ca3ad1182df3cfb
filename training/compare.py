"""Proxy rate-distortion comparison of two weight files in PyTorch, for deciding whether a
training run is worth exporting (the real measurement is benchmarks/rd.py on the exported
bundle). Hard-rounded latents, bits from the model's own likelihoods, PSNR of the 8-bit decoded
image, on every 4th Kodak image (evaluation only: Kodak is never trained or tuned on).

    python training/compare.py models/hp2.weights.npz training/runs/ckpt.pt

Prints bpp / PSNR per gain level and the BD-rate of B against A over the levels both have.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from model import KNOWN_LADDERS, LAMBDAS, HyperpriorCodec, dims_of, load_weights, remap_levels  # noqa: E402
from rd import bd_rate  # noqa: E402


def load(path, raw=False):
    """A weights npz, or a train.py checkpoint (.pt: its parameter average when it keeps one,
    unless raw)."""
    if path.endswith(".pt"):
        ck = torch.load(path, map_location="cpu")
        sd = dict(ck["model"])
        sd.update({} if raw else ck.get("ema") or {})
        steps, arch = ck.get("total_steps", 0), ck.get("args", {}).get("arch", "hp")
        for key in ("log_gain", "log_igain"):
            sd[key] = remap_levels(sd[key], KNOWN_LADDERS[sd[key].shape[0]], LAMBDAS)
    else:
        sd, steps, arch = load_weights(path)  # gains remapped onto the current ladder
    m = HyperpriorCodec(*dims_of(sd), arch=arch)
    m.load_state_dict(sd)
    return m.eval(), steps


@torch.no_grad()
def measure(m, images, levels):
    rates, psnrs = [], []
    for lv in levels:
        rs, ds = [], []
        for im in images:
            h, w = im.shape[:2]
            x = torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 255
            y_hat, bits = m.code_hard(m.g_a(x), torch.tensor([float(lv)]))
            xh = torch.round(m.g_s(y_hat).clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy()
            rs.append(float(bits) / (h * w))
            ds.append(10 * math.log10(255 ** 2 / float(((xh - im) ** 2).mean())))
        rates.append(np.mean(rs))
        psnrs.append(np.mean(ds))
    return np.array(rates), np.array(psnrs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--offset", type=int, default=0, help="first image of the every-4th subset (0-3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--raw", action="store_true", help="checkpoints: the current parameters, not their average")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(glob.glob(os.path.join(args.kodak, "*.png")))[args.offset::4]
    if not files:
        raise SystemExit(f"no Kodak images in {args.kodak}")
    (a, sa), (b, sb) = load(args.a, args.raw), load(args.b, args.raw)
    top = a.log_gain.shape[0] - 1
    levels = [0.5, 2, 4, 6, 8, 10, 11, top] if top > 11 else [0.5, 2, 4, 6, 8, 10, 11]
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    ra, da = measure(a, images, levels)
    rb, db = measure(b, images, levels)
    for i, lv in enumerate(levels):
        print(f"level {lv:>4}: A {ra[i]:.4f} bpp {da[i]:.3f} dB | B {rb[i]:.4f} bpp {db[i]:.3f} dB")
    k = 7  # levels 0.5 ... 11: the range of the 12-level ladder (hp2)
    print(f"A {sa} steps, B {sb} steps, {len(files)} images: BD-rate of B against A "
          f"{bd_rate(ra[:k], da[:k], rb[:k], db[:k]):+.2f} % (levels 0.5-11)"
          + (f", {bd_rate(ra, da, rb, db):+.2f} % (levels 0.5-{top}; a 12-level model's top level is "
             f"extrapolated)" if len(levels) > k else ""))


if __name__ == "__main__":
    main()
