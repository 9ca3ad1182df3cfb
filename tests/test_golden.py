"""Golden files (tests/golden/<model id>/): committed .fcc files must keep decoding to exactly
the stored symbols, and to the stored pixels within one level (float synthesis may round
differently on other machines), with the float decoder (<name>.png) and with each optional
decoder whose pixels are stored (<name>.<decoder>.png, e.g. int8). Each shipped model has a folder; folders of earlier models stay,
so files written by an older release keep decoding with a newer one (their bundles ship too).
Write the default model's folder with tests/golden/make_golden.py after exporting a new model."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastcodec
from conftest import psnr
from fastcodec._model import available_models

GOLDEN = Path(__file__).parent / "golden"
MANIFESTS = {p.parent.name: json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*/golden.json"))}


def shipped_ids():
    return {json.loads((p / "model.json").read_text())["id"]: name for name, p in available_models().items()}


def cases():
    return [(mid, name) for mid, m in MANIFESTS.items() for name in sorted(m["files"])]


def test_every_shipped_model_has_golden_files():
    # a model without golden files could change its decoded output without any test noticing
    missing = sorted(f"{name} ({mid})" for mid, name in shipped_ids().items() if mid not in MANIFESTS)
    assert not missing, f"no golden files for {missing}: run tests/golden/make_golden.py"


def test_golden_models_still_ship():
    # dropping a bundle would stop every file written with it from decoding
    gone = sorted(set(MANIFESTS) - set(shipped_ids()))
    assert not gone, f"golden files of models {gone} no longer decode: keep their bundles in models/"


@pytest.mark.parametrize("mid,name", cases())
def test_golden_file_decodes_exactly(mid, name):
    from golden.make_golden import symbol_hash
    entry = MANIFESTS[mid]["files"][name]
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    codec = fastcodec.Codec(threads=1, decoder="float")  # the default model: older files load their own bundle
    info = codec.info(data)
    assert info.model_id == mid == MANIFESTS[mid]["model"]
    assert symbol_hash(codec, data) == entry["symbols"]
    assert len(info.chunk_sizes) == entry["chunks"]
    px = codec.decompress(data)
    ref = np.asarray(Image.open(GOLDEN / mid / f"{name}.png"))
    assert px.shape == ref.shape == tuple(entry["shape"])
    assert np.abs(px.astype(int) - ref.astype(int)).max() <= 1
    assert psnr(ref, px) > 50
    assert info.alpha == (px.ndim == 3 and px.shape[2] in (2, 4))
    if info.alpha:  # the alpha plane is lossless: exact on every machine
        assert np.array_equal(px[..., -1], ref[..., -1])
    assert {k: v.hex() for k, v in codec.metadata(data).items()} == entry.get("metadata", {})
    for png in sorted((GOLDEN / mid).glob(f"{name}.*.png")):  # optional decoders, e.g. rgb_q50.int8.png
        dec = png.name[len(name) + 1:-len(".png")]
        if dec == "bitexact":
            continue  # test_golden_file_decodes_bit_exactly
        out = fastcodec.Codec(threads=1, decoder=dec).decompress(data)
        ref = np.asarray(Image.open(png))
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1, dec
        assert psnr(ref, out) > 50, dec


@pytest.mark.parametrize("mid,name", cases())
@pytest.mark.parametrize("threads", [1, 3])
def test_golden_file_decodes_bit_exactly(mid, name, threads):
    # the stored pixels were made on another machine (and CPU, instruction set and thread count):
    # the bit-exact decoder must reproduce every value, with its post-filter and without
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    png = GOLDEN / mid / f"{name}.bitexact.png"
    assert png.is_file(), "no bit-exact golden pixels: run tests/golden/make_golden.py --bitexact"
    out = fastcodec.Codec(threads=threads, decoder="bitexact").decompress(data)
    ref = np.asarray(Image.open(png))
    assert out.shape == ref.shape
    assert np.array_equal(out, ref), f"{int((out != ref).sum())} values differ"
    # it is the float decoder's function: within a level of the float reference
    flt = fastcodec.Codec(threads=1, decoder="float").decompress(data)
    assert np.abs(flt.astype(int) - out.astype(int)).max() <= 1


LARGE = {p.parent.name: json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*/bitexact.json"))}


@pytest.mark.parametrize("mid,name", [(mid, n) for mid, m in LARGE.items() for n in sorted(m["files"])])
def test_large_golden_file_decodes_bit_exactly(mid, name):
    # Kodak-size files: whole vector steps, several chunks per thread, two threads; the pixels
    # made on another machine must come out to the bit (their SHA-256)
    entry = LARGE[mid]["files"][name]
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    px = fastcodec.Codec(threads=2, decoder="bitexact").decompress(data)
    assert list(px.shape) == entry["shape"]
    assert hashlib.sha256(px.tobytes()).hexdigest() == entry["pixels_sha256"]
    if fastcodec.Codec(threads=1).model.decoder_for(fastcodec.info(data).quality) == "bitexact":
        assert np.array_equal(fastcodec.decompress(data), px)  # the default decoder there


def test_default_model_has_large_bit_exact_files():
    assert fastcodec.Codec(threads=1).model.id in LARGE, "run tests/golden/make_golden.py --bitexact"


def test_optional_decoders_have_golden_pixels():
    # an optional decoder without stored pixels could change its output without any test noticing
    codec = fastcodec.Codec(threads=1)
    folder = GOLDEN / codec.model.id
    for dec in codec.model.decoders:
        if dec not in ("float", "bitexact"):  # bitexact: test_golden_file_decodes_bit_exactly
            for name in MANIFESTS[codec.model.id]["files"]:
                assert (folder / f"{name}.{dec}.png").is_file(), \
                    f"no golden pixels of decoder {dec!r}: run tests/golden/make_golden.py --decoders"


def test_default_model_is_the_one_models_default_names():
    # models/DEFAULT must be installed with the bundles; without it the default would be
    # whichever bundle sorts last
    want = (Path(__file__).parents[1] / "models" / "DEFAULT").read_text().strip()
    assert fastcodec.Codec(threads=1).model.path.name == want
    assert want in available_models()


def archived_models():
    return [name for name, p in available_models().items()
            if json.loads((p / "model.json").read_text()).get("archived_graphs")]


@pytest.mark.parametrize("name", archived_models())
def test_archived_model_decodes_its_files_but_encodes_nothing(name):
    from fastcodec.errors import ModelError
    codec = fastcodec.Codec(name, threads=1)
    assert codec.model.decode_only
    mine = [(mid, f) for mid, m in MANIFESTS.items() if mid == codec.model.id for f in m["files"]]
    assert mine, f"archived model {name} has no golden files"
    for mid, f in mine:
        px = codec.decompress((GOLDEN / mid / f"{f}.fcc").read_bytes())
        assert px.shape == tuple(MANIFESTS[mid]["files"][f]["shape"])
    with pytest.raises(ModelError, match="decoding only"):
        codec.compress(np.zeros((16, 16, 3), np.uint8))
    assert not fastcodec.Codec(threads=1).model.decode_only  # the default always encodes


@pytest.mark.parametrize("name", archived_models()[:1])
def test_archived_bundle_is_verified(name, tmp_path):
    import shutil
    from fastcodec._model import load_model
    from fastcodec.errors import ModelError
    src = available_models()[name]
    bad = tmp_path / name
    shutil.copytree(src, bad)
    meta = json.loads((bad / "model.json").read_text())
    h = meta["archived_graphs"]["encoder"]
    meta["archived_graphs"]["encoder"] = ("0" if h[0] != "0" else "1") + h[1:]  # a wrong recorded hash
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="damaged"):
        load_model(bad)
    meta["archived_graphs"]["encoder"] = h
    meta["archived_graphs"]["decoder"] = h  # decoding graphs cannot be archived
    (bad / "model.json").write_text(json.dumps(meta))
    (bad / "decoder.onnx").unlink()
    with pytest.raises(ModelError, match="lacks decoder.onnx"):
        load_model(bad)
