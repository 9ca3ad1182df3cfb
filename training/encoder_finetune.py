"""Train a faster analysis transform (encoder) for the shipped model, everything else frozen.

    python training/encoder_finetune.py --seconds 3600 --out training/runs/fast-encoder.npz

Only the analysis transform g_a changes: the hyper transforms, entropy model, gains, coding
tables and synthesis stay the shipped model's, so the files a fast encoder writes carry the
shipped model id and decode with the shipped bundle. The candidate is the `lite` analysis
(training/model.py: 2N/3 channels at 1/2 resolution, a 3x3 kernel into 1/4; about half the
encoder time), started from --init (a lite weights file, e.g. training/distill.py's output),
and trained with the rate-distortion loss of train.py through the frozen model (gradients
flow through the synthesis and hyper transforms to the encoder only). The output is a weights
npz of the shipped model with g_a replaced (arch 'hp+lite-encoder'). Never reads Kodak.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import LAMBDAS, Analysis, HyperpriorCodec, image_bits, load_weights  # noqa: E402
from train import ROOT, batch, lambdas_for, load_images  # noqa: E402


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
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.model is None:
        name = open(os.path.join(ROOT, "models", "DEFAULT")).read().strip()
        args.model = os.path.join(ROOT, "models", f"{name}.weights.npz")
    sd, steps, arch = load_weights(args.model)
    model = HyperpriorCodec(96, 192, arch="hp")
    model.load_state_dict(sd)
    model.requires_grad_(False)
    enc = Analysis(96, 192, "lite")
    with np.load(args.init) as w:
        enc.load_state_dict({k[4:]: torch.from_numpy(w[k].astype(np.float32)) for k in w.files if k.startswith("g_a.")})
    model.g_a = enc.requires_grad_(True)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(enc.parameters(), lr=args.lr)
    images = load_images(args.data)
    rng = random.Random(4321)
    torch.manual_seed(4321)
    levels = len(LAMBDAS) - 1
    t0 = last = time.time()
    step, acc = 0, [0.0, 0.0, 0.0, 0]

    def save():
        w = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        w["__total_steps__"] = np.array(steps)
        w["__arch__"] = np.array("hp+lite-encoder")
        w["__lambdas__"] = np.array(LAMBDAS, np.float64)
        tmp = args.out + ".tmp.npz"
        np.savez_compressed(tmp, **w)
        os.replace(tmp, args.out)

    while time.time() - t0 < args.seconds:
        x = batch(images, args.batch, args.size, rng).contiguous(memory_format=torch.channels_last)
        level = torch.rand(args.batch) * levels
        with torch.autocast("cpu", dtype=torch.bfloat16):
            x_hat, lik_y, lik_z = model(x, level)
        bpp = image_bits(lik_y, lik_z) / (args.size * args.size)
        mse = ((x_hat.float() - x) ** 2).mean((1, 2, 3))
        loss = (lambdas_for(level) * 255 ** 2 * mse + bpp).mean()
        if not math.isfinite(loss.item()):
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(enc.parameters(), 1.0)
        opt.step()
        step += 1
        acc[0] += loss.detach().item(); acc[1] += float(mse.mean()); acc[2] += float(bpp.mean()); acc[3] += 1
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
