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
