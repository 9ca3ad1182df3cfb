"""An exact int8 post-filter for the shipped model: quantisation-aware fine-tuning of its
two-scale post-filter (training/postfilter.py, PostFilterUNet), exported as the integer tensors
that the C++ core runs bit-exactly (cpp/qfilter.hpp; docs/format.md, "The int8 post-filter").

    # pairs decoded by the int8 decoder (the filter serves the int8 decoders), every 10th held out
    python training/postfilter.py prep --out /tmp/pf --crops 6000 --pairs pairs6k_int8.npz --decoder int8
    python training/qat_postfilter.py calibrate --pairs /tmp/pf/pairs6k_int8.npz --out training/runs/qpf.pt
    python training/qat_postfilter.py train --pairs /tmp/pf/pairs6k_int8.npz --init training/runs/qpf.pt \
        --out training/runs/qpf.pt --threads 2 --seconds 2100
    python training/qat_postfilter.py evaluate --npz /tmp/qpf.npz       # Kodak PSNR, float vs int8 filter
    python training/qat_postfilter.py export --init training/runs/qpf.pt --bundle hp2

The filter's function, with every tensor uint8 (scale s, zero point z: value = (q - z) * s) and every
convolution's weights int8 per output channel in [-64, 63] (7 bits, so that the AVX2 kernels
cannot saturate), its bias int32 on the grid s_in * s_w:

    P   the synthesis output rounded to 8-bit pixels (scale 1/255, zero point 0)
    h0  pixel unshuffle of P (12 channels at half resolution: channel 4c + 2i + j is pixel
        (2y + i, 2x + j) of colour c), then the quality code round(255 q) as channel 12 and
        three zero channels (16 channels, scale 1/255)
    a1  relu(inc(h0))                      3x3, 16 -> 32; the ReLU is the clamp at zero point 0
    d   relu(down(unshuffle(a1)))          1x1, 128 -> 64 at quarter resolution
    d   relu(mid_k(d)), k = 0, 1           3x3, 64 -> 64
    u   up(d), pixel-shuffled              1x1, 64 -> 128, then 32 channels at half resolution
    s   a1 + u                             requantised by a 65,536-entry table [a1 * 256 + u]
    a2  relu(dec(s))                       3x3, 32 -> 32
    r   out(a2), pixel-shuffled            3x3, 32 -> 12: the int32 sums, t = f32(acc) * mult + add
    out clamp(round_half_even(f32(P) + t), 0, 255)

Training: the pairs of training/postfilter.py (fastcodec's own decodes of random training crops
at random qualities, by the int8 decoder; every 10th held out; never Kodak), the per-crop PSNR loss of the shipped
filter's training, weights and activation scales (LSQ-style, through straight-through
rounding) started from the float filter and its calibrated ranges. Float32 throughout.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qgraph import ROOT, WQ_MAX, WQ_MIN, ActQ, ste_round, update_model_json  # noqa: E402

PIX = 1.0 / 255.0


def qcode(q):
    """The quality plane's uint8 code: round half to even of 255 * (quality / 100), in float32."""
    return torch.round(q.float() * 255.0).clamp(0, 255)


def wquant(w):
    """Per-output-channel symmetric 7-bit fake quantisation: (fake-quantised weights, scales)."""
    s = (w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / WQ_MAX).clamp_min(1e-12)
    return torch.clamp(ste_round(w / s), WQ_MIN, WQ_MAX) * s, s.flatten()


class QPostFilter(nn.Module):
    """PostFilterUNet with the int8 points of the exact filter (see the module docstring)."""

    ACTS = ("a1", "d", "m0", "m1", "u", "s", "a2")

    def __init__(self, unet):
        super().__init__()
        if unet.blocks != 2:
            raise ValueError("the int8 post-filter expects two quarter-resolution blocks")
        self.net = unet
        self.acts = nn.ModuleDict({k: ActQ() for k in self.ACTS})
        self.quant = False

    def set_mode(self, mode):
        self.quant = mode == "on"
        for a in self.acts.values():
            a.mode = mode

    def conv(self, c, x, s_in, padding):
        """c(x) with 7-bit weights and the bias on the integer grid s_in * s_w when quantising."""
        if not self.quant:
            return F.conv2d(x, c.weight, c.bias, padding=padding)
        w, sw = wquant(c.weight)
        g = s_in * sw
        b = ste_round(c.bias / g) * g
        return F.conv2d(x, w, b, padding=padding)

    def forward(self, x, q):
        """x: decoded pixels / 255 (N, 3, H, W), H and W multiples of 4; q: quality / 100 (N,)."""
        n = self.net
        A = self.acts
        if self.quant:
            x = torch.round(x * 255.0) / 255.0
            qv = qcode(q) / 255.0
        else:
            qv = q.float()
        z = F.pixel_unshuffle(x, 2)
        h0 = torch.cat([z, qv.view(-1, 1, 1, 1).expand(-1, 1, *z.shape[2:])], 1)
        a1 = A["a1"](torch.relu(self.conv(n.inc, h0, PIX, 1)))
        d = A["d"](torch.relu(self.conv(n.down, F.pixel_unshuffle(a1, 2), A["a1"].log_s.exp(), 0)))
        for k, c in enumerate(n.mid):
            d = A[f"m{k}"](torch.relu(self.conv(c, d, (A["d"] if k == 0 else A["m0"]).log_s.exp(), 1)))
        u = A["u"](self.conv(n.up, d, A["m1"].log_s.exp(), 0))
        s = A["s"](a1 + F.pixel_shuffle(u, 2))
        a2 = A["a2"](torch.relu(self.conv(n.dec, s, A["s"].log_s.exp(), 1)))
        return x + F.pixel_shuffle(self.conv(n.out, a2, A["a2"].log_s.exp(), 1), 2)


def load_pairs(path):
    d = np.load(path)
    orig, dec, qs = d["orig"], d["dec"], d["q"]
    held = np.arange(len(qs)) % 10 == 0
    return orig, dec, qs, np.nonzero(~held)[0], np.nonzero(held)[0]


def to_t(a):
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 255


def shipped_unet(bundle):
    from refine_graph import postfilter_module
    net = postfilter_module(os.path.join(ROOT, "models", bundle, "postfilter.onnx"))
    if not hasattr(net, "mid"):
        raise SystemExit("the bundle's post-filter is not the two-scale one")
    return net.float()


def held_out(qf, orig, dec, qs, idx, limit=400):
    """Mean per-crop PSNR gain (dB) over the unfiltered decode, outputs rounded to pixels."""
    idx = idx[:limit]
    tot0 = tot1 = 0.0
    with torch.no_grad():
        for k in range(0, len(idx), 16):
            j = idx[k:k + 16]
            x, o, q = to_t(dec[j]), to_t(orig[j]), torch.from_numpy(qs[j] / 100)
            y = (qf(x, q).clamp(0, 1) * 255).round() / 255
            tot0 += (-10 * torch.log10(((x - o) ** 2).mean((1, 2, 3)))).sum().item()
            tot1 += (-10 * torch.log10(((y - o) ** 2).mean((1, 2, 3)).clamp_min(1e-10))).sum().item()
    return (tot1 - tot0) / len(idx)


def dihedral(x, t):
    """The t-th (0-7) of the square's symmetries applied to NCHW images: bit 0 flips the columns,
    bit 1 the rows, bit 2 transposes."""
    if t & 4:
        x = x.transpose(2, 3)
    if t & 1:
        x = x.flip(3)
    if t & 2:
        x = x.flip(2)
    return x


def build(args):
    qf = QPostFilter(shipped_unet(args.bundle))
    ck = {}
    if args.init and os.path.exists(args.init):
        ck = torch.load(args.init)
        qf.load_state_dict(ck["state"])
    return qf, ck


def calibrate(args):
    torch.set_num_threads(args.threads)
    orig, dec, qs, tr, ho = load_pairs(args.pairs)
    qf, _ = build(args)
    qf.set_mode("observe")
    rng = np.random.default_rng(1)
    with torch.no_grad():
        for _ in range(args.calib_batches):
            j = rng.choice(tr, 16)
            qf(to_t(dec[j]), torch.from_numpy(qs[j] / 100))
    for k, a in qf.acts.items():
        a.calibrate(1e-5, 1e-5)
        print(f"{k}: scale {a.scale():.5f} zero point {int(a.zp)}")
    qf.set_mode("off")
    print(f"held-out gain, float filter {held_out(qf, orig, dec, qs, ho):+.4f} dB")
    qf.set_mode("on")
    print(f"held-out gain, int8 filter (calibrated) {held_out(qf, orig, dec, qs, ho):+.4f} dB")
    torch.save({"state": qf.state_dict(), "model": args.bundle, "steps": 0}, args.out)


def train(args):
    torch.set_num_threads(args.threads)
    orig, dec, qs, tr, ho = load_pairs(args.pairs)
    qf, ck = build(args)
    if not ck:
        raise SystemExit("train needs --init from calibrate")
    qf.set_mode("on")
    scales = [a.log_s for a in qf.acts.values()]
    opt = torch.optim.Adam([{"params": list(qf.net.parameters()), "lr": args.lr},
                            {"params": scales, "lr": args.lr_scale}])
    rng = np.random.default_rng(ck.get("steps", 0) + 7)
    s, grid = args.crop, 16
    best = held_out(qf, orig, dec, qs, ho)
    print(f"held-out gain at start {best:+.4f} dB", flush=True)
    t0, step, last = time.time(), 0, time.time()
    while time.time() - t0 < args.seconds:
        frac = (time.time() - t0) / args.seconds
        for g, base in zip(opt.param_groups, (args.lr, args.lr_scale)):
            g["lr"] = base * 0.5 * (1 + math.cos(math.pi * frac))
        idx = rng.choice(tr, args.batch)
        ys = rng.integers(0, (orig.shape[1] - s) // grid + 1, len(idx)) * grid
        xs = rng.integers(0, (orig.shape[2] - s) // grid + 1, len(idx)) * grid
        o = to_t(np.stack([orig[i, y:y + s, x:x + s] for i, y, x in zip(idx, ys, xs)]))
        x = to_t(np.stack([dec[i, y:y + s, x:x + s] for i, y, x in zip(idx, ys, xs)]))
        if args.augment:  # one of the 8 flips and transposes per batch (crops stay on the latent grid)
            t = int(rng.integers(8))
            o, x = (dihedral(v, t) for v in (o, x))
        y = qf(x, torch.from_numpy(qs[idx] / 100))
        loss = (10 / math.log(10)) * torch.log(((y - o) ** 2).mean((1, 2, 3)).clamp_min(1e-6)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if time.time() - last > args.every:
            last = time.time()
            g = held_out(qf, orig, dec, qs, ho)
            print(f"step {step} loss {loss.item():.4f} held-out {g:+.4f} dB ({(time.time() - t0) / step:.3f} s/step)",
                  flush=True)
            if g > best:
                best = g
                torch.save({"state": qf.state_dict(), "model": args.bundle, "steps": ck.get("steps", 0) + step},
                           args.out)
    g = held_out(qf, orig, dec, qs, ho)
    print(f"done: {step} steps, held-out {g:+.4f} dB (best {best:+.4f})", flush=True)
    if g > best:
        torch.save({"state": qf.state_dict(), "model": args.bundle, "steps": ck.get("steps", 0) + step}, args.out)


def exact_tensors(qf):
    """The integer filter as the arrays that models/BUNDLE/postfilter_int8.npz holds (see
    cpp/qfilter.hpp), from the fake-quantised module; float32 products in a fixed order."""
    n, A = qf.net, qf.acts
    f32 = np.float32
    sc = {k: f32(A[k].scale()) for k in QPostFilter.ACTS}
    zp = {k: int(A[k].zp) for k in QPostFilter.ACTS}
    for k in ("a1", "d", "m0", "m1", "a2"):
        if zp[k] != 0:
            raise ValueError(f"{k} follows a ReLU and must have zero point 0, not {zp[k]}")
    out = {}

    def layer(name, c, s_in, s_out, cin_pad=None, perm=None):
        w = c.weight.detach().float()
        s = (w.abs().amax(dim=(1, 2, 3), keepdim=True) / WQ_MAX).clamp_min(1e-12)
        wi = torch.clamp(torch.round(w / s), WQ_MIN, WQ_MAX).to(torch.int8).numpy()
        sw = s.flatten().numpy().astype(f32)
        g = (f32(s_in) * sw).astype(f32)
        b = np.round(c.bias.detach().float().numpy().astype(f32) / g).astype(np.int64)
        if np.abs(b).max() >= 2 ** 30:
            raise ValueError(f"{name}: bias out of range")
        if cin_pad is not None:
            wi = np.concatenate([wi, np.zeros((wi.shape[0], cin_pad - wi.shape[1], *wi.shape[2:]), np.int8)], 1)
        if perm is not None:
            wi, g, b = wi[perm], g[perm], b[perm]
        out[f"{name}.w"] = np.ascontiguousarray(wi)
        out[f"{name}.b"] = b.astype(np.int32)
        if s_out is None:
            return g
        out[f"{name}.scale"] = (g / f32(s_out)).astype(f32)
        return None

    layer("inc", n.inc, PIX, sc["a1"], cin_pad=16)
    layer("down", n.down, sc["a1"], sc["d"])
    layer("mid0", n.mid[0], sc["d"], sc["m0"])
    layer("mid1", n.mid[1], sc["m0"], sc["m1"])
    # up's channels from PixelShuffle's CRD order (4c + s) to the kernels' DCR order (s * 32 + c)
    C = n.up.weight.shape[0] // 4
    perm = np.array([c * 4 + s for s in range(4) for c in range(C)])
    layer("up", n.up, sc["m1"], sc["u"], perm=perm)
    out["up.zp"] = np.int32(zp["u"])
    a = np.arange(256, dtype=f32)
    va = (a * sc["a1"]).astype(f32)[:, None]
    vu = ((a - f32(zp["u"])) * sc["u"]).astype(f32)[None, :]
    t = ((va + vu) / sc["s"]).astype(f32)
    out["add_table"] = np.clip(np.rint(t).astype(np.int64) + zp["s"], 0, 255).astype(np.uint8).reshape(-1)
    out["s.zp"] = np.int32(zp["s"])
    layer("dec", n.dec, sc["s"], sc["a2"])
    g = layer("out", n.out, sc["a2"], None)
    out["out.mult"] = (g * f32(255.0)).astype(f32)
    out["out.add"] = np.zeros(len(g), f32)
    return out


def export(args):
    qf, ck = build(args)
    if ck.get("model") != args.bundle:
        raise SystemExit(f"{args.init} was trained against {ck.get('model')}, not {args.bundle}")
    qf.set_mode("on")
    arrays = exact_tensors(qf)
    path = args.npz or os.path.join(ROOT, "models", args.bundle, "postfilter_int8.npz")
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    print("wrote", path, os.path.getsize(path), "bytes")
    if not args.npz:
        entry = {"file": "postfilter_int8.npz", "sha256": sha, "training_steps": int(ck.get("steps", 0)),
                 "max_quality": args.max_quality, "note": args.note}
        meta_path = update_model_json(args.bundle, lambda meta: meta.__setitem__("postfilter_int8", entry))
        print("listed in", meta_path)


def evaluate(args):
    """Kodak (measurement only, nothing is fitted to it): every n-th image, decoded by the int8
    decoder without a filter, then through the shipped float filter and through the int8 one
    (args.npz, else the bundle's), both run by the C++ core; PSNR per quality."""
    import glob

    from PIL import Image

    import fastcodec
    from fastcodec import _core
    path = args.npz or os.path.join(ROOT, "models", args.bundle, "postfilter_int8.npz")
    with np.load(path) as z:
        qfilt = _core.QFilter({k: z[k] for k in z.files})
    codec = fastcodec.Codec(args.bundle, threads=2, decoder="int8", postfilter=False)
    ref = fastcodec.Codec(args.bundle, threads=2, decoder="bitexact")
    m = codec.model
    m.check_postfilter()
    ffilt = m.bitexact().postfilter
    files = sorted(glob.glob(os.path.join(ROOT, "..", "shared", "data", "kodak", "kodim*.png")))[::args.every_nth]
    psnr = lambda a, b: 10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2))  # noqa: E731
    print("quality | int8, no filter | int8 + float filter | int8 + int8 filter | bitexact + float filter")
    for q in [float(v) for v in args.qualities.split(",")]:
        rows = []
        for f in files:
            im = np.asarray(Image.open(f).convert("RGB"))
            data = codec.compress(im, quality=q)
            d = codec.decompress(data)
            x = np.ascontiguousarray(d.transpose(2, 0, 1)[None].astype(np.float32) / 255)
            h, w = x.shape[2] // 4 * 4, x.shape[3] // 4 * 4
            x = np.ascontiguousarray(x[:, :, :h, :w])
            a = np.rint(ffilt.run(x, np.float32(q / 100), 2)[0].clip(0, 1) * 255).transpose(1, 2, 0)
            b = np.rint(qfilt.run(x, np.float32(q / 100), 2)[0] * 255).transpose(1, 2, 0)
            rows.append((psnr(d, im), psnr(a, im[:h, :w]), psnr(b, im[:h, :w]), psnr(ref.decompress(data), im)))
        r = np.mean(rows, 0)
        print(f"q{q:g} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} ({r[2] - r[1]:+.3f}) | {r[3]:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["calibrate", "train", "export", "evaluate"])
    ap.add_argument("--pairs", default="/tmp/pf/pairs6k_int8.npz")
    ap.add_argument("--bundle", default="hp2")
    ap.add_argument("--init", default=None)
    ap.add_argument("--out", default=os.path.join(ROOT, "training", "runs", "qpf.pt"))
    ap.add_argument("--npz", default=None, help="export: write here instead of into the bundle")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib-batches", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--every", type=float, default=180, help="train: seconds between held-out checks")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--lr-scale", type=float, default=1e-3)
    ap.add_argument("--max-quality", type=float, default=45.0)
    ap.add_argument("--note", default="")
    ap.add_argument("--augment", action="store_true",
                    help="train: flip and transpose the crops (a flip self-ensemble of the float filter gained "
                         "+0.03-0.07 dB, so its errors depend on orientation)")
    ap.add_argument("--every-nth", type=int, default=3, help="evaluate: every n-th Kodak image")
    ap.add_argument("--qualities", default="5,25,40,45,60,80,100", help="evaluate: the qualities")
    args = ap.parse_args()
    {"calibrate": calibrate, "train": train, "export": export, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
