"""The exact int8 post-filter (_core.QFilter, postfilter_int8.npz): a numpy reference of its
definition (cpp/qnet.hpp, docs/format.md "The int8 post-filter") against the C++ kernels, on a
small random filter and on the shipped one; its rejections; and its place in decoding."""
from pathlib import Path

import numpy as np
import pytest

import fastcodec
from fastcodec import _core
from fastcodec.errors import ArgumentError
from conftest import psnr, same_bytes_on_every_kernel, synthetic
from test_int8_exact import _dcr, _int_conv  # the integer convolution and DCR shuffle by definition

ROOT = Path(__file__).resolve().parents[1]
F32 = np.float32


def _requant(acc, scale, zp):
    t = acc.astype(F32) * scale.astype(F32)
    return np.clip(np.rint(t).astype(np.int64) + zp, 0, 255).astype(np.uint8)


def _unshuffle(t):  # (H, W, C) -> (H/2, W/2, 4C), channel 4c + 2i + j = pixel (2y + i, 2x + j) of c
    h, w, c = t.shape
    return t.reshape(h // 2, 2, w // 2, 2, c).transpose(0, 2, 4, 1, 3).reshape(h // 2, w // 2, 4 * c)


def reference(a, x, quality):
    """The int8 post-filter by its definition, in numpy: x (3, H, W) float32, quality / 100."""
    p = np.clip(x.astype(F32) * F32(255), 0, 255)
    P = np.rint(p).astype(np.int64).transpose(1, 2, 0)  # (H, W, 3)
    qc = int(np.rint(min(max(F32(quality) * F32(255), F32(0)), F32(255))))
    z = _unshuffle(P)
    h0 = np.concatenate([z, np.full(z.shape[:2] + (1,), qc), np.zeros(z.shape[:2] + (3,), np.int64)], 2)

    def layer(name, inp, in_zp, out_zp):
        return _requant(_int_conv(inp, a[f"{name}.w"], in_zp) + a[f"{name}.b"], a[f"{name}.scale"], out_zp)

    a1 = layer("inc", h0, 0, 0)
    d = layer("down", _unshuffle(a1), 0, 0)
    k = 0
    while f"mid{k}.w" in a:
        d = layer(f"mid{k}", d, 0, 0)
        k += 1
    u = _dcr(layer("up", d, 0, int(a["up.zp"])))
    s = a["add_table"][a1.astype(np.int64) * 256 + u]
    a2 = layer("dec", s, int(a["s.zp"]), 0)
    acc = _int_conv(a2, a["out.w"], 0) + a["out.b"]  # (H/2, W/2, 12)
    t = acc.astype(F32) * a["out.mult"] + a["out.add"]
    r = t.reshape(*t.shape[:2], 3, 2, 2).transpose(2, 0, 3, 1, 4).reshape(3, *P.shape[:2])
    v = np.rint(P.transpose(2, 0, 1).astype(F32) + r.astype(F32))
    return np.clip(v, 0, 255).astype(F32) / F32(255)


def random_filter(seed, C=16, C2=16, blocks=2):
    rng = np.random.default_rng(seed)
    a = {}

    def layer(name, cout, cin, k, scale=True, lo=2e-4, hi=2e-3):
        a[f"{name}.w"] = rng.integers(-64, 65, (cout, cin, k, k)).astype(np.int8)
        a[f"{name}.b"] = rng.integers(-3000, 3000, cout).astype(np.int32)
        if scale:
            a[f"{name}.scale"] = rng.uniform(lo, hi, cout).astype(F32)

    layer("inc", C, 16, 3)
    a["inc.w"][:, 13:] = 0
    layer("down", C2, 4 * C, 1)
    for k in range(blocks):
        layer(f"mid{k}", C2, C2, 3)
    layer("up", 4 * C, C2, 1)
    a["up.zp"] = np.int32(rng.integers(100, 156))
    a["add_table"] = rng.integers(0, 256, 65536).astype(np.uint8)
    a["s.zp"] = np.int32(rng.integers(100, 156))
    layer("dec", C, C, 3)
    layer("out", 12, C, 3, scale=False)
    a["out.mult"] = rng.uniform(1e-4, 1e-3, 12).astype(F32)
    a["out.add"] = rng.normal(0, 0.5, 12).astype(F32)
    return a


def test_kernels_match_the_definition():
    a = random_filter(0)
    f = _core.QFilter(a)
    rng = np.random.default_rng(1)
    for h, w, q in ((8, 12, 0.37), (20, 36, 1.0), (16, 4, 0.01)):
        x = rng.uniform(-0.1, 1.1, (1, 3, h, w)).astype(F32)
        want = reference(a, x[0], q)
        for threads in (1, 2):
            got = f.run(x, q, threads)
            assert got.shape == (1, 3, h, w)
            assert np.array_equal(got[0], want), (h, w, q, threads)


def test_every_kernel_gives_the_same_bytes():
    """The generic, AVX2 and (where the machine has it) VNNI kernels in separate processes."""
    code = ("import numpy as np, sys; sys.path.insert(0, 'tests'); from test_int8_filter import random_filter; "
            "from fastcodec import _core; f = _core.QFilter(random_filter(3)); "
            "x = np.random.default_rng(4).uniform(0, 1, (1, 3, 24, 40)).astype(np.float32); "
            "import hashlib; print(_core.qconv_kernel(), hashlib.sha256(f.run(x, 0.5, 2).tobytes()).hexdigest())")
    same_bytes_on_every_kernel(code, cwd=ROOT)


def test_rejections():
    a = random_filter(0)
    for key, bad in (("inc.w", np.zeros((16, 12, 3, 3), np.int8)),       # not 16 input channels
                     ("out.w", np.zeros((8, 16, 3, 3), np.int8)),        # not 12 outputs
                     ("add_table", np.zeros(100, np.uint8)),
                     ("up.w", a["up.w"].astype(np.int16)),               # wrong dtype
                     ("out.mult", np.full(12, np.inf, F32))):
        b = dict(a)
        b[key] = bad
        with pytest.raises(ArgumentError):
            _core.QFilter(b)
    b = dict(a)
    del b["dec.b"]
    with pytest.raises(ArgumentError, match="dec.b"):
        _core.QFilter(b)
    b = dict(a)
    b["mid0.w"] = np.full_like(a["mid0.w"], 100)  # outside the 7-bit range
    with pytest.raises(ArgumentError):
        _core.QFilter(b)
    f = _core.QFilter(a)
    with pytest.raises(ArgumentError, match="multiples of 4"):
        f.run(np.zeros((1, 3, 10, 12), F32), 0.5, 1)
    with pytest.raises(ArgumentError):
        f.run(np.zeros((1, 4, 8, 8), F32), 0.5, 1)


# -- the shipped filter ---------------------------------------------------------------------------

MODEL = fastcodec.Codec(threads=1).model
SPEC = MODEL.postfilter_int8
needs_int8_filter = pytest.mark.skipif(SPEC is None, reason="the default model ships no int8 post-filter")


def shipped_arrays():
    with np.load(MODEL.check_postfilter_int8()) as z:
        return {k: z[k] for k in z.files}


@needs_int8_filter
def test_shipped_filter_matches_the_definition():
    a = shipped_arrays()
    x = np.ascontiguousarray(synthetic(32, 48, seed=5).transpose(2, 0, 1)[None] / 255, dtype=F32)
    got = _core.QFilter(a).run(x, F32(0.3), 2)
    assert np.array_equal(got[0], reference(a, x[0], F32(0.3)))


@needs_int8_filter
def test_int8_decoder_runs_the_int8_filter_and_the_others_the_float_one():
    """The default policy's int8 decoding is the int8 synthesis then the int8 filter; bitexact
    decoding keeps the float filter. (64 x 128: the synthesis output is the image, no padding.)"""
    img = synthetic(64, 128, seed=9)
    q = min(30.0, float(SPEC["max_quality"]))
    assert MODEL.decoder_for(q) == "int8" and MODEL.int8_postfilter_for("int8", q)
    assert not MODEL.int8_postfilter_for("bitexact", q) and not MODEL.int8_postfilter_for("float", q)
    codec = fastcodec.Codec(threads=1)
    data = codec.compress(img, quality=q)
    raw = fastcodec.Codec(threads=1, postfilter=False).decompress(data)
    x = np.ascontiguousarray(raw.transpose(2, 0, 1)[None].astype(F32) / 255)
    want = np.rint(_core.QFilter(shipped_arrays()).run(x, F32(q / 100), 1)[0] * 255).astype(np.uint8)
    got = codec.decompress(data)
    assert np.array_equal(got, want.transpose(1, 2, 0))
    assert psnr(img, got) > psnr(img, raw)
    exact = fastcodec.Codec(threads=1, decoder="bitexact").decompress(data)
    assert not np.array_equal(exact, got)
    # above its max_quality an int8 decoder falls back to the float filter
    top = float(SPEC["max_quality"])
    if top < float(MODEL.postfilter["max_quality"]):
        assert not MODEL.int8_postfilter_for("int8", min(top + 1, 100))


@needs_int8_filter
def test_damaged_int8_filter_is_refused_unless_the_filter_is_off(tmp_path):
    import shutil
    from fastcodec._model import available_models, default_model_name
    bundle = tmp_path / "bundle"
    shutil.copytree(available_models()[default_model_name()], bundle)
    raw = bytearray((bundle / "postfilter_int8.npz").read_bytes())
    raw[len(raw) // 2] ^= 1
    (bundle / "postfilter_int8.npz").write_bytes(bytes(raw))
    codec = fastcodec.Codec(bundle, threads=1)
    data = codec.compress(synthetic(32, 32, seed=3), quality=20)
    with pytest.raises(fastcodec.ModelError, match="int8 post-filter"):
        codec.decompress(data)
    fastcodec.Codec(bundle, threads=1, postfilter=False).decompress(data)
    fastcodec.Codec(bundle, threads=1, decoder="bitexact").decompress(data)


@needs_int8_filter
def test_malformed_entry_means_no_int8_filter(tmp_path):
    """A bundle whose model.json entry does not name the file decodes its int8 files with the
    float filter, as before 0.9."""
    import json
    import shutil
    from fastcodec._model import available_models, default_model_name
    bundle = tmp_path / "bundle"
    shutil.copytree(available_models()[default_model_name()], bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["postfilter_int8"] = {"file": "elsewhere.npz", "sha256": meta["postfilter_int8"]["sha256"]}
    (bundle / "model.json").write_text(json.dumps(meta))
    codec = fastcodec.Codec(bundle, threads=1, decoder="int8")
    assert codec.model.postfilter_int8 is None and not codec.model.int8_postfilter_for("int8", 20)
    img = synthetic(64, 64, seed=4)
    data = codec.compress(img, quality=20)
    raw = fastcodec.Codec(bundle, threads=1, decoder="int8", postfilter=False).decompress(data)
    x = np.ascontiguousarray(raw.transpose(2, 0, 1)[None].astype(F32) / 255)
    m = codec.model
    m.check_postfilter()
    want = np.clip(m.bitexact().postfilter.run(x, F32(0.2), 1)[0], 0, 1)
    got = codec.decompress(data)
    assert np.abs(got.astype(np.float64) - (want * 255).transpose(1, 2, 0)).max() <= 0.5 + 1e-4
