"""The bit-exact decoder (``decoder="bitexact"``): the model's own float graphs, run by the
deterministic C++ executor.

onnxruntime's float kernels sum in different orders on different CPUs, instruction sets,
thread counts and versions, so the float synthesis may round a pixel differently here and there
between machines (measured: 136 of 14.2 million values moved by one level between two of
onnxruntime's own optimisation levels). The bit-exact decoder reads the weights of
``decoder.onnx``, ``postfilter.onnx`` and the mean branch of ``hyper_decoder.onnx`` (the very
files that the model id hashes) and runs them through ``_core.Net``, whose convolutions add
their products in one fixed order of IEEE-754 fused multiply-adds (cpp/conv.hpp), so a file
decodes to the same pixels, bit for bit, on every machine (docs/format.md, "Bit-exact
decoding").

The ONNX files are read by the small protobuf reader below (the ``onnx`` package is not a
dependency); it accepts the graphs that ``training/export.py`` and ``training/postfilter.py``
write and refuses anything else with a ModelError.
"""
from __future__ import annotations

import struct
import threading
from pathlib import Path

import numpy as np

from . import _core
from .errors import ModelError

# -- a minimal ONNX (protobuf) reader ------------------------------------------------------------


def _varint(buf, i):
    v = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, i
        shift += 7


def _fields(buf):
    """(field number, wire type, value) of a protobuf message: ints for varint and fixed fields,
    memoryviews for length-delimited ones."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 1:
            v, i = struct.unpack_from("<Q", buf, i)[0], i + 8
        elif wt == 2:
            ln, i = _varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated field")
            v, i = buf[i:i + ln], i + ln
        elif wt == 5:
            v, i = struct.unpack_from("<I", buf, i)[0], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield num, wt, v


def _int64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(wt, v):
    """A repeated int64 field's values: one varint, or a packed run of them."""
    if wt == 0:
        return [_int64(v)]
    out, i = [], 0
    while i < len(v):
        x, i = _varint(v, i)
        out.append(_int64(x))
    return out


def _tensor(buf):
    dims, dtype, name, raw, floats, int64s, int32s = [], 1, "", None, [], [], []
    for num, wt, v in _fields(buf):
        if num == 1:
            dims += _ints(wt, v)
        elif num == 2:
            dtype = v
        elif num == 4:
            floats += (list(np.frombuffer(v, "<f4")) if wt == 2 else [struct.unpack("<f", struct.pack("<I", v))[0]])
        elif num == 5:  # int32_data: int32, int8 and uint8 values that are not in raw_data
            int32s += _ints(wt, v)
        elif num == 7:
            int64s += _ints(wt, v)
        elif num == 8:
            name = bytes(v).decode()
        elif num == 9:
            raw = bytes(v)
    np_type = {1: "<f4", 2: "u1", 3: "i1", 6: "<i4", 7: "<i8"}.get(dtype)
    if np_type is None:
        raise ValueError(f"tensor {name!r} has unsupported data type {dtype}")
    if raw is not None:
        arr = np.frombuffer(raw, np_type).copy()
    else:
        vals = floats if dtype == 1 else int64s if dtype == 7 else [(x + (1 << 31)) % (1 << 32) - (1 << 31) for x in int32s]
        arr = np.array(vals, np.int64 if dtype in (2, 3, 6) else np_type).astype(np_type)
    return name, arr.reshape(dims) if dims else arr.reshape(())


def _node(buf):
    node = {"input": [], "output": [], "op": "", "attr": {}}
    for num, wt, v in _fields(buf):
        if num == 1:
            node["input"].append(bytes(v).decode())
        elif num == 2:
            node["output"].append(bytes(v).decode())
        elif num == 4:
            node["op"] = bytes(v).decode()
        elif num == 5:
            name, val, ints = "", None, []
            for anum, awt, av in _fields(v):
                if anum == 1:
                    name = bytes(av).decode()
                elif anum == 2:
                    val = struct.unpack("<f", struct.pack("<I", av))[0]
                elif anum == 3:
                    val = _int64(av)
                elif anum == 4:
                    val = bytes(av)
                elif anum == 5:
                    val = _tensor(av)[1]
                elif anum == 8:
                    ints += _ints(awt, av)
            node["attr"][name] = ints if val is None else val
    return node


def read_onnx(path: Path):
    """(nodes, initializers) of an ONNX file: nodes as dicts (op, input, output, attr), the
    initializers and Constant outputs as numpy arrays."""
    buf = memoryview(Path(path).read_bytes())
    graph = next((v for num, wt, v in _fields(buf) if num == 7 and wt == 2), None)
    if graph is None:
        raise ValueError("no graph")
    nodes, consts = [], {}
    for num, wt, v in _fields(graph):
        if num == 1:
            nodes.append(_node(v))
        elif num == 5:
            name, arr = _tensor(v)
            consts[name] = arr
    for n in nodes:
        if n["op"] == "Constant" and isinstance(n["attr"].get("value"), np.ndarray):
            consts[n["output"][0]] = n["attr"]["value"]
    return nodes, consts


# -- graphs to Net operations ---------------------------------------------------------------------


class _Graph:
    """Constant folding of the weight-side nodes (Clip, Cast) and lookup of a node's consumers."""

    def __init__(self, path: Path):
        self.nodes, self.c = read_onnx(path)
        for n in self.nodes:
            if n["op"] == "Clip" and all(i in self.c for i in n["input"] if i):
                lo = self.c[n["input"][1]] if len(n["input"]) > 1 and n["input"][1] else -np.inf
                hi = self.c[n["input"][2]] if len(n["input"]) > 2 and n["input"][2] else np.inf
                self.c[n["output"][0]] = np.clip(self.c[n["input"][0]], lo, hi).astype(np.float32)
            elif n["op"] == "Cast" and n["input"][0] in self.c:
                self.c[n["output"][0]] = self.c[n["input"][0]].astype(np.float32)

    def consumers(self, name):
        return [n for n in self.nodes if name in n["input"]]

    def conv(self, n):
        """Weight and bias of a Conv node with constant weights (bias zero when absent)."""
        w = self.c[n["input"][1]].astype(np.float32)
        b = (self.c[n["input"][2]] if len(n["input"]) > 2 and n["input"][2] else np.zeros(w.shape[0]))
        a = n["attr"]
        if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
            raise ValueError("grouped or dilated convolution")
        return np.ascontiguousarray(w), np.ascontiguousarray(b, np.float32), a.get("strides", [1, 1]), a.get("pads", [0] * 4)


def _plain(w, strides, pads):
    k = w.shape[2]
    if w.shape[2] != w.shape[3] or k not in (1, 3) or list(strides) != [1, 1] or list(pads) != [k // 2] * 4:
        raise ValueError(f"unsupported convolution (kernel {w.shape[2:]}, strides {strides}, pads {pads})")


def _chain_ops(g: _Graph, start: str, end: str, slice_first: int | None = None):
    """Net operations for a chain of 3x3 / 1x1 convolutions, each optionally followed by a
    DepthToSpace (CRD) and a ReLU, and simplified IGDNs (Abs -> Conv -> Mul), from the graph
    input ``start`` to the output ``end``. slice_first: keep only the first output channels of
    the last convolution (the hyper-decoder's mean branch)."""
    ops, cur = [], start
    while cur != end:
        users = [n for n in g.consumers(cur) if n["op"] not in ("Shape",)]
        if not users:
            raise ValueError(f"{cur} leads nowhere")
        ops_of = {n["op"] for n in users}
        if ops_of == {"Conv"} and len(users) == 1:
            w, b, s, p = g.conv(users[0])
            _plain(w, s, p)
            ops.append(["conv", w, b, 1, False])
            cur = users[0]["output"][0]
        elif ops_of == {"DepthToSpace"} and ops and ops[-1][0] == "conv" and ops[-1][3] == 1 and not ops[-1][4]:
            n = users[0]
            if n["attr"].get("mode", b"DCR") != b"CRD":
                raise ValueError("DepthToSpace must use CRD order")
            ops[-1][3] = int(n["attr"]["blocksize"])
            cur = n["output"][0]
        elif ops_of == {"Relu"} and ops and ops[-1][0] == "conv" and not ops[-1][4]:
            ops[-1][4] = True
            cur = users[0]["output"][0]
        elif ops_of == {"Abs", "Mul"} and len(users) == 2:
            ab = next(n for n in users if n["op"] == "Abs")
            mul = next(n for n in users if n["op"] == "Mul")
            (cv,) = g.consumers(ab["output"][0])
            if cv["op"] != "Conv" or cv["output"][0] not in mul["input"]:
                raise ValueError("unrecognised IGDN")
            w, b, s, p = g.conv(cv)
            _plain(w, s, p)
            if w.shape[2] != 1:
                raise ValueError("IGDN must be a 1x1 convolution")
            ops.append(("igdn", w, b))
            cur = mul["output"][0]
        elif ops_of == {"Cast"} and len(users) == 1:
            cur = users[0]["output"][0]
        elif ops_of == {"Slice"} and slice_first and ops and ops[-1][0] == "conv":
            w, b = ops[-1][1], ops[-1][2]
            if w.shape[0] != 2 * slice_first or ops[-1][3] != 1 or ops[-1][4]:
                raise ValueError("unexpected mean/scale head")
            ops[-1][1], ops[-1][2] = np.ascontiguousarray(w[:slice_first]), np.ascontiguousarray(b[:slice_first])
            cur = users[0]["output"][0]
        else:
            raise ValueError(f"unsupported operations {sorted(ops_of)} after {cur}")
    return [tuple(o) for o in ops]


def _postfilter_ops(g: _Graph):
    """Net operations of the two-scale post-filter as training/postfilter.py exports it
    (PostFilterUNetExport): strided convolutions back into their pixel-unshuffle form."""
    by_w = {n["input"][1]: n for n in g.nodes if n["op"] == "Conv"}
    need = ["inc.weight", "incq.weight", "down.weight", "up.weight", "dec.weight", "out.weight"]
    if any(k not in by_w for k in need):
        raise ValueError("not a two-scale post-filter")
    mids = sorted((k for k in by_w if k.startswith("mid.")), key=lambda k: int(k.split(".")[1]))
    w, b, s, p = g.conv(by_w["inc.weight"])  # 6x6 stride 2 padding 2 on x = unshuffle(2) + 3x3
    if w.shape[2:] != (6, 6) or list(s) != [2, 2] or list(p) != [2] * 4:
        raise ValueError("unexpected first convolution")
    co, ci = w.shape[:2]
    w3 = w.reshape(co, ci, 3, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4).reshape(co, ci * 4, 3, 3)
    wq, _, sq, pq = g.conv(by_w["incq.weight"])
    _plain(wq, sq, pq)
    if wq.shape != (co, 1, 3, 3):
        raise ValueError("unexpected quality convolution")
    inc = np.ascontiguousarray(np.concatenate([w3, wq], axis=1))
    wd, bd, sd, pd = g.conv(by_w["down.weight"])  # 2x2 stride 2 = unshuffle(2) + 1x1
    if wd.shape[2:] != (2, 2) or list(sd) != [2, 2] or any(pd):
        raise ValueError("unexpected down convolution")
    down = np.ascontiguousarray(wd.reshape(wd.shape[0], -1, 1, 1))
    ops = [("push",), ("unshuffle", 2), ("plane",), ("conv", inc, b, 1, True), ("push",), ("unshuffle", 2),
           ("conv", down, bd, 1, True)]
    for k in mids:
        wm, bm, sm, pm = g.conv(by_w[k])
        _plain(wm, sm, pm)
        ops.append(("conv", wm, bm, 1, True))
    wu, bu, su, pu = g.conv(by_w["up.weight"])
    _plain(wu, su, pu)
    ops += [("conv", wu, bu, 2, False), ("add",)]
    for key, shuffle, relu in (("dec.weight", 1, True), ("out.weight", 2, False)):
        wk, bk, sk, pk = g.conv(by_w[key])
        _plain(wk, sk, pk)
        ops.append(("conv", wk, bk, shuffle, relu))
    ops.append(("add",))
    # the graph's own wiring, checked: ReLU after inc (+ incq) and down and each mid block, the
    # up branch added to inc's output before dec, the output added to x
    kinds = [n["op"] for n in g.nodes if n["op"] in ("Conv", "Relu", "Add", "DepthToSpace")]
    want = (["Conv", "Conv", "Add", "Relu", "Conv", "Relu"] + ["Conv", "Relu"] * len(mids)
            + ["Conv", "DepthToSpace", "Add", "Conv", "Relu", "Conv", "DepthToSpace", "Add"])
    if kinds != want:
        raise ValueError("the post-filter's wiring is not the exported two-scale form")
    return ops


# -- the int8 synthesis ---------------------------------------------------------------------------
#
# The tables below are computed with float32 operations in a fixed order (numpy's float32 multiply
# and divide are single correctly rounded IEEE-754 operations, np.rint rounds half to even), as
# docs/format.md ("Bit-exact decoding") specifies, so every machine builds the same ones.

F32 = np.float32


def _q8(t, zp):
    """float32 values to uint8: round half to even, plus the zero point, clamped to 0..255."""
    return np.clip(np.rint(t).astype(np.int64) + int(zp), 0, 255).astype(np.uint8)


def abs_table(s_x, zp_x, s_y, zp_y):
    """QLinearLeakyRelu with alpha -1 (|x|) on every byte: |(v - zp_x) * s_x| / s_y."""
    v = (np.arange(256) - int(zp_x)).astype(F32) * F32(s_x)
    return _q8(np.abs(v) / F32(s_y), zp_y)


def mul_table(s_a, zp_a, s_b, zp_b, s_c, zp_c):
    """QLinearMul on every pair of bytes, [a * 256 + b]: ((a - zp_a) s_a) ((b - zp_b) s_b) / s_c."""
    va = (np.arange(256) - int(zp_a)).astype(F32) * F32(s_a)
    vb = (np.arange(256) - int(zp_b)).astype(F32) * F32(s_b)
    return _q8((va[:, None] * vb[None, :]) / F32(s_c), zp_c).ravel()


def dequant_table(s, zp):
    """The float value of every byte: (v - zp) * s."""
    return (np.arange(256) - int(zp)).astype(F32) * F32(s)


def requant_scales(s_x, w_s, s_y):
    """A QLinearConv's requantisation multipliers: (s_x * w_s[c]) / s_y, in float32."""
    return np.ascontiguousarray((F32(s_x) * np.asarray(w_s, F32)) / F32(s_y), F32)


TAIL_WEIGHT_MAX = 8191  # the tail's weights: 14-bit integers, per output channel


def tail_weights(w, b, s_in, s_out):
    """The last convolution as the exact int8 decoder runs it: weights quantised per output channel
    to integers in [-8191, 8191] (w / sw rounded, sw = max |w| / 8191), and the multipliers that
    take the integer sum to the output grid: mult = (s_in * sw) / s_out, add = b / s_out."""
    w = np.asarray(w, F32)
    m = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
    sw = np.where(m > 0, m / F32(TAIL_WEIGHT_MAX), F32(1)).astype(F32)
    wq = np.clip(np.rint(w / sw[:, None, None, None]), -TAIL_WEIGHT_MAX, TAIL_WEIGHT_MAX).astype(np.int16)
    mult = ((F32(s_in) * sw) / F32(s_out)).astype(F32)
    add = (np.asarray(b, F32) / F32(s_out)).astype(F32)
    return np.ascontiguousarray(wq), mult, add


def _scalar(g, name, kind):
    v = g.c[name]
    if v.size != 1:
        raise ValueError(f"{name} must be a scalar")
    return float(v.reshape(())) if kind == "f" else int(v.reshape(()))


def _single(g, name, op):
    users = [n for n in g.consumers(name) if n["op"] != "Shape"]
    if len(users) != 1 or users[0]["op"] != op:
        raise ValueError(f"expected one {op} after {name}, found {sorted(n['op'] for n in users)}")
    return users[0]


def _nhwc_shuffle(g, name):
    """The int8 graphs' pixel shuffle of an NHWC tensor with DCR channels (qat_decoder.py's
    shuffle_nhwc): Reshape to (N, H, W, 2, 2, C), Transpose (0, 1, 3, 2, 4, 5), Reshape to
    (N, 2H, 2W, C). Returns (output name, C)."""
    r = _single(g, name, "Reshape")
    shape = [int(v) for v in g.c[r["input"][1]]]
    if shape[:5] != [0, 0, 0, 2, 2] or len(shape) != 6:
        raise ValueError("unrecognised int8 pixel shuffle")
    t = _single(g, r["output"][0], "Transpose")
    if list(t["attr"].get("perm", [])) != [0, 1, 3, 2, 4, 5]:
        raise ValueError("unrecognised int8 pixel shuffle")
    r2 = _single(g, t["output"][0], "Reshape")
    # its target shape: Shape(input) * (1, 2, 2, 0) + (0, 0, 0, C)
    add = next(n for n in g.nodes if n["output"][0] == r2["input"][1])
    mul = next(n for n in g.nodes if n["output"][0] in add["input"])
    kmul = next(g.c[i] for i in mul["input"] if i in g.c)
    kadd = next(g.c[i] for i in add["input"] if i in g.c)
    src = next(n for n in g.nodes if n["output"][0] in mul["input"])
    if (add["op"], mul["op"], src["op"]) != ("Add", "Mul", "Shape") or src["input"][0] != name \
            or list(kmul) != [1, 2, 2, 0] or list(kadd) != [0, 0, 0, shape[5]]:
        raise ValueError("unrecognised int8 pixel shuffle")
    return r2["output"][0], shape[5]


def _qconv_args(g, n):
    """(int8 weight, int32 bias, scales, in_zp, out_zp, s_y) of a QLinearConv (NHWC, stride 1)."""
    x, s_x, zp_x, w, w_s, w_zp, s_y, zp_y, b = n["input"]
    a = n["attr"]
    wq = g.c[w]
    if a.get("channels_last") != 1 or any(v != 1 for v in a.get("strides", [1, 1])) or a.get("group", 1) != 1:
        raise ValueError("int8 convolutions must be NHWC, stride 1, ungrouped")
    if wq.dtype != np.int8 or np.any(g.c[w_zp] != 0) or wq.shape[2] != wq.shape[3]:
        raise ValueError("int8 convolution weights must be int8, symmetric, square")
    k = wq.shape[2]
    if list(a.get("pads", [0] * 4)) != [k // 2] * 4:
        raise ValueError("int8 convolutions must pad by half the kernel")
    scale = requant_scales(_scalar(g, s_x, "f"), g.c[w_s], _scalar(g, s_y, "f"))
    return (np.ascontiguousarray(wq), np.ascontiguousarray(g.c[b].astype(np.int32)), scale,
            _scalar(g, zp_x, "i"), _scalar(g, zp_y, "i"), _scalar(g, s_y, "f"))


def int8_synthesis_args(g: _Graph):
    """The head, operations and tail of _core.QSynthesis for an int8 synthesis graph of the form
    training/qat_decoder.py exports (first and last convolutions in float)."""
    conv = _single(g, "y", "Conv")
    w0, b0, s0, p0 = g.conv(conv)
    if w0.shape[2:] != (3, 3) or list(s0) != [1, 1] or list(p0) != [1] * 4:
        raise ValueError("unexpected first convolution")
    q = _single(g, conv["output"][0], "QuantizeLinear")
    head = (w0, b0, _scalar(g, q["input"][1], "f"), _scalar(g, q["input"][2], "i"))
    t = _single(g, q["output"][0], "Transpose")
    if list(t["attr"].get("perm", [])) != [0, 2, 3, 1]:
        raise ValueError("unexpected layout change after the first convolution")
    cur, _ = _nhwc_shuffle(g, t["output"][0])
    ops = []
    while True:
        users = {n["op"]: n for n in g.consumers(cur) if n["op"] != "Shape"}
        if set(users) != {"QLinearLeakyRelu", "QLinearMul"}:
            raise ValueError(f"expected an int8 inverse GDN, found {sorted(users)}")
        lr, mul = users["QLinearLeakyRelu"], users["QLinearMul"]
        if lr["attr"].get("alpha") != -1.0:
            raise ValueError("the inverse GDN's |x| must be LeakyRelu with alpha -1")
        table = abs_table(*(_scalar(g, lr["input"][i], "f" if i % 2 else "i") for i in range(1, 5)))
        gamma = _single(g, lr["output"][0], "QLinearConv")
        wg, bg, sg, zin, zn, s_n = _qconv_args(g, gamma)
        if zin != _scalar(g, lr["input"][4], "i") or gamma["output"][0] != mul["input"][3] or mul["input"][0] != cur:
            raise ValueError("unrecognised int8 inverse GDN wiring")
        m = mul["input"]
        mp = (_scalar(g, m[2], "i"), _scalar(g, m[1], "f"), _scalar(g, m[5], "i"), _scalar(g, m[4], "f"),
              _scalar(g, m[6], "f"), _scalar(g, m[7], "i"))
        mt = mul_table(mp[1], mp[0], mp[3], mp[2], mp[4], mp[5])
        ops.append(("igdn", table, wg, bg, sg, zn, mt, mp))
        cur = mul["output"][0]
        nxt = [n for n in g.consumers(cur) if n["op"] != "Shape"]
        if len(nxt) == 1 and nxt[0]["op"] == "QLinearConv":
            w, b, sc, zi, zo, _ = _qconv_args(g, nxt[0])
            out, _ = _nhwc_shuffle(g, nxt[0]["output"][0])
            ops.append(("qconv", w, b, sc, zi, zo, 2))
            cur = out
            continue
        t = _single(g, cur, "Transpose")
        if list(t["attr"].get("perm", [])) != [0, 3, 1, 2]:
            raise ValueError("unexpected layout change before the last convolution")
        dq = _single(g, t["output"][0], "DequantizeLinear")
        conv = _single(g, dq["output"][0], "Conv")
        w3, b3, s3, p3 = g.conv(conv)
        if w3.shape[2:] != (3, 3) or list(s3) != [1, 1] or list(p3) != [1] * 4:
            raise ValueError("unexpected last convolution")
        q = _single(g, conv["output"][0], "QuantizeLinear")
        d2s = _single(g, q["output"][0], "DepthToSpace")
        if d2s["attr"].get("mode", b"DCR") != b"CRD" or int(d2s["attr"]["blocksize"]) != 2:
            raise ValueError("the last pixel shuffle must be DepthToSpace CRD by 2")
        dq2 = _single(g, d2s["output"][0], "DequantizeLinear")
        if dq2["output"][0] != "x":
            raise ValueError("the graph must end in x")
        wq, mult, add = tail_weights(w3, b3, _scalar(g, dq["input"][1], "f"), _scalar(g, q["input"][1], "f"))
        tail = (wq, mult, add, _scalar(g, dq["input"][2], "i"), _scalar(g, q["input"][2], "i"),
                dequant_table(_scalar(g, dq2["input"][1], "f"), _scalar(g, dq2["input"][2], "i")))
        return head, ops, tail


MIXED_FORMAT = 1  # the "format" of the decoder_<name>.npz files mixed_synthesis_args reads


def mixed_synthesis_args(a: dict):
    """The head, operations, tail and wide stages of _core.QSynthesis for a mixed decoder, from the
    arrays of its decoder_<name>.npz (training/qat_decoder.py export; docs/format.md, "The mixed
    decoder"). Every derived number (requantisation multipliers, tables) is computed here in
    float32 exactly as for the int8 graphs."""
    def scalar(k, kind):
        v = np.asarray(a[k])
        if v.shape != () or (kind == "f" and v.dtype != F32) or (kind == "i" and v.dtype != np.int32):
            raise ValueError(f"{k} must be a {'float32' if kind == 'f' else 'int32'} scalar")
        return float(v) if kind == "f" else int(v)

    def arr(k, dtype, ndim):
        v = np.asarray(a[k])
        if v.dtype != dtype or v.ndim != ndim:
            raise ValueError(f"{k} must be a {ndim}-dimensional {np.dtype(dtype).name} array")
        return np.ascontiguousarray(v)

    if scalar("format", "i") != MIXED_FORMAT:
        raise ValueError(f"unknown mixed decoder format {int(np.asarray(a['format']))} (this version reads {MIXED_FORMAT})")
    wide = []
    n = scalar("wide", "i")
    if not 1 <= n <= 4:
        raise ValueError("a mixed decoder has 1 to 4 wide stages")
    x_s = scalar("x.s", "f")
    for k in range(n):
        s = scalar(f"wide{k}.s", "f")
        ws = arr(f"wide{k}.ws", F32, 1)
        last = k == n - 1
        mult = requant_scales(s, ws, x_s) if last else np.ascontiguousarray(F32(s) * ws, F32)
        wide.append((arr(f"wide{k}.gamma", F32, 4), arr(f"wide{k}.beta", F32, 1), s, scalar(f"wide{k}.zp", "i"),
                     arr(f"wide{k}.w", np.int8, 4), arr(f"wide{k}.b", np.int32, 1), mult,
                     scalar("x.zp", "i") if last else 0, not last))
    x_zp = scalar("x.zp", "i")
    n_s, n_zp, m_s, m_zp = scalar("norm.s", "f"), scalar("norm.zp", "i"), scalar("mul.s", "f"), scalar("mul.zp", "i")
    mp = (x_zp, x_s, n_zp, n_s, m_s, m_zp)
    ops = [("igdn", abs_table(x_s, x_zp, x_s, 0), arr("gdn.w", np.int8, 4), arr("gdn.b", np.int32, 1),
            requant_scales(x_s, arr("gdn.ws", F32, 1), n_s), n_zp, mul_table(x_s, x_zp, n_s, n_zp, m_s, m_zp), mp)]
    wq, mult, add = tail_weights(arr("tail.w", F32, 4), arr("tail.b", F32, 1), m_s, F32(1 / 255))
    tail = (wq, mult, add, m_zp, 0, dequant_table(F32(1 / 255), 0))
    head = (arr("head.w", F32, 4), arr("head.b", F32, 1), 1.0, 0)
    return head, ops, tail, wide


class BitExactDecoder:
    """The deterministic mean branch, synthesis and post-filter of one model bundle."""

    def __init__(self, path: Path, latent_channels: int):
        self._path = path
        try:
            self.mean = self._net(_chain_ops(_Graph(path / "hyper_decoder.onnx"), "z", "mu",
                                             slice_first=latent_channels))
            self._synthesis_ops = _chain_ops(_Graph(path / "decoder.onnx"), "y", "x")
            self.synthesis = self._net(self._synthesis_ops)
            self._limit = self.synthesis.cache_limit
        except (OSError, ValueError, KeyError, StopIteration, IndexError) as e:
            raise ModelError(f"model {path.name}: the bit-exact decoder cannot run its graphs ({e})") from None
        self._lazy = {}  # "postfilter", "qfilter", ("int8", name) -> network, built on first use
        self._lock = threading.Lock()
        self._held = False

    def _once(self, key, make, what: str):
        """The network stored under key, made by make() on first use (once, under the lock);
        ModelError naming ``what`` where the files cannot be read into one."""
        net = self._lazy.get(key)
        if net is None:
            with self._lock:
                net = self._lazy.get(key)
                if net is None:
                    try:
                        net = make()
                    except (OSError, ValueError, KeyError, StopIteration, IndexError) as e:
                        raise ModelError(f"model {self._path.name}: {what} ({e})") from None
                    if self._held:
                        net.cache_limit = 1 << 62
                    self._lazy[key] = net
        return net

    @property
    def postfilter(self):
        """The post-filter's Net, built on first use (the caller verified postfilter.onnx): a
        bundle whose filter is damaged still decodes with postfilter=False."""
        return self._once("postfilter",
                          lambda: self._net(_postfilter_ops(_Graph(self._path / "postfilter.onnx")), channels=3),
                          "the bit-exact decoder cannot run its postfilter graph")

    def postfilter_int8(self, path: Path):
        """The exact int8 post-filter (_core.QFilter) from postfilter_int8.npz at path (verified
        by the caller), built on first use."""
        def make():
            with np.load(path, allow_pickle=False) as z:
                return _core.QFilter({k: z[k] for k in z.files})

        return self._once("qfilter", make, f"the int8 post-filter cannot run {path.name}")

    def mixed(self, name: str, path: Path):
        """The mixed decoder ``name`` (_core.QSynthesis with wide stages) from its .npz at path
        (verified by the caller), built on first use."""
        def make():
            with np.load(path, allow_pickle=False) as z:
                return _core.QSynthesis(*mixed_synthesis_args({k: z[k] for k in z.files}))

        return self._once(("mixed", name), make, f"the mixed decoder cannot run {path.name}")

    def int8(self, name: str, graph: Path):
        """The exact int8 synthesis of the bundle's int8 decoder ``name`` (graph: its ONNX file,
        verified by the caller), built on first use."""
        return self._once(("int8", name), lambda: _core.QSynthesis(*int8_synthesis_args(_Graph(graph))),
                          f"the exact int8 decoder cannot run {graph.name}")

    def reduced(self, factor: int, path: Path):
        """The synthesis that decodes an image reduced by ``factor`` (8, 4 or 2): its first
        stages, up to the features at 1/8 (factor 8) or 1/4 resolution (4 and 2), then that
        factor's head from reduce.npz at path (verified by the caller; training/reduce_heads.py):
        conv 3x3 + ReLU, conv 3x3 (+ pixel shuffle 2 for factor 2). Built on first use."""
        def make():
            stages = {8: 2, 4: 4, 2: 4}[factor]
            ops = self._synthesis_ops
            if len(ops) <= stages or [o[0] for o in ops[:stages]] != ["conv", "igdn"] * (stages // 2):
                raise ValueError("the synthesis is not the four-stage form the heads read")
            with np.load(path, allow_pickle=False) as z:
                w1, b1 = z[f"f{factor}.c1_weight"], z[f"f{factor}.c1_bias"]
                w2, b2 = z[f"f{factor}.c2_weight"], z[f"f{factor}.c2_bias"]
            shuffle = 2 if factor == 2 else 1
            if w1.shape[1] != ops[stages - 1][1].shape[0] or w2.shape[0] != 3 * shuffle * shuffle:
                raise ValueError(f"the factor {factor} head does not fit the synthesis")
            head = [("conv", np.ascontiguousarray(w, np.float32), np.ascontiguousarray(b, np.float32), s, r)
                    for w, b, s, r in ((w1, b1, 1, True), (w2, b2, shuffle, False))]
            for _, w, _, _, _ in head:
                _plain(w, [1, 1], [w.shape[2] // 2] * 4)
            return self._net(list(ops[:stages]) + head)

        return self._once(("reduce", factor), make, f"the factor {factor} reduce head cannot run {path.name}")

    def trim(self):
        """Frees the buffers the networks keep between runs (after a large image) and sets their
        cache limit back to the default."""
        self._held = False
        for net in self._nets():
            net.trim()
            net.cache_limit = self._limit

    def hold(self):
        """Keeps every buffer between runs until the next trim(): the tiles of one large image
        then reuse the first tile's memory instead of page-faulting fresh memory for each
        (measured at 4 MP: 6.1 s decoding with the 256 MiB limit)."""
        self._held = True
        for net in self._nets():
            net.cache_limit = 1 << 62

    def _nets(self):
        return [self.mean, self.synthesis, *list(self._lazy.values())]

    @staticmethod
    def _net(ops, channels=None):
        first = next(o for o in ops if o[0] == "conv")
        return _core.Net(list(ops), int(channels if channels is not None else first[1].shape[1]))
