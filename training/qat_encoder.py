"""An int8 encoder for the shipped model: rate-aware quantisation-aware fine-tuning of its fast
(lite) analysis transform.

    python training/qat_encoder.py calibrate --out training/runs/qate.pt        # ranges, no training
    python training/qat_encoder.py calibrate --init RUN.pt --out NEW.pt         # a run's weights, recalibrated
    python training/qat_encoder.py train --init training/runs/qate.pt --out training/runs/qate.pt --seconds 2400
    python training/qat_encoder.py export --init training/runs/qate.pt --onnx /tmp/encoder_int8.onnx
    python training/qat_encoder.py evaluate --onnx /tmp/encoder_int8.onnx      # Kodak bpp / PSNR against float
    python training/qat_encoder.py export --init training/runs/qate.pt --bundle hp2 --name int8

Only the analysis changes, so the files it writes carry the shipped model's id and decode with
the shipped bundle (as with the fast encoder it starts from). The analysis does not depend on
the rate (the gains come after it), so one int8 graph serves every quality.

The quantised graph, written node by node in NHWC layout (onnxruntime's com.microsoft
QLinearConv with channels_last, QLinearLeakyRelu):
  * the input is the 8-bit pixels themselves (x = p / 255 is exact on the grid of scale 1/255,
    zero point 0), so the first convolution is quantised too;
  * weights: int8 per output channel, symmetric, 7 bits (-64..63; no int16 saturation in the
    AVX2 u8s8 kernels, so the integer sums are exact on every CPU);
  * activations: uint8 per tensor; the GDN x / (beta + gamma |x|) takes |x| as
    LeakyRelu(alpha = -1) (a 256-entry table, exact on x's grid), the 1x1 convolution quantised,
    and the division in float between DequantizeLinear and QuantizeLinear;
  * the last convolution (to the latents, at 1/16 resolution) runs in float on the last GDN's
    unrounded quotient: 8-bit latents would cost the top qualities most (their quantisation
    step shrinks with the quality), its weights are the most sensitive (7-bit: -0.13 dB at the
    top level), and onnxruntime's ConvInteger took 24 ms for it, its float Conv 7 ms;
  * cross-layer equalisation (`equalize`, exact in float) first narrows the spread of channel
    ranges that per-tensor quantisation of the convolution outputs has to cover.
Training: random 256x256 training crops with flips at a random continuous rate level of the
bundle; the loss is the rate-distortion loss of train.py through the frozen model (the hyper
transforms, entropy model, gains and synthesis stay the shipped model's), so the encoder learns
to spend its int8 error where the rate and distortion do not mind, divided per crop by the
float encoder's loss on the same crop, level and noise (the levels' losses differ 20-fold;
plain RD loss made the held-out loss drift up after 330 steps at lr 2e-5). Weights start from the
float fast encoder, activation scales are learned (LSQ-style) from their calibrated values.
Float32 throughout (bfloat16's own rounding is as coarse as the int8 grid). Never reads Kodak.
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
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Analysis, image_bits  # noqa: E402
from qat_decoder import shipped  # noqa: E402
from qgraph import (ROOT, Graph, QTransform, add_arguments, evaluation_inputs, optimizer,  # noqa: E402
                    quant_weight, register, save)

SOURCE = "fast"  # the bundle's optional encoder that the int8 one starts from


def load_fast(bundle: str) -> nn.Module:
    """The bundle's fast (lite) analysis, read back from its shipped ONNX graph."""
    import onnx
    from onnx import numpy_helper

    path = os.path.join(ROOT, "models", bundle, f"encoder_{SOURCE}.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    with open(os.path.join(ROOT, "models", bundle, "model.json")) as f:
        meta = json.load(f)
    enc = Analysis(int(meta.get("N", 96)), int(meta.get("M", 192)), "lite")
    enc.load_state_dict({k: torch.from_numpy(np.array(inits[k], np.float32)) for k in enc.state_dict()})
    return enc.eval()


class QAnalysis(QTransform):
    """The lite analysis (4 convolutions, stride 2, GDN between) with the int8 graph's rounding."""

    def __init__(self, g_a):
        super().__init__([g_a[i] for i in (0, 2, 4, 6)], [g_a[i] for i in (1, 3, 5)], "q_div")

    def forward(self, x):
        for k, c in enumerate(self.convs):
            # the last convolution runs in float on the dequantised input (see export)
            w = quant_weight(c.weight)[0] if self.quant and k < 3 else c.weight
            x = F.conv2d(x, w, c.bias, stride=2, padding=c.padding)
            if k == 3:
                return x
            x = self.q_out[k](x)
            g = self.gdns[k]
            beta, gamma = torch.clamp(g.beta, min=1e-3), torch.clamp(g.gamma, min=0.0)
            if self.quant:
                gamma = quant_weight(gamma)[0]
            norm = self.q_norm[k](F.conv2d(torch.abs(x), gamma, beta))
            # the last GDN's quotient goes to the float convolution unrounded (q_div[2] unused)
            x = self.q_div[k](x / norm) if k < 2 else x / norm
        raise AssertionError


def crops(args, rng, n):
    from train import batch, load_images  # refuses Kodak

    if not hasattr(crops, "images"):
        crops.images = load_images(args.data)
    return batch(crops.images, n, args.size, rng)


def equalize(q: "QAnalysis", batches, alpha=0.5):
    """Cross-layer equalisation (Nagel et al. 2019) through the GDNs, exact in float.

    Scaling channel c of a convolution's output a by s_c (its weights and bias) and dividing
    gamma[:, c] by s_c leaves the GDN's norm unchanged, so a / norm is scaled by s_c too and the
    next convolution's input channel c takes 1 / s_c. s_c = (max range / range_c) ** alpha brings
    the channels of a (and so of a / norm) to similar ranges, which per-tensor uint8 quantisation
    needs (the 1/4-resolution output spans 15 where its median channel spans 3.6)."""
    with torch.no_grad():
        for k in range(3):
            lo, hi = [], []
            for x in batches:
                for j in range(k + 1):
                    c = q.convs[j]
                    a = F.conv2d(x, c.weight, c.bias, stride=2, padding=c.padding)
                    g = q.gdns[j]
                    x = a / F.conv2d(a.abs(), torch.clamp(g.gamma, min=0.0), torch.clamp(g.beta, min=1e-3))
                t = a.transpose(0, 1).flatten(1)
                lo.append(t.amin(1).clamp(max=0))
                hi.append(t.amax(1).clamp(min=0))
            r = torch.stack(hi).amax(0) - torch.stack(lo).amin(0)
            sc = (r.max() / r.clamp_min(1e-6)) ** alpha
            conv, g, nxt = q.convs[k], q.gdns[k], q.convs[k + 1]
            conv.weight.mul_(sc.view(-1, 1, 1, 1))
            conv.bias.mul_(sc)
            g.gamma.div_(sc.view(1, -1, 1, 1))
            nxt.weight.div_(sc.view(1, -1, 1, 1))


def calibrate(args):
    torch.set_num_threads(args.threads)
    m, name = shipped()
    q = QAnalysis(load_fast(name))
    if args.init:  # the weights of an earlier run (its activation scales are calibrated anew)
        q.load_state_dict(torch.load(args.init, weights_only=False)["state"])
    rng = random.Random(99)
    batches = [crops(args, rng, 8) for _ in range(args.calib_batches)]
    if args.alpha:
        equalize(q, batches, args.alpha)
    q.set_mode("observe")
    with torch.no_grad():
        for x in batches:
            q(x)
    for a in q.acts():
        if a.seen:  # q_div[2] sees nothing: the last quotient stays float
            a.calibrate()
    q.set_mode("on")
    torch.save({"state": q.state_dict(), "model": name, "steps": 0}, args.out)
    print("scales", [round(a.scale(), 5) for a in q.acts()], "zero points", [int(a.zp) for a in q.acts()])


def rd_loss(m, y, x, level, lam):
    """train.py's rate-distortion loss of latents y (B, M, h, w) through the frozen model."""
    x_hat, lik_y, lik_z = m.code(y, level)
    bpp = image_bits(lik_y, lik_z) / (x.shape[2] * x.shape[3])
    mse = ((x_hat - x) ** 2).mean((1, 2, 3))
    return lam * 255 ** 2 * mse + bpp, bpp, mse


def train(args):
    from train import lambdas_for

    torch.set_num_threads(args.threads)
    m, name = shipped()
    ck = torch.load(args.init, weights_only=False)
    student = QAnalysis(copy.deepcopy(load_fast(name)))
    student.load_state_dict(ck["state"])
    student.set_mode("on")
    student.train().requires_grad_(True)
    opt, weights = optimizer(student, ck, args.lr, args.lr_scale)
    teacher = load_fast(name)
    step0 = step = ck.get("steps", 0)
    levels = m.bundle_levels - 1
    # fixed held-out batches (the last training images are not special: crops differ from the
    # sampled ones by seed only; the comparison is student against the float encoder on them)
    vrng = random.Random(7)
    val = [(crops(args, vrng, 8), torch.linspace(0, levels, 8)) for _ in range(args.val_batches)]

    def val_loss(enc):
        torch.manual_seed(0)
        with torch.no_grad():
            return float(np.mean([float(rd_loss(m, enc(x), x, lv, lambdas_for(lv))[0].mean()) for x, lv in val]))

    ref = val_loss(teacher)
    best = val_loss(student)  # recomputed: the stored value may come from other held-out batches
    log = open(args.log, "a")
    log.write(f"start {args.init} step {step} validation loss {best:.5f} (float encoder {ref:.5f}, "
              f"{100 * (best / ref - 1):+.3f} %)\n")
    print(f"validation: float encoder {ref:.5f}, int8 {best:.5f} ({100 * (best / ref - 1):+.3f} %)", flush=True)
    rng = random.Random(1000 + step)
    t0 = last = time.time()
    run = []
    while time.time() - t0 < args.seconds:
        x = crops(args, rng, args.batch)
        lv = torch.rand(args.batch) * levels
        # each crop's loss relative to the float encoder's on the same crop, level and noise: the
        # losses of different levels differ 20-fold, and the ratio is what the int8 error costs
        torch.manual_seed(step)
        with torch.no_grad():
            ref_loss = rd_loss(m, teacher(x), x, lv, lambdas_for(lv))[0]
        torch.manual_seed(step)
        loss = (rd_loss(m, student(x), x, lv, lambdas_for(lv))[0] / ref_loss).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        step += 1
        run.append(float(loss.detach()))
        if step % 25 == 0:
            msg = (f"step {step} loss / float encoder's {np.mean(run):.5f} "
                   f"({(time.time() - t0) / (step - step0):.2f} s/step)")
            run = []
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
        if time.time() - last > args.every or time.time() - t0 >= args.seconds:
            v = val_loss(student)
            state = {"state": student.state_dict(), "opt": opt.state_dict(), "model": name, "steps": step, "val": v}
            for path in [args.out + ".last"] + ([args.out] if v < best else []):
                torch.save(state, path + ".tmp")
                os.replace(path + ".tmp", path)
            best = min(best, v)
            msg = f"step {step} validation {v:.5f} ({100 * (v / ref - 1):+.3f} % vs float; best {100 * (best / ref - 1):+.3f} %)"
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()
            last = time.time()


def export(args):
    m, name = shipped()
    ck = torch.load(args.init, weights_only=False)
    q = QAnalysis(load_fast(name))
    q.load_state_dict(ck["state"])
    g = Graph()
    node, const, f32, u8 = g.node, g.const, g.f32, g.u8
    # the pixels, exactly: x = p / 255 on the grid of scale 1/255 (a float first convolution
    # followed by quantisation and the NHWC transpose measured 11 ms slower)
    x = node("Transpose", [node("QuantizeLinear", ["x", f32(1 / 255), u8(0)])], perm=[0, 2, 3, 1])
    s_x, z_x = 1 / 255, 0
    for k in range(3):
        c = q.convs[k]
        s_o, z_o = q.q_out[k].scale(), int(q.q_out[k].zp)
        a = g.qconv(x, s_x, z_x, c.weight, c.bias, s_o, z_o, c.padding[0], 2)
        # GDN: a / (beta + gamma |a|); |a| is LeakyRelu(alpha -1), exact on a's grid
        ab = node("QLinearLeakyRelu", [a, f32(s_o), u8(z_o), f32(s_o), u8(0)], domain="com.microsoft", alpha=-1.0)
        gd = q.gdns[k]
        beta, gamma = torch.clamp(gd.beta, min=1e-3), torch.clamp(gd.gamma, min=0.0)
        s_n, z_n = q.q_norm[k].scale(), int(q.q_norm[k].zp)
        norm = g.qconv(ab, s_o, 0, gamma, beta, s_n, z_n, 0, 1)
        div = node("Div", [node("DequantizeLinear", [a, f32(s_o), u8(z_o)]),
                           node("DequantizeLinear", [norm, f32(s_n), u8(z_n)])])
        if k < 2:
            s_x, z_x = q.q_div[k].scale(), int(q.q_div[k].zp)
            x = node("QuantizeLinear", [div, f32(s_x), u8(z_x)])
    # last convolution in float, on the last GDN's unrounded quotient (onnxruntime's ConvInteger
    # took 24 ms here, its float Conv 7): the latents are not rounded to 8 bits (their
    # quantisation step shrinks with the quality, to about 1/40 of their range at the top)
    c = q.convs[3]
    const(c.weight.detach().numpy(), "w3")
    const(c.bias.detach().numpy(), "b3")
    xf = node("Transpose", [div], perm=[0, 3, 1, 2])
    node("Conv", [xf, "w3", "b3"], out="y", pads=[c.padding[0]] * 4, strides=[2, 2])
    mp = g.model("encoder_int8", [("x", [1, 3, "H", "W"])], [("y", [1, int(q.convs[3].weight.shape[0]), "h", "w"])], "fastcodec qat_encoder")
    out = save(mp, args, ck, "encoder", "default")
    if args.bundle:
        register(args.bundle, "encoder", args.name, out, {
            "architecture": "lite", "source": SOURCE,
            "precision": "int8 weights (7-bit, per channel), uint8 activations; GDN division and the latents in float",
            "qat_steps": int(ck.get("steps", 0)), "note": args.note})


def evaluate(args):
    """Kodak bpp and PSNR of the fast encoder and of an int8 encoder graph, on the same images
    (measurement only: nothing here is fitted to Kodak)."""
    from PIL import Image

    import fastcodec

    files, int8, qualities = evaluation_inputs(args)
    codec = fastcodec.Codec(threads=2, encoder=SOURCE, decoder="float")
    graph = codec._encoder_graph
    float_sess = codec.model.session(graph)
    res = {q: [] for q in qualities}
    times = [[], []]
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"))
        for qv in qualities:
            row = []
            for i, sess in enumerate((float_sess, int8)):
                codec.model._sessions[graph] = sess
                t = time.perf_counter()
                data = codec.compress(im, quality=qv)
                times[i].append(time.perf_counter() - t)
                out = codec.decompress(data)
                mse = np.mean((out.astype(np.float64) - im) ** 2)
                row += [8 * len(data) / (im.shape[0] * im.shape[1]), 10 * math.log10(255 ** 2 / mse)]
            res[qv].append(row)
    codec.model._sessions[graph] = float_sess
    print(f"{len(files)} Kodak images; compress {np.median(times[0]) * 1e3:.0f} ms float, "
          f"{np.median(times[1]) * 1e3:.0f} ms int8 (median)")
    print("quality  bpp float  bpp int8   rate    dB float  dB int8   delta")
    for qv, rows in res.items():
        b0, d0, b1, d1 = np.mean(rows, axis=0)
        print(f"{qv:7g} {b0:9.4f} {b1:9.4f} {100 * (b1 / b0 - 1):+6.2f}% {d0:9.3f} {d1:8.3f} {d1 - d0:+7.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap, "encoder", "qat_encoder.log")
    ap.add_argument("--seconds", type=float, default=2400)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--val-batches", type=int, default=6)
    ap.add_argument("--alpha", type=float, default=0.5, help="calibrate: equalisation strength (0 = none)")
    args = ap.parse_args(argv)
    {"calibrate": calibrate, "train": train, "export": export, "evaluate": evaluate}[args.cmd](args)


if __name__ == "__main__":
    main()
