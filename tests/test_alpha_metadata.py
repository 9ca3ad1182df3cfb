"""Alpha planes and metadata (format version 2): transparency is kept losslessly, EXIF and XMP
travel with the file, and everything else about the file stays as in version 1."""
import io
import json

import numpy as np
import pytest
from PIL import Image

import fastcodec
from conftest import icc_profile, psnr, synthetic, tiny_tiles
from fastcodec import format as fmt
from fastcodec.cli import main as cli

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="image/jpeg"/></rdf:RDF>'
       b'</x:xmpmeta>')


def cutout(h, w, seed=0):
    """An alpha plane like a cut-out photo: opaque, a transparent hole, a soft edge."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.clip((np.hypot(yy - h / 2, xx - w / 2) - min(h, w) / 5) * 40, 0, 255).astype(np.uint8)
    a[: h // 4, : w // 4] = np.random.default_rng(seed).integers(0, 256, (h // 4, w // 4))
    return a


def exif_bytes(**tags):
    ex = Image.Exif()
    for k, v in tags.items():
        ex[{"make": 0x010F, "orientation": 0x0112, "date": 0x0132}[k]] = v
    return ex.tobytes()


def test_alpha_is_lossless_and_leaves_the_colour_coding_alone(codec):
    rgb, a = synthetic(60, 90, seed=3), cutout(60, 90)
    data = codec.compress(np.dstack([rgb, a]), quality=50, exact=True)
    inf = codec.info(data)
    assert (inf.version, inf.alpha, inf.output_channels, inf.metadata) == (2, True, 4, ())
    out = codec.decompress(data)
    assert out.shape == (60, 90, 4) and np.array_equal(out[..., 3], a)
    plain = codec.compress(rgb, quality=50)
    assert fastcodec.info(plain).version == 1
    assert np.array_equal(out[..., :3], codec.decompress(plain))  # the same latents, the same colours
    assert len(data) - len(plain) == inf.extension_sizes[0][1] + 1 + 9  # the plane, the count, its entry
    im = codec.decompress_image(data)
    assert im.mode == "RGBA" and np.array_equal(np.asarray(im), out)


def test_transparent_colours_are_filled_smoothly():
    from fastcodec._imageio import fill_transparent
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (37, 51, 3), dtype=np.uint8)
    a = cutout(37, 51)
    rgb[a > 0] = 90  # visible: flat gray; hidden: noise
    out = fill_transparent(rgb, a, rows=8)  # small blocks: the block seams are exercised too
    assert np.array_equal(out[a > 0], rgb[a > 0]) and not np.shares_memory(out, rgb)
    assert (out[a == 0] == 90).all()  # the only visible colour extends everywhere
    gray = np.repeat(rgb[..., :1], 3, axis=2)
    filled = fill_transparent(gray, a)
    assert (filled[..., 0] == filled[..., 1]).all() and (filled[..., 1] == filled[..., 2]).all()
    assert fill_transparent(rgb, np.full((37, 51), 255, np.uint8)) is rgb  # nothing hidden
    assert not fill_transparent(rgb, np.zeros((37, 51), np.uint8)).any()  # nothing visible


def test_filling_saves_bits_without_touching_the_visible_part(codec):
    rgb = synthetic(96, 128, seed=9)
    rgb[:, 64:] = np.random.default_rng(2).integers(0, 256, (96, 64, 3))  # hidden noise
    a = np.zeros((96, 128), np.uint8)
    a[:, :60] = 255
    a[:, 60:64] = (60, 120, 180, 240)  # semi-transparent edge: kept as given
    exact = codec.compress(np.dstack([rgb, a]), quality=60, exact=True)
    filled = codec.compress(np.dstack([rgb, a]), quality=60)
    assert len(filled) < 0.7 * len(exact)
    vis = a > 0
    d_exact, d_filled = codec.decompress(exact), codec.decompress(filled)
    assert psnr(rgb[vis], d_filled[..., :3][vis]) > psnr(rgb[vis], d_exact[..., :3][vis]) - 0.3
    assert np.array_equal(d_filled[..., 3], a)
    with pytest.raises(fastcodec.ArgumentError, match="exact"):
        codec.compress(np.dstack([rgb, a]), exact=1)


def test_opaque_alpha_is_dropped(codec):
    rgb = synthetic(20, 30)
    opaque = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    assert codec.compress(opaque, quality=50) == codec.compress(rgb, quality=50)
    assert codec.compress(Image.fromarray(opaque, "RGBA"), quality=50) == codec.compress(rgb, quality=50)


@pytest.mark.parametrize("kind", ["LA array", "LA image", "P with transparent index", "RGB colour key",
                                  "RGBA image", "RGBa premultiplied"])
def test_every_kind_of_transparency_is_kept(codec, kind):
    rgb, a = synthetic(24, 40, seed=5), cutout(24, 40)
    gray = rgb[..., 1]
    if kind == "LA array":
        src, want_alpha, gray_out = np.dstack([gray, a]), a, True
    elif kind == "LA image":
        src, want_alpha, gray_out = Image.fromarray(np.dstack([gray, a]), "LA"), a, True
    elif kind == "P with transparent index":
        src = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16)
        src.info["transparency"] = 0
        want_alpha, gray_out = np.where(np.asarray(src) == 0, 0, 255).astype(np.uint8), False
    elif kind == "RGB colour key":
        key = tuple(int(v) for v in rgb[0, 0])
        src = Image.fromarray(rgb)
        src.info["transparency"] = key
        want_alpha, gray_out = np.where((rgb == key).all(axis=2), 0, 255).astype(np.uint8), False
    elif kind == "RGBA image":
        src, want_alpha, gray_out = Image.fromarray(np.dstack([rgb, a]), "RGBA"), a, False
    else:
        src = Image.fromarray(np.dstack([rgb, a]), "RGBA").convert("RGBa")
        want_alpha, gray_out = a, False
    out = codec.decompress(codec.compress(src, quality=90))
    assert out.shape == (24, 40, 2 if gray_out else 4)
    assert np.array_equal(out[..., -1], want_alpha)
    if kind in ("LA array", "LA image"):
        assert psnr(gray, out[..., 0]) > 25


def test_alpha_with_tiled_transforms(codec, monkeypatch):
    tiny_tiles(monkeypatch)  # the large-image path
    rgb, a = synthetic(200, 330, seed=8), cutout(200, 330)
    out = codec.decompress(codec.compress(np.dstack([rgb, a]), quality=60))
    assert np.array_equal(out[..., 3], a) and psnr(rgb, out[..., :3]) > 25


def test_target_size_counts_the_alpha_plane(codec):
    rgba = np.dstack([synthetic(64, 96, seed=1), cutout(64, 96)])
    for budget in (700, 1500):
        data = codec.compress(rgba, target_size=budget)
        assert len(data) <= budget or codec.info(data).quality == 1
        assert np.array_equal(codec.decompress(data)[..., 3], rgba[..., 3])
    assert codec.info(codec.compress(rgba, target_size=1500)).quality > codec.info(
        codec.compress(rgba, target_size=700)).quality


def jpeg_with_metadata(rgb, **tags):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=exif_bytes(**tags), xmp=XMP)
    return buf.getvalue()


def test_exif_and_xmp_are_kept_and_the_orientation_applied(codec):
    rgb = synthetic(24, 40, seed=2)
    src = jpeg_with_metadata(rgb, make="Cam", date="2026:11:28 10:00:00", orientation=6)
    data = codec.compress(src, quality=70)
    inf = codec.info(data)
    assert (inf.width, inf.height, inf.version, inf.metadata, inf.alpha) == (24, 40, 2, ("exif", "xmp"), False)
    meta = fastcodec.metadata(data)
    ex = Image.Exif()
    ex.load(meta["exif"])
    assert meta["exif"][:4] in (b"II*\x00", b"MM\x00*")
    assert ex[0x010F] == "Cam" and ex[0x0132] == "2026:11:28 10:00:00" and 0x0112 not in ex  # upright now
    assert b'dc:format="image/jpeg"' in meta["xmp"]
    im = codec.decompress_image(data)
    assert im.size == (24, 40) and im.getexif()[0x010F] == "Cam" and im.info["xmp"] == meta["xmp"]
    # stripped: no metadata, the same pixels as the upright image without any
    bare = codec.compress(src, quality=70, keep_metadata=False)
    assert codec.info(bare).version == 1 and fastcodec.metadata(bare) == {}
    with Image.open(io.BytesIO(src)) as j:
        from PIL import ImageOps
        upright = np.asarray(ImageOps.exif_transpose(j).convert("RGB"))
    assert bare == codec.compress(upright, quality=70)
    with pytest.raises(fastcodec.ArgumentError, match="keep_metadata"):
        codec.compress(src, keep_metadata="no")


def test_broken_exif_is_dropped_not_fatal(codec):
    im = Image.fromarray(synthetic(16, 16))
    im.info["exif"] = b"Exif\x00\x00garbage"
    assert codec.info(codec.compress(im, quality=50)).metadata == ()


def test_decompress_file_writes_alpha_and_metadata(tmp_path):
    rgba = np.dstack([synthetic(30, 40, seed=4), cutout(30, 40)])
    im = Image.fromarray(rgba, "RGBA")
    im.info["exif"] = exif_bytes(make="Cam")
    im.info["xmp"] = XMP
    src = tmp_path / "a.fcc"
    src.write_bytes(fastcodec.compress(im, quality=80))
    fastcodec.decompress_file(src, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as png:
        assert png.mode == "RGBA" and np.array_equal(np.asarray(png)[..., 3], rgba[..., 3])
        assert png.getexif()[0x010F] == "Cam" and b"dc:format" in png.info["xmp"]
    fastcodec.decompress_file(src, tmp_path / "a.webp")
    with Image.open(tmp_path / "a.webp") as webp:
        assert webp.mode == "RGBA" and webp.getexif()[0x010F] == "Cam"
    with pytest.raises(fastcodec.ArgumentError, match="alpha channel, which JPEG cannot store"):
        fastcodec.decompress_file(src, tmp_path / "a.jpg")
    assert not (tmp_path / "a.jpg").exists()
    opaque = tmp_path / "o.fcc"
    opaque.write_bytes(fastcodec.compress(jpeg_with_metadata(rgba[..., :3], make="Cam"), quality=80))
    fastcodec.decompress_file(opaque, tmp_path / "o.jpg")
    with Image.open(tmp_path / "o.jpg") as jpg:
        assert jpg.getexif()[0x010F] == "Cam" and jpg.info["xmp"] == XMP


def test_pillow_plugin_modes_and_metadata(tmp_path):
    rgba = np.dstack([synthetic(20, 28, seed=6), cutout(20, 28)])
    im = Image.fromarray(rgba, "RGBA")
    im.save(tmp_path / "a.fcc", quality=80, exif=exif_bytes(make="Saved"))
    with Image.open(tmp_path / "a.fcc") as back:
        assert back.format == "FCC" and back.mode == "RGBA" and back.getexif()[0x010F] == "Saved"
        assert np.array_equal(np.asarray(back)[..., 3], rgba[..., 3])
    im.save(tmp_path / "b.fcc", quality=80, exif=exif_bytes(make="Saved"), keep_metadata=False)
    assert fastcodec.info(tmp_path / "b.fcc").metadata == ()
    la = Image.fromarray(np.dstack([rgba[..., 0], rgba[..., 3]]), "LA")
    la.save(tmp_path / "c.fcc")
    with Image.open(tmp_path / "c.fcc") as back:
        assert back.mode == "LA" and np.array_equal(np.asarray(back)[..., 1], rgba[..., 3])


def test_cli_info_and_strip(tmp_path, capsys):
    rgba = np.dstack([synthetic(20, 28, seed=7), cutout(20, 28)])
    im = Image.fromarray(rgba, "RGBA")
    im.save(tmp_path / "in.png", exif=exif_bytes(make="Cam"))
    assert cli(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "keep.fcc"), "-q", "60"]) == 0
    assert cli(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "strip.fcc"), "-q", "60",
                "--strip-metadata"]) == 0
    capsys.readouterr()
    assert cli(["info", str(tmp_path / "keep.fcc")]) == 0
    text = capsys.readouterr().out
    assert "RGB + alpha" in text and "format v2" in text and "exif" in text
    assert cli(["info", "--json", "--detail", str(tmp_path / "strip.fcc")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["alpha"] is True and "exif" not in d["sections"] and d["sections"]["alpha"] > 0
    assert d["detail"]["extensions"]["sections"] == {"alpha": d["sections"]["alpha"]}
    assert cli(["decompress", str(tmp_path / "keep.fcc"), "-o", str(tmp_path / "out.png")]) == 0
    with Image.open(tmp_path / "out.png") as png:
        assert png.mode == "RGBA" and png.getexif()[0x010F] == "Cam"
    assert cli(["decompress", str(tmp_path / "keep.fcc"), "-o", str(tmp_path / "out.jpg")]) == 1
    assert "JPEG cannot store" in capsys.readouterr().err


def test_damaged_alpha_plane_is_a_format_error(codec):
    data = codec.compress(np.dstack([synthetic(16, 16), cutout(16, 16)]), quality=50)
    hdr, z, chunks, ext = fmt.parse_all(data)
    bad = fmt.pack(hdr.width, hdr.height, hdr.channels, hdr.quality, hdr.model_id, bytes(z),
                   [bytes(c) for c in chunks], [(fmt.EXT_ALPHA, b"\x00" + bytes(ext[fmt.EXT_ALPHA])[1:-2])])
    with pytest.raises(fastcodec.FormatError, match="alpha"):
        codec.decompress(bad)


def test_icc_profile_is_kept_with_the_pixels_as_they_are(codec, tmp_path):
    """A wide-gamut photo keeps its colours: the profile is stored as it is and the pixels are not
    converted to sRGB (which would clip what sRGB cannot show). It comes back in decompress_image's
    info, in metadata() and info(), in the images decompress_file writes, through the Pillow plugin,
    and for grayscale with a gray profile."""
    from PIL import ImageCms
    rgb = synthetic(40, 48, seed=8)
    profile = icc_profile()
    im = Image.fromarray(rgb)
    im.info["icc_profile"] = profile
    data = codec.compress(im, quality=80)
    assert codec.metadata(data) == {"icc": profile}
    assert codec.info(data).metadata == ("icc",) and codec.info(data).version == 2
    plain = codec.compress(rgb, quality=80)
    assert np.array_equal(codec.decompress(data), codec.decompress(plain))  # the same colour coding
    back = codec.decompress_image(data)
    assert back.info["icc_profile"] == profile
    assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(back.info["icc_profile"]))).strip() \
        == "fastcodec test profile"
    # applying it instead (keep_metadata=False) converts: red and green swap places
    stripped = codec.compress(im, quality=80, keep_metadata=False)
    assert codec.metadata(stripped) == {}
    srgb = ImageCms.createProfile("sRGB")
    converted = np.asarray(ImageCms.profileToProfile(Image.fromarray(rgb), ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                     srgb, outputMode="RGB"))
    assert psnr(converted, rgb) < 20  # the swap is visible
    assert stripped == codec.compress(converted, quality=80)
    src = tmp_path / "p3.fcc"
    src.write_bytes(data)
    for ext in ("png", "jpg", "webp", "tiff"):
        fastcodec.decompress_file(src, tmp_path / f"out.{ext}")
        with Image.open(tmp_path / f"out.{ext}") as out:
            assert out.info.get("icc_profile") == profile, ext
    # the Pillow plugin: saved with the image's profile, or the one given
    im.save(tmp_path / "a.fcc", quality=80)
    with Image.open(tmp_path / "a.fcc") as f:
        assert f.info["icc_profile"] == profile
    gamma22 = icc_profile(primaries=((0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)))
    im.save(tmp_path / "b.fcc", quality=80, icc_profile=gamma22)  # sRGB's primaries, a plain 2.2 gamma
    assert fastcodec.metadata(tmp_path / "b.fcc") == {"icc": gamma22}
    gray = Image.fromarray(rgb[..., 1])
    gray.info["icc_profile"] = icc_profile("GRAY")
    g = codec.compress(gray, quality=80)
    assert codec.metadata(g) == {"icc": icc_profile("GRAY")} and codec.decompress(g).ndim == 2
    # a profile of the other colour space does not describe the pixels: not stored
    wrong = Image.fromarray(rgb[..., 1])
    wrong.info["icc_profile"] = profile
    assert codec.metadata(codec.compress(wrong, quality=80)) == {}


def test_cli_and_server_keep_or_strip_the_icc_profile(tmp_path, capsys):
    im = Image.fromarray(synthetic(24, 32, seed=9))
    im.save(tmp_path / "in.png", icc_profile=icc_profile())
    assert cli(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "keep.fcc"), "-q", "60"]) == 0
    assert cli(["compress", str(tmp_path / "in.png"), "-o", str(tmp_path / "strip.fcc"), "-q", "60",
                "--strip-metadata"]) == 0
    capsys.readouterr()
    assert cli(["info", "--json", str(tmp_path / "keep.fcc")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["sections"]["icc"] == len(icc_profile())
    assert fastcodec.metadata(tmp_path / "strip.fcc") == {}
    assert cli(["decompress", str(tmp_path / "keep.fcc"), "-o", str(tmp_path / "out.png")]) == 0
    with Image.open(tmp_path / "out.png") as png:
        assert png.info["icc_profile"] == icc_profile()
