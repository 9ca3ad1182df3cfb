"""Train an analysis transform (encoder) for the shipped model, everything else frozen.

    python training/encoder_finetune.py --seconds 3600 --out training/runs/fast-encoder.npz
    # the full-size encoder trained on against the shipped synthesis *and post-filter*
    python training/encoder_finetune.py --arch hp --postfilter models/hp2/postfilter.onnx \
        --lr 2e-5 --ema 0.999 --seconds 3600 --out /tmp/enc/tuned.npz

Only the analysis transform g_a changes: the hyper transforms, entropy model, gains, coding
tables and synthesis stay the shipped model's, so the files a fast encoder writes carry the
shipped model id and decode with the shipped bundle. The candidate is the `lite` analysis
(training/model.py: 2N/3 channels at 1/2 resolution, a 3x3 kernel into 1/4; about half the
encoder time), started from --init (a lite weights file, e.g. training/distill.py's output),
and trained with the rate-distortion loss of train.py through the frozen model (gradients
flow through the synthesis and hyper transforms to the encoder only). The output is a weights
npz of the shipped model with g_a replaced (arch 'hp+lite-encoder'). Never reads Kodak.

--arch hp starts from the shipped analysis itself; --postfilter puts the shipped (frozen)
post-filter between the synthesis and the distortion, so the encoder learns latents for the
decoder as it ships. --eval-every measures a fixed held-out set of training crops (drawn with
another seed) with hard rounding and the model's own likelihoods, at six levels, against the
starting encoder.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import (LAMBDAS, Analysis, HyperpriorCodec, autocast, autocast_dtype, dims_of, image_bits,  # noqa: E402
                   load_weights)
from train import EMA, ROOT, batch, lambdas_for, load_images  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--model", default=None, help="hp weights to keep frozen (default: the shipped default's)")
    ap.add_argument("--init", default=os.path.join(ROOT, "training", "runs", "lite-distilled.npz"),
                    help="weights whose g_a.* (lite shapes) start the new encoder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=float, default=300)
    ap.add_argument("--arch", choices=["lite", "hp"], default="lite",
                    help="lite: the fast encoder from --init; hp: the shipped analysis itself")
    ap.add_argument("--postfilter", default=None, help="a post-filter graph (postfilter.onnx) run, frozen, "
                    "on the synthesis output before the distortion")
    ap.add_argument("--max-level", type=float, default=None,
                    help="levels drawn in [0, this] (default: the frozen model's top trained level; hp2: 11)")
    ap.add_argument("--ema", type=float, default=0.0, help="save a moving average of the encoder's parameters")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between held-out measurements (0: none)")
    ap.add_argument("--eval-crops", type=int, default=24)
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: bf16 autocast where the CPU has native bf16 instructions, else fp32")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is None:
        name = open(os.path.join(ROOT, "models", "DEFAULT")).read().strip()
        args.model = os.path.join(ROOT, "models", f"{name}.weights.npz")
    sd, steps, arch = load_weights(args.model)
    if args.max_level is None:  # the levels the weights were trained with (load_weights may add one)
        with np.load(args.model) as w:
            args.max_level = float(len(w["__lambdas__"]) - 1 if "__lambdas__" in w.files else 7)
    N, M = dims_of(sd)
    model = HyperpriorCodec(N, M, arch="hp")
    model.load_state_dict(sd)
    model.requires_grad_(False)
    enc = Analysis(N, M, args.arch)
    if args.arch == "hp":
        enc.load_state_dict(model.g_a.state_dict())
    elif args.init.endswith(".onnx"):  # a shipped lite encoder (e.g. an older bundle's encoder_fast.onnx)
        import onnx
        from onnx import numpy_helper
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(args.init).graph.initializer}
        enc.load_state_dict({k: torch.from_numpy(np.array(inits[k], np.float32)) for k in enc.state_dict()})
    else:
        with np.load(args.init) as w:
            enc.load_state_dict({k[4:]: torch.from_numpy(w[k].astype(np.float32))
                                 for k in w.files if k.startswith("g_a.")})
    model.g_a = enc.requires_grad_(True)
    model = model.to(memory_format=torch.channels_last)
    model.eval()  # the frozen parts' GDN clamps as exported
    enc.train()  # the trained encoder's GDN bounds pass gradients (LowerBound)
    filt = None
    if args.postfilter:
        from refine_graph import postfilter_module
        filt = postfilter_module(args.postfilter).requires_grad_(False)
    opt = torch.optim.Adam(enc.parameters(), lr=args.lr)
    ema = EMA(model, args.ema) if args.ema > 0 else None  # the frozen parameters average to themselves
    images = load_images(args.data)
    rng = random.Random(4321)
    torch.manual_seed(4321)
    levels = args.max_level
    amp = autocast_dtype(args.precision)

    def decoded(x_hat, level):
        if filt is None:
            return x_hat.float()
        q = (1 + level / args.max_level * 99) / 100  # the quality a level stands for, as the codec maps it
        with torch.autocast("cpu", enabled=False):
            return filt(x_hat.float().clamp(0, 1), q.float())

    held = batch(images, args.eval_crops, args.size, random.Random(97531)) if args.eval_every else None

    def evaluate(m):
        """Held-out rate-distortion loss of model m with hard rounding (as the codec codes): mean
        over crops and six levels, with its bpp and PSNR."""
        tot = [0.0, 0.0, 0.0]
        with torch.no_grad():
            for lv in np.linspace(0, args.max_level, 6):
                level = torch.full((len(held),), float(lv))
                y_hat, bits = m.code_hard(m.g_a(held).float(), level)
                bpp = bits / (args.size * args.size)
                x = decoded(m.g_s(y_hat), level)
                mse = ((x.clamp(0, 1) - held) ** 2).mean((1, 2, 3))
                loss = lambdas_for(level) * 255 ** 2 * mse + bpp
                tot[0] += loss.mean().item() / 6
                tot[1] += bpp.mean().item() / 6
                tot[2] += (-10 * torch.log10(mse)).mean().item() / 6
        return tot

    def averaged():
        m = copy.deepcopy(model)
        m.load_state_dict(ema.state_dict(model))
        return m

    ev0 = evaluate(model) if held is not None else None
    if ev0:
        print(f"held-out at start: loss {ev0[0]:.5f} bpp {ev0[1]:.4f} psnr {ev0[2]:.3f}", flush=True)
    t0 = last = time.time()
    step, acc = 0, [0.0, 0.0, 0.0, 0]

    def save():
        sd = ema.state_dict(model) if ema is not None else model.state_dict()
        w = {k: v.detach().float().numpy() for k, v in sd.items()}
        w["__total_steps__"] = np.array(steps)
        w["__arch__"] = np.array("hp+lite-encoder" if args.arch == "lite" else "hp")
        w["__lambdas__"] = np.array(LAMBDAS, np.float64)
        tmp = args.out + ".tmp.npz"
        np.savez_compressed(tmp, **w)
        os.replace(tmp, args.out)

    while time.time() - t0 < args.seconds:
        x = batch(images, args.batch, args.size, rng).contiguous(memory_format=torch.channels_last)
        level = torch.rand(args.batch) * levels
        with autocast(amp):
            x_hat, lik_y, lik_z = model(x, level)
        bpp = image_bits(lik_y, lik_z) / (args.size * args.size)
        mse = ((decoded(x_hat, level) - x) ** 2).mean((1, 2, 3))
        loss = (lambdas_for(level) * 255 ** 2 * mse + bpp).mean()
        if not math.isfinite(loss.item()):
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        if args.eval_every and step % args.eval_every == 0:
            for tag, m in [("raw", model)] + ([("avg", averaged())] if ema is not None else []):
                ev = evaluate(m)
                print(f"step {step} held-out ({tag}): loss {ev[0]:.5f} ({100 * (ev[0] / ev0[0] - 1):+.3f} %) "
                      f"bpp {ev[1]:.4f} psnr {ev[2]:.3f}", flush=True)
        acc[0] += loss.item(); acc[1] += float(mse.detach().mean()); acc[2] += float(bpp.detach().mean()); acc[3] += 1
        if step % 50 == 0:
            n = acc[3]
            print(f"step {step} loss {acc[0]/n:.4f} bpp {acc[2]/n:.4f} psnr~{10*math.log10(1/max(acc[1]/n, 1e-10)):.2f} "
                  f"({(time.time()-t0)/step:.3f}s/step)", flush=True)
            acc = [0.0, 0.0, 0.0, 0]
        if time.time() - last > args.every:
            save()
            last = time.time()
    save()
    print(f"done after {step} steps", flush=True)


if __name__ == "__main__":
    main()
