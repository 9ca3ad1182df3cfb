"""Export a trained checkpoint to a shipped model bundle.

    python training/export.py --ckpt training/runs/ckpt.pt --name hp3

Writes models/<name>/{encoder,hyper_encoder,hyper_decoder,decoder}.onnx, tables.npz,
model.json (with the model id), models/<name>.weights.npz (fp16 weights so that training
resumes from the shipped model) and sets models/DEFAULT.

Give each export a new name: files name the model id they were written with, and a bundle
that is still shipped keeps its files decoding (keep older bundles in models/ for that).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import LAMBDAS, SCALE_MAX, SCALE_MIN, HyperpriorCodec, dims_of, load_weights  # noqa: E402
import tables as T  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NBINS = 64
DEAD_PMAX = 0.98  # hyper-latent channels whose mode has at least this probability share one table


class _HyperDecoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        # only the means: the scales that select coding tables come from the C++ core
        return self.model.hyper_log_params(z)[0]


def export_onnx(model, out):
    model.eval()
    M, N = model.M, model.N
    graphs = {
        "encoder": (model.g_a, (torch.rand(1, 3, 128, 192),), ["x"], ["y"]),
        "hyper_encoder": (model.h_a, (torch.randn(1, M, 8, 12),), ["y"], ["z"]),
        "hyper_decoder": (_HyperDecoder(model), (torch.randn(1, N, 2, 3),), ["z"], ["mu"]),
        "decoder": (model.g_s, (torch.randn(1, M, 8, 12),), ["y"], ["x"]),
    }
    for name, (mod, args, ins, outs) in graphs.items():
        dyn = {n: {2: "h", 3: "w"} for n in ins + outs}
        path = os.path.join(out, f"{name}.onnx")
        with torch.no_grad():
            torch.onnx.export(mod, args, path, input_names=ins, output_names=outs, dynamic_axes=dyn,
                              opset_version=17, dynamo=False, do_constant_folding=True)


def collect_statistics(model, data_dir, n_images=64, size=512, seed=0):
    """Residual histograms per scale bin and hyper-latent histograms per channel, measured on
    training images (never Kodak) at qualities spread over the whole range."""
    import glob
    import random

    from PIL import Image

    rng = random.Random(seed)
    files = sorted(glob.glob(os.path.join(data_dir, "*.png")))
    files = [f for f in files if "kodim" not in os.path.basename(f)]
    rng.shuffle(files)
    log_min = math.log(SCALE_MIN)
    inv_step = (NBINS - 1) / (math.log(SCALE_MAX) - log_min)
    ys, zs = [], []
    levels = model.log_gain.shape[0] - 1
    with torch.no_grad():
        for i, f in enumerate(files[:n_images]):
            im = np.asarray(Image.open(f).convert("RGB"))
            h, w = min(size, im.shape[0] // 64 * 64), min(size, im.shape[1] // 64 * 64)
            y0, x0 = rng.randrange(im.shape[0] - h + 1), rng.randrange(im.shape[1] - w + 1)
            x = torch.from_numpy(im[y0:y0 + h, x0:x0 + w].copy()).permute(2, 0, 1)[None].float() / 255
            y = model.g_a(x)
            for lv in (levels * (i % 8 + rng.random()) / 8,):
                gain, _ = model.gains(torch.tensor([float(lv)]))
                yg = y * gain
                z = torch.round(model.h_a(yg))
                mu, ls = model.hyper_log_params(z)
                b = torch.clamp(torch.floor((ls - log_min) * inv_step + 0.5), 0, NBINS - 1).long()
                r = torch.round(yg - mu).long()
                ys.append((b.flatten().numpy(), r.flatten().numpy()))
                zs.append(z.long().permute(1, 0, 2, 3).reshape(z.shape[1], -1).numpy())
    return ys, zs


def calibrated(prior, vmin, samples, pseudo=200.0):
    """Blend an empirical histogram with the model's pmf (pseudo-count weight)."""
    hist = np.zeros(len(prior))
    idx = samples - vmin
    ok = (idx >= 0) & (idx < len(prior))
    np.add.at(hist, idx[ok], 1)
    n = hist.sum()
    return (hist + pseudo * prior) / (n + pseudo)


def build_tables(model, huffman_lengths, stats=None):
    t = {}
    with torch.no_grad():
        t["gains"] = torch.exp(model.log_gain).numpy().astype(np.float32)
        t["igains"] = torch.exp(model.log_igain).numpy().astype(np.float32)
    log_min, log_max = math.log(SCALE_MIN), math.log(SCALE_MAX)
    step = (log_max - log_min) / (NBINS - 1)
    t["scale_log_min"] = np.float32(log_min)
    t["scale_inv_step"] = np.float32(1 / step)
    t["scale_nbins"] = np.int32(NBINS)
    # weights of the hyper-synthesis scale branch, run deterministically by the C++ core
    hs = model.h_s
    convs = [hs[0][0], hs[2][0], hs[4]]
    M = model.M
    with torch.no_grad():
        for i, c in enumerate(convs):
            w, b = c.weight.float(), c.bias.float()
            if i == 2:  # only the ln(sigma) half of the last layer
                w, b = w[M:], b[M:]
            t[f"hs_w{i}"] = w.contiguous().numpy().astype(np.float32)
            t[f"hs_b{i}"] = b.contiguous().numpy().astype(np.float32)
    ydes, pm_y = [], []
    if stats is not None:
        yb = np.concatenate([b for b, _ in stats[0]])
        yr = np.concatenate([r for _, r in stats[0]])
    for b in range(NBINS):
        sigma = math.exp(log_min + b * step)
        V = min(4096, int(math.ceil(7 * sigma + 2)))
        p = T.gaussian_pmf(sigma, V)
        if stats is not None:
            p = calibrated(p, -V, yr[yb == b])
        pm_y.append((-V, p))
        ydes.append(T.design(p, -V, huffman_lengths))
    t.update(T.pack(ydes, "y"))
    t.update(T.pack_pmfs(pm_y, "y"))
    t["y_sigma"] = np.array([math.exp(log_min + b * step) for b in range(NBINS)])
    R = 256
    pm = model.prior.pmf_table(-R, R).numpy()  # (N, 2R+1)
    if stats is not None:
        zall = np.concatenate(stats[1], axis=1)
        pm = np.stack([calibrated(pm[c], -R, zall[c], pseudo=50.0) for c in range(pm.shape[0])])
    offs = [int(np.argmax(pm[c])) - R for c in range(pm.shape[0])]
    # Channels the model (almost) never uses carry ~0 bits of information each, but a stream
    # of its own costs a few bits even when every symbol is the mode. Such channels share one
    # group (table z_group[c]): their symbols, mode-aligned by z_offset, form one long stream of
    # (nearly) all zeros whose runs cost a few bits in total.
    dead = [c for c in range(pm.shape[0]) if pm[c].max() >= DEAD_PMAX]
    group = np.arange(pm.shape[0], dtype=np.int32)
    pmf_offs = list(offs)  # symbol s = z - offs[c] has probability pm[c][s + R + pmf_offs[c]]
    if len(dead) > 1:
        pooled = np.zeros(2 * R + 1)
        for c in dead:  # symbol s = z - offs[c] sits at index s + R of the pooled pmf
            o = offs[c]
            src = pm[c][max(0, o):2 * R + 1 + min(0, o)]
            pooled[max(0, -o):max(0, -o) + len(src)] += src
            group[c] = dead[0]
        pm[dead[0]] = pooled / pooled.sum()
        pmf_offs[dead[0]] = 0  # the pooled pmf is already indexed by symbol
    zdes = [T.design(pm[c], -R - pmf_offs[c], huffman_lengths) for c in range(pm.shape[0])]
    t.update(T.pack(zdes, "z"))
    t.update(T.pack_pmfs([(-R - pmf_offs[c], pm[c]) for c in range(pm.shape[0])], "z"))
    t["z_offset"] = np.array(offs, np.int32)
    t["z_group"] = group
    return t, ydes, zdes


def bundle_id(path):
    h = hashlib.sha256()
    for name in ("encoder", "hyper_encoder", "hyper_decoder", "decoder"):
        h.update(hashlib.sha256(open(os.path.join(path, f"{name}.onnx"), "rb").read()).digest())
    h.update(hashlib.sha256(open(os.path.join(path, "tables.npz"), "rb").read()).digest())
    return h.hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default=os.path.join(ROOT, "training", "runs", "ckpt.pt"),
                    help="a train.py checkpoint (.pt) or a weights file (.npz, e.g. from --weights-out)")
    ap.add_argument("--name", required=True, help="bundle name, e.g. hp3 (a new one for new weights)")
    ap.add_argument("--models", default=os.path.join(ROOT, "models"))
    ap.add_argument("--no-default", action="store_true")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"),
                    help="training images for calibrating the coding tables (never Kodak)")
    ap.add_argument("--calib-images", type=int, default=64, help="0: tables from the model's pmfs only")
    args = ap.parse_args()
    from fastcodec import _core

    if args.ckpt.endswith(".npz"):  # fp32 weights written by train.py --weights-out
        sd, steps, arch = load_weights(args.ckpt)
        st = {"model": sd, "total_steps": steps, "args": {"arch": arch}}
    else:
        st = torch.load(args.ckpt, map_location="cpu")
    a = st.get("args", {})
    n, m = dims_of(st["model"])  # from the weights' shapes (a widened latent: model.widen_latent)
    model = HyperpriorCodec(n, m, arch=a.get("arch", "hp"))
    model.load_state_dict(st["model"])
    model.eval()
    out = os.path.join(args.models, args.name)
    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    t0 = time.time()
    export_onnx(model, tmp)
    stats = collect_statistics(model, args.data, args.calib_images) if args.calib_images else None
    tabs, ydes, zdes = build_tables(model, _core.huffman_code_lengths, stats)
    np.savez(os.path.join(tmp, "tables.npz"), **tabs)
    mid = bundle_id(tmp)
    meta = {"name": args.name, "id": mid, "architecture": "mean-scale hyperprior, gain units", "arch": model.arch,
            "N": model.N, "M": model.M, "stride": 64, "levels": len(LAMBDAS), "lambdas": LAMBDAS,
            "scale_bins": NBINS, "scale_min": SCALE_MIN, "scale_max": SCALE_MAX,
            "training_steps": int(st.get("total_steps", st.get("step", 0))),
            "table_calibration_images": args.calib_images,
            # files decode with the deterministic executor unless a policy or the caller names
            # another decoder (fastcodec/_bitexact.py; the same pixels on every machine)
            "default_decoder": "bitexact",
            "exported": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(os.path.join(tmp, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    w = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    w["__total_steps__"] = np.array(meta["training_steps"])
    w["__arch__"] = np.array(model.arch)
    w["__lambdas__"] = np.array(LAMBDAS, np.float64)
    np.savez_compressed(os.path.join(args.models, f"{args.name}.weights.npz"), **w)
    if not args.no_default:
        with open(os.path.join(args.models, "DEFAULT"), "w") as f:
            f.write(args.name + "\n")
    print(f"exported {out} id {mid} steps {meta['training_steps']} in {time.time() - t0:.1f}s")
    print("bin sigma   entropy  bits/sym  overhead mode nruns")
    for b, d in enumerate(ydes):
        if b % 4 == 0:
            print(f"{b:3d} {tabs['y_sigma'][b]:7.3f} {d['entropy']:8.4f} {d['bits_per_symbol']:8.4f} "
                  f"{100 * (d['bits_per_symbol'] / d['entropy'] - 1):7.2f}% {d['mode']} {d['nruns']}")


if __name__ == "__main__":
    main()
