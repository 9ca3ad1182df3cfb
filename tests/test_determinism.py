"""Decoding is deterministic: the coding tables are selected by the integer hyper-latent through
the C++ scale branch (fixed IEEE-754 operation order), never by onnxruntime's float outputs."""
import hashlib

import numpy as np
import pytest

import fastcodec
from conftest import psnr, synthetic


@pytest.fixture(scope="module")
def sample():
    return fastcodec.compress(synthetic(130, 200, seed=11), quality=55)


def symbols(codec, data):
    _, _, z_sym, _, r, bins, _, _ = codec._decode_symbols(data)
    return hashlib.sha256(z_sym.tobytes() + r.tobytes() + bins.tobytes()).hexdigest()


@pytest.mark.parametrize("threads,opt", [(1, "all"), (2, "all"), (1, "disabled"), (2, "basic")])
def test_threads_and_optimisation_levels_agree(sample, threads, opt):
    ref = fastcodec.Codec(threads=1, optimization="all")
    other = fastcodec.Codec(threads=threads, optimization=opt)
    assert symbols(ref, sample) == symbols(other, sample)
    a, b = ref.decompress(sample), other.decompress(sample)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_perturbed_network_outputs_do_not_change_symbols(sample, monkeypatch):
    codec = fastcodec.Codec()
    ref = symbols(codec, sample)
    ref_px = codec.decompress(sample)
    real_run = codec.model.run
    rng = np.random.default_rng(0)

    def noisy(name, feeds, **kw):
        outs = real_run(name, feeds, **kw)
        return [o + rng.normal(0, 1e-3, o.shape).astype(o.dtype) for o in outs]

    monkeypatch.setattr(codec.model, "run", noisy)
    assert symbols(codec, sample) == ref
    assert psnr(ref_px, codec.decompress(sample)) > 40


def test_scale_branch_is_bitwise_reproducible():
    m = fastcodec.default_codec().model
    z = np.random.default_rng(1).integers(-4, 5, (1, m.z_offset.shape[0], 5, 7)).astype(np.int32)
    a = m.hyper_scale.log_scales(z, threads=1)
    b = m.hyper_scale.log_scales(z, threads=3)
    assert a.tobytes() == b.tobytes()
    # independent of the caller's floating-point environment and of numpy's own state
    np.seterr(all="ignore")
    assert m.hyper_scale.log_scales(z, threads=2).tobytes() == a.tobytes()


def _numpy_scale_branch(t, z):
    """Reference: the hyper-synthesis scale branch in float64 numpy (conv3x3, PixelShuffle, ReLU)."""
    x = z[0].astype(np.float64)
    for i, (shuffle, relu) in enumerate(((2, True), (2, True), (1, False))):
        w, b = t[f"hs_w{i}"].astype(np.float64), t[f"hs_b{i}"].astype(np.float64)
        c, h, wd = x.shape
        xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
        out = np.broadcast_to(b[:, None, None], (w.shape[0], h, wd)).copy()
        for ky in range(3):
            for kx in range(3):
                out += np.einsum("oc,chw->ohw", w[:, :, ky, kx], xp[:, ky:ky + h, kx:kx + wd])
        r = shuffle
        out = out.reshape(-1, r, r, h, wd).transpose(0, 3, 1, 4, 2).reshape(-1, h * r, wd * r)
        x = np.maximum(out, 0) if relu else out
    return x


def test_scale_branch_matches_reference():
    m = fastcodec.default_codec().model
    z = np.random.default_rng(2).integers(-3, 4, (1, m.z_offset.shape[0], 3, 4)).astype(np.int32)
    ref = _numpy_scale_branch(m.tables, z)
    lo = float(m.tables["scale_log_min"])
    hi = lo + (m.grid[2] - 1) / m.grid[1]
    got = m.hyper_scale.log_scales(z)[0]
    assert np.allclose(got, np.clip(ref, lo, hi), atol=1e-4)


def test_scale_branch_kernels_agree_bitwise(tmp_path):
    """The vector kernel picked for this CPU (AVX-512 where there is one) and the generic code
    (forced by FASTCODEC_GENERIC_KERNELS=1) give the same bits, over sizes that exercise the
    partial-vector tails and partial output-channel blocks."""
    import os
    import subprocess
    import sys
    m = fastcodec.default_codec().model
    rng = np.random.default_rng(3)
    zs = [rng.integers(-6, 7, (1, m.z_offset.shape[0], h, w)).astype(np.int32)
          for h, w in ((1, 1), (3, 5), (8, 12), (9, 17))]
    np.savez(tmp_path / "z.npz", *zs)
    script = (
        "import sys, numpy as np, fastcodec\n"
        "m = fastcodec.default_codec().model\n"
        "zs = np.load(sys.argv[1])\n"
        "np.savez(sys.argv[2], *[m.hyper_scale.log_scales(zs[k], threads=2) for k in sorted(zs.files, "
        "key=lambda s: int(s.split('_')[1]))])\n")
    env = dict(os.environ, FASTCODEC_GENERIC_KERNELS="1")
    r = subprocess.run([sys.executable, "-c", script, str(tmp_path / "z.npz"), str(tmp_path / "g.npz")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    generic = np.load(tmp_path / "g.npz")
    for i, z in enumerate(zs):
        assert m.hyper_scale.log_scales(z, threads=2).tobytes() == generic[f"arr_{i}"].tobytes()
