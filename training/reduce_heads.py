"""Reduced-size decoding: small output heads on the synthesis transform's inner features.

A thumbnail of a large photo does not need the synthesis's full-resolution layers, which are
most of the decoding time: its first two upsampling stages give features at 1/8 and 1/4 of the
image's resolution (96 channels each), and a head of two 3x3 convolutions turns them into the
image reduced by 8, 4 or 2 (the box average of each 8x8, 4x4 or 2x2 block, as
``PIL.Image.reduce``). Nothing in the file changes; the model's synthesis stays frozen.

Training data come from fastcodec itself: random 256x256 crops of the training photos (never
Kodak) compressed at random qualities, their latents decoded as the codec does and run through
the first stages of the bit-exact synthesis, so the heads see exactly the features that
decoding computes.

    python training/reduce_heads.py prep  --out /tmp/rh --crops 3000
    python training/reduce_heads.py train --out /tmp/rh --factor 4 --seconds 900
    python training/reduce_heads.py eval  --out /tmp/rh --factor 4      # held-out dB against full decode + reduce
    python training/reduce_heads.py export --out /tmp/rh --bundle hp2 --heads 8=/tmp/rh/head8_ch128.pt
                                                                        # models/hp2/reduce.npz + model.json

Heads: factor 8 reads the 1/8 features, factors 4 and 2 the 1/4 features (factor 2 ends in a
pixel shuffle). Each head is conv 3x3 (96 -> ch) + ReLU + conv 3x3 (ch -> 3 f'), predicting the
box average in the synthesis's output scale (pixels / 255).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import load_images  # noqa: E402  (refuses Kodak)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# factor -> (number of synthesis operations that make its input features, pixel shuffle of the head)
STAGES = {8: (2, 1), 4: (4, 1), 2: (4, 2)}


def feature_nets(bundle: str):
    """Bit-exact executor networks of the first synthesis stages (1/8 and 1/4 features)."""
    from fastcodec import _bitexact as B, _core
    ops = B._chain_ops(B._Graph(os.path.join(ROOT, "models", bundle, "decoder.onnx")), "y", "x")
    return {k: _core.Net(list(ops[:k]), int(ops[0][1].shape[1])) for k in (2, 4)}


def prep(args):
    import fastcodec
    from fastcodec import _core
    codec = fastcodec.Codec(model=args.bundle, threads=2, postfilter=False)
    full = fastcodec.Codec(model=args.bundle, threads=2)
    nets = feature_nets(args.bundle)
    rng = random.Random(args.seed)
    imgs = [im for im in load_images(args.data) if min(im.shape[:2]) >= args.size]
    n, s = args.crops, args.size
    orig = np.empty((n, s, s, 3), np.uint8)
    dec = np.empty_like(orig)  # the whole decode as shipped (default decoders and post-filter)
    f8 = np.empty((n, 96, s // 8, s // 8), np.float16)
    f4 = np.empty((n, 96, s // 4, s // 4), np.float16)
    qs = np.empty(n, np.float32)
    t0 = time.time()
    for i in range(n):
        im = imgs[rng.randrange(len(imgs))]
        h, w, _ = im.shape
        y, x = rng.randrange(h - s + 1), rng.randrange(w - s + 1)
        crop = np.ascontiguousarray(im[y:y + s, x:x + s])
        q = round(rng.uniform(1, 100), 2)
        data = codec.compress(crop, quality=q)
        _, m, _, _, r, _, mu, _ = codec._decode_symbols(data, {}, None)
        y_hat = _core.dequantize_latent(r, np.ascontiguousarray(mu), m.igain_bitexact(q))
        f8[i] = nets[2].run(y_hat, 0.0, 2)[0]
        f4[i] = nets[4].run(y_hat, 0.0, 2)[0]
        orig[i], qs[i] = crop, q
        dec[i] = full.decompress(data)
        if i % 250 == 0:
            print(f"{i}/{n} {time.time() - t0:.0f}s", flush=True)
    np.savez(os.path.join(args.out, "data.npz"), orig=orig, dec=dec, f8=f8, f4=f4, q=qs)
    print(f"done {n} crops in {time.time() - t0:.0f}s", flush=True)


class Head(nn.Module):
    def __init__(self, factor: int, ch: int, k1: int = 3):
        super().__init__()
        self.shuffle = STAGES[factor][1]
        self.c1 = nn.Conv2d(96, ch, k1, padding=k1 // 2)
        self.c2 = nn.Conv2d(ch, 3 * self.shuffle ** 2, 3, padding=1)

    def forward(self, f):
        x = self.c2(F.relu(self.c1(f)))
        return F.pixel_shuffle(x, self.shuffle) if self.shuffle > 1 else x


def box(x: torch.Tensor, f: int) -> torch.Tensor:
    """(B, 3, H, W) -> the mean of each f x f block."""
    return F.avg_pool2d(x, f)


def load(args):
    d = np.load(os.path.join(args.out, "data.npz"))
    return {k: d[k] for k in d.files}


def batches(d, factor, idx):
    key = "f8" if factor == 8 else "f4"
    f = torch.from_numpy(d[key][idx].astype(np.float32))
    t = box(torch.from_numpy(d["orig"][idx]).permute(0, 3, 1, 2).float() / 255.0, factor)
    return f, t


def head_path(args, factor):
    return os.path.join(args.out, f"head{factor}_ch{args.ch}" + ("_k1" if args.k1 == 1 else "") + ".pt")


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    d = load(args)
    n = len(d["q"])
    tr = np.nonzero(np.arange(n) % 10 != 0)[0]
    net = Head(args.factor, args.ch, args.k1)
    path = head_path(args, args.factor)
    if args.resume and os.path.exists(path):
        net.load_state_dict(torch.load(path))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(args.seed)
    t0, step, avg = time.time(), 0, None
    while time.time() - t0 < args.seconds:
        frac = (time.time() - t0) / args.seconds
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + np.cos(np.pi * frac))
        idx = np.sort(rng.choice(tr, args.batch, replace=False))
        f, t = batches(d, args.factor, idx)
        if args.flip and rng.random() < 0.5:  # the features are not flip-equivariant: off by default
            f, t = f.flip(-1), t.flip(-1)
        mse = ((net(f) - t) ** 2).mean(dim=(1, 2, 3))
        loss = (10 * torch.log10(mse + 1e-10)).mean()  # every crop's dB counts the same
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        step += 1
        if step % 200 == 0:
            print(f"step {step} {time.time() - t0:.0f}s loss {avg:.3f} dB", flush=True)
            torch.save(net.state_dict(), path)
    torch.save(net.state_dict(), path)
    print(f"saved {path} after {step} steps", flush=True)


def psnr(a, b):
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def evaluate(args):
    torch.set_num_threads(args.threads)
    d = load(args)
    n = len(d["q"])
    held = np.nonzero(np.arange(n) % 10 == 0)[0]
    net = Head(args.factor, args.ch, args.k1)
    net.load_state_dict(torch.load(head_path(args, args.factor)))
    net.eval()
    rows = []
    with torch.no_grad():
        for i in held:
            f, t = batches(d, args.factor, np.array([i]))
            out = np.clip(np.rint(net(f)[0].permute(1, 2, 0).numpy() * 255), 0, 255)
            ref = np.rint(t[0].permute(1, 2, 0).numpy() * 255)
            full = box(torch.from_numpy(d["dec"][i:i + 1]).permute(0, 3, 1, 2).float(), args.factor)
            full = np.rint(full[0].permute(1, 2, 0).numpy())
            rows.append((d["q"][i], psnr(out, ref), psnr(full, ref)))
    rows = np.array(rows)
    for lo, hi in ((0, 25), (25, 50), (50, 75), (75, 101)):
        sel = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
        print(f"q {lo:3d}-{hi - 1:3d}: head {rows[sel, 1].mean():.2f} dB, full decode reduced "
              f"{rows[sel, 2].mean():.2f} dB ({sel.sum()} crops)")
    print(f"all: head {rows[:, 1].mean():.2f} dB, full {rows[:, 2].mean():.2f} dB, "
          f"difference {rows[:, 1].mean() - rows[:, 2].mean():+.3f} dB")


def export(args):
    arrays, chans = {}, {}
    chosen = dict(h.split("=", 1) for h in args.heads)  # factor -> .pt file, else --ch's
    for factor in args.factors:
        sd = torch.load(chosen.get(str(factor), head_path(args, factor)))
        chans[factor] = int(sd["c1.weight"].shape[0])
        net = Head(factor, chans[factor], int(sd["c1.weight"].shape[2]))
        net.load_state_dict(sd)
        for k, v in net.state_dict().items():
            arrays[f"f{factor}.{k.replace('.', '_')}"] = v.numpy().astype(np.float32)
    bundle = os.path.join(ROOT, "models", args.bundle)
    out = os.path.join(bundle, "reduce.npz")
    tmp = out + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    sha = hashlib.sha256(open(out, "rb").read()).hexdigest()
    from qgraph import update_model_json

    update_model_json(args.bundle, lambda meta: meta.update(reduce={
        "file": "reduce.npz", "sha256": sha, "factors": sorted(args.factors, reverse=True),
        "channels": {str(f): c for f, c in chans.items()},
        "note": args.note or ("heads (conv 3x3 96->ch, ReLU, conv 3x3) on the synthesis's 1/8 (factor 8) and 1/4 "
                              "(factors 4, 2) features, trained on crops of the training photos against the box "
                              "average of the original (training/reduce_heads.py)"),
    }))
    print(f"wrote {out} ({os.path.getsize(out)} bytes) and model.json")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", choices=["prep", "train", "eval", "export"])
    p.add_argument("--out", required=True)
    p.add_argument("--bundle", default="hp2")
    p.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    p.add_argument("--crops", type=int, default=3000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--factor", type=int, choices=sorted(STAGES), default=4)
    p.add_argument("--factors", type=int, nargs="+", default=[8, 4, 2])
    p.add_argument("--ch", type=int, default=64)
    p.add_argument("--k1", type=int, choices=(1, 3), default=3, help="kernel of the head's first convolution")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seconds", type=float, default=900)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--heads", nargs="*", default=[], metavar="F=PATH",
                   help="export: the head file of factor F (default: OUT/headF_chCH.pt)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"prep": prep, "train": train, "eval": evaluate, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
