"""Pillow integration: Image.open / Image.save for .fcc after import fastcodec."""
import io

import numpy as np
import pytest
from PIL import Image

import fastcodec
from conftest import psnr, synthetic


def test_save_and_open(tmp_path):
    src = Image.fromarray(synthetic(48, 80))
    path = tmp_path / "x.fcc"
    src.save(path, quality=80)
    assert path.read_bytes()[:4] == b"\x89FCC"
    with Image.open(path) as im:
        assert im.format == "FCC" and im.size == (80, 48) and im.mode == "RGB"
        assert im.info["quality"] == 80.0
        arr = np.asarray(im)
    assert np.array_equal(arr, fastcodec.decompress(path.read_bytes()))
    assert psnr(np.asarray(src), arr) > 20
    small = tmp_path / "small.fcc"
    src.save(small, target_size=300)  # a budget in bytes: quality is searched
    assert small.stat().st_size <= 300
    assert small.read_bytes() == fastcodec.compress(src, target_size=300)


def test_bytesio_grayscale_and_mime():
    buf = io.BytesIO()
    Image.fromarray(synthetic(20, 30)[..., 1], "L").save(buf, format="FCC", quality=50)
    buf.seek(0)
    im = Image.open(buf)
    assert im.mode == "L" and im.size == (30, 20)
    im.load()
    assert Image.MIME["FCC"] == "image/x-fastcodec"
    assert Image.registered_extensions()[".fcc"] == "FCC"


def test_corrupt_file_raises_on_load(tmp_path):
    path = tmp_path / "bad.fcc"
    Image.fromarray(synthetic(16, 16)).save(path)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    im = Image.open(path)  # header is fine
    with pytest.raises(fastcodec.FormatError):
        im.load()


def test_crop_before_load_decodes_only_the_region(tmp_path, monkeypatch):
    path = tmp_path / "x.fcc"
    Image.fromarray(synthetic(70, 100, seed=3)).save(path, quality=60)
    whole = fastcodec.decompress(path.read_bytes())
    boxes = []
    real = fastcodec.Codec.decompress_image

    def spy(self, data, box=None, reduce=1):
        boxes.append(box)
        return real(self, data, box=box, reduce=reduce)

    monkeypatch.setattr(fastcodec.Codec, "decompress_image", spy)
    with Image.open(path) as im:
        part = im.crop((10, 5, 60, 45))
        assert boxes == [(10, 5, 60, 45)]  # decoded as a region, the image itself still unloaded
        assert part.size == (50, 40) and part.mode == "RGB" and part.info["quality"] == 60.0
        assert np.array_equal(np.asarray(part), whole[5:45, 10:60])
        # a box reaching outside the image is Pillow's: a full load, zeros outside
        out = im.crop((90, 60, 110, 80))
        assert out.size == (20, 20) and np.array_equal(np.asarray(out)[:10, :10], whole[60:, 90:])
        assert not np.asarray(out)[10:].any()
        # after load() crops are Pillow's own, the same pixels
        assert np.array_equal(np.asarray(im.crop((10, 5, 60, 45))), np.asarray(part))


def test_16bit_files_in_pillow(tmp_path):
    """A 16-bit gray file opens as 'I;16' with every bit; a 16-bit RGB one as RGB of its high bytes
    (as Pillow reads a 16-bit RGB PNG); im.save(lossless=True) of an 'I;16' image keeps 16 bits."""
    y, x = np.mgrid[0:20, 0:30]
    gray = ((x * 2111 + y * 333) % 65536).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.fcc", lossless=True)
    assert fastcodec.info(tmp_path / "g.fcc").bits == 16
    with Image.open(tmp_path / "g.fcc") as im:
        assert im.mode == "I;16" and im.info["bits"] == 16
        assert np.array_equal(np.asarray(im), gray)
        assert np.array_equal(np.asarray(im.crop((3, 4, 20, 15))), gray[4:15, 3:20])
    rgb = np.stack([gray, gray[::-1], gray[:, ::-1]], axis=2)
    (tmp_path / "c.fcc").write_bytes(fastcodec.compress(rgb, lossless=True))
    with Image.open(tmp_path / "c.fcc") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), (rgb >> 8).astype(np.uint8))
        assert np.array_equal(np.asarray(im.crop((3, 4, 20, 15))), (rgb[4:15, 3:20] >> 8).astype(np.uint8))
