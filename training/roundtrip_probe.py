"""Is hp2's top end limited by its size or by its training? An autoencoder probe on the CPU.

Without quantisation hp2's analysis -> synthesis round trip reaches only about 37 dB, which caps
its top qualities (model card). This probe trains the two transforms as a plain autoencoder
(MSE only, no quantisation, no rate; the top level's gain and inverse gain in between) from
hp2's weights and follows the held-out round-trip PSNR. If it climbs well past 37 dB quickly, the architecture has room and
the cap comes from the rate-distortion training (more training at high lambda would lift it);
if it stalls near where it starts, the transforms' capacity is what limits the top rates.

    python training/roundtrip_probe.py --minutes 25 --out training/runs/roundtrip.log
    python training/roundtrip_probe.py --minutes 16 --widen 320 --out training/runs/roundtrip-m320.log

Measured 2026-12-07 (2 cores): held-out round trip 36.71 dB at the start, 36.78 after 1,402 steps
(36.69 / 36.53 in between); with the latent widened to 320, 36.58 after 1,493 steps. It stalls:
the transforms' capacity at full and half resolution caps the top end (model card).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capacity_probe import logger, probe_data  # noqa: E402
from model import (Analysis, HyperpriorCodec, Synthesis, autocast, autocast_dtype, dims_of, load_weights,  # noqa: E402
                   widen_latent, widen_transforms)
from train import batch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def roundtrip(model, x, level=11.0):
    """g_s(g_a(x) * gain * inverse gain) at the top trained level, without quantisation."""
    gain, igain = model.gains(torch.full((x.shape[0],), level))
    return model.g_s(model.g_a(x) * (gain * igain).detach())


class Average:
    """Exponential moving average of the transforms' parameters (evaluated beside the raw ones:
    a batch-8 run's weights jitter by about 0.15 dB from one evaluation to the next)."""

    def __init__(self, model, decay):
        import copy
        self.decay, self.model = decay, copy.deepcopy(model)

    @torch.no_grad()
    def update(self, model):
        for a, p in zip(self.model.parameters(), model.parameters()):
            a.lerp_(p, 1 - self.decay)


@torch.no_grad()
def roundtrip_psnr(model, crops):
    model.eval()
    out = []
    for x in crops:
        xh = torch.round(roundtrip(model, x).clamp(0, 1) * 255)
        out.append(10 * math.log10(255 ** 2 / max(float(((xh - torch.round(x * 255)) ** 2).mean()), 1e-9)))
    model.train()
    return sum(out) / len(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--init", default=os.path.join(ROOT, "models", "hp2.weights.npz"))
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-every", type=float, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--widen", type=int, default=0, help="widen the latent to this many channels first")
    ap.add_argument("--width", type=int, default=0,
                    help="widen the analysis and synthesis to this many hidden channels first (model.widen_transforms)")
    ap.add_argument("--ema", type=float, default=0.0, help="also evaluate a moving average of the parameters")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = random.Random(0)
    sd, steps0, _ = load_weights(args.init)
    if args.widen:
        sd, _ = widen_latent(sd, args.widen)
    model = HyperpriorCodec(*dims_of(sd))
    model.load_state_dict(sd)
    if args.width:
        wide, _ = widen_transforms(sd, args.width)
        M = dims_of(sd)[1]
        model.g_a, model.g_s = Analysis(args.width, M), Synthesis(args.width, M)
        for name in ("g_a", "g_s"):
            getattr(model, name).load_state_dict({k[len(name) + 1:]: v for k, v in wide.items()
                                                  if k.startswith(name + ".")})
    avg = Average(model, args.ema) if args.ema else None
    params = list(model.g_a.parameters()) + list(model.g_s.parameters())
    crops, images = probe_data(args.data)
    say = logger(args.out)

    say(f"round-trip probe from {args.init} ({steps0} steps), latent {dims_of(sd)[1]}, "
        f"transforms {model.g_a[0].weight.shape[0]} wide{f', EMA {args.ema}' if avg else ''}: {len(images)} training photos, {len(crops)} held out, "
        f"batch {args.batch}, lr {args.lr}")
    say(f"eval step 0: round trip {roundtrip_psnr(model, crops):.3f} dB")
    opt = torch.optim.Adam(params, lr=args.lr)
    dtype = autocast_dtype("auto")
    t0 = last = time.time()
    step, acc = 0, 0.0
    while time.time() - t0 < args.minutes * 60:
        x = batch(images, args.batch, 256, rng)
        with autocast(dtype):
            xh = roundtrip(model, x).float()
        loss = ((xh - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if avg:
            avg.update(model)
        step += 1
        acc += loss.item()
        if step % 50 == 0:
            say(f"step {step} train {10 * math.log10(1 / (acc / 50)):.2f} dB ({(time.time() - t0) / step:.2f} s/step)")
            acc = 0.0
        if time.time() - last > args.eval_every * 60:
            last = time.time()
            say(f"eval step {step}: round trip {roundtrip_psnr(model, crops):.3f} dB"
                + (f", average {roundtrip_psnr(avg.model, crops):.3f} dB" if avg else ""))
    say(f"eval final step {step}: round trip {roundtrip_psnr(model, crops):.3f} dB"
        + (f", average {roundtrip_psnr(avg.model, crops):.3f} dB" if avg else ""))


if __name__ == "__main__":
    main()
