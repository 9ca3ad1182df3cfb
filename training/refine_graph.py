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

    postfilter: None, or the post-filter as its torch module (training/postfilter.py's
    PostFilter with half=True: pixel unshuffle, quality plane, 3x3 convolutions with ReLU
    between, pixel shuffle, residual; or PostFilterUNet, the same with a quarter-resolution
    branch; postfilter_module() reads either back from a bundle). The graph then has two more
    inputs, q (quality / 100) and pf (1.0 where the decoder runs the post-filter at that
    quality, else 0.0)."""

    def __init__(self, g_s, postfilter=None):
        super().__init__()
        self.pf_kind = None
        if postfilter is not None:
            from postfilter import PostFilterUNet

            if isinstance(postfilter, PostFilterUNet):
                self.pf_kind = "unet"
                convs = {"inc": postfilter.inc, "down": postfilter.down, "up": postfilter.up,
                         "dec": postfilter.dec, "out": postfilter.out}
                convs.update({f"mid{k}": c for k, c in enumerate(postfilter.mid)})
                self.pf_blocks = len(postfilter.mid)
            else:
                self.pf_kind = "plain"
                convs = {str(k): c for k, c in enumerate(postfilter.convs)}
                self.pf_layers = len(postfilter.convs)
            for name, c in convs.items():
                w = c.weight.detach().float()
                self.register_buffer(f"pw_{name}", w)
                self.register_buffer(f"pb_{name}", c.bias.detach().float())
                # input gradient of a stride-1 'same' convolution: the transposed, flipped kernel
                self.register_buffer(f"pwt_{name}", w.transpose(0, 1).flip(2, 3).contiguous())
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

    def _conv(self, h, name):
        w = getattr(self, f"pw_{name}")
        return F.conv2d(h, w, getattr(self, f"pb_{name}"), padding=w.shape[-1] // 2)

    def _conv_t(self, g, name):
        w = getattr(self, f"pwt_{name}")
        return F.conv2d(g, w, padding=w.shape[-1] // 2)

    def _pf_forward(self, a, q):
        """The post-filter's residual branch at half resolution (12 channels) and what its
        gradient needs (the pre-activations of its ReLUs)."""
        z = F.pixel_unshuffle(a, 2)
        h = torch.cat([z, q.view(1, 1, 1, 1).expand(1, 1, z.shape[2], z.shape[3])], 1)
        if self.pf_kind == "plain":
            pre = []
            for k in range(self.pf_layers):
                h = self._conv(h, str(k))
                if k < self.pf_layers - 1:
                    pre.append(h)
                    h = torch.relu(h)
            return h, pre
        p1 = self._conv(h, "inc")
        a1 = torch.relu(p1)
        pd = self._conv(F.pixel_unshuffle(a1, 2), "down")
        d = torch.relu(pd)
        pm = []
        for k in range(self.pf_blocks):
            pm.append(self._conv(d, f"mid{k}"))
            d = torch.relu(pm[-1])
        p2 = self._conv(a1 + F.pixel_shuffle(self._conv(d, "up"), 2), "dec")
        return self._conv(torch.relu(p2), "out"), (p1, pd, pm, p2)

    def _pf_backward(self, gr, saved):
        """Gradient of the residual branch's input planes (13: the unshuffled image and q) from
        the gradient gr of its output."""
        if self.pf_kind == "plain":
            for k in reversed(range(self.pf_layers)):
                gr = self._conv_t(gr, str(k))
                if k > 0:
                    gr = gr * (saved[k - 1] > 0).to(gr.dtype)
            return gr
        p1, pd, pm, p2 = saved
        gs = self._conv_t(self._conv_t(gr, "out") * (p2 > 0).to(gr.dtype), "dec")
        gd = self._conv_t(F.pixel_unshuffle(gs, 2), "up")
        for k in reversed(range(self.pf_blocks)):
            gd = self._conv_t(gd * (pm[k] > 0).to(gd.dtype), f"mid{k}")
        ga1 = gs + F.pixel_shuffle(self._conv_t(gd * (pd > 0).to(gd.dtype), "down"), 2)
        return self._conv_t(ga1 * (p1 > 0).to(ga1.dtype), "inc")

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
        if self.pf_kind is not None:
            r, saved_pf = self._pf_forward(a, q)
            out = a + pf * F.pixel_shuffle(r, 2)
        else:
            out = a
        e = (out - x) * m
        sse = (e * e).sum().reshape(1)
        g = e
        if self.pf_kind is not None:
            g = g + pf * F.pixel_shuffle(self._pf_backward(F.pixel_unshuffle(g, 2), saved_pf)[:, :12], 2)
        for (kind, i, pad, r), s in zip(reversed(self.layers), reversed(saved)):
            if kind == "up":
                g = F.conv2d(F.pixel_unshuffle(g, r), getattr(self, f"wt{i}"), padding=pad)
            else:
                a, n = s
                g = g * n + torch.sign(a) * F.conv2d(g * a, getattr(self, f"gammat{i}"))
        return g, sse


def postfilter_module(path):
    """The shipped post-filter graph as its torch module (PostFilter(half=True) or
    PostFilterUNet), read back from the graph's initializers."""
    import onnx
    from onnx import numpy_helper
    from postfilter import PostFilter, PostFilterUNetExport

    inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in onnx.load(path).graph.initializer}
    if "inc.weight" in inits:
        ch, ch2 = inits["inc.weight"].shape[0], inits["down.weight"].shape[0]
        blocks = sum(1 for k in inits if k.startswith("mid.") and k.endswith(".weight"))
        net = PostFilterUNetExport(ch, ch2, blocks)
    else:
        layers = sum(1 for k in inits if k.startswith("convs.") and k.endswith(".weight"))
        net = PostFilter(inits["convs.0.weight"].shape[0], layers, half=True)
    state = net.state_dict()
    missing = set(state) - set(inits)
    if missing:
        raise ValueError(f"{path}: no initializers for {sorted(missing)}")
    net.load_state_dict({k: inits[k] for k in state})
    if isinstance(net, PostFilterUNetExport):
        net = net.to_unet()  # the form whose gradient SynthesisVJP writes out
    return net.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="hp2")
    ap.add_argument("--weights", default=None, help="default: models/BUNDLE.weights.npz")
    ap.add_argument("--no-postfilter", action="store_true", help="leave the bundle's post-filter out")
    args = ap.parse_args()
    from qgraph import sha256_of, update_model_json

    bundle_dir = os.path.join(ROOT, "models", args.bundle)
    with open(os.path.join(bundle_dir, "model.json")) as f:
        meta = json.load(f)
    sd, _, arch = load_weights(args.weights or os.path.join(ROOT, "models", f"{args.bundle}.weights.npz"))
    net = HyperpriorCodec(N=meta["N"], M=meta["M"], arch=arch)
    net.load_state_dict(sd)
    net.eval()
    pf_spec = None if args.no_postfilter else meta.get("postfilter")
    pfw = postfilter_module(os.path.join(bundle_dir, "postfilter.onnx")) if pf_spec else None

    torch.manual_seed(0)
    y = torch.randn(1, meta["M"], 6, 8) * 2
    x = torch.rand(1, 3, 96, 128)
    m = torch.ones(1, 1, 96, 128)
    m[..., 80:, :] = 0
    m[..., 120:] = 0
    q, pf = torch.tensor([0.4]), torch.tensor([1.0])
    args_in = (y, x, m, q, pf) if pfw is not None else (y, x, m)
    names = ["y", "x", "m", "q", "pf"][:len(args_in)]

    def check(filt):
        """The hand-written gradient of the synthesis (+ filt) equals autograd's; returns the
        gradient module and its outputs."""
        yr = y.clone().requires_grad_(True)
        out = net.g_s(yr) if filt is None else filt(net.g_s(yr), q)
        (0.5 * (m * (out - x) ** 2).sum()).backward()
        vjp = SynthesisVJP(net.g_s, filt).eval()
        with torch.no_grad():
            g, sse = vjp(*args_in)
        err = (g - yr.grad).abs().max().item() / yr.grad.abs().max().item()
        assert err < 1e-4, f"hand-written gradient differs from autograd by {err:.2e} (relative)"
        return vjp, g, sse, err

    if pfw is not None:
        # also with every weight perturbed, so that branches a trained filter barely uses (a
        # zero-initialised layer) are checked too
        import copy

        noisy = copy.deepcopy(pfw)
        gen = torch.Generator().manual_seed(1)
        for p in noisy.parameters():
            p.data.add_(torch.randn(p.shape, generator=gen) * 0.05 * (p.abs().mean() + 1e-2))
        check(noisy)
    vjp, g, sse, err = check(pfw)

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
    if pfw is not None:
        post = ort.InferenceSession(os.path.join(bundle_dir, "postfilter.onnx"), providers=["CPUExecutionProvider"])
        xh = post.run(None, {"x": xh, "q": q.numpy()})[0]
    sse_dec = float((m.numpy() * (xh - x.numpy()) ** 2).sum())
    assert abs(sse_dec - float(got_sse[0])) <= 1e-3 * sse_dec, (sse_dec, float(got_sse[0]))
    os.replace(path + ".tmp", path)
    entry = {"graph": "synthesis_vjp", "sha256": sha256_of(path), "postfilter": pfw is not None,
             "note": "gradient of 0.5*|m*(decoded(y) - x)|^2 with respect to the synthesis input y, written out "
                     "by hand (training/refine_graph.py); decoded = the synthesis, plus pf * the post-filter "
                     "where 'postfilter' is true; used by the encoder's latent refinement (effort >= 2)"}
    if pfw is not None:
        entry["postfilter_sha256"] = pf_spec["sha256"]
    meta_path = update_model_json(args.bundle, lambda mm: mm.__setitem__("refine", entry))
    print(f"wrote {path} ({os.path.getsize(path)} bytes; gradient error {err:.1e} vs autograd, "
          f"sse {float(got_sse[0]):.4f} vs decoder {sse_dec:.4f}), listed in {meta_path}")


if __name__ == "__main__":
    main()
