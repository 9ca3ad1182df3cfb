"""What the int8 graphs of training/qat_decoder.py and training/qat_encoder.py share: the fake
quantisation their fine-tuning trains through, a node-by-node ONNX writer for the quantised
graphs, and their installation into a model bundle as an optional encoder or decoder.
"""
from __future__ import annotations

import hashlib
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WQ_MIN, WQ_MAX = -64, 63  # 7-bit weights: no int16 saturation in u8s8 kernels without VNNI


def ste_round(x):
    return x + (torch.round(x) - x).detach()


class ActQ(nn.Module):
    """uint8 per-tensor quantisation of an activation: QuantizeLinear -> DequantizeLinear (qmax
    4095: the 12-bit activations of the mixed decoder)."""

    def __init__(self, qmax: int = 255):
        super().__init__()
        self.qmax = qmax
        self.log_s = nn.Parameter(torch.zeros(()))
        self.register_buffer("zp", torch.zeros(()))
        self.mode = "off"  # off | observe | on
        self.seen: list[torch.Tensor] = []

    def calibrate(self, lo_q=1e-4, hi_q=1e-5):
        v = torch.cat(self.seen)
        lo = float(torch.quantile(v, lo_q)) if float(v.min()) < 0 else 0.0
        hi = float(torch.quantile(v, 1 - hi_q))
        s = max(hi - lo, 1e-6) / self.qmax
        self.log_s.data.fill_(math.log(s))
        self.zp.fill_(float(min(self.qmax, max(0, round(-lo / s)))))
        self.seen = []

    def scale(self):
        return float(self.log_s.detach().exp())

    def forward(self, x):
        if self.mode == "observe":
            flat = x.detach().float().flatten()
            self.seen.append(flat[torch.randint(0, flat.numel(), (200_000,))])
            return x
        if self.mode == "off":
            return x
        s = self.log_s.exp()
        q = torch.clamp(ste_round(x.float() / s) + self.zp, 0, self.qmax)
        return (q - self.zp) * s


def quant_weight(w):
    """Per-output-channel symmetric 7-bit fake quantisation (scale from the channel's max)."""
    s = (w.detach().abs().amax(dim=(1, 2, 3), keepdim=True) / WQ_MAX).clamp_min(1e-12)
    return torch.clamp(ste_round(w / s), WQ_MIN, WQ_MAX) * s, s.flatten()


def evaluation_inputs(args):
    """For the scripts' evaluate command (measurement only: nothing is fitted to Kodak): every
    args.every_nth Kodak image, an onnxruntime session of the graph args.onnx (2 threads), and
    the qualities of args.qualities."""
    import glob

    import onnxruntime as ort

    files = sorted(glob.glob(os.path.join(ROOT, "..", "shared", "data", "kodak", "*.png")))[::args.every_nth]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    return files, sess, [float(v) for v in args.qualities.split(",")]


def add_arguments(ap, kind: str, log: str):
    """The command-line arguments the two scripts share (kind: "encoder" or "decoder")."""
    ap.add_argument("cmd", choices=["calibrate", "train", "export", "evaluate"])
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "train"))
    ap.add_argument("--init", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--onnx", default=None, help="export: output path (or use --bundle)")
    ap.add_argument("--bundle", default=None, help=f"export: install as models/BUNDLE/{kind}_NAME.onnx, listed "
                    "in its model.json")
    ap.add_argument("--name", default="int8", help=f"export: the {kind}'s name in the bundle")
    ap.add_argument("--note", default="", help="export: what it trades, stored in model.json")
    ap.add_argument("--log", default=os.path.join(ROOT, "training", "runs", log))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--lr-scale", type=float, default=1e-4)
    ap.add_argument("--every", type=float, default=300, help="train: seconds between held-out checks")
    ap.add_argument("--calib-batches", type=int, default=16)
    ap.add_argument("--qualities", default="5,40,75,100")
    ap.add_argument("--every-nth", type=int, default=3, help="evaluate: every n-th Kodak image")


class QTransform(nn.Module):
    """Four convolutions with three (inverse) GDNs between, and the uint8 quantisers of the int8
    graph: each convolution's output (q_out), each GDN's norm (q_norm) and its result (named
    by `result`: q_mul for the inverse GDN's product, q_div for the GDN's quotient)."""

    def __init__(self, convs, gdns, result: str):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.gdns = nn.ModuleList(gdns)
        self.q_out = nn.ModuleList([ActQ() for _ in range(3)])
        self.q_norm = nn.ModuleList([ActQ() for _ in range(3)])
        setattr(self, result, nn.ModuleList([ActQ() for _ in range(3)]))
        self.result = result
        self.quant = False

    def acts(self):
        return [*self.q_out, *self.q_norm, *getattr(self, self.result)]

    def set_mode(self, mode):
        self.quant = mode == "on"
        for a in self.acts():
            a.mode = mode


def optimizer(q: QTransform, ck: dict, lr: float, lr_scale: float):
    """Adam over q's weights (lr) and activation scales (lr_scale), resumed from checkpoint ck's
    state where it has one (with the given learning rates)."""
    scales = [a.log_s for a in q.acts()]
    weights = [p for n, p in q.named_parameters() if "log_s" not in n]
    opt = torch.optim.Adam([{"params": weights, "lr": lr}, {"params": scales, "lr": lr_scale}])
    if "opt" in ck:
        opt.load_state_dict(ck["opt"])
        for g, v in zip(opt.param_groups, (lr, lr_scale)):
            g["lr"] = v
    return opt, weights


class Graph:
    """An ONNX graph written node by node: constants, uniquely named outputs, and the
    com.microsoft QLinearConv (NHWC) with quant_weight's 7-bit weights."""

    def __init__(self):
        self.nodes, self.inits, self.uid = [], [], 0

    def const(self, arr, nm):
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def new(self, prefix):
        self.uid += 1
        return f"{prefix}_{self.uid}"

    def node(self, op, ins, out=None, **kw):
        from onnx import helper

        out = out or self.new(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], **kw))
        return out

    def f32(self, v):
        return self.const(np.float32(v), self.new("s"))

    def u8(self, v):
        return self.const(np.uint8(v), self.new("zp"))

    def qconv(self, x, x_scale, x_zp, w, b, y_scale, y_zp, pad, stride=None):
        """QLinearConv on NHWC uint8: int8 per-channel weights (7-bit), int32 bias on the grid
        x_scale * w_scale, uint8 output (stride None: the attribute left out, i.e. 1)."""
        w, b = w.detach().float(), b.detach().float()
        wq, ws = quant_weight(w)
        wn = self.new("w")
        self.const(torch.round(wq / ws.view(-1, 1, 1, 1)).to(torch.int8).numpy(), wn)
        self.const(ws.numpy().astype(np.float32), wn + "_s")
        self.const(np.zeros(len(ws), np.int8), wn + "_zp")
        self.const(np.round(b.numpy() / (x_scale * ws.numpy())).astype(np.int32), wn + "_b")
        kw = {"strides": [stride] * 2} if stride is not None else {}
        return self.node("QLinearConv", [x, self.f32(x_scale), self.u8(x_zp), wn, wn + "_s", wn + "_zp",
                                         self.f32(y_scale), self.u8(y_zp), wn + "_b"],
                         domain="com.microsoft", channels_last=1, pads=[pad] * 4, **kw)

    def model(self, name, inputs, outputs, producer):
        """The checked model; inputs and outputs: (name, shape) of float tensors."""
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(self.nodes, name,
                                  [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                                  [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
                                  self.inits)
        mp = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid("com.microsoft", 1)],
                               producer_name=producer)
        onnx.checker.check_model(mp)
        return mp


def save(mp, args, ck, kind: str, reserved: str) -> str:
    """Writes the model to args.onnx, or with --bundle to models/BUNDLE/<kind>_<name>.onnx after
    checking that the checkpoint was trained against that bundle; atomically. Returns the path."""
    import onnx

    out = args.onnx
    if args.bundle:
        if ck.get("model") != args.bundle:
            raise SystemExit(f"{args.init} was trained against {ck.get('model')}, not {args.bundle}")
        if not args.name.isalnum() or args.name == reserved:
            raise SystemExit(f"the {kind} name must be letters and digits, and not '{reserved}'")
        out = os.path.join(ROOT, "models", args.bundle, f"{kind}_{args.name}.onnx")
    if not out:
        raise SystemExit("give --onnx PATH or --bundle NAME")
    tmp = out + ".tmp"
    onnx.save(mp, tmp)
    os.replace(tmp, out)
    print("wrote", out, os.path.getsize(out), "bytes")
    return out


def register(bundle: str, kind: str, name: str, path: str, entry: dict, default_key: str | None = None):
    """Lists the graph at path in models/BUNDLE/model.json under "<kind>s" with its SHA-256
    (and, with default_key, names it there as the default)."""
    def update(meta):
        meta.setdefault(f"{kind}s", {})[name] = {"graph": f"{kind}_{name}", "sha256": sha256_of(path), **entry}
        if default_key:
            meta[default_key] = name

    meta_path = update_model_json(bundle, update)
    print(f"listed in {meta_path}" + (f" as {default_key}" if default_key else ""))


def sha256_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def update_model_json(bundle: str, update) -> str:
    """Applies update(meta) to models/BUNDLE/model.json and writes it atomically; returns its path."""
    meta_path = os.path.join(ROOT, "models", bundle, "model.json")
    with open(meta_path) as f:
        meta = json.load(f)
    update(meta)
    with open(meta_path + ".tmp", "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    os.replace(meta_path + ".tmp", meta_path)
    return meta_path
