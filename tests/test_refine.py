"""Encoder-side latent refinement (compress(effort=2|3)): same decoder, better files."""
import math

import numpy as np
import pytest

import fastcodec
from fastcodec import _refine, format as fmt
from fastcodec.errors import ArgumentError
from conftest import kodak_files, needs_kodak, psnr, synthetic, tiny_tiles


def rd_cost(codec, img, data):
    """lambda * 255^2 * MSE + bpp of a file, with the pixels its default decoder gives: the
    quantity the refinement lowers, at the trade-off of the file's quality."""
    info = codec.info(data)
    out = codec.decompress(data)
    mse = 255.0 ** 2 * 10 ** (-psnr(out, img) / 10)
    return codec.model.lam(info.quality) * mse + 8 * len(data) / (img.shape[0] * img.shape[1])


def kodak_crop(i, h=128, w=192):
    from PIL import Image
    im = np.asarray(Image.open(kodak_files()[i]).convert("RGB"))
    return np.ascontiguousarray(im[100:100 + h, 200:200 + w])


@needs_kodak
@pytest.mark.parametrize("i,q", [(2, 30), (6, 60), (19, 85)])
def test_effort_lowers_the_rd_cost(codec, i, q):
    img = kodak_crop(i)
    base = codec.compress(img, quality=q)
    refined = codec.compress(img, quality=q, effort=2)
    j1, j2 = rd_cost(codec, img, base), rd_cost(codec, img, refined)
    assert j2 < 0.995 * j1, (j1, j2)


@needs_kodak
def test_refined_file_is_an_ordinary_file(codec):
    img = kodak_crop(3)
    base = codec.compress(img, quality=50)
    refined = codec.compress(img, quality=50, effort=2)
    assert refined != base
    # same model, quality and hyper-latent (so the same coding tables): only the symbols differ
    hb, zb, _ = fmt.parse(base)
    hr, zr, _ = fmt.parse(refined)
    assert (hb.width, hb.height, hb.quality, hb.model_id) == (hr.width, hr.height, hr.quality, hr.model_id)
    assert bytes(zb) == bytes(zr)
    # deterministic, and every decoder reads it
    assert codec.compress(img, quality=50, effort=2) == refined
    for name in codec.model.decoders:
        out = fastcodec.Codec(decoder=name).decompress(refined)
        assert out.shape == img.shape and psnr(out, img) > 28


def test_padding_and_tiles(monkeypatch):
    """Sizes off the 64-pixel grid (the padding carries no distortion) and the tiled path."""
    c = fastcodec.Codec()
    img = synthetic(100, 150, seed=3)
    base = c.compress(img, quality=40)
    refined = c.compress(img, quality=40, effort=2)
    assert c.decompress(refined).shape == img.shape
    assert rd_cost(c, img, refined) < rd_cost(c, img, base)
    import fastcodec.codec as C
    tiny_tiles(monkeypatch, tile=4)
    monkeypatch.setattr(C, "REFINE_TILE", 4)
    monkeypatch.setattr(C, "REFINE_TILE_MAX", 4)
    tiled = c.compress(img, quality=40, effort=2)
    assert c.decompress(tiled).shape == img.shape
    assert rd_cost(c, img, tiled) < rd_cost(c, img, base)


def test_effort_with_a_budget(codec):
    img = synthetic(96, 128, seed=5)
    for budget in (300, 900):
        data = codec.compress(img, target_size=budget, effort=2)
        assert len(data) <= budget
        assert codec.decompress(data).shape == img.shape
    data = codec.compress(img, target_bpp=0.5, effort=3)
    assert 8 * len(data) / (96 * 128) <= 0.5


@pytest.mark.parametrize("bad", [0, 4, 2.5, True, "2", None])
def test_effort_is_checked(codec, bad):
    with pytest.raises(ArgumentError, match="effort must be a whole number from 1 to 3"):
        codec.compress(synthetic(32, 32), effort=bad)


def test_a_model_without_the_gradient_graph(monkeypatch):
    c = fastcodec.Codec()
    monkeypatch.delitem(c.model.meta, "refine")
    assert c.compress(synthetic(32, 32), effort=1)
    with pytest.raises(ArgumentError, match="use effort 1"):
        c.compress(synthetic(32, 32), effort=2)


@pytest.mark.parametrize("pf", [0.0, 1.0])
def test_gradient_graph_matches_the_decoder(codec, pf):
    """The shipped gradient graph is the gradient of the shipped decoder (and post-filter, where
    the graph includes it): finite differences of 0.5 * |m * (decoded(y) - x)|^2 along random
    directions agree with <grad, v>."""
    m = codec.model
    graph = m.check_refine()
    inputs = {i.name for i in m.session(graph).get_inputs()}
    if pf and "pf" not in inputs:
        pytest.skip("this model's gradient graph leaves the post-filter out")
    rng = np.random.default_rng(0)
    y = (rng.standard_normal((1, m.gains.shape[1], 4, 6)) * 2).astype(np.float32)
    x = rng.random((1, 3, 64, 96), dtype=np.float32)
    mask = np.ones((1, 1, 64, 96), np.float32)
    mask[..., 50:, :] = 0
    q = np.array([0.4], np.float32)
    extra = {"q": q, "pf": np.array([pf], np.float32)} if "pf" in inputs else {}
    grad, sse = m.run(graph, {"y": y, "x": x, "m": mask, **extra})

    def loss(yy):
        (xh,) = m.run("decoder", {"y": yy})
        if pf:
            (xh,) = m.run(m.check_postfilter(), {"x": xh, "q": q})
        return 0.5 * float((mask * (xh.astype(np.float64) - x) ** 2).sum())

    assert sse[0] == pytest.approx(2 * loss(y), rel=1e-4)
    # compared as a vector over several directions: a single directional difference of a float32
    # network with many ReLU kinks is noisy by a percent or two, while a gradient that left out
    # the post-filter's branch is off by about 20 % here
    gv, fd = [], []
    for _ in range(4):
        v = rng.standard_normal(y.shape).astype(np.float32)
        eps = 3e-3
        fd.append((loss(y + eps * v) - loss(y - eps * v)) / (2 * eps))
        gv.append(float((grad.astype(np.float64) * v).sum()))
    assert np.linalg.norm(np.subtract(gv, fd)) <= 0.03 * np.linalg.norm(fd), (gv, fd)


def test_rate_gradient_and_normal_cdf():
    x = np.linspace(-8, 8, 161)
    want = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x])
    assert np.abs(_refine._ndtr(x) - want).max() < 2e-7
    r = np.array([-3.3, -1.0, -0.2, 0.0, 0.4, 1.0, 2.5, 6.0])
    s = np.array([0.11, 0.5, 1.0, 2.0, 3.0, 0.8, 10.0, 1.5])

    def bits(rr):
        a = np.abs(rr)
        p = np.array([0.5 * (math.erfc(-(0.5 - ai) / si / math.sqrt(2)) - math.erfc(-(-0.5 - ai) / si / math.sqrt(2)))
                      for ai, si in zip(a, s)])
        return -np.log2(p)

    h = 1e-4
    fd = (bits(r + h) - bits(r - h)) / (2 * h)
    got = _refine._rate_grad(r, s)
    ok = r != 0  # |r| has a kink at 0; the gradient there is 0 by convention
    assert np.allclose(got[ok], fd[ok], rtol=3e-3, atol=1e-3)  # the far tail: asymptotic slope
    assert got[~ok] == 0


def test_hyper_synthesis_is_the_models():
    """Effort 3's numpy hyper-synthesis computes the bundle's means (hyper_decoder.onnx) and the
    log-scales whose bins the C++ scale branch picks, and its vector-Jacobian product is the
    gradient (float64: finite differences agree to many digits)."""
    c = fastcodec.Codec()
    m = c.model
    hs, _ = m.hyper_refine()
    rng = np.random.default_rng(1)
    z = np.rint(rng.standard_normal((1, m.z_offset.shape[0], 3, 5)) * 3).astype(np.float32)
    mu, s, _ = hs.forward(z[0])
    (want,) = m.run("hyper_decoder", {"z": z})
    assert mu.shape == want.shape[1:] == (m.gains.shape[1], 12, 20)
    assert np.abs(mu - want[0]).max() <= 1e-4 * max(1.0, np.abs(want).max())
    log_lo, inv_step, nbins = m.grid
    bins = np.clip(np.rint((s - log_lo) * inv_step), 0, nbins - 1)
    assert (bins == m.scale_bins(z.astype(np.int32))[0]).mean() > 0.999

    h64 = _refine.HyperSynthesis([(w.reshape(w.shape[0], -1, 3, 3), b, r) for w, b, r in hs.trunk],
                                 (hs.head[0][:hs.latents].reshape(hs.latents, -1, 3, 3), hs.head[1][:hs.latents]),
                                 (hs.head[0][hs.latents:].reshape(hs.latents, -1, 3, 3), hs.head[1][hs.latents:]),
                                 hs.log_lo, hs.log_hi, dtype=np.float64)
    zc = rng.standard_normal(z.shape[1:]) * 3
    mu, s, cache = h64.forward(zc)
    gm, gs = rng.standard_normal(mu.shape), rng.standard_normal(s.shape)
    g = h64.vjp(cache, gm, gs)

    def f(zz):
        a, b, _ = h64.forward(zz)
        return float((a * gm).sum() + (b * gs).sum())

    for _ in range(3):
        v = rng.standard_normal(zc.shape)
        fd = (f(zc + 1e-6 * v) - f(zc - 1e-6 * v)) / 2e-6
        assert fd == pytest.approx(float((g * v).sum()), rel=1e-5)


def test_hyper_rate_reads_the_tables():
    """The hyper-latent's rate at integers is -log2 of the coding tables' pmf; between them it is
    linear; outside a table it is large and grows outwards."""
    c = fastcodec.Codec()
    m, t = c.model, c.model.tables
    _, rate = m.hyper_refine()
    n = m.z_offset.shape[0]
    z = m.z_offset[:, None, None] + np.array([-1, 0, 2])[None, None, :]  # (N, 1, 3) around each mode
    z = z.astype(np.float32)
    bits, slope = rate(z, np.zeros_like(z))
    want = 0.0
    for ch in range(n):
        g = m.z_group[ch]
        p = t["z_pmf"][t["z_pmf_off"][g]:t["z_pmf_off"][g + 1]]
        for v in z[ch, 0]:
            want += -math.log2(max(p[int(v) - m.z_offset[ch] - t["z_pmf_vmin"][g]], 1e-12))
    assert bits == pytest.approx(want, rel=1e-9)
    half, _ = rate(z, np.full_like(z, 0.5))
    up, _ = rate(z + 1, np.zeros_like(z))
    assert half == pytest.approx(0.5 * (bits + up), rel=1e-9)
    far, far_slope = rate(z + 1000, np.zeros_like(z))
    assert far > 3 * n * 40 and (far_slope > 0).all()
    assert (rate(z - 1000, np.zeros_like(z))[1] < 0).all()


def test_rate_gradient_in_the_log_scale():
    r = np.array([-3.3, -1.0, -0.2, 0.0, 0.4, 1.0, 2.5, 6.0])
    s = np.array([0.11, 0.5, 1.0, 2.0, 3.0, 0.8, 10.0, 1.5])

    def bits(ls):
        ss = np.exp(ls)
        a = np.abs(r)
        p = np.array([0.5 * (math.erfc(-(0.5 - ai) / si / math.sqrt(2)) - math.erfc(-(-0.5 - ai) / si / math.sqrt(2)))
                      for ai, si in zip(a, ss)])
        return -np.log2(p)

    h = 1e-5
    fd = (bits(np.log(s) + h) - bits(np.log(s) - h)) / (2 * h)
    assert np.allclose(_refine._rate_grad_log_scale(r, s), fd, rtol=3e-3, atol=1e-3)


def test_effort_3_refines_the_hyper_latent(codec, monkeypatch):
    """Effort 3 moves the hyper-latent too (the file's hyper-latent section differs; effort 2's
    keeps it), for a lower rate-distortion cost than refining the latents alone (as 0.16 did);
    the result is an ordinary file; in tiles too."""
    img = synthetic(128, 192, seed=11)
    e1 = codec.compress(img, quality=30)
    e2 = codec.compress(img, quality=30, effort=2)
    e3 = codec.compress(img, quality=30, effort=3)
    assert bytes(fmt.parse(e3)[1]) != bytes(fmt.parse(e1)[1])
    assert bytes(fmt.parse(e2)[1]) == bytes(fmt.parse(e1)[1])
    assert rd_cost(codec, img, e3) < rd_cost(codec, img, e2) < rd_cost(codec, img, e1)
    with monkeypatch.context() as mp:
        mp.setitem(_refine.JOINT, 3, False)
        alone = codec.compress(img, quality=30, effort=3)
    assert bytes(fmt.parse(alone)[1]) == bytes(fmt.parse(e1)[1])
    assert rd_cost(codec, img, e3) < rd_cost(codec, img, alone)
    assert codec.compress(img, quality=30, effort=3) == e3  # deterministic
    import fastcodec.codec as C
    monkeypatch.setattr(C, "REFINE_TILE", 4)
    monkeypatch.setattr(C, "REFINE_TILE_MAX", 4)
    t2 = codec.compress(img, quality=30, effort=2)
    t3 = codec.compress(img, quality=30, effort=3)
    assert bytes(fmt.parse(t3)[1]) != bytes(fmt.parse(e1)[1])
    assert codec.decompress(t3).shape == img.shape
    assert rd_cost(codec, img, t3) < rd_cost(codec, img, t2) < rd_cost(codec, img, e1)


def test_tiles_keep_the_means_under_refined_tiles(codec, monkeypatch):
    """In tiles, effort 3 moves only hyper-latent elements that do not change the means and
    scales under the latents of the tiles refined before: the symbols of the first tile, coded
    with the final hyper-latent, are those its refinement chose."""
    import fastcodec.codec as C
    monkeypatch.setattr(C, "REFINE_TILE", 16)
    monkeypatch.setattr(C, "REFINE_TILE_MAX", 16)
    monkeypatch.setitem(_refine.EFFORT_STEPS, 3, 4)
    seen = []
    real = _refine.refine_joint

    def spy(*a, **k):
        u, v = real(*a, **k)
        seen.append((k["offset"], k["free"].copy(), a[2].copy(), v.copy()))
        return u, v

    monkeypatch.setattr(_refine, "refine_joint", spy)
    img = synthetic(512, 384, seed=12)
    data = codec.compress(img, quality=40, effort=3)
    assert len(seen) == 2 * 2  # 32 x 24 latents in tiles of 16
    moved = sum(int((np.rint(v) != np.rint(z))[:, :, ~f[0, 0]].sum()) for _, f, z, v in seen)
    assert moved == 0  # the elements a tile may not move stay where they were
    assert all((np.rint(v) != np.rint(z)).any() for _, f, z, v in seen)
    # the second row of tiles moves no hyper-latent row within 2 of the first row's latents
    # (rows 0..15, hyper-latent rows 0..3): its window starts at hyper-latent row 0
    (oy, _), f, _, _ = seen[2]
    za0 = (16 - oy) // 4
    assert f[0, 0].any() and not f[0, 0, :6 - za0].any()
    # ... and the second tile of a row none within 2 columns of the first tile's
    (_, ox), f, _, _ = seen[1]
    zb0 = (16 - ox) // 4
    assert f[0, 0].any() and not f[0, 0, :, :6 - zb0].any()
    assert codec.decompress(data).shape == img.shape
