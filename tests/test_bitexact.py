"""The bit-exact decoder (Codec(decoder="bitexact")): the model's float graphs run by the
deterministic C++ executor (_core.Net), so that a file decodes to the same pixels on every
machine. Golden pixels made on another machine: tests/test_golden.py."""
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastcodec
from fastcodec import _core
from fastcodec._model import available_models
from fastcodec.errors import ArgumentError, ModelError
from conftest import outputs_by_kernel, psnr, synthetic, tiny_tiles

ROOT = Path(__file__).resolve().parents[1]


def test_convolutions_are_fused_multiply_adds():
    # known answer: w * x = 1 + 2^-11 + 2^-24 is not a float32; a fused multiply-add keeps the
    # 2^-24 (rounded once, after adding the bias -1), a multiply then an add loses it
    w = np.full((1, 1, 1, 1), 1 + 2 ** -12, np.float32)
    b = np.full(1, -1.0, np.float32)
    x = np.full((1, 1, 4, 20), 1 + 2 ** -12, np.float32)  # 80 elements: vector steps and a tail
    out = _core.Net([("conv", w, b, 1, False)], 1).run(x)
    assert out.shape == (1, 1, 4, 20)
    assert np.all(out == np.float32(2 ** -11 + 2 ** -24))
    # 3x3: the centre tap only, bias first, then the taps in row-major order
    w3 = np.zeros((1, 1, 3, 3), np.float32)
    w3[0, 0, 1, 1] = 1 + 2 ** -12
    out3 = _core.Net([("conv", w3, b, 1, False)], 1).run(x)
    assert np.all(out3 == np.float32(2 ** -11 + 2 ** -24))


def _reference(ops, x, param):
    """float64 reference of a Net: convolutions by direct summation."""
    cur, stack = x[0].astype(np.float64), []

    def conv(t, w, b):
        c, h, wd = t.shape
        k = w.shape[2]
        p = np.pad(t, ((0, 0), (k // 2, k // 2), (k // 2, k // 2)))
        out = np.zeros((w.shape[0], h, wd)) + b[:, None, None]
        for ky in range(k):
            for kx in range(k):
                out += np.einsum("oc,chw->ohw", w[:, :, ky, kx].astype(np.float64), p[:, ky:ky + h, kx:kx + wd])
        return out

    for op in ops:
        if op[0] == "conv":
            cur = conv(cur, op[1], op[2].astype(np.float64))
            r = op[3]
            c, h, w = cur.shape
            cur = cur.reshape(c // (r * r), r, r, h, w).transpose(0, 3, 1, 4, 2).reshape(c // (r * r), h * r, w * r)
            if op[4]:
                cur = np.maximum(cur, 0)
        elif op[0] == "igdn":
            cur = cur * conv(np.abs(cur), op[1], op[2].astype(np.float64))
        elif op[0] == "unshuffle":
            r = op[1]
            c, h, w = cur.shape
            cur = cur.reshape(c, h // r, r, w // r, r).transpose(0, 2, 4, 1, 3).reshape(c * r * r, h // r, w // r)
        elif op[0] == "push":
            stack.append(cur.copy())
        elif op[0] == "add":
            cur = cur + stack.pop()
        elif op[0] == "plane":
            cur = np.concatenate([cur, np.full((1,) + cur.shape[1:], param)])
    return cur[None]


def _random_ops(rng):
    def cw(co, ci, k):
        return (rng.normal(0, 0.3 / np.sqrt(ci * k * k), (co, ci, k, k)).astype(np.float32),
                rng.normal(0, 0.1, co).astype(np.float32))
    g = np.abs(rng.normal(0, 0.05, (12, 12, 1, 1))).astype(np.float32)
    return [("push",), ("unshuffle", 2), ("plane",), ("conv", *cw(13, 13, 3), 1, True), ("push",),
            ("conv", *cw(48, 13, 1), 2, False), ("igdn", g, np.ones(12, np.float32)),
            ("conv", *cw(13, 12, 3), 1, False), ("unshuffle", 2), ("conv", *cw(13, 52, 1), 1, True), ("add",),
            ("conv", *cw(12, 13, 3), 2, False), ("add",)]


def test_net_matches_a_float64_reference():
    rng = np.random.default_rng(1)
    ops = _random_ops(rng)
    x = rng.normal(0, 1, (1, 3, 20, 36)).astype(np.float32)
    out = _core.Net(ops, 3).run(x, 0.37, 2)
    ref = _reference(ops, x, np.float32(0.37))
    assert out.shape == ref.shape == (1, 3, 20, 36)
    assert np.abs(out - ref).max() < 1e-5 * max(1.0, np.abs(ref).max())


KERNEL_PROBE = """
import hashlib, sys, numpy as np
sys.path.insert(0, {tests!r})
from fastcodec import _core
from test_bitexact import _random_ops
rng = np.random.default_rng(2)
ops = _random_ops(rng)
net = _core.Net(ops, 3)
h = hashlib.sha256()
for shape in [(1, 3, 20, 36), (1, 3, 4, 4), (1, 3, 52, 100)]:
    x = rng.normal(0, 1, shape).astype(np.float32)
    for threads in (1, 2, 3):
        h.update(net.run(x, 0.5, threads).tobytes())
big = _core.Net([("conv", rng.normal(0, 0.05, (40, 96, 3, 3)).astype(np.float32), np.zeros(40, np.float32), 2, False)], 96)
h.update(big.run(rng.normal(0, 1, (1, 96, 23, 61)).astype(np.float32), 0.0, 2).tobytes())
print(h.hexdigest())
"""


def test_every_kernel_and_thread_count_gives_the_same_bits():
    # the AVX-512, AVX2 and portable kernels (whichever this CPU runs) and 1-3 threads: one result
    code = KERNEL_PROBE.format(tests=str(Path(__file__).parent))
    digests = outputs_by_kernel(code)
    assert len(set(digests.values())) == 1, digests


@pytest.mark.parametrize("ops,channels,match", [
    ([("conv", np.zeros((4, 3, 3, 3), np.float32), np.zeros(4, np.float32), 1, False)], 2, "input channels"),
    ([("conv", np.zeros((4, 3, 5, 5), np.float32), np.zeros(4, np.float32), 1, False)], 3, "1x1 or 3x3"),
    ([("conv", np.zeros((6, 3, 3, 3), np.float32), np.zeros(6, np.float32), 2, False)], 3, "inconsistent"),
    ([("conv", np.zeros((4, 3, 3, 3), np.float32), np.zeros(5, np.float32), 1, False)], 3, "sizes"),
    ([("push",)], 3, "never added"),
    ([("add",)], 3, "without a pushed"),
    ([("push",), ("unshuffle", 2), ("add",)], 3, "different channels"),
    ([("pool", 2)], 3, "unknown Net operation"),
    ([("conv", np.zeros((4, 3, 3, 3), np.float64), np.zeros(4, np.float32), 1, False)], 3, "float32"),
])
def test_net_rejects_inconsistent_networks(ops, channels, match):
    with pytest.raises(ArgumentError, match=match):
        _core.Net(ops, channels)


def test_net_rejects_bad_inputs():
    net = _core.Net([("unshuffle", 2)], 3)
    with pytest.raises(ArgumentError, match="shape"):
        net.run(np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(ArgumentError, match="divisible"):
        net.run(np.zeros((1, 3, 7, 8), np.float32))
    with pytest.raises(ArgumentError, match="C-contiguous float32"):
        net.run(np.zeros((1, 3, 8, 8), np.float64))
    assert net.out_shape(8, 6) == (1, 12, 4, 3)
    up = _core.Net([("conv", np.zeros((64, 1, 1, 1), np.float32), np.zeros(64, np.float32), 8, False)], 1)
    with pytest.raises(ArgumentError, match="more than 2"):
        up.out_shape(9000, 9000)  # refused before anything is allocated


def test_buffers_are_kept_between_runs_until_trimmed():
    w = np.ones((8, 8, 3, 3), np.float32)
    net = _core.Net([("conv", w, np.zeros(8, np.float32), 1, True)], 8)
    x = np.ones((1, 8, 40, 40), np.float32)
    first = net.run(x)
    assert net.cached_bytes > 8 * 40 * 40 * 4
    assert np.array_equal(net.run(x), first)  # reused buffers: the same result
    net.trim()
    assert net.cached_bytes == 0


def test_gain_interpolation_is_exact_at_the_levels_and_close_between():
    m = fastcodec.Codec(threads=1).model
    for level in range(m.levels):
        q = 1 + 99 * level / (m.levels - 1)
        assert np.array_equal(m.igain_bitexact(q), m.igains[level].astype(np.float32)), level
    for q in (3.3, 17.01, 50, 77.77, 99.99):
        _, ig = m.gain_vectors(q)
        np.testing.assert_allclose(m.igain_bitexact(q), ig, rtol=2e-7)
    assert _core.det_interp(2.0, 8.0, 0.5) == 4.0
    with pytest.raises(ArgumentError, match="0 <= t <= 1"):
        _core.det_interp(1.0, 2.0, 1.5)


@pytest.mark.parametrize("quality,postfilter", [(10, True), (60, True), (95, False)])
def test_bitexact_decodes_like_the_float_decoder(quality, postfilter):
    img = synthetic(72, 120, seed=3)
    data = fastcodec.compress(img, quality=quality)
    be = fastcodec.Codec(threads=2, decoder="bitexact", postfilter=postfilter).decompress(data)
    fl = fastcodec.Codec(threads=2, decoder="float", postfilter=postfilter).decompress(data)
    assert be.shape == fl.shape == img.shape
    diff = np.abs(be.astype(int) - fl.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert abs(psnr(img, be) - psnr(img, fl)) < 0.01


def test_bitexact_tiles_and_threads_give_the_same_pixels(monkeypatch):
    img = synthetic(150, 230, seed=4)
    data = fastcodec.compress(img, quality=40)
    whole = fastcodec.Codec(threads=1, decoder="bitexact").decompress(data)
    again = fastcodec.Codec(threads=3, decoder="bitexact").decompress(data)
    assert np.array_equal(whole, again)
    import fastcodec.codec as C
    tiny_tiles(monkeypatch, 4)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    codec = fastcodec.Codec(threads=2, decoder="bitexact")
    tiled = codec.decompress(data)
    assert np.array_equal(whole, tiled)
    # the tiles shared their buffers, which were handed back after the last one
    ex = codec.model.bitexact()
    assert ex.synthesis.cached_bytes == 0 and ex.synthesis.cache_limit == 256 << 20


def test_bitexact_is_offered_by_every_model_and_the_cli(tmp_path):
    for name in available_models():
        assert "bitexact" in fastcodec.Codec(name, threads=1).model.decoders
    src = tmp_path / "a.fcc"
    src.write_bytes(fastcodec.compress(synthetic(40, 56, seed=5), quality=50))
    r = subprocess.run([sys.executable, "-m", "fastcodec", "decompress", str(src), "-o", str(tmp_path / "a.png"),
                        "--decoder", "bitexact"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    got = np.asarray(Image.open(tmp_path / "a.png"))
    assert np.array_equal(got, fastcodec.Codec(decoder="bitexact").decompress(src.read_bytes()))


def test_a_graph_it_cannot_read_is_a_model_error(tmp_path):
    from fastcodec._model import load_model
    src = available_models()[(ROOT / "models" / "DEFAULT").read_text().strip()]
    bad = tmp_path / "m"
    shutil.copytree(src, bad)
    m = load_model(bad)
    # damage the post-filter's graph after the bundle loaded: its SHA-256 check refuses it, and the
    # reader (built on first use, so that postfilter=False still decodes) cannot parse it either
    data = (bad / "postfilter.onnx").read_bytes()
    (bad / "postfilter.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="postfilter"):
        m.check_postfilter()
    with pytest.raises(ModelError, match="cannot run its postfilter graph"):
        m.bitexact().postfilter
    # a graph of a form the reader does not know: the mean branch's graph in place of the synthesis
    shutil.copy(src / "postfilter.onnx", bad / "postfilter.onnx")
    m2 = load_model(bad, verify=False)
    shutil.copy(src / "hyper_decoder.onnx", bad / "decoder.onnx")
    with pytest.raises(ModelError, match="bit-exact decoder cannot run"):
        m2.bitexact()
    assert hashlib.sha256((src / "decoder.onnx").read_bytes()).hexdigest() != \
        hashlib.sha256((bad / "decoder.onnx").read_bytes()).hexdigest()
