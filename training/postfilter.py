"""A post-filter for the shipped model: a small network run on the synthesis output.

The model's transforms stay as shipped (so every file, old or new, decodes to the same symbols);
a few 3x3 convolutions (at half resolution on the pixel-unshuffled image with --half, and
conditioned on the file's quality) learn to predict the residual original - decoded from the
decoded pixels. Training pairs come from fastcodec itself: compress + decompress of random
training crops at random qualities, with the decoders the codec uses by default (the int8 one
up to the quality its policy says), without any post-filter. Kodak is never trained on; the
gain is measured there.

    python training/postfilter.py prep  --out /tmp/pf --crops 4000          # decoded/original pairs
    python training/postfilter.py train --out /tmp/pf --half --ch 48 --layers 3 --seconds 1500
    python training/postfilter.py eval  --out /tmp/pf --half --ch 48 --layers 3   # Kodak dB gain per quality
    python training/postfilter.py export --out /tmp/pf --half --ch 48 --layers 3 --bundle hp2 --max-quality 85

    # two scales (PostFilterUNet), started from a trained plain 3-layer half-resolution filter
    python training/postfilter.py train --out /tmp/pfu --pairs ../pf/pairs_policy.npz --arch unet \
        --ch 32 --ch2 64 --blocks 2 --init /tmp/pf/pf32x3h.pt --lr 5e-4 --seconds 2400

    # 0.6: the shipped filter trained on, on more pairs, with the per-crop PSNR loss (fp32, one core)
    python training/postfilter.py prep  --out /tmp/pf --crops 12000 --pairs pairs12k.npz
    python training/postfilter.py train --out /tmp/pfC --pairs ../pf/pairs12k.npz --arch unet \
        --ch 32 --ch2 64 --blocks 2 --init models/hp2/postfilter.onnx --loss psnr --lr 2e-4 \
        --threads 1 --eval-every 1000 --seconds 3900

Export writes models/BUNDLE/postfilter.onnx (inputs x: the synthesis output (1, 3, H, W), H and
W even (multiples of 4 for the unet); q: quality / 100, shape (1,); output: the filtered image) and lists it in model.json
under "postfilter" with its SHA-256 and the highest quality it runs at.
"""
from __future__ import annotations

import argparse
import glob
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import load_images  # noqa: E402  (refuses Kodak)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class PostFilter(nn.Module):
    """layers 3x3 convolutions with ReLU between, predicting a residual. half: the convolutions
    run at half resolution on the pixel-unshuffled image (12 channels + quality in, 12 out)."""

    def __init__(self, ch=24, layers=3, half=False):
        super().__init__()
        self.half = half
        cin, cout = (13, 12) if half else (4, 3)
        convs = [nn.Conv2d(cin, ch, 3, padding=1)]
        convs += [nn.Conv2d(ch, ch, 3, padding=1) for _ in range(layers - 2)]
        convs += [nn.Conv2d(ch, cout, 3, padding=1)]
        self.convs = nn.ModuleList(convs)
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x, q):  # x: decoded pixels in [0, 1] (even height and width if half); q: quality / 100
        z = nn.functional.pixel_unshuffle(x, 2) if self.half else x
        h = torch.cat([z, q.view(-1, 1, 1, 1).expand(-1, 1, *z.shape[2:])], 1)
        for i, c in enumerate(self.convs):
            h = c(h)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return x + (nn.functional.pixel_shuffle(h, 2) if self.half else h)


class PostFilterUNet(nn.Module):
    """A two-scale post-filter: the plain half-resolution filter (inc -> dec -> out, as
    PostFilter(ch, 3, half=True)) with a quarter-resolution branch added between its first two
    layers for a wider view (blocking and ringing at low rates span a latent's 16 pixels):

        h0 = [unshuffle(x, 2), q]                        13 channels at 1/2 resolution
        a1 = relu(inc(h0))                               ch
        d  = relu(down(unshuffle(a1, 2)))                1x1, 4ch -> ch2 at 1/4 resolution
        d  = relu(mid_k(d)) for each of the blocks       3x3, ch2 -> ch2
        a2 = relu(dec(a1 + shuffle(up(d), 2)))           1x1 ch2 -> 4ch, then 3x3 ch -> ch
        out = x + shuffle(out(a2), 2)

    Every operation is a stride-1 convolution, a pixel (un)shuffle, a ReLU or a sum, so its
    gradient is easy to write out by hand (training/refine_graph.py). `up` starts at zero: a
    filter initialised from a plain one (init_from_plain) starts as exactly that filter.
    H and W must be multiples of 4 (the synthesis output is a multiple of 16)."""

    def __init__(self, ch=32, ch2=64, blocks=2):
        super().__init__()
        self.ch, self.ch2, self.blocks = ch, ch2, blocks
        self.inc = nn.Conv2d(13, ch, 3, padding=1)
        self.down = nn.Conv2d(4 * ch, ch2, 1)
        self.mid = nn.ModuleList([nn.Conv2d(ch2, ch2, 3, padding=1) for _ in range(blocks)])
        self.up = nn.Conv2d(ch2, 4 * ch, 1)
        self.dec = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 12, 3, padding=1)
        for c in (self.up, self.out):
            nn.init.zeros_(c.weight)
            nn.init.zeros_(c.bias)

    def init_from_plain(self, plain):
        """Copy a trained PostFilter(ch, 3, half=True) into inc, dec and out."""
        for dst, src in zip((self.inc, self.dec, self.out), plain.convs):
            dst.weight.data.copy_(src.weight.data)
            dst.bias.data.copy_(src.bias.data)

    def init_from_unet(self, small):
        """Copy a trained PostFilterUNet with the same ch and ch2 and at most as many blocks; the
        extra quarter-resolution blocks start as the identity (a centre-tap kernel: the block's
        input is a ReLU output, so relu(identity(d)) = d), so the filter starts as exactly `small`."""
        if (small.ch, small.ch2) != (self.ch, self.ch2) or small.blocks > self.blocks:
            raise ValueError(f"cannot grow a {small.ch}x{small.ch2}x{small.blocks} filter into "
                             f"{self.ch}x{self.ch2}x{self.blocks}: ch and ch2 must match and blocks may only grow")
        own = self.state_dict()
        for k, v in small.state_dict().items():
            own[k] = v.detach().clone()
        for i in range(small.blocks, self.blocks):
            w = torch.zeros_like(own[f"mid.{i}.weight"])
            w[torch.arange(self.ch2), torch.arange(self.ch2), 1, 1] = 1.0
            own[f"mid.{i}.weight"], own[f"mid.{i}.bias"] = w, torch.zeros_like(own[f"mid.{i}.bias"])
        self.load_state_dict(own)

    def forward(self, x, q, extra=None):
        """extra: an optional term added to the first layer's pre-activation (ch channels at half
        resolution; training/featfilter_probe.py feeds the synthesis features through it)."""
        z = nn.functional.pixel_unshuffle(x, 2)
        h = torch.cat([z, q.view(-1, 1, 1, 1).expand(-1, 1, *z.shape[2:])], 1)
        a1 = torch.relu(self.inc(h) if extra is None else self.inc(h) + extra)
        d = torch.relu(self.down(nn.functional.pixel_unshuffle(a1, 2)))
        for c in self.mid:
            d = torch.relu(c(d))
        a2 = torch.relu(self.dec(a1 + nn.functional.pixel_shuffle(self.up(d), 2)))
        return x + nn.functional.pixel_shuffle(self.out(a2), 2)


class PostFilterUNetExport(nn.Module):
    """PostFilterUNet as exported: the same function without pixel unshuffles, which onnxruntime
    runs as memory-bound transposes (about a sixth of the filter's time at Kodak size).
    unshuffle(x, 2) then a 3x3 convolution is a 6x6 convolution of stride 2 (padding 2) on x,
    plus the quality plane's own 3x3 convolution; unshuffle(a1, 2) then a 1x1 convolution is a
    2x2 convolution of stride 2. Channel c * 4 + 2 * i + j of an unshuffle is pixel (i, j) of
    channel c's 2x2 block."""

    def __init__(self, ch=32, ch2=64, blocks=2):
        super().__init__()
        self.inc = nn.Conv2d(3, ch, 6, stride=2, padding=2)
        self.incq = nn.Conv2d(1, ch, 3, padding=1, bias=False)
        self.down = nn.Conv2d(ch, ch2, 2, stride=2)
        self.mid = nn.ModuleList([nn.Conv2d(ch2, ch2, 3, padding=1) for _ in range(blocks)])
        self.up = nn.Conv2d(ch2, 4 * ch, 1)
        self.dec = nn.Conv2d(ch, ch, 3, padding=1)
        self.out = nn.Conv2d(ch, 12, 3, padding=1)

    @staticmethod
    def strided(w):
        """3x3 kernel over the unshuffled planes (o, 4c, 3, 3) -> 6x6 kernel over the image (o, c, 6, 6):
        w[o, 4c + 2i + j, kh, kw] = w6[o, c, 2kh + i, 2kw + j]."""
        o = w.shape[0]
        return w.reshape(o, -1, 2, 2, 3, 3).permute(0, 1, 4, 2, 5, 3).reshape(o, -1, 6, 6).contiguous()

    @staticmethod
    def unshuffled(w6):
        """The inverse of strided()."""
        o = w6.shape[0]
        return w6.reshape(o, -1, 3, 2, 3, 2).permute(0, 1, 3, 5, 2, 4).reshape(o, -1, 3, 3).contiguous()

    @classmethod
    def from_unet(cls, net):
        ex = cls(net.ch, net.ch2, net.blocks)
        sd = {k: v.detach().clone() for k, v in net.state_dict().items()}
        w = sd.pop("inc.weight")
        sd["inc.weight"], sd["incq.weight"] = cls.strided(w[:, :12]), w[:, 12:13].clone()
        wd = sd.pop("down.weight")  # a 1x1 kernel over unshuffled planes is a 2x2 one of stride 2
        sd["down.weight"] = wd.reshape(wd.shape[0], net.ch, 2, 2).clone()
        ex.load_state_dict(sd)
        return ex

    def to_unet(self):
        ch, ch2 = self.dec.weight.shape[0], self.down.weight.shape[0]
        net = PostFilterUNet(ch, ch2, len(self.mid))
        sd = {k: v.detach().clone() for k, v in self.state_dict().items()}
        sd["inc.weight"] = torch.cat([self.unshuffled(sd.pop("inc.weight")), sd.pop("incq.weight")], 1)
        sd["down.weight"] = sd["down.weight"].reshape(ch2, 4 * ch, 1, 1).clone()
        net.load_state_dict(sd)
        return net

    def forward(self, x, q):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        a1 = torch.relu(self.inc(x) + self.incq(q.view(1, 1, 1, 1).expand(1, 1, h, w)))
        d = torch.relu(self.down(a1))
        for c in self.mid:
            d = torch.relu(c(d))
        a2 = torch.relu(self.dec(a1 + nn.functional.pixel_shuffle(self.up(d), 2)))
        return x + nn.functional.pixel_shuffle(self.out(a2), 2)


def make_filter(args):
    if args.arch == "unet":
        return PostFilterUNet(args.ch, args.ch2, args.blocks)
    return PostFilter(args.ch, args.layers, args.half)


def filter_path(args):
    if args.arch == "unet":
        return os.path.join(args.out, f"pfu{args.ch}x{args.ch2}x{args.blocks}.pt")
    return os.path.join(args.out, f"pf{args.ch}x{args.layers}{'h' if args.half else ''}.pt")


def prep(args):
    import fastcodec
    codec = fastcodec.Codec(threads=2, decoder=args.decoder, postfilter=False)
    rng = random.Random(args.seed)
    imgs = [im for im in load_images(args.data) if min(im.shape[:2]) >= args.size]
    n = args.crops
    orig = np.empty((n, args.size, args.size, 3), np.uint8)
    dec = np.empty_like(orig)
    qs = np.empty(n, np.float32)
    t0 = time.time()
    for i in range(n):
        im = imgs[rng.randrange(len(imgs))]
        h, w, _ = im.shape
        y, x = rng.randrange(h - args.size + 1), rng.randrange(w - args.size + 1)
        crop = np.ascontiguousarray(im[y:y + args.size, x:x + args.size])
        q = round(rng.uniform(1, 100), 2)
        orig[i], qs[i] = crop, q
        dec[i] = codec.decompress(codec.compress(crop, quality=q))
        if i % 200 == 0:
            print(f"{i}/{n} {time.time() - t0:.0f}s", flush=True)
    np.savez(os.path.join(args.out, args.pairs), orig=orig, dec=dec, q=qs)


def train(args):
    torch.set_num_threads(args.threads)
    d = np.load(os.path.join(args.out, args.pairs))
    orig, dec, qs = d["orig"], d["dec"], d["q"]
    n = len(qs)
    held = np.arange(n) % 10 == 0
    tr = np.nonzero(~held)[0]
    net = make_filter(args)
    path = filter_path(args)
    if os.path.exists(path) and args.resume:
        net.load_state_dict(torch.load(path))
    elif args.init:
        if args.arch != "unet":
            raise SystemExit("--init starts a two-scale filter (--arch unet) from a plain one or a smaller two-scale one")
        if args.init.endswith(".onnx"):  # an exported two-scale filter (e.g. the shipped one), read back
            from refine_graph import postfilter_module
            small = postfilter_module(args.init)
            if not hasattr(small, "mid"):  # (refine_graph imports this file as `postfilter`, not __main__)
                raise SystemExit(f"{args.init} is not a two-scale filter")
            net.init_from_unet(small)
        else:
            plain = PostFilter(args.ch, 3, half=True)
            plain.load_state_dict(torch.load(args.init))
            net.init_from_plain(plain)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    rng = np.random.default_rng(0)
    s = args.crop

    grid = max(1, args.grid)

    def batch(idx):  # sub-crop offsets on a grid of pixels (16: the latent grid, as at decode time)
        ys = rng.integers(0, (orig.shape[1] - s) // grid + 1, len(idx)) * grid
        xs = rng.integers(0, (orig.shape[2] - s) // grid + 1, len(idx)) * grid
        o = np.stack([orig[i, y:y + s, x:x + s] for i, y, x in zip(idx, ys, xs)])
        r = np.stack([dec[i, y:y + s, x:x + s] for i, y, x in zip(idx, ys, xs)])
        t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        return t(r), t(o), torch.from_numpy(qs[idx] / 100)

    def held_out():
        idx = np.nonzero(held)[0][:args.held_out]
        with torch.no_grad():
            tot0 = tot1 = 0.0
            for k in range(0, len(idx), 16):
                j = idx[k:k + 16]
                t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255  # noqa: E731
                x, o, q = t(dec[j]), t(orig[j]), torch.from_numpy(qs[j] / 100)
                y = net(x, q)
                tot0 += (-10 * torch.log10(((x - o) ** 2).mean((1, 2, 3)))).sum().item()
                tot1 += (-10 * torch.log10(((y.clamp(0, 1) - o) ** 2).mean((1, 2, 3)))).sum().item()
        return (tot1 - tot0) / len(idx)

    print(f"held-out gain at start {held_out():+.4f} dB", flush=True)
    t0, step = time.time(), 0
    while time.time() - t0 < args.seconds:
        frac = (time.time() - t0) / args.seconds
        for g in opt.param_groups:
            g["lr"] = args.lr * (0.5 * (1 + np.cos(np.pi * frac)))
        x, o, q = batch(rng.choice(tr, args.batch))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
            y = net(x, q)
        if args.loss == "psnr":  # mean over crops of 10 log10(MSE): every crop's dB counts the same, as in
            # a per-image PSNR average (plain MSE weights the low-quality crops, whose errors are larger)
            loss = (10 / np.log(10)) * torch.log(((y.float() - o) ** 2).mean((1, 2, 3)).clamp_min(1e-6)).mean()
        else:
            loss = ((y.float() - o) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            print(f"step {step} loss {loss.item():.6f} held-out gain {held_out():+.4f} dB "
                  f"({(time.time() - t0) / step:.3f} s/step)", flush=True)
            torch.save(net.state_dict(), path)
    torch.save(net.state_dict(), path)
    print(f"done: {step} steps, held-out gain {held_out():+.4f} dB")


def evaluate(args):
    import fastcodec
    torch.set_num_threads(2)
    net = make_filter(args)
    net.load_state_dict(torch.load(filter_path(args)))
    codec = fastcodec.Codec(threads=2, decoder=args.decoder, postfilter=False)
    files = sorted(glob.glob(os.path.join(args.kodak, "kodim*.png")))[::args.every_nth]
    for q in (1, 10, 25, 45, 65, 85, 100):
        gains = []
        for f in files:
            im = np.asarray(Image.open(f).convert("RGB"))
            d = codec.decompress(codec.compress(im, quality=q))
            with torch.no_grad():
                x = torch.from_numpy(d).permute(2, 0, 1)[None].float() / 255
                y = (net(x, torch.tensor([q / 100.0])).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
            p = lambda a: 10 * np.log10(255 ** 2 / np.mean((a.astype(float) - im.astype(float)) ** 2))  # noqa: E731
            gains.append((p(d), p(y)))
        g = np.array(gains)
        print(f"q{q}: {g[:, 0].mean():.3f} -> {g[:, 1].mean():.3f} dB ({g[:, 1].mean() - g[:, 0].mean():+.3f})",
              flush=True)


def export(args):
    from qgraph import sha256_of, update_model_json

    net = make_filter(args).eval()
    net.load_state_dict(torch.load(filter_path(args)))
    if args.arch == "unet":
        net = PostFilterUNetExport.from_unet(net).eval()
    path = os.path.join(ROOT, "models", args.bundle, "postfilter.onnx")
    x, q = torch.rand(1, 3, 128, 192), torch.tensor([0.5])
    torch.onnx.export(net, (x, q), path + ".tmp", input_names=["x", "q"], output_names=["out"],
                      dynamic_axes={"x": {2: "h", 3: "w"}, "out": {2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    os.replace(path + ".tmp", path)
    import onnxruntime as ort
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy(), "q": q.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - net(x, q).numpy()).max() < 1e-4
    params = sum(p.numel() for p in net.parameters())
    entry = {
        "graph": "postfilter", "sha256": sha256_of(path), "max_quality": args.max_quality,
        "architecture": (f"two scales: 3x3 convolutions with {args.ch} channels at half resolution (pixel "
                         f"unshuffle) and {args.blocks} with {args.ch2} at quarter resolution (1x1 down and up), "
                         f"ReLU, quality as an input plane, residual" if args.arch == "unet" else
                         f"{args.layers} conv 3x3, {args.ch} channels, ReLU, "
                         f"{'at half resolution (pixel unshuffle), ' if args.half else ''}quality as an input plane, "
                         f"residual"),
        "parameters": params, "training_steps": args.steps_note,
        "note": args.note}
    meta_path = update_model_json(args.bundle, lambda meta: meta.__setitem__("postfilter", entry))
    print(f"wrote {path} ({os.path.getsize(path)} bytes, {params} parameters), listed in {meta_path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["prep", "train", "eval", "export"])
    ap.add_argument("--out", default="/tmp/pf")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--size", type=int, default=192)
    ap.add_argument("--crops", type=int, default=2400)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ch", type=int, default=24)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=900)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--decoder", default=None, help="decoder of the pairs and the evaluation: the model's "
                    "default policy (None), float or int8")
    ap.add_argument("--pairs", default="pairs.npz")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arch", choices=["plain", "unet"], default="plain",
                    help="plain: --layers 3x3 convolutions; unet: PostFilterUNet(--ch, --ch2, --blocks)")
    ap.add_argument("--ch2", type=int, default=64, help="unet: channels at 1/4 resolution")
    ap.add_argument("--blocks", type=int, default=2, help="unet: 3x3 convolutions at 1/4 resolution")
    ap.add_argument("--init", default=None, help="unet: start from this plain PostFilter(ch, 3, half) state dict, or from an exported "
                         "two-scale postfilter.onnx with the same ch/ch2 and at most --blocks blocks (the new "
                         "blocks start as the identity)")
    ap.add_argument("--half", action="store_true", help="convolutions at half resolution (pixel unshuffle)")
    ap.add_argument("--every-nth", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--held-out", type=int, default=400,
                    help="train: measure on the first this many held-out crops (every 10th crop is held out)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="train: bf16 autocast is about 12x slower than fp32 for these small convolutions "
                         "on one thread (measured 3.8 vs 0.31 s per step, 2026-11-28)")
    ap.add_argument("--loss", choices=["mse", "psnr"], default="mse",
                    help="train: plain MSE over the batch, or the mean over crops of 10 log10(MSE)")
    ap.add_argument("--grid", type=int, default=16,
                    help="train: sub-crop offsets on this pixel grid; 16 keeps the synthesis's 16-pixel latent "
                         "grid where it is at decode time (measured +0.004 dB held-out over random offsets, "
                         "training/featfilter_probe.py, 2026-11-28); 1: anywhere, as 0.3-0.6 were trained")
    ap.add_argument("--eval-every", type=int, default=200, help="train: steps between held-out measurements")
    ap.add_argument("--bundle", default="hp2")
    ap.add_argument("--max-quality", type=float, default=100.0)
    ap.add_argument("--steps-note", type=int, default=0, help="training steps, for model.json")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    {"prep": prep, "train": train, "eval": evaluate, "export": export}[args.cmd](args)


if __name__ == "__main__":
    main()
