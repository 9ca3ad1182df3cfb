"""Lossless and near-lossless coding (format version 3, cpp/pixels.cpp, docs/format.md "Pixel coding")."""
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastcodec
from fastcodec import _core, codec as codec_mod, format as fmt
from fastcodec.errors import ArgumentError, FormatError, ImageError

from conftest import SHARED, icc_profile, synthetic

GOLDEN = Path(__file__).resolve().parent / "golden" / "pixels"
TRAIN = SHARED / "data" / "train"


@pytest.fixture(scope="module")
def codec():
    return fastcodec.Codec()


def noise(h, w, c=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def photo():
    files = sorted(TRAIN.glob("mcmaster_*.png")) if TRAIN.is_dir() else []
    if not files:
        pytest.skip(f"training photos not found at {TRAIN} (set FASTCODEC_SHARED)")
    return np.asarray(Image.open(files[0]).convert("RGB"))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (17, 33), (64, 48)])
@pytest.mark.parametrize("kind", ["noise", "smooth", "flat"])
def test_lossless_round_trip(codec, shape, kind):
    h, w = shape
    img = {"noise": lambda: noise(h, w), "smooth": lambda: synthetic(h, w),
           "flat": lambda: np.full((h, w, 3), 77, np.uint8)}[kind]()
    data = codec.compress(img, lossless=True)
    assert np.array_equal(codec.decompress(data), img)
    inf = codec.info(data)
    assert (inf.version, inf.max_error, inf.lossless, inf.quality, inf.model_id) == (3, 0, True, None, None)


def test_extremes_and_edges(codec):
    # values at both ends of the range and sharp jumps: the colour differences span -255..255
    img = np.zeros((24, 40, 3), np.uint8)
    img[::2, :, 0] = 255
    img[:, ::3, 2] = 255
    img[5:9, 7:30, 1] = 255
    for k in (0, 1, 7, 32):
        out = codec.decompress(codec.compress(img, max_error=k))
        assert np.abs(out.astype(int) - img).max() <= k


def test_photo_lossless_and_smaller_than_png(codec):
    img = photo()
    data = codec.compress(img, lossless=True)
    assert np.array_equal(codec.decompress(data), img)
    png = io.BytesIO()
    Image.fromarray(img).save(png, "PNG", optimize=True)
    assert len(data) < 0.95 * len(png.getvalue())  # a noisy film scan: PNG's best case


@pytest.mark.parametrize("k", [1, 2, 5, 32])
def test_near_lossless_bound(codec, k):
    img = synthetic(50, 70, seed=k)
    out = codec.decompress(codec.compress(img, max_error=k))
    err = np.abs(out.astype(int) - img)
    assert err.max() <= k and err.max() > 0


def test_near_lossless_smaller_as_error_grows(codec):
    img = photo()[:160, :200]
    sizes = [len(codec.compress(img, max_error=k)) for k in (0, 1, 2, 4, 8)]
    assert all(a > b for a, b in zip(sizes, sizes[1:])), sizes


def test_gray_and_alpha(codec):
    g = synthetic(30, 40)[..., 1]
    out = codec.decompress(codec.compress(g, lossless=True))
    assert out.shape == (30, 40) and np.array_equal(out, g)
    # RGBA: alpha exact, and the colours under fully transparent pixels too (no fill in lossless mode)
    rgba = np.dstack([noise(30, 40), np.where(np.arange(40) < 20, 0, 180).astype(np.uint8)[None].repeat(30, 0)])
    out = codec.decompress(codec.compress(rgba, lossless=True))
    assert np.array_equal(out, rgba)
    la = np.dstack([g, rgba[..., 3]])
    out = codec.decompress(codec.compress(la, max_error=2))
    assert out.shape == la.shape and np.array_equal(out[..., 1], la[..., 1])
    assert np.abs(out[..., 0].astype(int) - g).max() <= 2


def test_metadata_kept(codec):
    im = Image.fromarray(synthetic(20, 30))
    exif = im.getexif()
    exif[0x010F] = "Lossless camera"
    im.info["exif"] = exif.tobytes()
    data = codec.compress(im, lossless=True)
    assert codec.decompress_image(data).getexif()[0x010F] == "Lossless camera"
    assert set(codec.metadata(data)) == {"exif"}
    assert codec.metadata(codec.compress(im, lossless=True, keep_metadata=False)) == {}


def test_stripes_box_and_reduce(codec, monkeypatch):
    monkeypatch.setattr(codec_mod, "STRIPE_PIXELS", 16 * 50)  # 16-row stripes
    img = noise(70, 50, seed=3)
    data = codec.compress(img, lossless=True)
    hdr, _, stripes, _ = fmt.parse_all(data)
    assert hdr.stripe_rows == 16 and len(stripes) == 5
    assert np.array_equal(codec.decompress(data), img)
    calls = []
    real = _core.pixel_decode_stripe
    monkeypatch.setattr(_core, "pixel_decode_stripe", lambda *a, **k: calls.append(1) or real(*a, **k))
    box = (5, 20, 45, 40)  # rows 20..39: stripes 2 and 3 only
    assert np.array_equal(codec.decompress(data, box=box), img[20:40, 5:45])
    assert len(calls) == 2
    red = codec.decompress(data, reduce=4)
    assert red.shape == (18, 13, 3)
    assert np.array_equal(red, np.asarray(Image.fromarray(img).reduce(4)))
    assert np.array_equal(codec.decompress(data, reduce=2, box=(3, 4, 10, 9)),
                          np.asarray(Image.fromarray(img).reduce(2))[4:9, 3:10])


def test_stripe_rows():
    assert codec_mod.stripe_rows(512, 768) == 256  # a Kodak image: two stripes, for two cores
    assert codec_mod.stripe_rows(400, 500) == 400  # below 2^18 pixels: one
    assert codec_mod.stripe_rows(4000, 6000) == 174  # 24 MP: 23 stripes of about 2^20 pixels
    assert codec_mod.stripe_rows(5, 1 << 20) == 5  # never below 16 rows, nor above the image
    assert codec_mod.stripe_rows(100000, 1) == 100000


@pytest.mark.parametrize("kwargs, msg", [
    (dict(lossless=True, quality=80), "quality"),
    (dict(lossless=True, target_bpp=2.0), "target_bpp"),
    (dict(max_error=2, target_size=1000), "target_size"),
    (dict(lossless=True, effort=2), "effort"),
    (dict(lossless=True, max_error=2), "max_error=0"),
    (dict(max_error=-1), "max_error"),
    (dict(max_error=33), "max_error"),
    (dict(max_error=1.5), "max_error"),
    (dict(max_error=True), "max_error"),
    (dict(lossless="yes"), "lossless"),
])
def test_argument_errors(codec, kwargs, msg):
    with pytest.raises(ArgumentError, match=msg):
        codec.compress(synthetic(8, 8), **kwargs)


def test_refuses_what_it_cannot_keep(codec):
    im32 = Image.fromarray((np.arange(64 * 32, dtype=np.int32).reshape(32, 64) * 4099), "I")
    assert im32.mode == "I" and np.asarray(im32).max() > 65535
    with pytest.raises(ImageError, match="32-bit"):
        codec.compress(im32, lossless=True)
    with pytest.raises(ImageError, match="alpha"):
        codec.compress(np.zeros((8, 8, 4), np.uint16), lossless=True)
    with pytest.raises(ImageError, match="uint16 is taken by lossless"):
        codec.compress(np.zeros((8, 8, 3), np.uint16), quality=50)
    cmyk = Image.new("CMYK", (8, 8), (10, 20, 30, 40))
    with pytest.raises(ImageError, match="CMYK"):
        codec.compress(cmyk, max_error=1)
    im16 = Image.fromarray((np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 31))
    assert im16.mode.startswith("I;16")
    codec.compress(im16)  # the lossy codec scales it, as documented
    wide = Image.fromarray(synthetic(16, 20))
    wide.info["icc_profile"] = icc_profile()  # a wide-gamut profile: kept as it is ...
    data = codec.compress(wide, lossless=True)
    assert np.array_equal(codec.decompress(data), np.asarray(wide)) and "icc" in codec.metadata(data)
    with pytest.raises(ImageError, match="ICC profile"):  # ... or applied, which would change the pixels
        codec.compress(wide, lossless=True, keep_metadata=False)


def test_golden_files_decode():
    expected = json.loads((GOLDEN / "expected.json").read_text())
    assert len(expected) >= 5
    for name, e in expected.items():
        data = (GOLDEN / name).read_bytes()
        px = fastcodec.decompress(data)
        assert list(px.shape) == e["shape"], name
        assert str(px.dtype) == e.get("dtype", "uint8"), name
        assert hashlib.sha256(px.astype(px.dtype.newbyteorder("<")).tobytes()).hexdigest() == e["sha256"], name
        assert fastcodec.info(data).max_error == e["max_error"]


def _stripe_file(data, payload):
    """data with its only stripe replaced by payload (checksums recomputed)."""
    hdr, _, _, ext = fmt.parse_all(data)
    return fmt.pack_pixels(hdr.width, hdr.height, hdr.channels, hdr.max_error, hdr.stripe_rows, [payload],
                           [(t, bytes(v)) for t, v in ext.items()], hdr.flags)


def test_rejects_damaged_files(codec):
    img = synthetic(24, 32)
    data = codec.compress(img, lossless=True)
    hs = fmt.pixel_header_size(1)
    bad = bytearray(data)
    bad[hs + 5] ^= 0x10
    with pytest.raises(FormatError, match="stripe 1 of 1"):
        codec.decompress(bytes(bad))
    with pytest.raises(FormatError, match="truncated"):
        codec.decompress(data[:-1])
    with pytest.raises(FormatError, match="trailing"):
        codec.decompress(data + b"\0")
    def patched(offset, value):  # a header field changed, the header checksum recomputed
        head = bytearray(data[:hs - 4])
        head[offset:offset + len(value)] = value
        return bytes(head) + struct.pack("<I", zlib.crc32(bytes(head))) + data[hs:]

    for offset, value, msg in ((7, b"\x21", "max_error 33"), (16, struct.pack("<I", 0), "stripe height 0"),
                               (16, struct.pack("<I", 25), "stripe height 25"),
                               (16, struct.pack("<I", 15), "stripe height 15"), (6, b"\x02", "channel count 2"),
                               (5, b"\x08", "flags"), (5, b"\x03", "never set together"),
                               (20, b"\x09", "extension count 9"),
                               (8, struct.pack("<I", 0), "image size")):
        with pytest.raises(FormatError, match=msg):
            codec.decompress(patched(offset, value))
    assert np.array_equal(codec.decompress(fmt.repack(data)), img)
    payload = fmt.parse_all(data)[2][0]
    with pytest.raises(FormatError, match="truncated"):
        codec.decompress(_stripe_file(data, bytes(payload)[: len(payload) // 2]))
    with pytest.raises(FormatError, match="left over"):
        codec.decompress(_stripe_file(data, bytes(payload) + b"\0\0"))


def test_garbage_stripes_fail_cleanly(codec):
    """Random payloads and bit flips (with valid checksums): every one decodes or raises FormatError."""
    img = synthetic(20, 24)
    rng = np.random.default_rng(5)
    for k in (0, 2):
        data = codec.compress(img, max_error=k)
        payload = bytearray(fmt.parse_all(data)[2][0])
        outcomes = set()
        for i in range(300):
            p = bytearray(payload) if i % 2 else bytearray(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8))
            if i % 2:
                for _ in range(1 + i % 4):
                    p[rng.integers(0, len(p))] ^= 1 << int(rng.integers(0, 8))
            try:
                out = codec.decompress(_stripe_file(data, bytes(p)))
                assert out.shape == img.shape
                outcomes.add("ok")
            except FormatError:
                outcomes.add("error")
        assert "error" in outcomes


def test_cli_lossless(tmp_path):
    from fastcodec.cli import main

    src = tmp_path / "a.png"
    img = noise(21, 34, seed=9)
    Image.fromarray(img).save(src)
    assert main(["compress", str(src), "--lossless", "-o", str(tmp_path / "a.fcc")]) == 0
    assert main(["decompress", str(tmp_path / "a.fcc"), "-o", str(tmp_path / "b.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)
    assert main(["compress", str(src), "--max-error", "2", "-o", str(tmp_path / "c.fcc")]) == 0
    assert fastcodec.info(tmp_path / "c.fcc").max_error == 2
    with pytest.raises(SystemExit):  # argparse: not allowed together
        main(["compress", str(src), "--lossless", "-q", "50", "-o", str(tmp_path / "d.fcc")])


def test_cli_info(tmp_path, capsys):
    from fastcodec.cli import main

    p = tmp_path / "a.fcc"
    p.write_bytes(fastcodec.compress(synthetic(16, 16), max_error=1))
    assert main(["info", str(p)]) == 0
    assert "near-lossless (max error 1)" in capsys.readouterr().out
    assert main(["info", "--json", str(p)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["max_error"] == 1 and d["model"] is None and d["format_version"] == 3 and not d["copies"]
    assert main(["info", str(GOLDEN / "rgb_copies.fcc")]) == 0
    assert "with copies of earlier pixels" in capsys.readouterr().out


def test_pillow(tmp_path):
    img = noise(12, 20, seed=2)
    p = tmp_path / "x.fcc"
    Image.fromarray(img).save(p, lossless=True)
    with Image.open(p) as im:
        assert im.format == "FCC" and im.mode == "RGB" and im.info["lossless"]
        assert np.array_equal(np.asarray(im), img)
    Image.fromarray(img).save(p, max_error=3)
    with Image.open(p) as im:
        assert im.info["max_error"] == 3
        assert np.abs(np.asarray(im).astype(int) - img).max() <= 3


def test_native_stripe_api():
    img = noise(9, 11, seed=4)
    data, recon, table_bits, sample_bits, copies, plain_bits = _core.pixel_encode_stripe(img, 2, True)
    assert np.abs(recon.astype(int) - img).max() <= 2
    assert 8 * len(data) - 7 <= table_bits + sample_bits <= 8 * len(data)
    assert np.array_equal(_core.pixel_decode_stripe(data, 11, 9, 3, 2), recon)
    strided = np.asarray(Image.fromarray(noise(10, 30)).transpose(Image.Transpose.TRANSPOSE))[:, ::2]
    d2, r2, _, _, _, _ = _core.pixel_encode_stripe(strided, 0, True)  # any strides, no copy
    assert np.array_equal(r2, strided) and np.array_equal(_core.pixel_decode_stripe(d2, 5, 30, 3, 0), strided)
    with pytest.raises(ArgumentError, match="max_error"):
        _core.pixel_encode_stripe(img, 40)
    with pytest.raises(FormatError, match="truncated"):
        _core.pixel_decode_stripe(data[:3], 11, 9, 3, 2)


def test_ray_batch_lossless():
    """fastcodec.ray's batch callable passes lossless / max_error through (called directly: no cluster)."""
    from fastcodec.ray import CompressBatch

    img = noise(10, 14, seed=8)
    png = io.BytesIO()
    Image.fromarray(img).save(png, "PNG")
    out = CompressBatch(lossless=True)({"bytes": [png.getvalue()], "path": ["a.png"]})
    assert out["error"][0] == ""
    assert np.array_equal(fastcodec.decompress(out["fcc"][0]), img)
    out = CompressBatch(max_error=2)({"bytes": [png.getvalue()], "path": ["a.png"]})
    assert fastcodec.info(out["fcc"][0]).max_error == 2


def screenshot(rows=8):
    """Text rows in boxes on a flat background, drawn by Pillow: a small screenshot."""
    from PIL import ImageDraw

    im = Image.new("RGB", (400, 40 + rows * 32), (246, 246, 246))
    d = ImageDraw.Draw(im)
    d.rectangle((0, 0, 400, 30), fill=(40, 60, 90))
    for i in range(rows):
        d.rectangle((10, 40 + i * 32, 390, 66 + i * 32), outline=(200, 200, 210), fill=(255, 255, 255))
        d.text((16, 46 + i * 32), f"Row {i}: the quick brown fox jumps over the lazy dog {i * 37 % 101}", fill=(20, 20, 20))
    return np.asarray(im)


def test_graphics_smaller_than_png(codec):
    """A screenshot repeats its glyphs and boxes: copies of earlier pixels (format flag 1) code
    it in a small fraction of what coding each pixel takes, and of PNG's size."""
    x = screenshot()
    data = codec.compress(x, lossless=True)
    assert np.array_equal(codec.decompress(data), x)
    hdr = fmt.parse(data)[0]
    assert hdr.flags & fmt.FLAG_COPIES
    png = io.BytesIO()
    Image.fromarray(x).save(png, "PNG", optimize=True)
    assert len(data) < 0.25 * len(png.getvalue()), (len(data), len(png.getvalue()))
    plain = _core.pixel_encode_stripe(x, 0)[0]  # without copies
    assert len(data) < 0.3 * len(plain), (len(data), len(plain))
    # near-lossless stripes never copy (the copies would be of decoded, not original, pixels),
    # so compress(max_error=k) keeps such an image exactly: smaller, and within k all the more
    near = codec.compress(x, max_error=2)
    assert near == data and fastcodec.info(near).max_error == 0
    assert _core.pixel_encode_stripe(x, 2)[2] + _core.pixel_encode_stripe(x, 2)[3] > 8 * 5 * len(data)


def test_near_lossless_stays_near_lossless(codec, monkeypatch):
    """Where lossless coding is larger (a photograph), max_error=k files stay near-lossless; the
    lossless try only happens below NEAR_TRY_LOSSLESS_BPP."""
    x = synthetic(64, 80)  # 14.5 bpp lossless, 5 with max_error 4
    calls = []
    real = codec_mod._pixel_stripes
    monkeypatch.setattr(codec_mod, "_pixel_stripes", lambda p, k: calls.append(k) or real(p, k))
    monkeypatch.setattr(codec_mod, "NEAR_TRY_LOSSLESS_BPP", 100.0)
    data = codec.compress(x, max_error=4)
    assert fastcodec.info(data).max_error == 4 and calls == [4, 0]  # tried, and larger
    assert len(data) < len(codec.compress(x, lossless=True))
    calls.clear()
    monkeypatch.setattr(codec_mod, "NEAR_TRY_LOSSLESS_BPP", 2.0)
    assert fastcodec.info(codec.compress(x, max_error=4)).max_error == 4 and calls == [4]


def test_copies_in_some_stripes(codec):
    """An image of two stripes, the first a screenshot, the second noise: only the first copies;
    the second, coded without a mode bit, gets the mode bit 0 in front."""
    shot = np.tile(screenshot(), (2, 3, 1))[:520, :1024]
    img = np.concatenate([shot, noise(520, 1024, seed=3)], axis=0)  # 1040 x 1024 > 2^20 pixels: 2 stripes
    data = codec.compress(img, lossless=True)
    hdr, _, stripes = fmt.parse(data)
    assert hdr.flags & fmt.FLAG_COPIES and len(stripes) == 2
    assert [s[0] >> 7 for s in stripes] == [1, 0]
    assert np.array_equal(codec.decompress(data), img)
    assert np.array_equal(codec.decompress(data, box=(100, 500, 900, 700)), img[500:700, 100:900])


def test_copies_one_stripe_for_graphics(codec, monkeypatch):
    """An image that would be split into stripes but whose copies pay a lot is coded as one
    stripe (repeats across the split count); a photograph-like one keeps its stripes."""
    monkeypatch.setattr(codec_mod, "STRIPE_SPLIT", 1 << 14)
    x = screenshot()  # 296 x 400 pixels: two stripes from 2^14 pixels
    hdr = fmt.parse(codec.compress(x, lossless=True))[0]
    assert hdr.stripe_rows == x.shape[0]
    y = synthetic(296, 400)
    hdr = fmt.parse(codec.compress(y, lossless=True))[0]
    assert hdr.stripe_rows < y.shape[0]


@pytest.mark.parametrize("nbits", [1, 7, 8, 9, 15, 16, 17, 64, 333])
def test_mode_bit_0(nbits):
    rng = np.random.default_rng(nbits)
    bits = "1" + "".join(rng.choice(["0", "1"], nbits - 1))
    data = int(bits + "0" * (-nbits % 8), 2).to_bytes(-(-nbits // 8), "big")
    out = codec_mod._mode_bit_0(data, nbits)
    assert len(out) == -(-(nbits + 1) // 8)
    assert format(int.from_bytes(out, "big"), f"0{8 * len(out)}b") == "0" + bits + "0" * (-(nbits + 1) % 8)


def test_lossy_request_keeps_synthetic_images_exactly(codec, monkeypatch):
    """compress() at a quality or target codes a synthetic image losslessly too and returns that
    file where it is the smaller one (or fits the target): exact, and a fraction of the size."""
    x = screenshot()
    n = x.shape[0] * x.shape[1]
    data = codec.compress(x)  # quality 75
    assert fastcodec.info(data).lossless and np.array_equal(codec.decompress(data), x)
    assert codec.compress(x, quality=10) == data
    assert codec.compress(x, target_bpp=8 * len(data) / n + 0.01) == data
    assert codec.compress(x, target_size=len(data) // 2) == data  # nothing fits: the smallest
    monkeypatch.setattr(codec_mod, "SYNTHETIC_EQUAL_LEFT", 2.0)  # off
    lossy = codec.compress(x)
    assert fastcodec.info(lossy).quality == 75 and len(data) < len(lossy) / 5
    monkeypatch.setattr(codec_mod, "SYNTHETIC_EQUAL_LEFT", 0.6)
    # mostly flat, but a block of noise makes the exact file large: the learned codec's at the target
    y = x.copy()
    y[40:140, 40:240] = noise(100, 200, seed=9)
    d = codec.compress(y, target_bpp=1.0)
    assert fastcodec.info(d).quality is not None and 8 * len(d) <= 1.0 * n
    assert len(codec.compress(y, lossless=True)) > len(d)


def test_photographs_are_not_tried_losslessly(codec, monkeypatch):
    """The synthetic-image test (pixels equal to their left neighbour) lets photographs through
    to the learned codec without a lossless try."""
    calls = []
    real = codec_mod._pixel_stripes
    monkeypatch.setattr(codec_mod, "_pixel_stripes", lambda p, k: calls.append(k) or real(p, k))
    assert fastcodec.info(codec.compress(synthetic(64, 96), quality=50)).quality == 50
    kodak = sorted((SHARED / "data" / "kodak").glob("*.png")) if (SHARED / "data" / "kodak").is_dir() else []
    for p in kodak[:24:6]:
        assert fastcodec.info(codec.compress(p, quality=50)).quality == 50
    assert calls == []


# ---- 16-bit samples (format version 3, flag bit 1; docs/format.md "16-bit samples") ----

def deep_image(h, w, c=3, bits=16, seed=0):
    """A smooth 16-bit image with noise in its low bits (a camera's or a scanner's), values < 2^bits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    top = (1 << bits) - 1
    phase = np.arange(c)[None, None, :]
    base = top * (0.5 + 0.4 * np.sin(x[..., None] / 9.0 + phase) * np.cos(y[..., None] / 7.0))
    img = base + rng.normal(0, max(1.0, top / 2000), (h, w, c))
    img = np.clip(np.rint(img), 0, top).astype(np.uint16)
    return img[..., 0] if c == 1 else img


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_16bit_round_trip(codec, c, bits):
    img = deep_image(37, 53, c, bits)
    data = codec.compress(img, lossless=True)
    out = codec.decompress(data)
    assert out.dtype == np.uint16 and np.array_equal(out, img)
    inf = codec.info(data)
    assert (inf.bits, inf.lossless, inf.channels) == (16, True, c)
    assert fmt.parse(data)[0].flags == fmt.FLAG_DEEP | fmt.FLAG_CONTEXTS2
    # fewer bits for fewer significant bits: the coder scales its contexts to the samples' range
    assert inf.bpp < c * (bits + 1)
    for k in (1, 4, 32):
        near = codec.decompress(codec.compress(img, max_error=k))
        assert near.dtype == np.uint16 and np.abs(near.astype(int) - img).max() <= k


def test_16bit_extremes(codec):
    img = np.zeros((20, 30, 3), np.uint16)
    img[::2, :, 0] = 65535
    img[:, ::3, 2] = 65535
    img[4:9, 5:25, 1] = 65535
    for k in (0, 3, 32):
        out = codec.decompress(codec.compress(img, max_error=k))
        assert np.abs(out.astype(int) - img).max() <= k
    noisy = np.random.default_rng(2).integers(0, 65536, (17, 19), dtype=np.uint16)
    assert np.array_equal(codec.decompress(codec.compress(noisy, lossless=True)), noisy)


def test_16bit_smaller_than_png(codec, tmp_path):
    img = deep_image(96, 128, 1, 12)
    data = codec.compress(img, lossless=True)
    Image.fromarray(img).save(tmp_path / "a.png", optimize=True)
    assert len(data) < 0.8 * (tmp_path / "a.png").stat().st_size


def test_16bit_from_pillow_and_stripes(codec):
    img = deep_image(70, 41, 1, 16, seed=3)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    data = codec.compress(buf.getvalue(), lossless=True)
    assert np.array_equal(codec.decompress(data), img)
    im = codec.decompress_image(data)
    assert im.mode == "I;16" and np.array_equal(np.asarray(im), img)
    old = codec_mod.STRIPE_PIXELS
    codec_mod.STRIPE_PIXELS = 16 * 41
    try:
        data = codec.compress(deep_image(70, 41, 3, 14, seed=4), lossless=True)
    finally:
        codec_mod.STRIPE_PIXELS = old
    hdr = fmt.parse(data)[0]
    assert len(hdr.chunk_sizes) == 5 and hdr.flags == fmt.FLAG_DEEP | fmt.FLAG_CONTEXTS2
    full = codec.decompress(data)
    assert np.array_equal(codec.decompress(data, box=(3, 20, 30, 50)), full[20:50, 3:30])
    small = codec.decompress(data, reduce=4)
    assert small.dtype == np.uint16 and small.shape == (18, 11, 3)
    want = full[:4, :4].reshape(16, 3).astype(np.int64).sum(0)
    assert np.array_equal(small[0, 0], (want + 8) // 16)


def _read_png16(data):
    """A minimal reader of write_png16's output: IHDR and IDAT, every row filtered with Sub."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        chunks.setdefault(kind, []).append(body)
        pos += 12 + n
    w, h, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert depth == 16
    c = {0: 1, 2: 3}[color]
    raw = np.frombuffer(zlib.decompress(b"".join(chunks[b"IDAT"])), np.uint8).reshape(h, 1 + 2 * c * w)
    assert (raw[:, 0] == 1).all()
    rows = raw[:, 1:].astype(np.int64)
    for i in range(2 * c, rows.shape[1]):
        rows[:, i] = (rows[:, i] + rows[:, i - 2 * c]) % 256
    px = rows.astype(np.uint8).view(">u2").reshape(h, w, c).astype(np.uint16)
    return (px[..., 0] if c == 1 else px), chunks


@pytest.mark.parametrize("c", [1, 3])
def test_16bit_written_as_png_and_tiff(codec, tmp_path, c):
    img = deep_image(23, 31, c, 16, seed=5)
    src = tmp_path / "a.fcc"
    src.write_bytes(fastcodec.compress(img, lossless=True))
    fastcodec.decompress_file(src, tmp_path / "a.png")
    px, chunks = _read_png16((tmp_path / "a.png").read_bytes())
    assert np.array_equal(px, img)
    if c == 1:  # Pillow reads 16-bit gray PNG and TIFF
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
        fastcodec.decompress_file(src, tmp_path / "a.tif")
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a.tif")), img)
    else:
        with pytest.raises(ArgumentError, match="16-bit RGB image cannot be written as TIFF"):
            fastcodec.decompress_file(src, tmp_path / "a.tif")
        with pytest.raises(ArgumentError, match="no PIL.Image mode"):
            fastcodec.decompress_image(src)
    with pytest.raises(ArgumentError, match="holds 8 bits"):
        fastcodec.decompress_file(src, tmp_path / "a.jpg")
    assert not (tmp_path / "a.jpg").exists()
    # an ICC profile travels into the PNG
    if c == 1:
        icc = icc_profile("GRAY")
        im = Image.fromarray(img)
        im.info["icc_profile"] = icc
        data = fastcodec.compress(im, lossless=True)
        assert fastcodec.metadata(data)["icc"] == icc
        (tmp_path / "b.fcc").write_bytes(data)
        fastcodec.decompress_file(tmp_path / "b.fcc", tmp_path / "b.png")
        assert Image.open(tmp_path / "b.png").info.get("icc_profile") == icc


def test_16bit_file_rules(codec):
    img = deep_image(16, 20, 3, 16, seed=6)
    data = codec.compress(img, lossless=True)
    hdr, _, stripes, _ = fmt.parse_all(data)
    payload = bytes(stripes[0])
    # the same stripe read as 8-bit samples (flag cleared) is not this image
    as8 = fmt.pack_pixels(hdr.width, hdr.height, 3, 0, hdr.stripe_rows, [payload])
    try:
        assert not np.array_equal(codec.decompress(as8), img)
    except FormatError:
        pass
    # a 16-bit file with an alpha plane is invalid
    alpha = fmt.encode_alpha(np.zeros((16, 20), np.uint8))
    head = fmt.pack_pixels(hdr.width, hdr.height, 3, 0, hdr.stripe_rows, [payload], [(fmt.EXT_ALPHA, alpha)],
                           fmt.FLAG_DEEP)
    with pytest.raises(FormatError, match="alpha"):
        codec.decompress(head)
    with pytest.raises(ValueError):
        fmt.pack_pixels(hdr.width, hdr.height, 3, 0, hdr.stripe_rows, [payload], (), fmt.FLAG_DEEP | fmt.FLAG_COPIES)
    # a sample scale above 8 (the stripe's first four bits)
    bad = bytes([payload[0] | 0xF0]) + payload[1:]
    with pytest.raises(FormatError, match="sample scale"):
        codec.decompress(_stripe_file(data, bad))
    # garbage stripes: each decodes or raises FormatError
    rng = np.random.default_rng(9)
    for i in range(200):
        junk = bytearray(payload)
        for _ in range(1 + i % 4):
            junk[int(rng.integers(len(junk)))] ^= 1 << int(rng.integers(8))
        try:
            out = codec.decompress(_stripe_file(data, bytes(junk)))
            assert out.shape == img.shape and out.dtype == np.uint16
        except FormatError:
            pass


def test_16bit_sample_map(codec):
    """A 10-bit image scaled to 16 bits uses every 64th value: coded as the ranks of its values,
    which the sample map lists, it takes about what the 10-bit image itself takes."""
    ten = deep_image(48, 64, 3, 10, seed=7)
    scaled = np.rint(ten * (65535 / 1023)).astype(np.uint16)
    data = codec.compress(scaled, lossless=True)
    assert np.array_equal(codec.decompress(data), scaled)
    assert np.array_equal(codec.decompress(data, box=(5, 6, 40, 30)), scaled[6:30, 5:40])
    hdr, _, _, ext = fmt.parse_all(data)
    assert fmt.EXT_MAP in ext and fmt.EXT_MAP not in codec.metadata(data)
    assert np.array_equal(fmt.decode_map(ext[fmt.EXT_MAP]), np.unique(scaled))
    plain = codec.compress(ten, lossless=True)
    assert fmt.EXT_MAP not in fmt.parse_all(plain)[3]  # 10-bit values fill their range: no map
    assert len(data) < 1.05 * len(plain)
    # near-lossless files have no map (the bound is in the samples' own units), so within a
    # max_error below the step of 64 the exact file of ranks is the smaller, and is returned
    near = codec.compress(scaled, max_error=8)
    assert codec.info(near).max_error == 0 and near == data
    coarse = codec.compress(deep_image(48, 64, 3, 16, seed=7), max_error=8)  # every value used: no map
    assert codec.info(coarse).max_error == 8 and fmt.EXT_MAP not in fmt.parse_all(coarse)[3]


def test_16bit_sample_map_rules(codec):
    ten = deep_image(20, 24, 1, 10, seed=8)
    scaled = (ten.astype(np.uint32) * 64).astype(np.uint16)
    data = codec.compress(scaled, lossless=True)
    hdr, _, stripes, ext = fmt.parse_all(data)
    payload = [bytes(x) for x in stripes]

    def with_map(m, flags=hdr.flags):
        return fmt.pack_pixels(hdr.width, hdr.height, 1, 0, hdr.stripe_rows, payload, [(fmt.EXT_MAP, m)], flags)

    values = fmt.decode_map(ext[fmt.EXT_MAP])
    used = np.zeros(65536, bool)
    used[values] = True
    assert np.array_equal(codec.decompress(with_map(fmt.encode_map(used))), scaled)
    few = used.copy()
    few[values[-1]] = False  # one value too few: the largest rank points past the map
    with pytest.raises(FormatError, match="outside the sample map"):
        codec.decompress(with_map(fmt.encode_map(few)))
    with pytest.raises(FormatError, match="lists no value"):
        codec.decompress(with_map(fmt.encode_map(np.zeros(65536, bool))))
    with pytest.raises(FormatError, match="exactly 8192 bytes"):
        codec.decompress(with_map(b"\x00" + zlib.compress(b"\xff" * 100)))
    with pytest.raises(FormatError, match="damaged"):
        codec.decompress(with_map(b"\x00garbage"))
    with pytest.raises(FormatError, match="method 7"):
        codec.decompress(with_map(b"\x07" + fmt.encode_map(used)[1:]))
    # a map in an 8-bit file, or in a learned one, is invalid
    gray8 = codec.compress(synthetic(16, 16)[..., 0], lossless=True)
    h8, _, s8, _ = fmt.parse_all(gray8)
    with pytest.raises(FormatError, match="16-bit files only"):
        codec.decompress(fmt.pack_pixels(16, 16, 1, 0, h8.stripe_rows, [bytes(x) for x in s8],
                                         [(fmt.EXT_MAP, fmt.encode_map(used))]))
    learned = codec.compress(synthetic(16, 16), quality=50)
    lh, z, chunks, _ = fmt.parse_all(learned)
    bad = fmt.pack(16, 16, lh.channels, lh.quality, lh.model_id, bytes(z), [bytes(c) for c in chunks],
                   [(fmt.EXT_MAP, fmt.encode_map(used))])
    with pytest.raises(FormatError, match="16-bit files only"):
        codec.decompress(bad)


def _png(img, filters, color=2, interlace=0, icc=None):
    """A 16-bit PNG of img (H, W, 3 or 4) uint16, row y filtered with filters[y % len(filters)]."""
    h, w = img.shape[:2]
    bpp = 2 * img.shape[2]
    raw = np.ascontiguousarray(img, dtype=">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int64)
    out = bytearray()
    for y in range(h):
        t = filters[y % len(filters)]
        cur = raw[y]
        up = raw[y - 1] if y else np.zeros_like(cur)
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        p = left + up - ul
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
        pred = [0, left, up, (left + up) // 2, paeth][t]
        out += bytes([t]) + ((cur - pred) % 256).astype(np.uint8).tobytes()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    iccp = chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc)) if icc else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, interlace))
            + iccp + chunk(b"IDAT", zlib.compress(bytes(out))) + chunk(b"IEND", b""))


def test_16bit_rgb_png_read_in_full(codec, tmp_path):
    """Pillow reads a 16-bit RGB PNG as 8 bits; lossless and max_error coding read all 16 (every
    PNG row filter), from a path or bytes; the lossy codec takes Pillow's 8 bits."""
    img = deep_image(21, 26, 3, 16, seed=10)
    png = _png(img, [0, 1, 2, 3, 4, 4, 3])
    assert Image.open(io.BytesIO(png)).mode == "RGB"
    (tmp_path / "a.png").write_bytes(png)
    for src in (png, tmp_path / "a.png", str(tmp_path / "a.png")):
        data = codec.compress(src, lossless=True)
        assert np.array_equal(codec.decompress(data), img)
    near = codec.decompress(codec.compress(png, max_error=7))
    assert near.dtype == np.uint16 and np.abs(near.astype(int) - img).max() <= 7
    assert codec.decompress(codec.compress(png, quality=60)).dtype == np.uint8
    # our own writer's PNG too, and its round trip through decompress_file
    (tmp_path / "b.fcc").write_bytes(codec.compress(png, lossless=True))
    fastcodec.decompress_file(tmp_path / "b.fcc", tmp_path / "b.png")
    assert np.array_equal(codec.decompress(codec.compress(tmp_path / "b.png", lossless=True)), img)
    # a wide-gamut profile is kept with the samples untouched, or refused where it would be applied
    wide = _png(img, [4], icc=icc_profile())
    data = codec.compress(wide, lossless=True)
    assert np.array_equal(codec.decompress(data), img) and codec.metadata(data)["icc"] == icc_profile()
    with pytest.raises(ImageError, match="ICC profile"):
        codec.compress(wide, lossless=True, keep_metadata=False)
    # what it refuses, with the reason
    with pytest.raises(ImageError, match="interlaced"):
        codec.compress(_png(img, [0], interlace=1), lossless=True)
    with pytest.raises(ImageError, match="RGBA"):
        codec.compress(_png(np.dstack([img, img[..., :1]]), [0], color=6), lossless=True)
    with Image.open(io.BytesIO(png)) as im:  # an image Pillow opened: its 8 bits are all it has
        with pytest.raises(ImageError, match="pass the file"):
            codec.compress(im, lossless=True)
    bad = bytearray(_png(img, [1]))
    bad[-30] ^= 0xFF  # damage inside the zlib stream (its checksum or data)
    with pytest.raises(ImageError):
        codec.compress(bytes(bad), lossless=True)


def test_contexts_chosen_where_copies_pay(codec):
    """Contexts 2 (flag 4) make photographs smaller; a file whose stripes copy pixels is coded with
    both contexts and keeps the smaller (a screenshot: the first ones)."""
    x = screenshot()
    data = codec.compress(x, lossless=True)
    hdr = fmt.parse(data)[0]
    assert len(hdr.chunk_sizes) == 1 and hdr.flags & fmt.FLAG_COPIES
    sizes = {c2: len(_core.pixel_encode_stripe(x, 0, matches=True, contexts2=c2)[0]) for c2 in (False, True)}
    assert hdr.chunk_sizes[0] == min(sizes.values())
    assert bool(hdr.flags & fmt.FLAG_CONTEXTS2) == (sizes[True] < sizes[False])
    assert np.array_equal(codec.decompress(data), x)
    img = noise(64, 80)  # no copies: contexts 2
    assert fmt.parse(codec.compress(img, lossless=True))[0].flags == fmt.FLAG_CONTEXTS2
