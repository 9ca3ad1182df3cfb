"""Distil the shipped hp model into the faster `lite` architecture.

    python training/distill.py --seconds 3600 --out training/runs/lite-distilled.npz
    python training/train.py --arch lite --init training/runs/lite-distilled.npz --ckpt training/runs/lite.pt

`lite` shares the hp model's entropy model, gains, hyper transforms and low-resolution layers and
replaces its high-resolution layers with thinner ones (training/model.py). Trained with the
rate-distortion loss from those shared layers alone, the new layers need many steps; here they
learn from the teacher instead, with everything they share frozen:
  * analysis: the first four lite layers regress the teacher's activations after its first four
    layers (same shape: N channels at 1/4 resolution), so the lite latents approach the hp ones;
  * synthesis: fed the teacher's quantised latents at a random rate level, the lite synthesis is
    trained towards the original crop and the teacher's reconstruction.
The result is a lite weights file to fine-tune with train.py's rate-distortion loss. Never reads
Kodak (the training images are loaded by train.py's loader).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import LAMBDAS, HyperpriorCodec, autocast, autocast_dtype, load_weights  # noqa: E402
from train import ROOT, batch, batch_on_device, load_images, save_weights  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--teacher", default=None, help="hp weights (default: the shipped default model's)")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="auto: bf16 autocast on GPUs and on CPUs with native bf16 instructions, else fp32")
    ap.add_argument("--init", default=None, help="optional lite weights/checkpoint to start the new layers from")
    ap.add_argument("--out", required=True, help="lite weights (npz) written every --every seconds and at the end")
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=float, default=300)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    torch.set_num_threads(args.threads)
    if args.teacher is None:
        name = open(os.path.join(ROOT, "models", "DEFAULT")).read().strip()
        args.teacher = os.path.join(ROOT, "models", f"{name}.weights.npz")
    tsd, tsteps, tarch = load_weights(args.teacher)
    if tarch != "hp":
        raise SystemExit(f"the teacher must be an 'hp' model, {args.teacher} holds {tarch!r}")
    teacher = HyperpriorCodec(96, 192, arch="hp")
    teacher.load_state_dict(tsd)
    teacher.eval().requires_grad_(False)
    student = HyperpriorCodec(96, 192, arch="lite")
    own = student.state_dict()
    shared = {k: v for k, v in tsd.items() if k in own and v.shape == own[k].shape}
    start = {}
    if args.init:
        if args.init.endswith(".pt"):
            start = torch.load(args.init, map_location="cpu")["model"]
        else:
            start, _, iarch = load_weights(args.init)
            if iarch != "lite":
                raise SystemExit(f"--init must hold a lite model, {args.init} holds {iarch!r}")
        start = {k: v for k, v in start.items() if k in own and v.shape == own[k].shape and k not in shared}
    student.load_state_dict({**start, **shared}, strict=False)
    # what the student learns: the tensors it does not share with the teacher
    new = [n for n in own if n not in shared]
    for n, p in student.named_parameters():
        p.requires_grad_(n in new)
    params = [p for p in student.parameters() if p.requires_grad]
    print(f"teacher {args.teacher} ({tsteps} steps); student shares {len(shared)} tensors, learns {len(new)} "
          f"({sum(p.numel() for p in params) / 1e6:.2f} M parameters); {len(start)} from {args.init}", flush=True)
    teacher.to(dev)
    student.to(dev).train()
    opt = torch.optim.Adam(params, lr=args.lr)
    images = load_images(args.data)
    if dev.type == "cuda":
        images = [torch.from_numpy(im.copy()).to(dev) for im in images]
    rng = random.Random(4321)
    # conv, GDN, conv, GDN: N channels at 1/4 resolution in both
    t_an = torch.nn.Sequential(*list(teacher.g_a)[:4])
    s_an = torch.nn.Sequential(*list(student.g_a)[:4])
    amp = autocast_dtype(args.precision, dev.type)
    t0 = last = time.time()
    step, acc = 0, [0.0, 0.0, 0.0]
    while time.time() - t0 < args.seconds:
        if time.time() - t0 > 0.85 * args.seconds:
            for g in opt.param_groups:
                g["lr"] = args.lr * 0.1
        x = batch_on_device(images, args.batch, args.size, rng) if dev.type == "cuda" else \
            batch(images, args.batch, args.size, rng)
        x = x.to(dev)
        level = torch.rand(args.batch, device=dev) * (len(LAMBDAS) - 1)
        with torch.no_grad(), autocast(amp, dev.type):
            # teacher: activations at 1/4 resolution and the quantised latents of this level
            feat_t = t_an(x).float()
            gain, igain = teacher.gains(level)
            y = teacher.g_a(x).float() * gain
            z_hat = torch.round(teacher.h_a(y).float())
            mu, _ = teacher.hyper_params(z_hat)
            y_hat = (torch.round(y - mu) + mu) * igain
            x_t = teacher.g_s(y_hat).float()
        with autocast(amp, dev.type):
            feat_s = s_an(x).float()
            x_s = student.g_s(y_hat).float()
        f_loss = F.mse_loss(feat_s, feat_t) / feat_t.pow(2).mean().clamp_min(1e-6)
        p_loss = F.mse_loss(x_s, x)
        m_loss = F.mse_loss(x_s, x_t)
        loss = f_loss + 100.0 * (p_loss + 0.5 * m_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        acc = [acc[0] + f_loss.item(), acc[1] + p_loss.item(), acc[2] + m_loss.item()]
        if step % 100 == 0:
            n = 100
            print(f"step {step} feature {acc[0] / n:.4f} psnr(x) {10 * math.log10(1 / max(acc[1] / n, 1e-10)):.2f} "
                  f"psnr(teacher) {10 * math.log10(1 / max(acc[2] / n, 1e-10)):.2f} "
                  f"({(time.time() - t0) / step:.3f} s/step)", flush=True)
            acc = [0.0, 0.0, 0.0]
        if time.time() - last > args.every:
            save_weights(student, step, args.out)
            last = time.time()
    save_weights(student, step, args.out)
    print(f"done: {step} distillation steps -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
