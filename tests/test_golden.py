"""Golden files (tests/golden/<model id>/): committed .fcc files must keep decoding to exactly
the stored symbols; with the float decoder (onnxruntime, <name>.png) to the stored pixels within
one level (its float kernels may round differently on other machines), and with every exact
decoder (<name>.<decoder>.png: "bitexact", and the model's int8 one) to the stored pixels, bit
for bit. Each shipped model has a folder; folders of earlier models stay, so files written by an
older release keep decoding with a newer one (their bundles ship too). Write the default model's
folder with tests/golden/make_golden.py after exporting a new model."""
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
    # the other decoders' pixels (<name>.<decoder>.png) are exact: test_golden_file_decodes_bit_exactly


def exact_cases():
    return [(mid, name, p.name[len(name) + 1:-len(".png")]) for mid, name in cases()
            for p in sorted((GOLDEN / mid).glob(f"{name}.*.png"))]


@pytest.mark.parametrize("mid,name,dec", exact_cases())
@pytest.mark.parametrize("threads", [1, 3])
def test_golden_file_decodes_bit_exactly(mid, name, dec, threads):
    # the stored pixels were made on another machine (and CPU, instruction set and thread count):
    # every exact decoder must reproduce every value
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    out = fastcodec.Codec(threads=threads, decoder=dec).decompress(data)
    ref = np.asarray(Image.open(GOLDEN / mid / f"{name}.{dec}.png"))
    assert out.shape == ref.shape
    assert np.array_equal(out, ref), f"{int((out != ref).sum())} values differ"
    flt = fastcodec.Codec(threads=1, decoder="float").decompress(data)
    if dec == "bitexact":  # the float decoder's function: within a level of the float reference
        assert np.abs(flt.astype(int) - out.astype(int)).max() <= 1
    else:  # another implementation of the synthesis (int8): close to it
        assert psnr(flt, out) > 40


LARGE = {p.parent.name: json.loads(p.read_text()) for p in sorted(GOLDEN.glob("*/bitexact.json"))}


@pytest.mark.parametrize("mid,name", [(mid, n) for mid, m in LARGE.items() for n in sorted(m["files"])])
def test_large_golden_file_decodes_bit_exactly(mid, name):
    # Kodak-size files: whole vector steps, several chunks per thread, two threads; the pixels
    # made on another machine must come out to the bit (their SHA-256)
    entry = LARGE[mid]["files"][name]
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    default = fastcodec.Codec(threads=1).model.decoder_for(fastcodec.info(data).quality)
    assert default in entry["pixels_sha256"]
    for dec, want in entry["pixels_sha256"].items():
        px = fastcodec.Codec(threads=2, decoder=dec).decompress(data)
        assert list(px.shape) == entry["shape"]
        assert hashlib.sha256(px.tobytes()).hexdigest() == want, dec
        if dec == default:
            assert np.array_equal(fastcodec.decompress(data), px)  # the default decoder there


@pytest.mark.parametrize("mid,name", [(mid, n) for mid, m in LARGE.items() for n in sorted(m["files"])
                                      if "reduced_sha256" in m["files"][n]])
def test_large_golden_file_reduces_bit_exactly(mid, name):
    # decompress(reduce=F) runs the reduce heads in the exact executor: the same bytes everywhere
    entry = LARGE[mid]["files"][name]
    data = (GOLDEN / mid / f"{name}.fcc").read_bytes()
    for f, want in entry["reduced_sha256"].items():
        px = fastcodec.Codec(threads=2).decompress(data, reduce=int(f))
        assert list(px.shape[:2]) == [-(-n // int(f)) for n in entry["shape"][:2]]
        assert hashlib.sha256(px.tobytes()).hexdigest() == want, f


def test_default_model_has_large_bit_exact_files():
    codec = fastcodec.Codec(threads=1)
    assert codec.model.id in LARGE, "run tests/golden/make_golden.py --bitexact"
    for entry in LARGE[codec.model.id]["files"].values():
        assert set(entry["pixels_sha256"]) == set(codec.model.decoders) - {"float"}
        assert set(entry.get("reduced_sha256", {})) == {str(f) for f in codec.model.reduce_factors()}, \
            "run tests/golden/make_golden.py --bitexact"


def test_every_exact_decoder_has_golden_pixels():
    # a decoder without stored pixels could change its output without any test noticing
    for mid, manifest in MANIFESTS.items():
        codec = fastcodec.Codec(shipped_ids()[mid], threads=1)
        for dec in set(codec.model.decoders) - {"float"}:
            for name in manifest["files"]:
                assert (GOLDEN / mid / f"{name}.{dec}.png").is_file(), \
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


INVALID = Path(__file__).resolve().parent / "golden" / "invalid"


@pytest.mark.parametrize("name", sorted(json.loads((INVALID / "expected.json").read_text())))
def test_golden_invalid_file_is_rejected(name):
    """Files every decoder must reject (docs/format.md "Validation"; tests/golden/make_invalid.py):
    each raises an error of fastcodec's family that names what is wrong: one caused by the input
    (a ValueError), or ModelError for a model no installation has."""
    want = json.loads((INVALID / "expected.json").read_text())[name]
    data = (INVALID / name).read_bytes()
    with pytest.raises(fastcodec.FastcodecError) as e:
        fastcodec.decompress(data)
    assert isinstance(e.value, (ValueError, fastcodec.ModelError)), (name, e.value)
    assert want["error"] in str(e.value), (name, want["why"], str(e.value))
