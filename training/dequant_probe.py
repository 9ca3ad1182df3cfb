"""Does a learned dequantisation of the latents help the decoder? A CPU probe on frozen hp2.

The decoder reconstructs each latent at the centre of its quantisation cell, r + mu (gained
units). The best reconstruction is the conditional mean of the latent given everything the
decoder knows (the neighbouring residuals, the hyperprior's mean and scale), which can sit
anywhere in the cell. A small network at the latent resolution (1/16) predicts an offset
delta = 0.5 * tanh(.) inside the cell from (r, mu, ln sigma); the synthesis then decodes
r + mu + delta. It changes no file: only what a decoder makes of one (like the post-filter).
Everything of hp2 stays frozen; the loss is the synthesis output's MSE. The last layer starts
at zero, so training starts from hp2's own decoder.

Evaluation: held-out training photos (every 32nd; never Kodak), levels 1, 4, 7, 10, 11, PSNR of
the 8-bit decode without and with delta, each also after the shipped float post-filter
(onnxruntime), since the default decoder filters.

    python training/dequant_probe.py --minutes 40 --out training/runs/dequant.log

Measured 2026-12-07 (2 cores, stopped after 1,050 steps, the training gain level at +0.02 dB
since step 150): held-out +0.002 ... +0.024 dB without the post-filter, -0.004 ... -0.030 dB
after it. Not worth a decoder stage (model card, "Limits and next steps").
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capacity_probe import logger, probe_data  # noqa: E402
from model import HyperpriorCodec, autocast, autocast_dtype, dims_of, load_weights  # noqa: E402
from train import batch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Dequant(nn.Module):
    def __init__(self, M=192, hidden=128):
        super().__init__()
        self.a = nn.Conv2d(3 * M, hidden, 1)
        self.b = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.c = nn.Conv2d(hidden, M, 1)
        nn.init.zeros_(self.c.weight)
        nn.init.zeros_(self.c.bias)

    def forward(self, r, mu, log_sigma):
        h = F.relu(self.a(torch.cat([r, mu, log_sigma], 1)))
        h = F.relu(self.b(h))
        return 0.5 * torch.tanh(self.c(h))


@torch.no_grad()
def quantised(model, x, level):
    """(r, mu, ln sigma, inverse gain) of hp2's hard-rounded latents for x at the levels."""
    return model.quantise(model.g_a(x).float(), level)[:4]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--init", default=os.path.join(ROOT, "models", "hp2.weights.npz"))
    ap.add_argument("--postfilter", default=os.path.join(ROOT, "models", "hp2", "postfilter.onnx"))
    ap.add_argument("--minutes", type=float, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--eval-every", type=float, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    pf = ort.InferenceSession(args.postfilter, so, providers=["CPUExecutionProvider"])

    sd, _, _ = load_weights(args.init)
    N, M = dims_of(sd)
    model = HyperpriorCodec(N, M)
    model.load_state_dict(sd)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    net = Dequant(M, args.hidden)

    crops, images = probe_data(args.data)
    say = logger(args.out)

    levels = [1.0, 4.0, 7.0, 10.0, 11.0]
    cache = [[quantised(model, x, torch.tensor([lv])) for lv in levels] for x in crops]

    def psnr(a, b):
        return 10 * math.log10(255 ** 2 / max(float(((a - b) ** 2).mean()), 1e-9))

    @torch.no_grad()
    def evaluate(step):
        net.eval()
        for j, lv in enumerate(levels):
            q = lv / 11 * 99 + 1
            res = np.zeros(4)
            for i, x in enumerate(crops):
                r, mu, ls, ig = cache[i][j]
                ref = torch.round(x * 255)
                outs = []
                for d in (torch.zeros_like(r), net(r, mu, ls)):
                    xh = model.g_s((r + mu + d) * ig).float().clamp(0, 1)
                    outs.append(psnr(torch.round(xh * 255), ref))
                    f = pf.run(None, {"x": xh.numpy().astype(np.float32), "q": np.array([q / 100], np.float32)})[0]
                    outs.append(psnr(np.round(np.clip(f, 0, 1) * 255), ref.numpy()))
                res += outs
            res /= len(crops)
            say(f"eval step {step} level {lv:g} (q{q:.0f}): plain {res[0]:.3f} dB, delta {res[2] - res[0]:+.4f}; "
                f"post-filtered {res[1]:.3f} dB, delta {res[3] - res[1]:+.4f}")
        net.train()

    say(f"dequantisation probe: hidden {args.hidden}, {sum(p.numel() for p in net.parameters())} parameters, "
        f"{len(images)} training photos, {len(crops)} held out, batch {args.batch}, lr {args.lr}")
    evaluate(0)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    dtype = autocast_dtype("auto")
    t0 = last = time.time()
    step, acc = 0, [0.0, 0.0]
    while time.time() - t0 < args.minutes * 60:
        x = batch(images, args.batch, 256, rng)
        level = torch.rand(args.batch) * 11
        r, mu, ls, ig = quantised(model, x, level)
        d = net(r, mu, ls)
        with autocast(dtype):
            xh = model.g_s((r + mu + d) * ig).float()
        loss = ((xh - x) ** 2).mean((1, 2, 3))
        with torch.no_grad():
            with autocast(dtype):
                x0 = model.g_s((r + mu) * ig).float()
            base = ((x0 - x) ** 2).mean((1, 2, 3))
        # per-crop dB gain, so that every level counts alike
        gain = 10 * torch.log10(base / loss)
        opt.zero_grad(set_to_none=True)
        (-gain.mean()).backward()
        opt.step()
        step += 1
        acc[0] += gain.mean().item()
        acc[1] += 1
        if step % 50 == 0:
            say(f"step {step} train gain {acc[0]/acc[1]:+.4f} dB ({(time.time()-t0)/step:.2f} s/step)")
            acc = [0.0, 0.0]
        if time.time() - last > args.eval_every * 60:
            last = time.time()
            evaluate(step)
    evaluate(step)
    torch.save(net.state_dict(), os.path.splitext(args.out)[0] + ".pt")


if __name__ == "__main__":
    main()
