"""Probe: does refining the hyper-latent z along with the latents y (SGA, Yang et al. 2020)
beat refining y alone (what effort 2/3 do)? PyTorch, hp2's weights, no post-filter; training
photos only (never Kodak). Prints lambda*255^2*MSE + bpp (hard rounding, model likelihoods)."""
import argparse, math, sys, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from model import LAMBDAS_V2, HyperpriorCodec, dims_of, gaussian_likelihood, load_weights  # noqa

EPS = 1e-5


def sga(u, tau, gen):
    fl = torch.floor(u).detach()
    a = u - fl
    ac = torch.clamp(a, max=1 - EPS)
    bc = torch.clamp(1 - a, max=1 - EPS)
    logit = (torch.atanh(ac) - torch.atanh(bc)) / tau
    g = -torch.log(-torch.log(torch.rand((2,) + u.shape, generator=gen).clamp_min(1e-20)))
    pc = torch.sigmoid(torch.clamp(logit + g[1] - g[0], -60, 60))
    return fl + pc


def evaluate(m, uy, uz, igain, x, lam):
    with torch.no_grad():
        z = torch.round(uz)
        mu, ls = m.hyper_log_params(z)
        r = torch.round(uy - mu)
        xh = m.g_s((r + mu) * igain).float().clamp(0, 1)
        mse = torch.mean((xh - x) ** 2).item()
        npx = x.shape[2] * x.shape[3]
        by = -torch.log2(gaussian_likelihood(r, torch.exp(ls)).clamp_min(1e-9)).sum().item()
        bz = -torch.log2(m.prior.likelihood(z).clamp_min(1e-9)).sum().item()
        bpp = (by + bz) / npx
        return lam * 255 ** 2 * mse + bpp, bpp, 10 * math.log10(1 / mse), bz / npx


def run(m, x, level, lam, steps, lr, joint, seed=0, zlr=None):
    gain, igain = m.gains(torch.tensor([float(level)]))
    with torch.no_grad():
        y = m.g_a(x).float() * gain
        zc = m.h_a(y).float()
        z0 = torch.round(zc)
    uy = y.clone().requires_grad_(True)
    uz = zc.clone().requires_grad_(joint)
    groups = [{"params": [uy], "lr": lr}] + ([{"params": [uz], "lr": zlr or lr}] if joint else [])
    opt = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(seed)
    npx = x.shape[2] * x.shape[3]
    for it in range(steps):
        tau = max(0.5 * math.exp(-6 * it / steps), 0.05)
        zs = sga(uz, tau, gen) if joint else z0
        mu, ls = m.hyper_log_params(zs)
        if not joint:
            mu, ls = mu.detach(), ls.detach()
        rs = sga(uy - mu, tau, gen)
        xh = m.g_s((rs + mu) * igain).float()
        mse = torch.mean((xh - x) ** 2)
        by = -torch.log2(gaussian_likelihood(rs, torch.exp(ls)).clamp_min(1e-9)).sum()
        loss = lam * 255 ** 2 * mse + by / npx
        if joint:
            loss = loss - torch.log2(m.prior.likelihood(zs).clamp_min(1e-9)).sum() / npx
        opt.zero_grad()
        loss.backward()
        opt.step()
    return evaluate(m, uy.detach(), uz.detach(), igain, x, lam)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default="models/hp2.weights.npz")
    ap.add_argument("--images", nargs="+", default=["bsds500_188091", "bsds500_311081", "bsds500_15062", "bsds500_159022"])
    ap.add_argument("--qualities", type=float, nargs="+", default=[25, 55])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--zlr", type=float, default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    sd, _, arch = load_weights(args.weights)
    N, M = dims_of(sd)
    m = HyperpriorCodec(N, M, arch=arch)
    m.load_state_dict(sd, strict=False)
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    tot = {"none": [], "y": [], "yz": []}
    for name in args.images:
        img = np.asarray(Image.open(f"../shared/data/train/{name}.png").convert("RGB"))
        h, w = (img.shape[0] // 64) * 64, (img.shape[1] // 64) * 64
        x = torch.from_numpy(img[:h, :w].copy()).permute(2, 0, 1)[None].float() / 255
        for q in args.qualities:
            level = (q - 1) / 99 * 11
            lo = min(int(level), 10)
            t = level - lo
            lam = math.exp((1 - t) * math.log(LAMBDAS_V2[lo]) + t * math.log(LAMBDAS_V2[lo + 1]))
            t0 = time.time()
            gain, igain = m.gains(torch.tensor([float(level)]))
            with torch.no_grad():
                y = m.g_a(x).float() * gain
                z0 = torch.round(m.h_a(y).float())
            base = evaluate(m, y, z0, igain, x, lam)
            ry = run(m, x, level, lam, args.steps, args.lr, False)
            ryz = run(m, x, level, lam, args.steps, args.lr, True, zlr=args.zlr)
            tot["none"].append(base[0]); tot["y"].append(ry[0]); tot["yz"].append(ryz[0])
            print(f"{name} q{q:g}: none {base[0]:.4f} ({base[1]:.4f} bpp {base[2]:.2f} dB z {base[3]:.4f}) | "
                  f"y {ry[0]:.4f} ({ry[1]:.4f} {ry[2]:.2f} z {ry[3]:.4f}) {100*(ry[0]/base[0]-1):+.2f}% | "
                  f"yz {ryz[0]:.4f} ({ryz[1]:.4f} {ryz[2]:.2f} z {ryz[3]:.4f}) {100*(ryz[0]/base[0]-1):+.2f}% "
                  f"[{time.time()-t0:.0f}s]", flush=True)
    for k in ("y", "yz"):
        print(k, f"mean change {100*np.mean(np.array(tot[k])/np.array(tot['none'])-1):+.2f}%")


if __name__ == "__main__":
    main()
