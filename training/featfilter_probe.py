"""Probe: would the post-filter gain from seeing the synthesis's last hidden features, and from
training crops aligned with the synthesis's 16-pixel grid?

The shipped post-filter sees only the decoded RGB image. The synthesis's last layer is a linear
3x3 convolution from N = 96 channels at half resolution to 12 (then a pixel shuffle), so the
RGB image is a projection of much richer features. This probe computes, for training crops at
random qualities, with the shipped hp2 in float (torch):

    the decoded image (rounded to 8 bits, as the codec writes it), the synthesis's last hidden
    features (96 channels at half resolution, float16) and the original,

then trains, side by side (one thread each), variants of the shipped two-scale filter:

    base   the shipped filter, trained on as it was (random crop offsets)
    align  the same with crop offsets on the 16-pixel latent grid (as at decode time, where the
           image starts on the grid)
    feat   align, plus a 1x1 convolution from the features into the first layer (zero at start,
           so it starts as the shipped filter)

    python training/featfilter_probe.py prep  --out /tmp/ff --crops 3000
    python training/featfilter_probe.py train --out /tmp/ff --variant feat --seconds 1200

Every 10th crop is held out; the held-out gain (dB, per-crop PSNR averaged, against the
unfiltered decoded crop) is the measure. Kodak is never used.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from context_probe import shipped_model  # noqa: E402
from postfilter import PostFilterUNet  # noqa: E402
from refine_graph import postfilter_module  # noqa: E402
from train import load_images  # noqa: E402  (refuses Kodak)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def prep(args):
    torch.set_num_threads(args.threads)
    m = shipped_model()
    levels = 12  # hp2's trained levels; quality 1..100 spans them linearly
    rng = random.Random(args.seed)
    imgs = [im for im in load_images(args.data) if min(im.shape[:2]) >= args.size]
    n, s = args.crops, args.size
    orig = np.empty((n, s, s, 3), np.uint8)
    dec = np.empty_like(orig)
    qs = np.empty(n, np.float32)
    feat = np.lib.format.open_memmap(os.path.join(args.out, "feat.npy"), "w+", np.float16, (n, 96, s // 2, s // 2))
    t0 = time.time()
    with torch.no_grad():
        for i0 in range(0, n, 8):
            idx = range(i0, min(n, i0 + 8))
            lv = []
            for i in idx:
                im = imgs[rng.randrange(len(imgs))]
                h, w, _ = im.shape
                y, x = rng.randrange(h - s + 1), rng.randrange(w - s + 1)
                orig[i] = im[y:y + s, x:x + s]
                qs[i] = round(rng.uniform(1, 100), 2)
                lv.append((qs[i] - 1) / 99 * (levels - 1))
            x = torch.from_numpy(orig[i0:i0 + len(idx)]).permute(0, 3, 1, 2).float() / 255
            f, _ = m.code_hard(m.g_a(x), torch.tensor(lv, dtype=torch.float32))
            for layer in list(m.g_s)[:-1]:
                f = layer(f)
            xh = m.g_s[-1](f)
            dec[i0:i0 + len(idx)] = (xh.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
            feat[i0:i0 + len(idx)] = f.half().numpy()
            if i0 % 400 == 0:
                print(f"{i0}/{n} {time.time() - t0:.0f}s", flush=True)
    feat.flush()
    np.savez(os.path.join(args.out, "pairs.npz"), orig=orig, dec=dec, q=qs)
    print(f"done: {n} crops in {time.time() - t0:.0f}s")


class FeatFilter(nn.Module):
    """PostFilterUNet whose first layer also sees the synthesis features through a 1x1 conv."""

    def __init__(self, base: PostFilterUNet, nfeat=96):
        super().__init__()
        self.base = base
        self.feat = nn.Conv2d(nfeat, base.ch, 1, bias=False)
        nn.init.zeros_(self.feat.weight)

    def forward(self, x, q, f):
        return self.base(x, q, extra=self.feat(f))


def train(args):
    torch.set_num_threads(args.threads)
    d = np.load(os.path.join(args.out, "pairs.npz"))
    orig, dec, qs = d["orig"], d["dec"], d["q"]
    feat = np.load(os.path.join(args.out, "feat.npy"), mmap_mode="r") if args.variant == "feat" else None
    n = len(qs)
    held = np.arange(n) % 10 == 0
    tr = np.nonzero(~held)[0]
    small = postfilter_module(os.path.join(ROOT, "models", "hp2", "postfilter.onnx"))
    net = PostFilterUNet(small.ch, small.ch2, small.blocks)
    net.init_from_unet(small)
    if feat is not None:
        net = FeatFilter(net)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    s, S = args.crop, orig.shape[1]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255  # noqa: E731

    def run(idx, ys, xs, size):
        o = np.stack([orig[i, y:y + size, x:x + size] for i, y, x in zip(idx, ys, xs)])
        r = np.stack([dec[i, y:y + size, x:x + size] for i, y, x in zip(idx, ys, xs)])
        x, o, q = t(r), t(o), torch.from_numpy(qs[idx] / 100)
        if feat is None:
            return x, o, net(x, q)
        f = torch.from_numpy(np.stack([feat[i, :, y // 2:(y + size) // 2, x_ // 2:(x_ + size) // 2]
                                       for i, y, x_ in zip(idx, ys, xs)]).astype(np.float32))
        return x, o, net(x, q, f)

    def held_out():
        idx = np.nonzero(held)[0][:args.held_out]
        tot0 = tot1 = 0.0
        with torch.no_grad():
            for k in range(0, len(idx), 16):
                j = idx[k:k + 16]
                z = np.zeros(len(j), int)
                x, o, y = run(j, z, z, S)
                tot0 += (-10 * torch.log10(((x - o) ** 2).mean((1, 2, 3)))).sum().item()
                tot1 += (-10 * torch.log10(((y.clamp(0, 1) - o) ** 2).mean((1, 2, 3)))).sum().item()
        return (tot1 - tot0) / len(idx)

    print(f"{args.variant}: held-out gain at start {held_out():+.4f} dB", flush=True)
    grid = 1 if args.variant == "base" else 16
    t0, step = time.time(), 0
    while time.time() - t0 < args.seconds:
        frac = (time.time() - t0) / args.seconds
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.5 * (1 + np.cos(np.pi * frac)))
        idx = rng.choice(tr, args.batch)
        ys = rng.integers(0, (S - s) // grid + 1, len(idx)) * grid
        xs = rng.integers(0, (S - s) // grid + 1, len(idx)) * grid
        _, o, y = run(idx, ys, xs, s)
        loss = (10 / np.log(10)) * torch.log(((y - o) ** 2).mean((1, 2, 3)).clamp_min(1e-6)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            print(f"step {step} loss {loss.item():.4f} held-out gain {held_out():+.4f} dB "
                  f"({(time.time() - t0) / step:.3f} s/step)", flush=True)
            torch.save(net.state_dict(), os.path.join(args.out, f"{args.variant}.pt"))
    torch.save(net.state_dict(), os.path.join(args.out, f"{args.variant}.pt"))
    print(f"done: {step} steps, held-out gain {held_out():+.4f} dB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["prep", "train"])
    ap.add_argument("--out", default="/tmp/ff")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--crops", type=int, default=3000)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seconds", type=float, default=1200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--held-out", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--variant", choices=["base", "align", "feat"], default="feat")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"prep": prep, "train": train}[args.cmd](args)


if __name__ == "__main__":
    main()
