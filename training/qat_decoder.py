"""An int8 decoder for the shipped model: quantisation-aware fine-tuning of its synthesis transform.

    python training/qat_decoder.py calibrate --out training/runs/qat.pt       # ranges, no training
    python training/qat_decoder.py train --init training/runs/qat.pt --out training/runs/qat.pt --seconds 3600
    python training/qat_decoder.py export --init training/runs/qat.pt --onnx /tmp/decoder_int8.onnx
    python training/qat_decoder.py evaluate --onnx /tmp/decoder_int8.onnx   # Kodak PSNR against float
    python training/qat_decoder.py export --init training/runs/qat.pt --bundle hp2 --name int8

Only the synthesis changes; the encoder, hyper transforms, entropy model and gains stay the shipped
model's, so an int8 decoder decodes the files the shipped model writes (the bitstream is the
same; only the pixels the synthesis makes of the latents differ, as between CPUs).

The quantised graph, written node by node in NHWC layout (onnxruntime's com.microsoft QLinearConv
with channels_last, QLinearMul, QLinearLeakyRelu):
  * weights: int8 per output channel, symmetric, restricted to 7 bits (-64..63) so that the
    AVX2 u8s8 kernels (VPMADDUBSW sums two u8*s8 products in int16) cannot saturate: the integer
    accumulations are then exact on every CPU, as with VNNI;
  * activations: uint8 per tensor; the first convolution (its input, the latents, is not
    quantised) and, by default, the last one (to pixels: the most sensitive weights) stay float;
  * inverse GDN x * (beta + gamma |x|): |x| is LeakyRelu(alpha = -1), exact on x's grid, which
    onnxruntime runs as a 256-entry table; the 1x1 convolution and the product are quantised;
  * cross-layer equalisation (`equalize`, exact in float) first brings the channels of x and of
    x * norm to similar ranges, which per-tensor quantisation needs (Kodak q100: -0.84 -> -0.66 dB);
  * the sub-pixel shuffles run on uint8 NHWC tensors as one transpose of whole C-byte runs (the
    convolutions' output channels are reordered to DCR for it): onnxruntime's NCHW DepthToSpace
    and the layout transposes around every QLinearConv took 40 % of the time (85 -> 53 ms at
    768x512 on 2 cores; the float decoder takes about 165 ms);
  * the output is quantised with scale 1/255 and zero point 0, the decoder's own rounding.
Training: the latents of 320x320 training crops under the frozen analysis transform (computed
once and cached) at a random continuous rate level biased to high rates, half of each batch from
the smoothest 30 % of crops (both where quantisation costs the most), quantised with the frozen
hyperprior's means exactly as the codec does. The loss is the quantised synthesis's squared
error divided by the float synthesis's on the same sample, so every image and rate counts by
its relative loss (as per-image PSNR does). Weights start from the float synthesis; activation
scales are learned (LSQ-style, through the straight-through rounding) from their calibrated
values. Float32 throughout: bfloat16's own rounding hides the int8 error at high quality.
Never reads Kodak.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import HyperpriorCodec, dims_of, load_weights  # noqa: E402
from qgraph import (ROOT, ActQ, Graph, QTransform, add_arguments, evaluation_inputs, optimizer,  # noqa: E402
                    quant_weight, register, save, ste_round)


def pixel_quant(x):
    """The decoder's own rounding to 8-bit pixels: scale 1/255, zero point 0."""
    return torch.clamp(ste_round(x.float() * 255.0), 0, 255) / 255.0


class QSynthesis(QTransform):
    """The hp synthesis (4 x conv3x3 + PixelShuffle(2), inverse GDN between) with int8 points.

    wide > 0 (the mixed decoder): the first `wide` stages keep their convolution outputs and
    inverse GDNs in float and quantise only the GDN's result, the next convolution's input, to
    12 bits (q_wide, zero point and scale learned like the others): at high rates the 8-bit
    ranges of those tensors clip, which costs more than their rounding. Their convolutions'
    weights stay 7-bit."""

    def __init__(self, g_s, float_last=False, wide=0):
        super().__init__([g_s[i][0] for i in (0, 2, 4, 6)], [g_s[i] for i in (1, 3, 5)], "q_mul")
        self.float_last = float_last  # the last convolution (to pixels) keeps float weights
        self.wide = wide
        self.q_wide = nn.ModuleList([ActQ(4095) for _ in range(wide)])

    def acts(self):
        return [*super().acts(), *self.q_wide]

    def forward(self, y):
        x = y
        for k, c in enumerate(self.convs):
            quant_w = self.quant and 0 < k < (3 if self.float_last else 4)
            w = quant_weight(c.weight)[0] if quant_w else c.weight
            x = F.conv2d(x, w.to(x.dtype), c.bias.to(x.dtype), padding=1)
            if k == 3:
                x = pixel_quant(x) if self.quant else x.float()
                return F.pixel_shuffle(x, 2)
            wide = k < self.wide
            x = F.pixel_shuffle(x.float() if wide else self.q_out[k](x), 2)
            g = self.gdns[k]
            beta, gamma = torch.clamp(g.beta, min=1e-3), torch.clamp(g.gamma, min=0.0)
            if self.quant and not wide:
                gamma = quant_weight(gamma)[0]
            norm = F.conv2d(torch.abs(x), gamma.to(x.dtype), beta.to(x.dtype))
            x = self.q_wide[k](x * norm) if wide else self.q_mul[k](x * self.q_norm[k](norm))
        raise AssertionError


def from_graph(m, path):
    """The QSynthesis of a shipped int8 decoder graph (decoder_int8.onnx, written by export):
    its dequantised weights, biases and activation quantisers, so that fine-tuning can go on from
    a bundle's decoder after its checkpoint is gone."""
    import onnx
    from onnx import numpy_helper

    mp = onnx.load(path)
    init = {t.name: numpy_helper.to_array(t).copy() for t in mp.graph.initializer}
    q = QSynthesis(copy.deepcopy(m.g_s), float_last=True)
    N = q.convs[0].weight.shape[0] // 4
    order = torch.argsort(torch.tensor([c * 4 + s for s in range(4) for c in range(N)]))  # DCR -> CRD
    nodes = {op: [n for n in mp.graph.node if n.op_type == op] for op in ("QLinearConv", "QLinearMul", "QuantizeLinear")}
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))

    def setq(a, s, z):
        a.log_s.data.fill_(float(np.log(init[s])))
        a.zp.fill_(float(init[z]))

    def dequant(n):  # weight and bias of a QLinearConv in float
        xs, w, ws = float(init[n.input[1]]), init[n.input[3]].astype(np.float32), init[n.input[4]]
        return t(w * ws[:, None, None, None]), t(init[n.input[8]] * xs * ws)

    with torch.no_grad():
        q.convs[0].weight.copy_(t(init["w0"])[order])
        q.convs[0].bias.copy_(t(init["b0"])[order])
        q.convs[3].weight.copy_(t(init["w3"]))
        q.convs[3].bias.copy_(t(init["b3"]))
        qc, qm, ql = nodes["QLinearConv"], nodes["QLinearMul"], nodes["QuantizeLinear"]
        setq(q.q_out[0], ql[0].input[1], ql[0].input[2])
        for k in range(3):
            q.gdns[k].gamma.copy_(dequant(qc[2 * k])[0])
            q.gdns[k].beta.copy_(dequant(qc[2 * k])[1])
            setq(q.q_norm[k], qc[2 * k].input[6], qc[2 * k].input[7])
            setq(q.q_mul[k], qm[k].input[6], qm[k].input[7])
            if k < 2:
                w, b = dequant(qc[2 * k + 1])
                q.convs[k + 1].weight.copy_(w[order])
                q.convs[k + 1].bias.copy_(b[order])
                setq(q.q_out[k + 1], qc[2 * k + 1].input[6], qc[2 * k + 1].input[7])
    return q


def channel_ranges(q: "QSynthesis", batches):
    """Per-channel ranges (max - min, min clipped at 0 from above) of each stage's x (after the
    pixel shuffle) and x * norm, from the float synthesis on the given inputs."""
    rx = [[] for _ in range(3)]
    rm = [[] for _ in range(3)]
    with torch.no_grad():
        for y in batches:
            x = y
            for k in range(3):
                c = q.convs[k]
                x = F.pixel_shuffle(F.conv2d(x, c.weight, c.bias, padding=1), 2)
                g = q.gdns[k]
                beta, gamma = torch.clamp(g.beta, min=1e-3), torch.clamp(g.gamma, min=0.0)
                mul = x * F.conv2d(torch.abs(x), gamma, beta)
                for store, t in ((rx, x), (rm, mul)):
                    t = t.transpose(0, 1).flatten(1)
                    store[k].append(torch.stack([t.amin(1).clamp(max=0), t.amax(1).clamp(min=0)]))
                x = mul
    out = []
    for k in range(3):
        a, b = torch.stack(rx[k]), torch.stack(rm[k])
        out.append((a[:, 1].amax(0) - a[:, 0].amin(0), b[:, 1].amax(0) - b[:, 0].amin(0)))
    return out


def equalize(q: "QSynthesis", batches, alpha_x=0.5, alpha_m=0.5):
    """Cross-layer equalisation (Nagel et al. 2019) through the inverse GDN, exact in float.

    Scaling channel c of a stage's x by a_c is undone inside the GDN (gamma[:, c] / a_c) and
    carries through the product x * norm; scaling the norm's channel c by b_c (gamma[c, :] and
    beta[c] times b_c) scales the product too, and the next convolution's input channel c takes
    1 / (a_c b_c). So x and x * norm can both be brought to similar per-channel ranges, which is
    what per-tensor uint8 quantisation needs; alpha 0 leaves a tensor as it is, 1 equalises fully.
    """
    ranges = channel_ranges(q, batches)
    with torch.no_grad():
        for k in range(3):
            r_x, r_m = ranges[k]
            a = (r_x.max() / r_x.clamp_min(1e-6)) ** alpha_x
            r_m = r_m * a
            b = (r_m.max() / r_m.clamp_min(1e-6)) ** alpha_m
            conv, g, nxt = q.convs[k], q.gdns[k], q.convs[k + 1]
            a4 = a.repeat_interleave(4)  # pixel shuffle (CRD): conv channel 4c + s becomes channel c
            conv.weight.mul_(a4.view(-1, 1, 1, 1))
            conv.bias.mul_(a4)
            g.gamma.mul_(b.view(-1, 1, 1, 1) / a.view(1, -1, 1, 1))
            g.beta.mul_(b)
            nxt.weight.div_((a * b).view(1, -1, 1, 1))


def shipped():
    name = open(os.path.join(ROOT, "models", "DEFAULT")).read().strip()
    sd, steps, arch = load_weights(os.path.join(ROOT, "models", f"{name}.weights.npz"))
    m = HyperpriorCodec(*dims_of(sd), levels=sd["log_gain"].shape[0], arch=arch)
    m.load_state_dict(sd)
    m.eval().requires_grad_(False)
    # load_weights extends older ladders to training/model.py's (one extrapolated level more than
    # hp2 ships); sample only the levels the bundle has
    with open(os.path.join(ROOT, "models", name, "model.json")) as f:
        m.bundle_levels = int(json.load(f)["levels"])
    return m, name


class Data:
    """Latents of 320x320 training crops (computed once with the frozen analysis, cached) and the
    crops themselves; samples the synthesis input at a random continuous level."""

    def __init__(self, model, cache, data_dir, size=320, per_image=6, seed=0):
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from train import load_images  # refuses Kodak

        rng = random.Random(seed)
        crops = []
        for im in load_images(data_dir):
            h, w, _ = im.shape
            if h >= size and w >= size:
                for _ in range(per_image):
                    y0, x0 = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
                    crops.append(im[y0:y0 + size, x0:x0 + size])
        self.crops = np.stack(crops)
        if os.path.exists(cache):
            self.y = np.load(cache, mmap_mode="r")
        else:
            out = []
            with torch.no_grad():
                for i in range(0, len(crops), 8):
                    x = torch.from_numpy(self.crops[i:i + 8]).permute(0, 3, 1, 2).float() / 255
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        out.append(model.g_a(x).float().half().numpy())
            np.save(cache, np.concatenate(out))
            self.y = np.load(cache, mmap_mode="r")
        assert len(self.y) == len(self.crops), "latent cache does not match the crops"
        self.model = model
        self.rng = np.random.default_rng(seed + 1)
        # smooth crops reach high PSNR, where the quantisation noise shows most
        grad = np.array([np.abs(np.diff(c.astype(np.int16), axis=0)).mean() + np.abs(np.diff(c.astype(np.int16), axis=1)).mean()
                         for c in self.crops])
        # the crops of the last 40 images are held out for validation (choosing the checkpoint)
        self.n_train = len(self.crops) - 40 * per_image
        self.smooth = np.array([i for i in np.argsort(grad)[:len(grad) * 3 // 10] if i < self.n_train])

    def validation(self, levels=(5.0, 8.0, 11.0)):
        """Fixed held-out batches: every 5th held-out crop at each of the given levels."""
        idx = np.arange(self.n_train, len(self.crops), 5)
        out = []
        for lv in levels:
            for i in range(0, len(idx), 8):
                out.append(self.inputs(idx[i:i + 8], np.full(len(idx[i:i + 8]), lv, np.float32)))
        return out

    def inputs(self, idx, levels):
        """Synthesis inputs of crops idx at the given levels, quantised around the frozen
        hyperprior's means as the codec does; with the crops and levels."""
        m = self.model
        y = torch.from_numpy(np.asarray(self.y[idx], np.float32))
        x = torch.from_numpy(self.crops[idx]).permute(0, 3, 1, 2).float() / 255
        lv = torch.from_numpy(levels)
        with torch.no_grad():
            gain, igain = m.gains(lv)
            yg = y * gain
            z = torch.round(m.h_a(yg))
            mu, _ = m.hyper_log_params(z)
            y_in = (torch.round(yg - mu) + mu) * igain
        return y_in, x, lv

    def sample(self, n, level=None):
        """n random (synthesis input, original crop, level), whole crops: a latent cut out of a
        larger one decodes badly at its edges (the analysis saw content beyond them, the
        synthesis pads with zeros), which training would learn to "fix" at the cost of
        everything else (measured: +3 dB on cut-out crops, -3 dB on Kodak)."""
        half = n // 2  # half from the smoothest 30 %, half from all crops
        idx = np.unique(np.concatenate([self.rng.choice(self.smooth, half, replace=False),
                                        self.rng.choice(self.n_train, n - half, replace=False)]))
        while len(idx) < n:
            idx = np.unique(np.append(idx, self.rng.integers(self.n_train)))
        # levels biased to the top (density rising linearly), where quantisation costs the most
        levels = (self.model.bundle_levels - 1) * np.sqrt(self.rng.uniform(0, 1, n))
        if level is not None:
            levels[:] = level
        return self.inputs(idx, levels.astype(np.float32))


def calibrate(args):
    m, name = shipped()
    data = Data(m, args.cache, args.data)
    batches = [data.sample(8)[0] for _ in range(args.calib_batches)]
    if args.from_graph:
        # go on from a shipped int8 decoder: its weights and 8-bit quantisers as they are, only
        # the 12-bit quantisers of the wide stages calibrated (their full range, with a margin)
        q = from_graph(m, args.from_graph)
        q.wide = args.wide
        q.q_wide = nn.ModuleList([ActQ(4095) for _ in range(args.wide)])
        q.set_mode("off")
        q.quant = True
        for a in q.q_wide:
            a.mode = "observe"
        with torch.no_grad():
            for y in batches:
                q(y)
        for a in q.q_wide:
            v = torch.cat(a.seen)
            lo, hi = 1.25 * min(0.0, float(v.min())), 1.25 * float(v.max())
            s = (hi - lo) / a.qmax
            a.log_s.data.fill_(math.log(s))
            a.zp.fill_(float(round(-lo / s)))
            a.seen = []
    else:
        q = QSynthesis(m.g_s, float_last=args.float_last, wide=args.wide)
        if args.alpha_x or args.alpha_m:
            equalize(q, batches, args.alpha_x, args.alpha_m)
        q.set_mode("observe")
        with torch.no_grad():
            for y in batches:
                q(y)
        for a in q.acts():
            a.calibrate()
    q.set_mode("on")
    torch.save({"state": q.state_dict(), "model": name, "steps": 0, "float_last": q.float_last, "wide": q.wide},
               args.out)
    print("scales", [round(a.scale(), 5) for a in q.acts()], "zero points", [int(a.zp) for a in q.acts()])


def train(args):
    torch.set_num_threads(args.threads)
    m, name = shipped()
    data = Data(m, args.cache, args.data)
    teacher = m.g_s
    ck = torch.load(args.init, weights_only=False)
    student = QSynthesis(copy.deepcopy(teacher), float_last=ck.get("float_last", False), wide=ck.get("wide", 0))
    student.load_state_dict(ck["state"])
    student.set_mode("on")
    student.train().requires_grad_(True)  # the copy of the frozen teacher came without gradients
    opt, _ = optimizer(student, ck, args.lr, args.lr_scale)
    step0 = step = ck.get("steps", 0)
    val = data.validation()
    with torch.no_grad():
        val_ref = [((torch.round(torch.clamp(teacher(y), 0, 1) * 255) / 255 - x) ** 2).mean(dim=(1, 2, 3))
                   for y, x, _ in val]

    def validate():
        """Mean per-sample dB of the quantised synthesis against the float one, held-out crops."""
        with torch.no_grad():
            d = [10 * torch.log10(r / ((student(y) - x) ** 2).mean(dim=(1, 2, 3))) for (y, x, _), r in zip(val, val_ref)]
        return float(torch.cat(d).mean())

    best = ck.get("val_db", validate())
    t0 = last = time.time()
    log = open(args.log, "a")
    log.write(f"start {args.init} step {step} validation {best:+.4f} dB\n")
    run = []
    while time.time() - t0 < args.seconds:
        y, x, lv = data.sample(args.batch)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            ref = torch.clamp(teacher(y).float(), 0, 1)
        ref_mse = ((torch.round(ref * 255) / 255 - x) ** 2).mean(dim=(1, 2, 3))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(args.bf16)):
            out = student(y)
        mse = ((out.float() - x) ** 2).mean(dim=(1, 2, 3))
        loss = (mse / ref_mse).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        run.append((float(loss), float((10 * torch.log10(ref_mse / mse.detach())).mean())))
        if step % 25 == 0:
            ls = np.mean(run, axis=0)
            run = []
            msg = f"step {step} loss {ls[0]:.4f} dB vs float {ls[1]:+.3f} ({(time.time() - t0) / (step - step0):.2f} s/step)"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
        if time.time() - last > args.every or time.time() - t0 >= args.seconds:
            v = validate()
            state = {"state": student.state_dict(), "opt": opt.state_dict(), "model": name, "steps": step,
                     "float_last": student.float_last, "wide": student.wide, "val_db": v}
            # the latest always; --out only when the held-out crops improved
            for path in [args.out + ".last"] + ([args.out] if v > best else []):
                torch.save(state, path + ".tmp")
                os.replace(path + ".tmp", path)
            msg = f"step {step} validation {v:+.4f} dB (best {max(v, best):+.4f})"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
            best = max(best, v)
            last = time.time()


# ---------------------------------------------------------------- export (ONNX QDQ) ----
def export_mixed(args, q, ck):
    """The mixed decoder (wide stages) as the arrays of decoder_<name>.npz, the form
    fastcodec/_bitexact.py's mixed_synthesis_args reads (docs/format.md, "The mixed decoder"):
    float32 head and inverse-GDN parameters, per wide stage the 12-bit quantiser and its int8
    convolution (output channels in DCR order), the 8-bit quantisers of the last stage, and the
    float last convolution."""
    N = q.convs[0].weight.shape[0] // 4
    dcr = torch.tensor([c * 4 + s for s in range(4) for c in range(N)])
    f32 = lambda t: np.ascontiguousarray(t.detach().float().numpy(), np.float32)
    a = {"format": np.int32(1), "wide": np.int32(q.wide)}
    a["head.w"], a["head.b"] = f32(q.convs[0].weight[dcr]), f32(q.convs[0].bias[dcr])

    def qconv(prefix, conv_w, conv_b, s_in, order):
        wq, ws = quant_weight(conv_w.detach().float())
        ws = ws.numpy().astype(np.float32)
        w_int = torch.round(wq / torch.from_numpy(ws).view(-1, 1, 1, 1)).to(torch.int8).numpy()
        b_int = np.round(conv_b.detach().float().numpy() / (np.float32(s_in) * ws)).astype(np.int32)
        a[prefix + ".w"], a[prefix + ".ws"], a[prefix + ".b"] = w_int[order], ws[order], b_int[order]

    for k in range(q.wide):
        g = q.gdns[k]
        a[f"wide{k}.gamma"] = f32(torch.clamp(g.gamma, min=0.0))
        a[f"wide{k}.beta"] = f32(torch.clamp(g.beta, min=1e-3))
        s, zp = q.q_wide[k].scale(), int(q.q_wide[k].zp)
        a[f"wide{k}.s"], a[f"wide{k}.zp"] = np.float32(s), np.int32(zp)
        qconv(f"wide{k}", q.convs[k + 1].weight, q.convs[k + 1].bias, s, dcr.numpy())
    k = q.wide  # the first 8-bit stage: its input quantiser, the inverse GDN's, the tail
    if k != 2 or not q.float_last:
        raise SystemExit("the mixed decoder's export handles wide=2 with a float last convolution")
    a["x.s"], a["x.zp"] = np.float32(q.q_out[k].scale()), np.int32(int(q.q_out[k].zp))
    g = q.gdns[k]
    qconv("gdn", torch.clamp(g.gamma, min=0.0), torch.clamp(g.beta, min=1e-3), a["x.s"], np.arange(N))
    a["norm.s"], a["norm.zp"] = np.float32(q.q_norm[k].scale()), np.int32(int(q.q_norm[k].zp))
    a["mul.s"], a["mul.zp"] = np.float32(q.q_mul[k].scale()), np.int32(int(q.q_mul[k].zp))
    a["tail.w"], a["tail.b"] = f32(q.convs[3].weight), f32(q.convs[3].bias)
    out = args.onnx
    if args.bundle:
        if ck.get("model") != args.bundle:
            raise SystemExit(f"{args.init} was trained against {ck.get('model')}, not {args.bundle}")
        out = os.path.join(ROOT, "models", args.bundle, f"decoder_{args.name}.npz")
    if not out:
        raise SystemExit("give --onnx PATH (an .npz for the mixed decoder) or --bundle NAME")
    tmp = out + ".tmp.npz"
    np.savez(tmp, **a)
    os.replace(tmp, out)
    print("wrote", out, os.path.getsize(out), "bytes")
    if args.bundle:
        from qgraph import sha256_of, update_model_json

        def update(meta):
            meta.setdefault("decoders", {})[args.name] = {
                "file": f"decoder_{args.name}.npz", "sha256": sha256_of(out),
                "precision": "int8 weights (7-bit, per channel); the first two stages' inverse GDNs in float with "
                             "12-bit convolution inputs, the last stage's uint8; first and last convolution in float",
                "qat_steps": int(ck.get("steps", 0)), "note": args.note}

        print("listed in", update_model_json(args.bundle, update))


def export(args):
    m, name = shipped()
    ck = torch.load(args.init, weights_only=False)
    if ck.get("wide"):
        q = QSynthesis(HyperpriorCodec(m.N, m.M, levels=m.log_gain.shape[0]).g_s, float_last=ck.get("float_last", False),
                       wide=ck["wide"])
        q.load_state_dict(ck["state"])
        return export_mixed(args, q, ck)
    q = QSynthesis(HyperpriorCodec(m.N, m.M, levels=m.log_gain.shape[0]).g_s, float_last=ck.get("float_last", False))
    q.load_state_dict(ck["state"])
    g = Graph()
    node, const, f32, u8 = g.node, g.const, g.f32, g.u8

    def dcr(t, C):
        """Conv output channels from the PixelShuffle order (CRD: 4c + s) to DCR (s*C + c), so that
        the shuffle in NHWC moves whole runs of C bytes."""
        return t[torch.tensor([c * 4 + s for s in range(4) for c in range(C)])]

    def qconv(x, x_scale, x_zp, w, b, y_scale, y_zp, pad, shuffle):
        """QLinearConv (Graph.qconv), its output channels in DCR order when a shuffle follows."""
        if shuffle:
            w, b = dcr(w.detach(), w.shape[0] // 4), dcr(b.detach(), b.shape[0] // 4)
        return g.qconv(x, x_scale, x_zp, w, b, y_scale, y_zp, pad)

    def shuffle_nhwc(x, C):
        """PixelShuffle(2) of an NHWC tensor whose channels are in DCR order: (1,H,W,4C) ->
        (1,H,2,W,2,C) -> (1,2H,2W,C); the copies are runs of C bytes."""
        r = node("Reshape", [x, const(np.array([0, 0, 0, 2, 2, C], np.int64), g.new("shape"))])
        t = node("Transpose", [r], perm=[0, 1, 3, 2, 4, 5])
        shape = node("Shape", [x])
        target = node("Add", [node("Mul", [shape, const(np.array([1, 2, 2, 0], np.int64), g.new("k"))]),
                              const(np.array([0, 0, 0, C], np.int64), g.new("k"))])
        return node("Reshape", [t, target])

    N = q.convs[0].weight.shape[0] // 4
    # first convolution in float (its input, the latents, is not quantised), NCHW
    c0 = q.convs[0]
    const(dcr(c0.weight.detach(), N).numpy(), "w0")
    const(dcr(c0.bias.detach(), N).numpy(), "b0")
    a = q.q_out[0]
    x = node("QuantizeLinear", [node("Conv", ["y", "w0", "b0"], pads=[1] * 4), f32(a.scale()), u8(int(a.zp))])
    x = shuffle_nhwc(node("Transpose", [x], perm=[0, 2, 3, 1]), N)
    for k in range(3):
        s_x, z_x = q.q_out[k].scale(), int(q.q_out[k].zp)
        # inverse GDN: x * (beta + gamma |x|); |x| is exact on x's grid (scale s_x, zero point 0) and
        # is LeakyRelu with alpha -1, which onnxruntime runs on uint8 as a 256-entry table
        ab = node("QLinearLeakyRelu", [x, f32(s_x), u8(z_x), f32(s_x), u8(0)], domain="com.microsoft", alpha=-1.0)
        gd = q.gdns[k]
        beta, gamma = torch.clamp(gd.beta, min=1e-3), torch.clamp(gd.gamma, min=0.0)
        s_n, z_n = q.q_norm[k].scale(), int(q.q_norm[k].zp)
        norm = qconv(ab, s_x, 0, gamma, beta, s_n, z_n, 0, False)
        s_m, z_m = q.q_mul[k].scale(), int(q.q_mul[k].zp)
        x = node("QLinearMul", [x, f32(s_x), u8(z_x), norm, f32(s_n), u8(z_n), f32(s_m), u8(z_m)], domain="com.microsoft")
        c = q.convs[k + 1]
        if k < 2:
            s_o, z_o = q.q_out[k + 1].scale(), int(q.q_out[k + 1].zp)
            x = shuffle_nhwc(qconv(x, s_m, z_m, c.weight, c.bias, s_o, z_o, 1, True), N)
        elif q.float_last:  # back to NCHW float for the last convolution
            x = node("DequantizeLinear", [node("Transpose", [x], perm=[0, 3, 1, 2]), f32(s_m), u8(z_m)])
            const(c.weight.detach().numpy(), "w3")
            const(c.bias.detach().numpy(), "b3")
            x = node("QuantizeLinear", [node("Conv", [x, "w3", "b3"], pads=[1] * 4), f32(1 / 255), u8(0)])
            x = node("DepthToSpace", [x], blocksize=2, mode="CRD")
        else:
            x = shuffle_nhwc(qconv(x, s_m, z_m, c.weight, c.bias, 1 / 255, 0, 1, True), 3)
            x = node("Transpose", [x], perm=[0, 3, 1, 2])
    # uint8 pixels (scale 1/255: the decoder's own rounding) back to float for the pixel converter
    node("DequantizeLinear", [x, f32(1 / 255), u8(0)], out="x")
    mp = g.model("decoder_int8", [("y", [1, int(c0.weight.shape[1]), "h", "w"])], [("x", [1, 3, "H", "W"])], "fastcodec qat_decoder")
    out = save(mp, args, ck, "decoder", "float")
    if args.bundle:
        register(args.bundle, "decoder", args.name, out, {
            "precision": "int8 weights (7-bit, per channel), uint8 activations; first convolution"
                         + (" and last convolution" if q.float_last else "") + " in float",
            "qat_steps": int(ck.get("steps", 0)), "note": args.note},
            default_key="default_decoder" if args.make_default else None)


def evaluate(args):
    """Kodak PSNR of the shipped decoder and of an int8 decoder graph on the same files (measurement
    only: nothing here is fitted to Kodak)."""
    from PIL import Image

    import fastcodec

    files, int8, qualities = evaluation_inputs(args)
    codec = fastcodec.Codec(threads=2, decoder="float")
    float_sess = codec.model.session("decoder")
    res = {q: [] for q in qualities}
    times = [[], []]
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"))
        for qv in qualities:
            data = codec.compress(im, quality=qv)
            row = [8 * len(data) / (im.shape[0] * im.shape[1])]
            for i, sess in enumerate((float_sess, int8)):
                codec.model._sessions["decoder"] = sess
                t = time.perf_counter()
                out = codec.decompress(data)
                times[i].append(time.perf_counter() - t)
                mse = np.mean((out.astype(np.float64) - im) ** 2)
                row.append(10 * math.log10(255 ** 2 / mse))
            res[qv].append(row)
    codec.model._sessions["decoder"] = float_sess
    print(f"{len(files)} Kodak images; decompress {np.median(times[0]) * 1e3:.0f} ms float, "
          f"{np.median(times[1]) * 1e3:.0f} ms int8 (median)")
    print("quality   bpp   float dB   int8 dB   delta")
    for qv, rows in res.items():
        b, d0, d1 = np.mean(rows, axis=0)
        print(f"{qv:7g} {b:6.3f} {d0:9.3f} {d1:9.3f} {d1 - d0:+7.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, "decoder", "qat.log")
    ap.add_argument("--cache", default=os.path.join(ROOT, "training", "runs", "latents320.npy"), help="latent cache of the training crops")
    ap.add_argument("--make-default", action="store_true", help="export: make it the bundle's default decoder")
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--bf16", type=int, default=0, help="bfloat16 autocast (its rounding hides the int8 error "
                    "at high quality: keep 0)")
    ap.add_argument("--alpha-x", type=float, default=0.5, help="calibrate: equalisation of x (0 = none)")
    ap.add_argument("--alpha-m", type=float, default=0.5, help="calibrate: equalisation of x * norm")
    ap.add_argument("--float-last", type=int, default=1, help="calibrate: keep the last convolution in float")
    ap.add_argument("--wide", type=int, default=0, help="calibrate: stages whose inverse GDN runs in float with "
                    "12-bit results (the mixed decoder: 2)")
    ap.add_argument("--from-graph", default=None, help="calibrate: start from this shipped int8 decoder graph "
                    "(its weights and 8-bit quantisers) instead of the float synthesis")
    args = ap.parse_args(argv)
    {"calibrate": calibrate, "train": train, "export": export, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
