"""Probe: how much would a context model save on top of the *frozen* shipped transforms?

The analysis transform is fixed, so the latents of training crops are computed once; only a small
context network is trained on them, and its saving is measured on Kodak (hard rounding, the
model's own likelihoods). Results for hp2 are in models/MODEL_CARD.md (all below 1.5 %).

    python training/context_probe.py prep  --out /tmp/ctx          # latents of 320² training crops
    python training/context_probe.py train --out /tmp/ctx --kind D # then A, D or E

Kinds (residual outputs added to the hyperprior's mu and ln sigma, zero-initialised):
  A  checkerboard, published head: 5x5 context conv M->2M on the anchors' residuals, 1x1 convs
     4M->640->512->2M over [mu, ln sigma, context]
  D  checkerboard, light: 3x3 conv over [ln sigma, anchors' residuals] -> ReLU -> 1x1
  E  two channel slices: the second half of the channels conditioned on the first's residuals
Never run on Kodak images for training: Kodak latents are only used for the final measurement.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import SCALE_MAX, SCALE_MIN, HyperpriorCodec, gaussian_likelihood, load_weights  # noqa: E402
from train import load_images  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
M = 192


def shipped_model():
    name = open(os.path.join(ROOT, "models", "DEFAULT")).read().strip()
    sd, _, arch = load_weights(os.path.join(ROOT, "models", f"{name}.weights.npz"))
    m = HyperpriorCodec(96, M, arch=arch)
    m.load_state_dict(sd)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def prep(args):
    m = shipped_model()
    rng = random.Random(0)
    crops = []
    for im in load_images(args.data):  # refuses Kodak
        h, w, _ = im.shape
        if h >= args.size and w >= args.size:
            for _ in range(args.per_image):
                y0, x0 = rng.randrange(h - args.size + 1), rng.randrange(w - args.size + 1)
                crops.append(im[y0:y0 + args.size, x0:x0 + args.size])
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), 8):
            x = torch.from_numpy(np.stack(crops[i:i + 8])).permute(0, 3, 1, 2).float() / 255
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out.append(m.g_a(x).float().half().numpy())
        np.save(os.path.join(args.out, "train_latents.npy"), np.concatenate(out))
        ks = []
        for f in sorted(glob.glob(os.path.join(args.kodak, "*.png"))):
            im = np.asarray(Image.open(f).convert("RGB"))
            im = im.transpose(1, 0, 2) if im.shape[0] > im.shape[1] else im
            ks.append(m.g_a(torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 255).numpy()[0])
        np.save(os.path.join(args.out, "kodak_latents.npy"), np.stack(ks))
    print(f"{len(crops)} training crops, {len(ks)} Kodak images")


class Context(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        if kind == "A":
            self.ctx = nn.Conv2d(M, 2 * M, 5, padding=2)
            self.ep = nn.Sequential(nn.Conv2d(4 * M, 640, 1), nn.LeakyReLU(), nn.Conv2d(640, 512, 1),
                                    nn.LeakyReLU(), nn.Conv2d(512, 2 * M, 1))
        elif kind == "D":
            self.ep = nn.Sequential(nn.Conv2d(2 * M, 192, 3, padding=1), nn.ReLU(), nn.Conv2d(192, 2 * M, 1))
        elif kind == "E":
            self.ep = nn.Sequential(nn.Conv2d(M, 192, 3, padding=1), nn.ReLU(), nn.Conv2d(192, M, 1))
        else:
            raise SystemExit(f"unknown kind {kind!r}: A, D or E")
        nn.init.zeros_(self.ep[-1].weight)
        nn.init.zeros_(self.ep[-1].bias)

    def mask(self, h, w, known):
        """1 where an element is coded first (by the hyperprior alone), else 0."""
        if self.kind == "E":
            c = torch.arange(M).view(1, -1, 1, 1) < M // 2
            return (c if known else ~c).float().expand(1, M, h, w)
        i, j = torch.arange(h).view(-1, 1), torch.arange(w).view(1, -1)
        a = (i + j) % 2 == 0
        return (a if known else ~a).float().view(1, 1, h, w)

    def forward(self, r_known, mu, ls):
        if self.kind == "A":
            p = self.ep(torch.cat([mu, ls, self.ctx(r_known)], 1))
        elif self.kind == "D":
            p = self.ep(torch.cat([ls, r_known], 1))
        else:
            p = self.ep(torch.cat([ls[:, M // 2:], r_known[:, :M // 2]], 1))
        dmu, dls = p.float().chunk(2, 1)
        if self.kind == "E":
            dmu, dls = (torch.cat([torch.zeros_like(d), d], 1) for d in (dmu, dls))
        return mu + dmu, torch.clamp(ls + dls, math.log(SCALE_MIN), math.log(SCALE_MAX))


def bits(r, ls):
    return -torch.log2(gaussian_likelihood(r, torch.exp(ls)).clamp_min(1e-9))


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = shipped_model()
    Y = torch.from_numpy(np.load(os.path.join(args.out, "train_latents.npy")))
    YK = torch.from_numpy(np.load(os.path.join(args.out, "kodak_latents.npy")))
    net = Context(args.kind)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)

    def hyper(y, level):
        yg = y * m.gains(level)[0]
        with torch.no_grad():
            z = torch.round(m.h_a(yg))
            mu, ls = m.hyper_log_params(z)
            bz = -torch.log2(m.prior.likelihood(z).clamp_min(1e-9)).sum()
        return yg, mu, ls, bz

    t0, ratios = time.time(), []
    for step in range(1, args.steps + 1):
        y = Y[torch.randint(0, Y.shape[0], (args.batch,))].float()
        y = y.flip(3) if random.random() < 0.5 else y
        yg, mu, ls, _ = hyper(y, torch.rand(args.batch) * (m.log_gain.shape[0] - 1))
        known, rest = net.mask(*y.shape[2:], True), net.mask(*y.shape[2:], False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mu2, ls2 = net(torch.round(yg - mu) * known, mu, ls)
        noisy = yg + torch.empty_like(yg).uniform_(-0.5, 0.5)
        new = (bits(noisy - mu2, ls2) * rest).sum()
        opt.zero_grad()
        (new / y.numel()).backward()
        opt.step()
        ratios.append(float(new.detach() / (bits(noisy - mu, ls) * rest).sum()))
        if step % 200 == 0:
            print(f"step {step}: conditioned bits / hyperprior-only {np.mean(ratios[-200:]):.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    net.eval()
    with torch.no_grad():
        for lv in (0.5, 2, 4, 6, 8, 10, 11):
            old = new = 0.0
            for k in range(YK.shape[0]):
                yg, mu, ls, bz = hyper(YK[k:k + 1], torch.tensor([lv]))
                known, rest = net.mask(*yg.shape[2:], True), net.mask(*yg.shape[2:], False)
                r = torch.round(yg - mu)
                mu2, ls2 = net(r * known, mu, ls)
                base = float(bz + (bits(r, ls) * known).sum())
                old += base + float((bits(r, ls) * rest).sum())
                new += base + float((bits(torch.round(yg - mu2), ls2) * rest).sum())
            print(f"level {lv}: {old / YK.shape[0] / 393216:.4f} -> {new / YK.shape[0] / 393216:.4f} bpp "
                  f"({100 * (new / old - 1):+.2f} %)", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["prep", "train"])
    ap.add_argument("--out", default="/tmp/ctx")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--per-image", type=int, default=6)
    ap.add_argument("--kind", default="D")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    (prep if args.what == "prep" else train)(args)


if __name__ == "__main__":
    main()
