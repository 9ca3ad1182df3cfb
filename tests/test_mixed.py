"""The mixed decoder (Codec(decoder="mixed"), since 0.10): the int8 synthesis with its first stages
kept in float and 12-bit inputs to their convolutions (_core.QSynthesis with wide stages), exact
like the int8 decoder. Golden pixels made on another machine: tests/test_golden.py."""
import hashlib

import numpy as np
import pytest

import fastcodec
from fastcodec import _bitexact, _core
from fastcodec.errors import ArgumentError, ModelError
from conftest import psnr, same_bytes_on_every_kernel, synthetic, tiny_tiles
from test_int8_exact import _dcr, _int_conv, _q8, ops_and_tail, small_network

F32 = np.float32


def shipped_mixed():
    m = fastcodec.Codec(threads=1).model
    if "mixed" not in m.decoders:
        pytest.skip("the default model ships no mixed decoder")
    return m, m.path / m.check_decoder("mixed")


# -- a small random network and a numpy reference of the definition (docs/format.md) -------------

def small_mixed(seed):
    """head 8 -> 64 (16 channels after the shuffle), two wide stages (16 -> 64 with the shuffle
    each), then small_network's int8 IGDN and tail. The values are dyadic and small enough that
    every float operation (the head's sums, the IGDNs' fused sums and products, the first stage's
    float output) is exact, so the network has one exact answer; the 12-bit quantisations cross
    the high byte's boundaries and clamp at both ends."""
    rng = np.random.default_rng(seed)
    head = (rng.integers(-1, 2, (64, 8, 3, 3)).astype(F32) / 8, rng.integers(-4, 5, 64).astype(F32) / 8, 1.0, 0)

    def gdn():
        return (rng.integers(0, 2, (16, 16, 1, 1)).astype(F32) / 16, 1 + rng.integers(0, 5, 16).astype(F32) / 16)

    sparse = rng.integers(-1, 2, (64, 16, 3, 3)) * (rng.random((64, 16, 3, 3)) < 0.1)
    w0 = (*gdn(), float(F32(0.25)), 2040, sparse.astype(np.int8), rng.integers(-50, 50, 64).astype(np.int32),
          np.full(64, 2.0 ** -4, F32), 0, True)
    _, ops, tail = small_network(seed)
    x_zp = ops[-1][7][0]  # the int8 IGDN's input zero point
    w1 = (*gdn(), float(F32(2.0 ** -6)), 3000, rng.integers(-64, 65, (64, 16, 3, 3)).astype(np.int8),
          rng.integers(-5000, 5000, 64).astype(np.int32), rng.uniform(5e-5, 2e-4, 64).astype(F32), x_zp, False)
    return head, [ops[-1]], tail, [w0, w1]


def head_float(head, y):
    """The first convolution (sums exact for small_mixed's values) and the DCR shuffle in float."""
    w0, b0 = head[:2]
    h, w = y.shape[2:]
    p = np.pad(y[0].astype(np.float64), ((0, 0), (1, 1), (1, 1)))
    t = np.zeros((w0.shape[0], h, w)) + b0[:, None, None]
    for ky in range(3):
        for kx in range(3):
            t += np.einsum("oc,chw->ohw", w0[:, :, ky, kx].astype(np.float64), p[:, ky:ky + h, kx:kx + w])
    return _dcr(t.astype(F32).transpose(1, 2, 0)).transpose(2, 0, 1)  # float, C x H x W


def quant12(x, gamma, beta, s, zp):
    """A wide stage's IGDN (exact for small_mixed's values) and its 12-bit quantisation."""
    n = (beta[:, None, None] + np.einsum("oc,chw->ohw", gamma[:, :, 0, 0].astype(np.float64), np.abs(x))).astype(F32)
    return np.clip(np.rint((x * n) / F32(s)).astype(np.int64) + zp, 0, 4095)


def reference_mixed(head, ops, tail, wide, y):
    x = head_float(head, y)
    for gamma, beta, s, zp, wq, b, mult, ozp, float_out in wide:
        acc = _int_conv(quant12(x, gamma, beta, s, zp).transpose(1, 2, 0), wq, zp) + b
        if float_out:
            x = _dcr(acc.astype(F32) * mult).transpose(2, 0, 1)
        else:
            return ops_and_tail(ops, tail, _dcr(_q8(acc.astype(F32) * mult, ozp)))
    raise AssertionError


@pytest.mark.parametrize("h,w", [(1, 1), (3, 5), (2, 9)])
def test_mixed_synthesis_computes_its_definition(h, w):
    head, ops, tail, wide = small_mixed(h * 10 + w)
    y = np.random.default_rng(w).integers(-2, 3, (1, 8, h, w)).astype(F32)
    want = reference_mixed(head, ops, tail, wide, y)
    net = _core.QSynthesis(head, ops, tail, wide)
    for threads in (1, 2, 3):
        got = net.run(y, 0.0, threads)
        assert got.shape == want.shape == (1, 3, 16 * h, 16 * w)
        assert np.array_equal(got, want.astype(F32))


def test_the_reference_network_exercises_the_12_bit_range():
    """The small network's quantisations reach both ends and both sides of a high-byte boundary,
    so the test above checks the split into two int8 convolutions and the clamping."""
    head, ops, tail, wide = small_mixed(35)
    x = head_float(head, np.random.default_rng(5).integers(-2, 3, (1, 8, 3, 5)).astype(F32))
    qs = []
    for gamma, beta, s, zp, wq, b, mult, _, float_out in wide:
        q = quant12(x, gamma, beta, s, zp)
        qs.append(q)
        if float_out:
            x = _dcr((_int_conv(q.transpose(1, 2, 0), wq, zp) + b).astype(F32) * mult).transpose(2, 0, 1)
    assert len(np.unique(qs[0] >> 8)) >= 2          # the high byte changes within stage 0
    assert qs[1].max() == 4095 and len(np.unique(qs[1] >> 8)) >= 4


def test_wide_stage_rejections():
    head, ops, tail, wide = small_mixed(1)

    def change(k, i, v):
        st = list(wide[k])
        st[i] = v
        return [*wide[:k], tuple(st), *wide[k + 1:]]

    for bad, match in [
        (change(0, 3, 4096), "zero point 0..4095"),
        (change(0, 2, 0.0), "finite and > 0"),
        (change(0, 2, float("nan")), "finite and > 0"),
        (change(1, 8, True), "float output"),
        (change(0, 8, False), "float output"),
        (change(0, 0, np.zeros((8, 16, 1, 1), F32)), "gdn must be a 1x1 C -> C"),
        ([wide[0], (*wide[1][:4], np.full((64, 16, 3, 3), 64, np.int8), np.full(64, -2 ** 30 + 1, np.int32),
                    *wide[1][6:])], r"folded in must lie in \[-2\^30, 2\^30\]"),
        (change(0, 4, np.zeros((64, 16, 1, 1), np.int8)), "3x3 convolution"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            _core.QSynthesis(head, ops, tail, bad)
    with pytest.raises(ArgumentError, match="wide stage is"):
        _core.QSynthesis(head, ops, tail, [wide[0][:5]])


def test_mixed_synthesis_args_reads_its_arrays_and_refuses_others():
    m, path = shipped_mixed()
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    head, ops, tail, wide = _bitexact.mixed_synthesis_args(a)
    assert len(wide) == int(a["wide"]) and [st[8] for st in wide] == [True] * (len(wide) - 1) + [False]
    assert wide[0][6].dtype == np.float32 and np.array_equal(wide[0][6], F32(a["wide0.s"]) * a["wide0.ws"])
    for key, value, match in [("format", np.int32(2), "unknown mixed decoder format"),
                              ("wide", np.int32(0), "1 to 4 wide stages"),
                              ("x.s", np.float64(0.1), "float32 scalar"),
                              ("wide0.w", a["wide0.w"].astype(np.int16), "int8 array")]:
        with pytest.raises(ValueError, match=match):
            _bitexact.mixed_synthesis_args({**a, key: value})
    with pytest.raises(KeyError):
        _bitexact.mixed_synthesis_args({k: v for k, v in a.items() if k != "tail.w"})


KERNEL_PROBE = """
import hashlib
import numpy as np
from fastcodec import _bitexact, _core
with np.load({path!r}) as z:
    net = _core.QSynthesis(*_bitexact.mixed_synthesis_args({{k: z[k] for k in z.files}}))
rng = np.random.default_rng(7)
h = hashlib.sha256()
for shape, threads in (((1, 192, 3, 5), 1), ((1, 192, 7, 9), 2), ((1, 192, 5, 11), 3)):
    h.update(net.run((rng.standard_normal(shape) * 3).astype(np.float32), 0.0, threads).tobytes())
print(_core.qconv_kernel(), h.hexdigest())
"""


def test_every_kernel_and_thread_count_gives_the_same_bytes():
    _, path = shipped_mixed()
    same_bytes_on_every_kernel(KERNEL_PROBE.format(path=str(path)))


def test_mixed_decoder_is_closer_to_float_than_int8_at_high_quality():
    shipped_mixed()
    im = synthetic(96, 128, seed=3)
    data = fastcodec.compress(im, quality=90)
    got = {d: psnr(fastcodec.Codec(decoder=d, postfilter=False).decompress(data), im)
           for d in ("bitexact", "int8", "mixed")}
    assert abs(got["mixed"] - got["bitexact"]) < abs(got["int8"] - got["bitexact"]) + 0.02, got
    assert abs(got["mixed"] - got["bitexact"]) < 0.3, got


def test_mixed_decoder_in_tiles_gives_the_same_pixels(monkeypatch):
    shipped_mixed()
    im = synthetic(80, 112, seed=4)
    data = fastcodec.compress(im, quality=70)
    whole = fastcodec.Codec(threads=1, decoder="mixed").decompress(data)
    import fastcodec.codec as C
    tiny_tiles(monkeypatch, 2)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    codec = fastcodec.Codec(threads=2, decoder="mixed")
    assert np.array_equal(codec.decompress(data), whole)
    net = codec.model.exact_synthesis("mixed")  # the tiles' buffers handed back after the last one
    assert net.cached_bytes == 0 and net.cache_limit == 256 << 20


def test_damaged_or_unreadable_mixed_decoder_is_a_model_error(tmp_path):
    import json
    import shutil

    from fastcodec._model import load_model

    m, path = shipped_mixed()
    bad = tmp_path / "m"
    shutil.copytree(m.path, bad)
    raw = bytearray((bad / path.name).read_bytes())
    raw[len(raw) // 2] ^= 1
    (bad / path.name).write_bytes(bytes(raw))
    model = load_model(bad, verify=False)
    with pytest.raises(ModelError, match="damaged"):
        model.exact_synthesis("mixed")
    model.exact_synthesis("int8")  # the bundle's other decoders still run
    # arrays of another form, listed with their own checksum: refused when built
    np.savez(bad / path.name, format=np.int32(1))
    meta = json.loads((bad / "model.json").read_text())
    meta["decoders"]["mixed"]["sha256"] = hashlib.sha256((bad / path.name).read_bytes()).hexdigest()
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="mixed decoder cannot run"):
        load_model(bad, verify=False).exact_synthesis("mixed")


def test_default_policy_decodes_high_qualities_with_the_mixed_decoder():
    m, _ = shipped_mixed()
    assert m.decoder_policy == [("int8", 50.0), ("mixed", 100.0)]
    assert [m.decoder_for(q) for q in (1, 50, 50.01, 75, 100)] == ["int8", "int8", "mixed", "mixed", "mixed"]
    assert m.int8_postfilter_for("mixed", 100) and not m.int8_postfilter_for("bitexact", 100)
    data = fastcodec.compress(synthetic(48, 64, seed=2), quality=80)
    assert np.array_equal(fastcodec.decompress(data), fastcodec.Codec(decoder="mixed").decompress(data))
