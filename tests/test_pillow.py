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
