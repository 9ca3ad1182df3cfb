"""Decoding a region (``decompress(data, box=...)``): the same pixels as that region of the whole
decoded image, for every decoder, tiled or not, with alpha and grayscale, and clear errors."""
import numpy as np
import pytest

import fastcodec
import fastcodec.codec as C
from conftest import latent_shapes, synthetic, tiny_tiles

IMG = synthetic(200, 330, seed=7)  # 4 x 6 hyper-latents, 13 x 21 latents (padded to 256 x 384)


@pytest.fixture(scope="module")
def files():
    # quality 30: the int8 decoder by default; 80: the mixed one
    return {q: fastcodec.compress(IMG, quality=q) for q in (30, 80)}


BOXES = [(0, 0, 330, 200), (0, 0, 1, 1), (329, 199, 330, 200), (17, 33, 18, 150), (100, 50, 260, 51),
         (150, 90, 230, 170), (0, 120, 330, 200), (63, 0, 64, 200), (64, 64, 128, 128)]


@pytest.mark.parametrize("decoder", [None, "bitexact", "int8", "mixed"])
@pytest.mark.parametrize("quality", [30, 80])
def test_region_matches_the_whole_image(files, decoder, quality):
    codec = fastcodec.Codec(decoder=decoder)
    data = files[quality]
    whole = codec.decompress(data)
    for box in BOXES:
        left, upper, right, lower = box
        part = codec.decompress(data, box=box)
        assert part.dtype == np.uint8 and part.flags.c_contiguous
        assert np.array_equal(part, whole[upper:lower, left:right]), box


def test_region_with_the_float_decoder_is_within_one_level(files):
    codec = fastcodec.Codec(decoder="float")
    whole = codec.decompress(files[80])
    for left, upper, right, lower in BOXES:
        part = codec.decompress(files[80], box=(left, upper, right, lower))
        assert part.shape == whole[upper:lower, left:right].shape
        assert np.abs(part.astype(int) - whole[upper:lower, left:right]).max() <= 1


@pytest.mark.parametrize("decoder", ["bitexact", "int8", "mixed"])
def test_region_of_a_tiled_image(monkeypatch, files, decoder):
    """Large images decode in tiles; a region then runs its own window, in tiles too when it is
    large: the same pixels as the whole image decoded in tiles, and as decoded untiled."""
    codec = fastcodec.Codec(decoder=decoder)
    untiled = codec.decompress(files[80])
    tiny_tiles(monkeypatch, 4)
    monkeypatch.setattr(C, "HYPER_TILE", 1)
    monkeypatch.setattr(C, "HYPER_TILE_MAX", 1)
    tiled = codec.decompress(files[80])
    assert np.array_equal(tiled, untiled)
    for left, upper, right, lower in BOXES:
        assert np.array_equal(codec.decompress(files[80], box=(left, upper, right, lower)),
                              untiled[upper:lower, left:right])


def test_region_runs_only_its_window(monkeypatch, files):
    """The synthesis sees the box's latents plus SYNTHESIS_HALO, not the whole image, and the
    means are computed for that window only."""
    codec = fastcodec.Codec()
    seen = latent_shapes(monkeypatch)
    codec.decompress(files[30], box=(160, 96, 176, 112))  # one latent: 10 x 10 of pixel 16 x 16
    assert seen == [(1 + 2 * C.SYNTHESIS_HALO, 1 + 2 * C.SYNTHESIS_HALO)]
    seen.clear()
    codec.decompress(files[30], box=(0, 0, 16, 16))  # at the corner the window is clipped
    assert seen == [(1 + C.SYNTHESIS_HALO, 1 + C.SYNTHESIS_HALO)]
    seen.clear()
    codec.decompress(files[30])
    assert seen == [(16, 24)]  # the whole padded latent


def test_region_with_alpha_and_grayscale():
    rgba = np.zeros((90, 140, 4), np.uint8)
    rgba[..., :3] = synthetic(90, 140, seed=2)
    rgba[20:70, 30:110, 3] = 255
    rgba[40:50, 60:64, 3] = 77
    data = fastcodec.compress(rgba, quality=60)
    whole = fastcodec.decompress(data)
    part = fastcodec.decompress(data, box=(25, 15, 100, 60))
    assert part.shape == (45, 75, 4)
    assert np.array_equal(part, whole[15:60, 25:100])
    assert np.array_equal(part[..., 3], rgba[15:60, 25:100, 3])

    gray = synthetic(70, 50, seed=3)[..., 1]
    data = fastcodec.compress(gray, quality=60)
    whole = fastcodec.decompress(data)
    part = fastcodec.decompress(data, box=(5, 6, 45, 66))
    assert part.shape == (60, 40) and np.array_equal(part, whole[6:66, 5:45])


def test_region_as_an_image_and_a_file(tmp_path, files):
    im = fastcodec.decompress_image(files[30], box=(10, 20, 110, 70))
    assert im.size == (100, 50) and im.mode == "RGB"
    assert np.array_equal(np.asarray(im), fastcodec.decompress(files[30])[20:70, 10:110])
    src = tmp_path / "a.fcc"
    src.write_bytes(files[30])
    fastcodec.decompress_file(src, tmp_path / "a.png", box=(10, 20, 110, 70))
    from PIL import Image
    with Image.open(tmp_path / "a.png") as out:
        assert np.array_equal(np.asarray(out), np.asarray(im))


@pytest.mark.parametrize("box, what", [
    ((0, 0, 331, 200), "right <= 330"), ((0, 0, 330, 201), "lower <= 200"), ((-1, 0, 10, 10), "0 <= left"),
    ((10, 0, 10, 10), "left < right"), ((0, 5, 10, 5), "upper < lower"), ((0, 0, 10), "four integers"),
    ((0, 0, 10.0, 10), "four integers"), ((0, 0, True, 10), "four integers"), ("0,0,10,10", "four integers"),
    (None, None)])
def test_bad_boxes_are_refused(files, box, what):
    if box is None:  # None means the whole image
        assert fastcodec.decompress(files[30], box=None).shape == (200, 330, 3)
        return
    with pytest.raises(fastcodec.ArgumentError) as e:
        fastcodec.decompress(files[30], box=box)
    assert isinstance(e.value, ValueError)
    assert what in str(e.value) and "330 x 200" in str(e.value) or what == "four integers"
    assert what in str(e.value)


def test_numpy_integers_are_accepted(files):
    box = tuple(np.int64(v) for v in (1, 2, 30, 40))
    assert fastcodec.decompress(files[30], box=box).shape == (38, 29, 3)


def test_region_inside_a_larger_image():
    """A small box far from every edge: its latent window and the hyper-latents under it are
    interior on all four sides (the halos alone make the pixels exact)."""
    img = synthetic(512, 640, seed=9)  # 32 x 40 latents, 8 x 10 hyper-latents
    for q in (20, 90):
        data = fastcodec.compress(img, quality=q)
        whole = fastcodec.decompress(data)
        for box in ((300, 250, 317, 262), (250, 200, 330, 280), (128, 128, 129, 129)):
            left, upper, right, lower = box
            assert np.array_equal(fastcodec.decompress(data, box=box), whole[upper:lower, left:right]), (q, box)
