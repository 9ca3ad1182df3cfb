"""Reduced-size decoding (``decompress(data, reduce=F)``, thumbnails): sizes as PIL.Image.reduce,
quality close to decoding the whole image and reducing it, the same pixels tiled or not and on
every kernel, alpha and grayscale, regions of the reduced image, the Pillow plugin's draft(), the
CLI, and clear errors."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastcodec
import fastcodec.codec as C
from conftest import kodak_files, latent_shapes, needs_kodak, outputs_by_kernel, psnr, synthetic, tiny_tiles
from fastcodec._model import available_models, default_model_name
from fastcodec.codec import reduce_pixels
from fastcodec.errors import ArgumentError, ModelError

IMG = synthetic(200, 330, seed=11)  # not a multiple of 8 on either side
DEFAULT = available_models()[default_model_name()]
HEADS = fastcodec.Codec(threads=1).model.reduce_factors()
needs_heads = pytest.mark.skipif(not HEADS, reason="the default model ships no reduce heads")
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def data():
    return fastcodec.compress(IMG, quality=60)


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (200, 330), (16, 9, 3), (33, 17, 4), (9, 30, 2)])
@pytest.mark.parametrize("f", [2, 4, 8])
def test_reduce_pixels_is_pillows_reduce(shape, f):
    a = np.random.default_rng(sum(shape) * f).integers(0, 256, shape, dtype=np.uint8)
    if len(shape) == 3 and shape[2] != 3:  # per plane: Pillow premultiplies RGBA by its alpha
        want = np.stack([np.asarray(Image.fromarray(a[..., c]).reduce(f)) for c in range(shape[2])], axis=2)
    else:
        want = np.asarray(Image.fromarray(a).reduce(f))
    got = reduce_pixels(a, f)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).max() <= 1  # Pillow rounds its fixed-point mean


@needs_heads
@pytest.mark.parametrize("f", [2, 4, 8])
def test_reduced_size_and_closeness_to_the_whole_image(data, f):
    codec = fastcodec.Codec()
    whole = codec.decompress(data)
    small = codec.decompress(data, reduce=f)
    assert small.shape == (-(-200 // f), -(-330 // f), 3) and small.dtype == np.uint8
    # the heads approximate the whole decode's blocks and the original's (on photos within about
    # a dB of the whole decode: test_reduced_quality_on_photos; this image is not one)
    assert psnr(small, reduce_pixels(whole, f)) > 32
    assert psnr(small, reduce_pixels(IMG, f)) > 35


def test_reduce_one_is_the_whole_image(data):
    assert np.array_equal(fastcodec.decompress(data, reduce=1), fastcodec.decompress(data))


@needs_heads
def test_reduced_decoding_skips_the_full_resolution_layers(data, monkeypatch):
    """The heads run instead of the whole synthesis and the post-filter."""
    codec = fastcodec.Codec()
    calls = []
    monkeypatch.setattr(C.Codec, "_synthesise", lambda *a, **k: calls.append(1))
    out = codec.decompress(data, reduce=HEADS[0])
    assert out.shape[0] == -(-200 // HEADS[0]) and not calls


@needs_heads
@pytest.mark.parametrize("f", [2, 4, 8])
def test_reduced_tiled_is_untiled(monkeypatch, data, f):
    codec = fastcodec.Codec()
    untiled = codec.decompress(data, reduce=f)
    tiny_tiles(monkeypatch, 4)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    assert np.array_equal(codec.decompress(data, reduce=f), untiled)


@needs_heads
def test_reduced_pixels_are_the_same_whatever_the_decoder_and_threads(data):
    want = fastcodec.Codec(threads=1).decompress(data, reduce=4)
    for kw in ({"decoder": "float"}, {"decoder": "int8"}, {"postfilter": False}, {"threads": 2}):
        assert np.array_equal(fastcodec.Codec(**kw).decompress(data, reduce=4), want), kw


@needs_heads
def test_reduced_pixels_are_the_same_on_every_kernel(tmp_path, data):
    path = tmp_path / "x.fcc"
    path.write_bytes(data)
    code = ("import hashlib, fastcodec; "
            f"a = fastcodec.Codec(threads=2).decompress(r'{path}', reduce=4); "
            "print(hashlib.sha256(a.tobytes()).hexdigest())")
    digests = outputs_by_kernel(code)
    assert len(set(digests.values())) == 1, digests


def test_reduced_alpha_and_grayscale():
    rgba = np.dstack([IMG, (np.arange(330)[None, :] * 255 // 329 * np.ones((200, 1))).astype(np.uint8)])
    rgba[:50, :70, 3] = 0
    d = fastcodec.compress(rgba, quality=50)
    for f in (2, 4, 8):
        out = fastcodec.decompress(d, reduce=f)
        assert out.shape == (-(-200 // f), -(-330 // f), 4)
        assert np.array_equal(out[..., 3], reduce_pixels(fastcodec.decompress(d)[..., 3], f))
    gray = fastcodec.compress(IMG[..., 1], quality=50)
    out = fastcodec.decompress(gray, reduce=4)
    assert out.shape == (50, 83)
    assert psnr(out, reduce_pixels(fastcodec.decompress(gray), 4)) > 30
    im = fastcodec.decompress_image(d, reduce=8)
    assert im.mode == "RGBA" and im.size == (42, 25)


@pytest.mark.parametrize("bad", [0, 3, 16, -2, 2.0, True, "4", None])
def test_bad_factors_are_refused(data, bad):
    with pytest.raises(ArgumentError, match="reduce must be one of 1, 2, 4, 8"):
        fastcodec.decompress(data, reduce=bad)


def reduced_boxes(h, w):
    """Boxes of an h x w (reduced) image: all of it, corners, single pixels, thin strips, inner."""
    return [(0, 0, w, h), (0, 0, 1, 1), (w - 1, h - 1, w, h), (w // 3, 0, w // 3 + 1, h), (0, h // 2, w, h // 2 + 1),
            (w // 4, h // 4, 3 * w // 4, 3 * h // 4), (w - 5, 0, w, 4)]


@pytest.mark.parametrize("f", [2, 4, 8])
def test_box_of_a_reduced_image(monkeypatch, data, f):
    """With reduce, box is a region of the reduced image: the same pixels as cropping it, from
    that window of latents (tiled or not), with the heads and without them."""
    codec = fastcodec.Codec()
    small = codec.decompress(data, reduce=f)
    h, w = small.shape[:2]
    for left, upper, right, lower in reduced_boxes(h, w):
        part = codec.decompress(data, box=(left, upper, right, lower), reduce=f)
        assert np.array_equal(part, small[upper:lower, left:right]), (left, upper, right, lower)
    tiny_tiles(monkeypatch, 4)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    box = (w // 4, h // 4, 3 * w // 4, 3 * h // 4)
    assert np.array_equal(codec.decompress(data, box=box, reduce=f), small[h // 4:3 * h // 4, w // 4:3 * w // 4])


@needs_heads
def test_box_of_a_reduced_image_runs_only_its_window(monkeypatch, data):
    codec = fastcodec.Codec()
    seen = latent_shapes(monkeypatch, "_synthesise_reduced")
    codec.decompress(data, reduce=4)
    codec.decompress(data, box=(0, 0, 8, 8), reduce=4)  # 32 x 32 pixels: 2 latents + the halo of 3
    assert seen == [(16, 24), (5, 5)]  # the whole (padded to 256 x 384), then the window


def test_box_of_a_reduced_image_with_alpha_gray_and_without_heads(tmp_path):
    rgba = np.dstack([IMG, np.tile((np.arange(330) * 255 // 329).astype(np.uint8), (200, 1))])
    gray = IMG[..., 1]
    bare = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bare)
    meta = json.loads((bare / "model.json").read_text())
    meta.pop("reduce", None)
    (bare / "model.json").write_text(json.dumps(meta))
    for codec in (fastcodec.Codec(), fastcodec.Codec(bare)):
        for img in (rgba, gray):
            d = codec.compress(img, quality=40)
            for f in (2, 8):
                small = codec.decompress(d, reduce=f)
                h, w = small.shape[:2]
                for left, upper, right, lower in reduced_boxes(h, w):
                    part = codec.decompress(d, box=(left, upper, right, lower), reduce=f)
                    assert np.array_equal(part, small[upper:lower, left:right]), (f, left, upper, right, lower)


def test_box_outside_the_reduced_image_is_refused(data):
    with pytest.raises(ArgumentError, match=r"right <= 83 .*the image is 83 x 50"):
        fastcodec.decompress(data, box=(0, 0, 84, 10), reduce=4)
    with pytest.raises(ArgumentError, match="box must be four integers"):
        fastcodec.decompress(data, box=(0, 0, 8), reduce=4)


def test_thumbnails_of_many_files(data):
    codec = fastcodec.Codec(threads=1)
    files = [data, fastcodec.compress(IMG[:64, :80], quality=30), b"not a file"]
    out = codec.decompress_many(files, workers=2, return_exceptions=True, reduce=8)
    assert np.array_equal(out[0], codec.decompress(data, reduce=8)) and out[1].shape == (8, 10, 3)
    assert isinstance(out[2], fastcodec.FormatError)
    with pytest.raises(ArgumentError, match="reduce must be one of"):
        codec.decompress_many(files, reduce=3, return_exceptions=True)


def test_numpy_integer_factor(data):
    assert fastcodec.decompress(data, reduce=np.int64(8)).shape == (25, 42, 3)


def test_a_model_without_heads_reduces_its_whole_decode(tmp_path, data):
    bare = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bare)
    meta = json.loads((bare / "model.json").read_text())
    meta.pop("reduce", None)
    (bare / "model.json").write_text(json.dumps(meta))
    codec = fastcodec.Codec(bare)
    assert codec.model.reduce_factors() == ()
    for f in (2, 4, 8):
        assert np.array_equal(codec.decompress(data, reduce=f), reduce_pixels(codec.decompress(data), f))


def test_older_models_files_reduce_too():
    files = sorted(GOLDEN.glob("d7f359c21cbe83ac/*.fcc"))
    if not files:
        pytest.skip("no golden files of the archived model")
    codec = fastcodec.Codec(threads=1)
    d = files[0].read_bytes()
    assert np.array_equal(codec.decompress(d, reduce=4), reduce_pixels(codec.decompress(d), 4))


@needs_heads
def test_damaged_heads_are_refused_but_the_model_still_decodes(tmp_path, data):
    bad = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bad)
    heads = bytearray((bad / "reduce.npz").read_bytes())
    heads[len(heads) // 2] ^= 0xFF
    (bad / "reduce.npz").write_bytes(bytes(heads))
    codec = fastcodec.Codec(bad)
    with pytest.raises(ModelError, match=r"reduce heads. file \(reduce.npz\) is damaged"):
        codec.decompress(data, reduce=4)
    assert codec.decompress(data).shape == IMG.shape


@needs_heads
def test_pillow_thumbnail_decodes_reduced(tmp_path, monkeypatch):
    path = tmp_path / "x.fcc"
    path.write_bytes(fastcodec.compress(IMG, quality=60))
    seen = []
    real = fastcodec.Codec.decompress

    def spy(self, data, box=None, reduce=1):
        seen.append(reduce)
        return real(self, data, box=box, reduce=reduce)

    monkeypatch.setattr(fastcodec.Codec, "decompress", spy)
    with Image.open(path) as im:
        im.thumbnail((40, 40))  # draft(None, (80, 80)): 330 // 80 = 4, 200 // 80 = 2 -> reduce 2
        assert seen == [2] and im.size == (40, 24)
    with Image.open(path) as im:
        assert im.draft("RGB", (41, 25)) == ("RGB", (0, 0, 330 / 8, 200 / 8))
        assert im.size == (42, 25)
        assert np.array_equal(np.asarray(im), real(fastcodec.Codec(), path.read_bytes(), reduce=8))
        assert np.array_equal(np.asarray(im.crop((3, 2, 13, 12))), np.asarray(im)[2:12, 3:13])
    with Image.open(path) as im:  # after draft, before load: a crop decodes that region of the reduced image
        im.draft("RGB", (80, 50))
        calls = []
        real_image = fastcodec.Codec.decompress_image
        monkeypatch.setattr(fastcodec.Codec, "decompress_image",
                            lambda self, d, box=None, reduce=1: calls.append((box, reduce)) or real_image(self, d, box, reduce))
        part = im.crop((3, 2, 13, 12))
        assert calls == [((3, 2, 13, 12), 4)] and part.size == (10, 10)
        assert np.array_equal(np.asarray(part), real(fastcodec.Codec(), path.read_bytes(), reduce=4)[2:12, 3:13])
    with Image.open(path) as im:
        assert im.draft("RGB", (300, 100)) is None and im.size == (330, 200)  # no factor fits


def test_cli_reduce(tmp_path, data):
    import subprocess
    import sys
    src = tmp_path / "img.fcc"
    src.write_bytes(data)
    r = subprocess.run([sys.executable, "-m", "fastcodec", "decompress", str(src), "-o", str(tmp_path / "t.png"),
                        "--reduce", "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "t.png").size == (83, 50)
    r = subprocess.run([sys.executable, "-m", "fastcodec", "decompress", str(src), "-o", str(tmp_path / "u.png"),
                        "--reduce", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--reduce" in r.stderr


@needs_kodak
@needs_heads
def test_reduced_quality_on_photos():
    """On Kodak photos the heads' thumbnails are within a fraction of a dB of reducing the whole
    decode, against the original reduced the same way."""
    codec = fastcodec.Codec()
    loss = {f: [] for f in HEADS}
    for path in kodak_files()[::8]:
        img = np.asarray(Image.open(path).convert("RGB"))
        for q in (10, 75):
            d = codec.compress(img, quality=q)
            whole = codec.decompress(d)
            for f in HEADS:
                ref = reduce_pixels(img, f)
                head, full = psnr(codec.decompress(d, reduce=f), ref), psnr(reduce_pixels(whole, f), ref)
                assert head > full - 2.0, (path.name, q, f, head, full)
                loss[f].append(full - head)
    for f, v in loss.items():  # measured (0.13, 3 images): 0.2-0.9 dB
        assert np.mean(v) < 1.0, (f, v)
