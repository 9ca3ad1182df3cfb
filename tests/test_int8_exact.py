"""The exact int8 decoder (Codec(decoder="int8"), the default up to quality 50): the model's
int8 synthesis graph run by _core.QSynthesis with integer convolutions, so that a file decodes
to the same pixels on every machine. Golden pixels made on another machine: tests/test_golden.py."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import fastcodec
from fastcodec import _bitexact, _core
from fastcodec.errors import ArgumentError
from conftest import psnr, same_bytes_on_every_kernel, synthetic, tiny_tiles

ROOT = Path(__file__).resolve().parents[1]
F32 = np.float32


def shipped_int8():
    m = fastcodec.Codec(threads=1).model
    if "int8" not in m.decoders:
        pytest.skip("the default model ships no int8 decoder")
    return m, m.path / f"{m.check_decoder('int8')}.onnx"


# -- a small random network and a numpy reference of the definition (qnet.hpp, docs/format.md) ----

def small_network(seed):
    """head 8 -> 64 (16 channels after the shuffle), igdn, qconv 16 -> 64 with the shuffle, igdn,
    tail 16 -> 12. The head's weights and inputs are multiples of 1/8 and 1, so its float sums are
    exact in any order and the whole network has one exact answer."""
    rng = np.random.default_rng(seed)
    head = (rng.integers(-2, 3, (64, 8, 3, 3)).astype(F32) / 8, rng.integers(-4, 5, 64).astype(F32) / 8,
            float(F32(rng.uniform(0.05, 0.2))), int(rng.integers(100, 156)))

    def igdn(zx, sx):
        gamma = rng.integers(0, 65, (16, 16, 1, 1)).astype(np.int8)
        sn, zn = float(F32(rng.uniform(0.002, 0.01))), int(rng.integers(0, 20))
        mp = (zx, sx, zn, sn, float(F32(rng.uniform(0.05, 0.2))), int(rng.integers(100, 156)))
        return ("igdn", _bitexact.abs_table(sx, zx, sx, 0), gamma, rng.integers(1000, 50000, 16).astype(np.int32),
                _bitexact.requant_scales(sx, rng.uniform(1e-4, 1e-3, 16), sn), zn,
                _bitexact.mul_table(mp[1], mp[0], mp[3], mp[2], mp[4], mp[5]), mp), mp

    op1, mp1 = igdn(head[3], head[2])
    zq = int(rng.integers(100, 156))
    qconv = ("qconv", rng.integers(-64, 65, (64, 16, 3, 3)).astype(np.int8),
             rng.integers(-5000, 5000, 64).astype(np.int32),
             _bitexact.requant_scales(mp1[4], rng.uniform(2e-4, 2e-3, 64), 0.03), mp1[5], zq, 2)
    op2, mp2 = igdn(zq, 0.03)
    wq, mult, add = _bitexact.tail_weights(rng.normal(0, 0.03, (12, 16, 3, 3)), rng.normal(0.3, 0.1, 12),
                                           mp2[4], 1 / 255)
    tail = (wq, mult, add, mp2[5], 0, _bitexact.dequant_table(1 / 255, 0))
    return head, [op1, qconv, op2], tail


def _q8(t, zp):
    return np.clip(np.rint(t).astype(np.int64) + zp, 0, 255)


def _int_conv(x, w, zp):
    """sum of (x - zp) * w over an NHWC uint8 tensor padded with zp (3x3) or 1x1, int64."""
    h, wd, _ = x.shape
    k = w.shape[2]
    p = np.pad(x.astype(np.int64) - zp, ((k // 2, k // 2), (k // 2, k // 2), (0, 0)))
    acc = np.zeros((h, wd, w.shape[0]), np.int64)
    for ky in range(k):
        for kx in range(k):
            acc += p[ky:ky + h, kx:kx + wd] @ w[:, :, ky, kx].T.astype(np.int64)
    return acc


def _dcr(t):  # (H, W, 4C) with channels s * C + c -> (2H, 2W, C)
    h, w, c4 = t.shape
    return t.reshape(h, w, 2, 2, c4 // 4).transpose(0, 2, 1, 3, 4).reshape(2 * h, 2 * w, c4 // 4)


def reference(head, ops, tail, y):
    w0, b0, s0, z0 = head
    c, h, w = y.shape[1:]
    p = np.pad(y[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    t = np.zeros((w0.shape[0], h, w)) + b0[:, None, None]
    for ky in range(3):
        for kx in range(3):
            t += np.einsum("oc,chw->ohw", w0[:, :, ky, kx].astype(np.float64), p[:, ky:ky + h, kx:kx + w])
    return ops_and_tail(ops, tail, _dcr(_q8(t.astype(F32) / F32(s0), z0).transpose(1, 2, 0)))


def ops_and_tail(ops, tail, x):
    """The int8 operations and the tail of the reference on x (NHWC uint8)."""
    for op in ops:
        if op[0] == "igdn":
            _, at, g, b, sc, zn, mt, _ = op
            n = _q8((_int_conv(at[x], g, 0) + b).astype(F32) * sc, zn)
            x = mt.reshape(256, 256)[x, n]
        else:
            _, wq, b, sc, zi, zo, _ = op
            x = _dcr(_q8((_int_conv(x, wq, zi) + b).astype(F32) * sc, zo))
    wq, mult, add, zi, zo, odq = tail
    q = _q8((_int_conv(x, wq, zi).astype(F32) * mult) + add, zo)  # float32: two roundings
    hh, ww, c4 = q.shape
    q = q.transpose(2, 0, 1).reshape(c4 // 4, 2, 2, hh, ww).transpose(0, 3, 1, 4, 2).reshape(c4 // 4, 2 * hh, 2 * ww)
    return odq[q][None]


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (4, 9)])
def test_qsynthesis_computes_its_definition(h, w):
    head, ops, tail = small_network(h * 10 + w)
    y = np.random.default_rng(w).integers(-8, 9, (1, 8, h, w)).astype(F32)
    want = reference(head, ops, tail, y)
    net = _core.QSynthesis(head, ops, tail)
    assert net.arithmetic == [(True, True), (True, True)]  # the tables' own float32 operations
    for threads in (1, 2, 3):
        got = net.run(y, 0.0, threads)
        assert got.shape == want.shape == (1, 3, 8 * h, 8 * w)
        assert np.array_equal(got, want.astype(F32))
    # the same network looked up in its tables only (no parameters for the products): the same bytes
    looked_up = _core.QSynthesis(head, [op[:7] if op[0] == "igdn" else op for op in ops], tail)
    assert looked_up.arithmetic == [(True, False), (True, False)]
    assert np.array_equal(looked_up.run(y, 0.0, 2), want.astype(F32))


def test_tables_that_differ_from_their_parameters_are_looked_up():
    head, ops, tail = small_network(1)
    op = list(ops[0])
    mt = op[6].copy()
    mt[12345] ^= 1  # no longer the product of its parameters: the table wins
    op[6] = mt
    net = _core.QSynthesis(head, [tuple(op), *ops[1:]], tail)
    assert net.arithmetic[0] == (True, False)


KERNEL_PROBE = """
import hashlib, sys
sys.path.insert(0, {tests!r})
import numpy as np
from pathlib import Path
from fastcodec import _bitexact, _core
net = _core.QSynthesis(*_bitexact.int8_synthesis_args(_bitexact._Graph(Path({graph!r}))))
rng = np.random.default_rng(7)
h = hashlib.sha256()
for shape, threads in (((1, 192, 3, 5), 1), ((1, 192, 7, 9), 2), ((1, 192, 5, 11), 3)):
    h.update(net.run((rng.standard_normal(shape) * 3).astype(np.float32), 0.0, threads).tobytes())
print(_core.qconv_kernel(), h.hexdigest())
"""


def test_every_int8_kernel_and_thread_count_gives_the_same_bytes():
    _, graph = shipped_int8()
    code = KERNEL_PROBE.format(tests=str(Path(__file__).parent), graph=str(graph))
    same_bytes_on_every_kernel(code)


def test_shipped_int8_graph_is_read_as_onnxruntime_runs_it():
    # onnxruntime without graph optimisations runs the graph as written (at "all", it fuses the
    # float last convolution into an int8 one with weights it quantises itself); the exact decoder
    # differs from it only in the order of the float sums (a value of the first convolution that
    # lands on the other side of a rounding boundary moves a few pixels by a level) and in the last
    # convolution's 14-bit weights
    ort = pytest.importorskip("onnxruntime")
    m, graph = shipped_int8()
    net = _core.QSynthesis(*_bitexact.int8_synthesis_args(_bitexact._Graph(graph)))
    assert all(a and b for a, b in net.arithmetic)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    img = synthetic(128, 192, seed=9)
    for q in (10, 40):
        codec = fastcodec.Codec(threads=1)
        hdr, mm, _, _, r, _, mu, _ = codec._decode_symbols(codec.compress(img, quality=q))
        y = _core.dequantize_latent(r, np.ascontiguousarray(mu), mm.igain_bitexact(q))
        want = np.rint(sess.run(None, {"y": y})[0] * 255)
        got = np.rint(net.run(y, 0.0, 2) * 255)
        diff = np.abs(want - got)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.02, (q, int((diff > 0).sum()))


@pytest.mark.parametrize("change,match", [
    (lambda h, o, t: (h, [("igdn", *o[0][1:2], o[0][2] + np.int8(1), *o[0][3:])] + o[1:], t), "\\[-64, 64\\]"),
    (lambda h, o, t: (h, o[:1] + [o[1][:4] + (300,) + o[1][5:]] + o[2:], t), "zero points"),
    (lambda h, o, t: (h, [o[0][:6] + (o[0][6][:100],)] + o[1:], t), "65536"),
    (lambda h, o, t: (h, o, (t[0] * 2,) + t[1:]), "8191"),
    (lambda h, o, t: (h, o, (np.ascontiguousarray(t[0][:, :8]),) + t[1:]), "input channels do not match"),
    (lambda h, o, t: (h, [("pool",)], t), "unknown QSynthesis operation"),
    (lambda h, o, t: ((h[0].astype(np.float64),) + h[1:], o, t), "float32"),
    (lambda h, o, t: (h[:1] + (h[1][:5],) + h[2:], o, t), "sizes"),
])
def test_qsynthesis_rejects_inconsistent_networks(change, match):
    head, ops, tail = small_network(2)
    ops[0] = ops[0][:2] + (np.full_like(ops[0][2], 64),) + ops[0][3:]  # gamma at the top of its range
    _core.QSynthesis(head, ops, tail)  # valid as it is
    with pytest.raises(ArgumentError, match=match):
        _core.QSynthesis(*change(head, ops, tail))


def test_qsynthesis_rejects_bad_inputs():
    head, ops, tail = small_network(3)
    net = _core.QSynthesis(head, ops, tail)
    with pytest.raises(ArgumentError, match="shape"):
        net.run(np.zeros((1, 7, 4, 4), F32))
    with pytest.raises(ArgumentError, match="C-contiguous float32"):
        net.run(np.zeros((1, 8, 4, 4), np.float64))
    with pytest.raises(ArgumentError, match="more than 2"):
        net.out_shape(40000, 40000)  # refused before anything is allocated
    assert net.out_shape(3, 5) == (1, 3, 24, 40)


def test_int8_is_the_exact_default_at_low_qualities(monkeypatch):
    m, _ = shipped_int8()
    img = synthetic(150, 230, seed=4)
    data = fastcodec.compress(img, quality=30)
    assert m.decoder_for(30) == "int8"
    whole = fastcodec.Codec(threads=1, decoder="int8").decompress(data)
    assert np.array_equal(fastcodec.decompress(data), whole)
    assert np.array_equal(fastcodec.Codec(threads=3, decoder="int8").decompress(data), whole)
    # within a fraction of a dB of the float decoder
    flt = fastcodec.Codec(threads=1, decoder="float").decompress(data)
    assert abs(psnr(img, whole) - psnr(img, flt)) < 0.4  # (Kodak at quality 25: 0.03 dB)
    import fastcodec.codec as C
    tiny_tiles(monkeypatch, 4)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    codec = fastcodec.Codec(threads=2, decoder="int8")
    assert np.array_equal(codec.decompress(data), whole)
    # the tiles shared their buffers, handed back after the last one
    net = codec.model.exact_synthesis("int8")
    assert net.cached_bytes == 0 and net.cache_limit == 256 << 20


def test_int8_graph_it_cannot_read_is_a_model_error(tmp_path):
    import shutil

    from fastcodec._model import load_model
    from fastcodec.errors import ModelError
    m, graph = shipped_int8()
    bad = tmp_path / "m"
    shutil.copytree(m.path, bad)
    shutil.copy(m.path / "decoder.onnx", bad / graph.name)  # the float graph in the int8 one's place
    meta = json.loads((bad / "model.json").read_text())
    meta["decoders"]["int8"]["sha256"] = hashlib.sha256((bad / graph.name).read_bytes()).hexdigest()
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="exact int8 decoder cannot run"):
        load_model(bad, verify=False).exact_synthesis("int8")
