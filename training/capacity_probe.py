"""Does more latent capacity help the high rates? A side-by-side CPU probe.

hp2 tops out at 37.4 dB / 1.81 bpp on Kodak, 2 dB below published mean-scale models of twice
its width at that rate, and at its top level 185 of its 192 latent channels carry bits. Widening
the latent (M) is nearly free at decode time (only the 1/16-resolution layers grow), so this
probe asks whether it pays, before a lent GPU trains it in earnest:

  base : hp2 fine-tuned at the top gain levels only
  M<k> : hp2 widened to k latent channels, function-preserving at the start (new analysis
         rows tiny, so the new latents round to zero; new synthesis columns small; new hyper
         outputs zero mean and a small scale; new hyper-analysis columns zero), fine-tuned
         the same way, new elements at a higher learning rate

Both see the same crops and levels (same seed). Evaluation: held-out training photos (every
32nd, never trained on by either run; never Kodak), hard rounding, bits from the model's own
likelihoods, PSNR of the synthesis output (no post-filter).

    python training/capacity_probe.py --variant base --minutes 55 --out training/runs/cap-base.log &
    python training/capacity_probe.py --variant M320 --minutes 55 --out training/runs/cap-M320.log &

Measured 2026-12-07 (one core each, 55 min): no gain from the wider latent within ~2,400 steps
(held-out dB at equal rate against step 0: plain +0.001, M320 -0.099; both swing by +-0.15 dB
between evaluations). See the model card, "Limits and next steps".
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
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import (LAMBDAS, HyperpriorCodec, autocast, autocast_dtype, dims_of, image_bits, load_weights,  # noqa: E402
                   widen_latent)
from train import batch, lambdas_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def eval_crops(held, size=512):
    """Centre crops of the held-out photos (at most size, a multiple of 64 on a side), (1, 3, h, w)."""
    crops = []
    for f in held:
        a = np.asarray(Image.open(f).convert("RGB"))
        h, w = min(size, a.shape[0] // 64 * 64), min(size, a.shape[1] // 64 * 64)
        y0, x0 = (a.shape[0] - h) // 2, (a.shape[1] - w) // 2
        crops.append(torch.from_numpy(a[y0:y0 + h, x0:x0 + w].copy()).permute(2, 0, 1)[None].float() / 255)
    return crops


def probe_data(folder, min_size=256):
    """(held-out crops, training photos): every 32nd photo is held out for evaluation (eval_crops),
    the others, at least min_size on a side, are trained on. Kodak is never among either."""
    files = sorted(f for f in glob.glob(os.path.join(folder, "*.png")) + glob.glob(os.path.join(folder, "*.jpg"))
                   if "kodim" not in os.path.basename(f))
    held = set(files[::32])
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files if f not in held]
    return eval_crops(sorted(held)), [im for im in images if min(im.shape[:2]) >= min_size]


def logger(path):
    """A print that also appends to the log file at path."""
    log = open(path, "a", buffering=1)

    def say(s):
        print(s, flush=True)
        log.write(s + "\n")

    return say


@torch.no_grad()
def evaluate(model, crops, levels):
    model.eval()
    rows = []
    for lev in levels:
        bits = px = 0.0
        psnr = []
        for x in crops:
            y = model.g_a(x)
            y_hat, b = model.code_hard(y, torch.tensor([float(lev)]))
            x_hat = model.g_s(y_hat).clamp(0, 1)
            mse = float(((torch.round(x_hat * 255) - torch.round(x * 255)) ** 2).mean())
            psnr.append(10 * math.log10(255 ** 2 / max(mse, 1e-9)))
            bits += float(b.sum())
            px += x.shape[2] * x.shape[3]
        rows.append((lev, bits / px, sum(psnr) / len(psnr)))
    model.train()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="base", help="base, or M<k> (e.g. M320)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--init", default=os.path.join(ROOT, "models", "hp2.weights.npz"))
    ap.add_argument("--minutes", type=float, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5, help="learning rate of hp2's own parameters")
    ap.add_argument("--lr-new", type=float, default=2e-4, help="learning rate of the new elements")
    ap.add_argument("--levels", default="7,12", help="training levels, uniform in [lo, hi]")
    ap.add_argument("--eval-levels", default="8,10,11,12")
    ap.add_argument("--eval-every", type=float, default=10, help="minutes between evaluations")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True, help="log file")
    ap.add_argument("--save", default=None, help="weights npz written at the end")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)

    sd, steps0, _ = load_weights(args.init)
    masks = {}
    if args.variant != "base":
        sd, masks = widen_latent(sd, int(args.variant.lstrip("M")))
    N, M = dims_of(sd)
    model = HyperpriorCodec(N, M)
    model.load_state_dict(sd)
    model.train()

    crops, images = probe_data(args.data)
    lo, hi = (float(v) for v in args.levels.split(","))
    eval_levels = [float(v) for v in args.eval_levels.split(",")]
    say = logger(args.out)

    say(f"variant {args.variant} (M={M}), from {args.init} ({steps0} steps), {len(images)} training photos, "
        f"{len(crops)} held out, levels U[{lo},{hi}], lr {args.lr} (new {args.lr_new}), batch {args.batch}")
    for lev, bpp, psnr in evaluate(model, crops, eval_levels):
        say(f"eval step 0 level {lev:g}: {bpp:.4f} bpp {psnr:.3f} dB")

    named = dict(model.named_parameters())
    # one Adam at the high rate; each step's update to old elements is scaled down to --lr
    # (Adam's step is linear in the learning rate)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr_new if masks else args.lr)
    ratio = args.lr / args.lr_new
    scale = {n: (masks[n] + (1 - masks[n]) * ratio) for n in masks}
    dtype = autocast_dtype("auto")
    t0 = time.time()
    last_eval = t0
    step = 0
    acc = [0.0, 0.0, 0.0]
    while time.time() - t0 < args.minutes * 60:
        x = batch(images, args.batch, 256, rng)
        level = lo + torch.rand(args.batch) * (hi - lo)
        lam = lambdas_for(level)
        with autocast(dtype):
            x_hat, lik_y, lik_z = model(x, level)
        mse = ((x_hat.float() - x) ** 2).mean((1, 2, 3))
        bpp = image_bits(lik_y, lik_z) / (x.shape[2] * x.shape[3])
        loss = (lam * 255 ** 2 * mse + bpp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if masks:
            before = {n: named[n].detach().clone() for n in named}
        opt.step()
        if masks:
            with torch.no_grad():
                for n, p in named.items():
                    s = scale.get(n, ratio)
                    p.copy_(before[n] + (p - before[n]) * s)
        step += 1
        acc[0] += loss.item()
        acc[1] += mse.mean().item()
        acc[2] += bpp.mean().item()
        if step % 50 == 0:
            say(f"step {step} loss {acc[0]/50:.4f} psnr~{10*math.log10(1/(acc[1]/50)):.2f} bpp {acc[2]/50:.4f} "
                f"({(time.time()-t0)/step:.2f} s/step)")
            acc = [0.0, 0.0, 0.0]
        if time.time() - last_eval > args.eval_every * 60:
            last_eval = time.time()
            for lev, bpp_e, psnr in evaluate(model, crops, eval_levels):
                say(f"eval step {step} level {lev:g}: {bpp_e:.4f} bpp {psnr:.3f} dB")
    for lev, bpp_e, psnr in evaluate(model, crops, eval_levels):
        say(f"eval final step {step} level {lev:g}: {bpp_e:.4f} bpp {psnr:.3f} dB")
    if args.save:
        w = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        w["__total_steps__"] = np.array(steps0 + step)
        w["__arch__"] = np.array("hp")
        w["__lambdas__"] = np.array(LAMBDAS, np.float64)
        np.savez_compressed(args.save, **w)


if __name__ == "__main__":
    main()
