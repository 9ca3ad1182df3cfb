"""Export the synthesis gradient graph that the encoder's latent refinement (effort >= 2) runs.

    python training/refine_graph.py --bundle hp2

The encoder can spend time to find better latents for the shipped decoder: stochastic Gumbel
annealing (Yang et al. 2020, "Improving Inference for Neural Image Compression") lowers
lambda * distortion + rate of each image by gradient steps on its latents. onnxruntime runs
inference graphs only, so the gradient of the distortion through the synthesis transform is
written out by hand as a forward graph (the vector-Jacobian product of each layer):

    sub-pixel convolution  W * x, then PixelShuffle   <-  PixelUnshuffle, then conv with W^T flipped
    simplified IGDN        s * (beta + gamma * |s|)   <-  g * n + sign(s) * (gamma^T * (g * s))

Inputs: y (1, M, h, w), the synthesis input (dequantised latents times the inverse gain); x
(1, 3, 16h, 16w), the target image in [0, 1]; m (1, 1, 16h, 16w), 1 on the image and 0 on the
padding the decoder crops away. Outputs: grad (1, M, h, w), the gradient of
0.5 * sum(m * (g_s(y) - x)^2) with respect to y, and sse (1,), that sum of squares. The rate term
and the annealing are elementwise and run in numpy (python/fastcodec/_refine.py).

The graph is checked against torch autograd and against the bundle's decoder.onnx, written to
models/BUNDLE/synthesis_vjp.onnx and listed in model.json under "refine" with its SHA-256. It
is an encoder-side graph: it never changes what a decoder does, so it is not part of the id.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import GDN, HyperpriorCodec, SubPixelUp, load_weights  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SynthesisVJP(torch.nn.Module):
    """g_s forward (and the post-filter where given), then the vector-Jacobian product with the
    residual (decoded - x), by hand.

    postfilter: None, or the post-filter's (weight, bias) pairs (training/postfilter.py's
    PostFilter with half=True: pixel unshuffle, quality plane, 3x3 convolutions with ReLU
    between, pixel shuffle, residual). The graph then has two more inputs, q (quality / 100) and
    pf (1.0 where the decoder runs the post-filter at that quality, else 0.0)."""

    def __init__(self, g_s, postfilter=None):
        super().__init__()
        self.pf_layers = 0
        for k, (w, b) in enumerate(postfilter or ()):
            w = torch.as_tensor(w).float()
            self.register_buffer(f"pw{k}", w)
            self.register_buffer(f"pb{k}", torch.as_tensor(b).float())
            self.register_buffer(f"pwt{k}", w.transpose(0, 1).flip(2, 3).contiguous())
            self.pf_layers += 1
        self.layers = []
        for i, mod in enumerate(g_s):
            if isinstance(mod, SubPixelUp):
                conv, shuffle = mod[0], mod[1]
                w = conv.weight.detach().float()
                self.register_buffer(f"w{i}", w)
                self.register_buffer(f"b{i}", conv.bias.detach().float())
                # input gradient of a stride-1 'same' convolution: the transposed, flipped kernel
                self.register_buffer(f"wt{i}", w.transpose(0, 1).flip(2, 3).contiguous())
                self.layers.append(("up", i, conv.padding[0], shuffle.upscale_factor))
            elif isinstance(mod, GDN) and mod.inverse:
                beta, gamma = mod.effective()
                self.register_buffer(f"beta{i}", beta.detach().float().view(1, -1, 1, 1))
                self.register_buffer(f"gamma{i}", gamma.detach().float())
                self.register_buffer(f"gammat{i}", gamma.detach().float().transpose(0, 1).contiguous())
                self.layers.append(("igdn", i, 0, 0))
            else:
                raise ValueError(f"no hand-written gradient for {type(mod).__name__}")

    def forward(self, y, x, m, q=None, pf=None):
        saved = []
        a = y
        for kind, i, pad, r in self.layers:
            if kind == "up":
                a = F.pixel_shuffle(F.conv2d(a, getattr(self, f"w{i}"), getattr(self, f"b{i}"), padding=pad), r)
                saved.append(None)
            else:
                n = F.conv2d(torch.abs(a), getattr(self, f"gamma{i}")) + getattr(self, f"beta{i}")
                saved.append((a, n))
                a = a * n
        if self.pf_layers:
            z = F.pixel_unshuffle(a, 2)
            h = torch.cat([z, q.view(1, 1, 1, 1).expand(1, 1, z.shape[2], z.shape[3])], 1)
            pre = []
            for k in range(self.pf_layers):
                h = F.conv2d(h, getattr(self, f"pw{k}"), getattr(self, f"pb{k}"), padding=1)
                if k < self.pf_layers - 1:
                    pre.append(h)
                    h = torch.relu(h)
            out = a + pf * F.pixel_shuffle(h, 2)
        else:
            out = a
        e = (out - x) * m
        sse = (e * e).sum().reshape(1)
        g = e
        if self.pf_layers:
            gh = F.pixel_unshuffle(g, 2)
            for k in reversed(range(self.pf_layers)):
                gh = F.conv2d(gh, getattr(self, f"pwt{k}"), padding=1)
                if k > 0:
                    gh = gh * (pre[k - 1] > 0).to(gh.dtype)
            g = g + pf * F.pixel_shuffle(gh[:, :12], 2)
        for (kind, i, pad, r), s in zip(reversed(self.layers), reversed(saved)):
            if kind == "up":
                g = F.conv2d(F.pixel_unshuffle(g, r), getattr(self, f"wt{i}"), padding=pad)
            else:
                a, n = s
                g = g * n + torch.sign(a) * F.conv2d(g * a, getattr(self, f"gammat{i}"))
        return g, sse


def postfilter_weights(path):
    """(weight, bias) pairs of the convolutions of a shipped post-filter graph, in order."""
    import onnx
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    out = []
    for k in range(len(inits) // 2):
        out.append((inits[f"convs.{k}.weight"], inits[f"convs.{k}.bias"]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="hp2")
    ap.add_argument("--weights", default=None, help="default: models/BUNDLE.weights.npz")
    ap.add_argument("--no-postfilter", action="store_true", help="leave the bundle's post-filter out")
    args = ap.parse_args()
    from postfilter import PostFilter
    from qgraph import sha256_of, update_model_json

    bundle_dir = os.path.join(ROOT, "models", args.bundle)
    with open(os.path.join(bundle_dir, "model.json")) as f:
        meta = json.load(f)
    sd, _, arch = load_weights(args.weights or os.path.join(ROOT, "models", f"{args.bundle}.weights.npz"))
    net = HyperpriorCodec(N=meta["N"], M=meta["M"], arch=arch)
    net.load_state_dict(sd)
    net.eval()
    pf_spec = None if args.no_postfilter else meta.get("postfilter")
    pfw = postfilter_weights(os.path.join(bundle_dir, "postfilter.onnx")) if pf_spec else None
    vjp = SynthesisVJP(net.g_s, pfw).eval()

    torch.manual_seed(0)
    y = torch.randn(1, meta["M"], 6, 8) * 2
    x = torch.rand(1, 3, 96, 128)
    m = torch.ones(1, 1, 96, 128)
    m[..., 80:, :] = 0
    m[..., 120:] = 0
    q, pf = torch.tensor([0.4]), torch.tensor([1.0])
    decode = net.g_s
    if pfw:
        filt = PostFilter(pfw[0][0].shape[0], len(pfw), half=True).eval()
        for k, (w, b) in enumerate(pfw):
            filt.convs[k].weight.data.copy_(torch.from_numpy(w))
            filt.convs[k].bias.data.copy_(torch.from_numpy(b))
        decode = lambda yy: filt(net.g_s(yy), q)  # noqa: E731
    # the hand-written gradient equals autograd's
    yr = y.clone().requires_grad_(True)
    (0.5 * (m * (decode(yr) - x) ** 2).sum()).backward()
    args_in = (y, x, m, q, pf) if pfw else (y, x, m)
    names = ["y", "x", "m", "q", "pf"][:len(args_in)]
    with torch.no_grad():
        g, sse = vjp(*args_in)
    err = (g - yr.grad).abs().max().item() / yr.grad.abs().max().item()
    assert err < 1e-4, f"hand-written gradient differs from autograd by {err:.2e} (relative)"

    path = os.path.join(bundle_dir, "synthesis_vjp.onnx")
    with torch.no_grad():
        torch.onnx.export(vjp, args_in, path + ".tmp", input_names=names, output_names=["grad", "sse"],
                          dynamic_axes={"y": {2: "h", 3: "w"}, "x": {2: "H", 3: "W"}, "m": {2: "H", 3: "W"},
                                        "grad": {2: "h", 3: "w"}},
                          opset_version=17, dynamo=False, do_constant_folding=True)
    import onnxruntime as ort

    so = ort.SessionOptions()
    feeds = {n: a.numpy() for n, a in zip(names, args_in)}
    got_g, got_sse = ort.InferenceSession(path + ".tmp", so, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.abs(got_g - g.numpy()).max() <= 1e-4 * np.abs(g.numpy()).max()
    # its forward half is the shipped decoder (and post-filter)
    dec = ort.InferenceSession(os.path.join(bundle_dir, "decoder.onnx"), providers=["CPUExecutionProvider"])
    xh = dec.run(None, {"y": y.numpy()})[0]
    if pfw:
        post = ort.InferenceSession(os.path.join(bundle_dir, "postfilter.onnx"), providers=["CPUExecutionProvider"])
        xh = post.run(None, {"x": xh, "q": q.numpy()})[0]
    sse_dec = float((m.numpy() * (xh - x.numpy()) ** 2).sum())
    assert abs(sse_dec - float(got_sse[0])) <= 1e-3 * sse_dec, (sse_dec, float(got_sse[0]))
    os.replace(path + ".tmp", path)
    entry = {"graph": "synthesis_vjp", "sha256": sha256_of(path), "postfilter": bool(pfw),
             "note": "gradient of 0.5*|m*(decoded(y) - x)|^2 with respect to the synthesis input y, written out "
                     "by hand (training/refine_graph.py); decoded = the synthesis, plus pf * the post-filter "
                     "where 'postfilter' is true; used by the encoder's latent refinement (effort >= 2)"}
    if pfw:
        entry["postfilter_sha256"] = pf_spec["sha256"]
    meta_path = update_model_json(args.bundle, lambda mm: mm.__setitem__("refine", entry))
    print(f"wrote {path} ({os.path.getsize(path)} bytes; gradient error {err:.1e} vs autograd, "
          f"sse {float(got_sse[0]):.4f} vs decoder {sse_dec:.4f}), listed in {meta_path}")


if __name__ == "__main__":
    main()
