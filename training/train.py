"""Train the fastcodec mean-scale hyperprior (variable rate) on ../shared/data/train.

Resumable: continues from --ckpt if it exists, else from the shipped weights in
models/ (so progress accumulates across sessions), else from scratch.

    nohup python training/train.py --hours 2.5 > training/runs/train.log 2>&1 &

On a CUDA machine (--device auto picks it) the training images live on the GPU as uint8
and crops are cut there; --weights-out writes the fp32 weights every --weights-every
seconds (a resumable npz like models/<name>.weights.npz, without optimizer state), for
runs whose only output is that file.
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
from model import (KNOWN_LADDERS, LAMBDAS, HyperpriorCodec, autocast, autocast_dtype, image_bits,  # noqa: E402
                   load_weights, remap_levels)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_images(folder):
    files = sorted(f for ext in ("png", "jpg") for f in glob.glob(os.path.join(folder, f"*.{ext}")))
    if not files:
        raise SystemExit(f"no training images in {folder}")
    if any("kodim" in os.path.basename(f) for f in files):
        raise SystemExit("refusing to train on Kodak images")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda f: np.asarray(Image.open(f).convert("RGB")), files))


def batch_on_device(images, n, size, rng):
    """images: list of (H, W, 3) uint8 tensors on the device; crops and flips cut there."""
    crops = []
    for _ in range(n):
        im = images[rng.randrange(len(images))]
        h, w, _ = im.shape
        y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        c = im[y:y + size, x:x + size]
        dims = [d for d, flip in ((1, rng.random() < 0.5), (0, rng.random() < 0.5)) if flip]
        crops.append(torch.flip(c, dims) if dims else c)
    return torch.stack(crops).permute(0, 3, 1, 2).float().div_(255.0)


def save_weights(model, total_steps, path, ema=None):
    """fp32 weights as a resumable npz (the layout of models/<name>.weights.npz): the moving
    average of the parameters when one is kept (--ema), else the parameters themselves."""
    sd = ema.state_dict(model) if ema is not None else model.state_dict()
    w = {k: v.detach().float().cpu().numpy() for k, v in sd.items()}
    w["__total_steps__"] = np.array(total_steps)
    w["__arch__"] = np.array(getattr(model, "arch", "hp"))
    w["__lambdas__"] = np.array(LAMBDAS, np.float64)
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **w)
    os.replace(tmp, path)


def batch(images, n, size, rng):
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = images[rng.randrange(len(images))]
        h, w, _ = im.shape
        y, x = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        c = im[y:y + size, x:x + size]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if rng.random() < 0.5:
            c = c[::-1]
        out[i] = c
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def lambdas_for(level):
    logl = torch.log(torch.tensor(LAMBDAS, device=level.device))
    lo = torch.clamp(level.floor().long(), 0, len(LAMBDAS) - 2)
    t = level - lo.float()
    return torch.exp((1 - t) * logl[lo] + t * logl[lo + 1])


def adapt_levels(ckpt, model):
    """A checkpoint trained with another lambda ladder (fewer gain levels) made loadable: the
    per-level gains are remapped onto LAMBDAS (shared levels copied, new ones extended in log
    lambda, as load_weights does), and their Adam moments are copied for shared levels and taken
    from the nearest old level for new ones (first moments zeroed there). Returns the number of
    levels the checkpoint had."""
    sd = ckpt["model"]
    old = sd["log_gain"].shape[0]
    if old == len(LAMBDAS):
        return old
    src = KNOWN_LADDERS.get(old)
    if src is None or list(src) != LAMBDAS[:old]:
        raise SystemExit(f"checkpoint has {old} gain levels; only a prefix of the current ladder can be extended")
    names = [n for n, _ in model.named_parameters()]
    for key in ("log_gain", "log_igain"):
        sd[key] = remap_levels(sd[key], src, LAMBDAS)
        st = ckpt["opt"]["state"].get(names.index(key))
        if st:
            for mom in ("exp_avg", "exp_avg_sq"):
                extra = st[mom][-1:].expand(len(LAMBDAS) - old, -1)
                st[mom] = torch.cat([st[mom], torch.zeros_like(extra) if mom == "exp_avg" else extra.clone()])
    return old


def save_atomic(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


class EMA:
    """Exponential moving average of the parameters (Polyak averaging), updated after every
    step on the parameters' device; what --weights-out writes when enabled. Averaging damps the
    step-to-step noise of small-batch training."""

    def __init__(self, model, decay, state=None):
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        params = [p.detach() for _, p in model.named_parameters()]
        ok = state is not None and all(n in state and state[n].shape == p.shape for n, p in zip(self.names, params))
        self.avg = [(state[n].to(p.device, torch.float32) if ok else p.float().clone()) for n, p in zip(self.names, params)]
        self.resumed = ok

    @torch.no_grad()
    def update(self, model):
        torch._foreach_lerp_(self.avg, [p.detach().float() for p in model.parameters()], 1.0 - self.decay)

    def state(self):
        return {n: a.detach().cpu() for n, a in zip(self.names, self.avg)}

    def state_dict(self, model):
        """model's state dict with the averaged parameters in place of the current ones."""
        sd = dict(model.state_dict())
        sd.update(zip(self.names, self.avg))
        return sd


def restore_good(good, model, opt, dev, fused=False):
    """Back to the last known-good checkpoint with a halved learning rate; returns a log line."""
    st = torch.load(good, map_location=dev)
    model.load_state_dict(st["model"])
    opt.load_state_dict(st["opt"])
    for gparam in opt.param_groups:
        gparam["lr"] *= 0.5
        if fused:  # the device guard needs fused Adam, whatever the checkpoint used
            gparam["fused"], gparam["foreach"] = True, None
    if fused:
        opt.load_state_dict(opt.state_dict())  # Adam's step counters onto the device
    return f"restored {good} (step {st['total_steps']}), lr {opt.param_groups[0]['lr']:.2e}"


class DeviceGuard:
    """State of the on-device divergence guard: the recent applied losses (a ring, NaN = empty),
    sums for the log and the number of skipped updates since the last report."""

    def __init__(self, dev, opt, model):
        self.opt, self.model = opt, model
        self.ring = torch.full((50,), float("nan"), device=dev)
        self.n = 0
        self.acc = torch.zeros(4, device=dev)  # loss, mse, bpp, applied steps
        self.skipped = torch.zeros((), device=dev)


def device_step(g, loss, mse, bpp):
    """One update whose spike test runs on the device: the same rule as the host guard (a
    non-finite loss, or one above 6 x the recent median + 5, is not applied), but the skip is
    fused Adam's found_inf flag, so the host never waits for the GPU inside a step."""
    loss = loss.float()
    bad = ~torch.isfinite(loss)
    if g.n >= 20:
        bad = bad | (loss > 6 * torch.nanmedian(g.ring) + 5)
    g.opt.found_inf = bad.float()
    g.opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(g.model.parameters(), 1.0)
    g.opt.step()  # a no-op for parameters, moments and step count when found_inf is 1
    i = g.n % g.ring.numel()
    g.ring[i] = torch.where(bad, g.ring[i], loss.detach())
    g.n += 1
    row = torch.stack([loss.detach(), mse.detach().float().mean(), bpp.detach().float().mean(),
                       torch.ones((), device=loss.device)])
    g.acc += torch.where(bad, torch.zeros_like(row), row)
    g.skipped += bad.float()
    return g


def device_report(g, step, total_steps, start_step, t0, opt, model, good, dev, log_every, log):
    """The host's look at the device guard (one synchronisation): prints the log line, and after
    10 or more skipped updates since the last look restores the last good checkpoint with a
    halved learning rate. Returns (guard, last applied loss, recent median, restored)."""
    acc = g.acc.tolist()
    skipped = int(g.skipped.item())
    last = float(g.ring[(g.n - 1) % g.ring.numel()].item())
    med = float(torch.nanmedian(g.ring).item()) if g.n >= 20 else None
    n = max(acc[3], 1.0)
    if log:
        psnr = 10 * math.log10(1 / max(acc[1] / n, 1e-10))
        print(f"step {step} total {total_steps} loss {acc[0]/n:.4f} bpp {acc[2]/n:.4f} psnr~{psnr:.2f} "
              f"lr {opt.param_groups[0]['lr']:.1e} ({(time.time()-t0)/max(step-start_step, 1):.3f}s/step)"
              + (f", {skipped} updates skipped" if skipped else ""), flush=True)
        g.acc.zero_()
    restored = False
    if skipped >= 10 and os.path.exists(good):
        print(f"{skipped} updates skipped: " + restore_good(good, model, opt, dev, fused=True), flush=True)
        restored = True
    if log or restored:
        g.skipped.zero_()
    return g, last, med, restored


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--ckpt", default=os.path.join(ROOT, "training", "runs", "ckpt.pt"))
    ap.add_argument("--init", default=None,
                    help="weights to start from when --ckpt does not exist (default: the shipped default "
                         "model's models/<name>.weights.npz)")
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--set-lr", type=float, default=None,
                    help="learning rate to continue a resumed --ckpt with (default: the checkpoint's own)")
    ap.add_argument("--arch", default=None, choices=["hp", "lite"],
                    help="architecture (default: that of the checkpoint or weights resumed from, else hp)")
    ap.add_argument("--N", type=int, default=96)
    ap.add_argument("--M", type=int, default=192)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--seconds", type=float, default=None, help="time budget in seconds (overrides --hours)")
    ap.add_argument("--decay-frac", type=float, default=0.0,
                    help="divide the learning rate by 10 for this final fraction of the time budget")
    ap.add_argument("--weights-out", default=None, help="also write fp32 weights (npz) here")
    ap.add_argument("--weights-every", type=float, default=60.0, help="seconds between --weights-out writes")
    ap.add_argument("--guard", default="auto", choices=["auto", "host", "device"],
                    help="where the divergence guard decides: 'host' reads every step's loss (a GPU "
                         "synchronisation per step), 'device' keeps the decision on the device (fused Adam "
                         "skips a bad update through its found_inf flag; the host reads the losses once "
                         "per --log-every steps). auto: device on CUDA, host on the CPU")
    ap.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                    help="bfloat16 autocast (likelihoods stay fp32) or fp32; auto: bf16 on GPUs and on CPUs "
                         "with native bf16 instructions (AVX512_BF16/AMX), where it is about 2-3x faster; "
                         "elsewhere PyTorch emulates it, about 100x slower than fp32")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="keep an exponential moving average of the parameters with this decay per step "
                         "(e.g. 0.999) and write it with --weights-out; 0: off")
    ap.add_argument("--compile", action="store_true",
                    help="run the forward pass through torch.compile (falls back to eager if compiling fails; "
                         "on 2 CPU cores it was measured slower: 0.757 vs 0.714 s/step after a 50 s compile)")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(args.device)
    budget = args.seconds if args.seconds is not None else args.hours * 3600

    torch.set_num_threads(args.threads)
    os.makedirs(os.path.dirname(args.ckpt), exist_ok=True)
    step, total_steps = 0, 0
    if args.init is None:
        default = os.path.join(ROOT, "models", "DEFAULT")
        name = open(default).read().strip() if os.path.exists(default) else "hp1"
        args.init = os.path.join(ROOT, "models", f"{name}.weights.npz")
    # the architecture of what we resume from; --arch naming another one warm-starts a new model
    ckpt = torch.load(args.ckpt, map_location="cpu") if os.path.exists(args.ckpt) else None
    init = load_weights(args.init) if ckpt is None and os.path.exists(args.init) else None
    found = ckpt.get("args", {}).get("arch", "hp") if ckpt else (init[2] if init else None)
    warm_start = False
    if args.arch is None:
        args.arch = found or "hp"
    elif found is not None and found != args.arch:
        if ckpt is not None:
            raise SystemExit(f"--arch {args.arch}, but {args.ckpt} holds a {found!r} model: "
                             f"pass another --ckpt for a new run")
        warm_start = True  # a new architecture: take every tensor of --init whose name and shape match
    model = HyperpriorCodec(args.N, args.M, arch=args.arch)
    device_guard = args.guard == "device" or (args.guard == "auto" and dev.type == "cuda")
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True if device_guard else None)
    if ckpt is not None:
        had = adapt_levels(ckpt, model)
        if had != len(LAMBDAS):
            print(f"checkpoint had {had} gain levels: extended to {len(LAMBDAS)} (lambda up to {LAMBDAS[-1]})",
                  flush=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, total_steps = ckpt["step"], ckpt.get("total_steps", ckpt["step"])
        print(f"resumed {args.ckpt} at step {step} (total {total_steps})", flush=True)
    elif warm_start:
        own = model.state_dict()
        sd = {k: v for k, v in init[0].items() if k in own and v.shape == own[k].shape}
        model.load_state_dict(sd, strict=False)
        print(f"new {args.arch!r} model warm-started from {len(sd)} of {len(own)} tensors of the {found!r} "
              f"weights {args.init} (entropy model, gains, low-resolution layers); step count starts at 0",
              flush=True)
    elif init is not None:
        model.load_state_dict(init[0])
        total_steps = init[1]
        print(f"initialised from shipped weights {args.init} (total steps {total_steps})", flush=True)
    else:
        print(f"training a {args.arch!r} model from scratch", flush=True)

    # channels-last convolutions are about 1.35x faster with bf16 oneDNN kernels on these CPUs
    # (.to() keeps the Parameter objects, so the optimizer still holds them)
    model = model.to(memory_format=torch.channels_last)
    if device_guard:  # a loaded state carries the checkpoint's own (unfused) optimizer settings
        for gparam in opt.param_groups:
            gparam["fused"], gparam["foreach"] = True, None
    if dev.type == "cuda":
        model = model.to(dev)  # moves the Parameters' data in place; the optimizer state follows
        torch.backends.cudnn.benchmark = True
    # re-casts any loaded Adam state onto the parameters' device (fused Adam: steps as float32 there)
    opt.load_state_dict(opt.state_dict())
    rng = random.Random(1234 + total_steps)
    torch.manual_seed(1234 + total_steps)
    images = load_images(args.data)
    if dev.type == "cuda":
        images = [torch.from_numpy(im.copy()).to(dev) for im in images]
    print(f"{len(images)} training images on {dev}", flush=True)
    if args.set_lr is not None:
        for gparam in opt.param_groups:
            gparam["lr"] = args.set_lr
    base_lr = opt.param_groups[0]["lr"]
    ema = EMA(model, args.ema, ckpt.get("ema") if ckpt else None) if args.ema > 0 else None
    if ema is not None:
        print(f"parameter average (decay {args.ema}) " + ("resumed" if ema.resumed else "starts from the weights"),
              flush=True)
    fwd = torch.compile(model) if args.compile else model  # shares the Parameters with model
    last_weights = time.time()
    t0 = time.time()
    start_step = step
    good = args.ckpt.replace(".pt", "-good.pt")
    recent = []  # recent losses, for spike detection
    skipped = 0
    acc = {"loss": 0.0, "mse": 0.0, "bpp": 0.0, "n": 0}
    dg = DeviceGuard(dev, opt, model) if device_guard else None

    def checkpoint():
        return {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "total_steps": total_steps,
                "args": vars(args), "ema": ema.state() if ema is not None else None}
    levels = len(LAMBDAS) - 1
    amp = autocast_dtype(args.precision, dev.type)
    print(f"precision: {'bf16 autocast' if amp is not None else 'fp32'}", flush=True)
    while step < args.steps and time.time() - t0 < budget:
        if args.decay_frac > 0 and time.time() - t0 > (1 - args.decay_frac) * budget:
            for gparam in opt.param_groups:
                gparam["lr"] = min(gparam["lr"], base_lr * 0.1)
        if dev.type == "cuda":
            x = batch_on_device(images, args.batch, args.size, rng)
        else:
            x = batch(images, args.batch, args.size, rng)
        x = x.contiguous(memory_format=torch.channels_last)
        level = torch.rand(args.batch, device=dev) * levels
        lam = lambdas_for(level)
        with autocast(amp, dev.type):
            try:
                x_hat, lik_y, lik_z = fwd(x, level)
            except Exception as e:  # noqa: BLE001 - any compiler failure: train on, eagerly
                if fwd is model:
                    raise
                print(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); training eagerly", flush=True)
                fwd = model
                x_hat, lik_y, lik_z = fwd(x, level)
        npix = args.size * args.size
        bpp = image_bits(lik_y, lik_z) / npix
        mse = ((x_hat.float() - x) ** 2).mean((1, 2, 3))
        loss = (lam * 255 ** 2 * mse + bpp).mean()
        restored = False
        if device_guard:
            dg = device_step(dg, loss, mse, bpp)
        else:
            # divergence guard: a non-finite loss or a spike far above the recent median is not
            # applied; a run of them restores the last good checkpoint with a halved learning rate
            lv = loss.item()
            med = sorted(recent)[len(recent) // 2] if len(recent) >= 20 else None
            if not math.isfinite(lv) or (med is not None and lv > 6 * med + 5):
                skipped += 1
                print(f"step {step}: skipped update (loss {lv:.4g}, recent median {med})", flush=True)
                if skipped >= 10 and os.path.exists(good):
                    print(restore_good(good, model, opt, dev), flush=True)
                    skipped = 0
                continue
            skipped = 0
            recent = (recent + [lv])[-50:]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            acc["loss"] += lv
            acc["mse"] += mse.detach().mean()  # summed on the device: no extra synchronisation
            acc["bpp"] += bpp.detach().mean()
            acc["n"] += 1
        if ema is not None:
            ema.update(model)
        step += 1
        total_steps += 1
        if device_guard:
            if step % args.log_every == 0 or step % args.save_every == 0:
                dg, lv, med, restored = device_report(dg, step, total_steps, start_step, t0, opt, model, good,
                                                      dev, args.log_every, step % args.log_every == 0)
        elif step % args.log_every == 0:
            n = acc["n"]
            psnr = 10 * math.log10(1 / max(float(acc["mse"]) / n, 1e-10))
            print(f"step {step} total {total_steps} loss {acc['loss']/n:.4f} bpp {float(acc['bpp'])/n:.4f} "
                  f"psnr~{psnr:.2f} lr {opt.param_groups[0]['lr']:.1e} "
                  f"({(time.time()-t0)/(step-start_step):.3f}s/step)", flush=True)
            acc = {"loss": 0.0, "mse": 0.0, "bpp": 0.0, "n": 0}
        if step % args.save_every == 0 and not restored:
            state = checkpoint()
            save_atomic(state, args.ckpt)
            if step % (5 * args.save_every) == 0 and med is not None and lv < 2 * med + 2:
                save_atomic(state, good)  # a known-sane state to fall back to
        if args.weights_out and time.time() - last_weights > args.weights_every:
            save_weights(model, total_steps, args.weights_out, ema)
            last_weights = time.time()
    save_atomic(checkpoint(), args.ckpt)
    if args.weights_out:
        save_weights(model, total_steps, args.weights_out, ema)
    print(f"done at step {step} (total {total_steps})", flush=True)


if __name__ == "__main__":
    main()
