"""Optional decoders (model.json "decoders"): other implementations of the model's synthesis (an
int8 one) that decode every file of the model; verified graphs, bounded loss, same symbols."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastcodec
from conftest import kodak_files, needs_kodak, psnr, synthetic, tiny_tiles
from fastcodec._model import available_models, default_model_name
from fastcodec.errors import ArgumentError, ModelError

DEFAULT = available_models()[default_model_name()]
OPTIONAL = [n for n in fastcodec.Codec(threads=1).model.decoders if n != "float"]
needs_optional = pytest.mark.skipif(not OPTIONAL, reason="the default model ships no optional decoder")
GOLDEN = Path(__file__).parent / "golden"


def test_unknown_decoder_is_refused():
    with pytest.raises(ArgumentError, match="decoder must be one of 'float'"):
        fastcodec.Codec(decoder="turbo")
    with pytest.raises(ArgumentError, match="decoder must be None or a name"):
        fastcodec.Codec(decoder=8)


def test_default_decoder_is_the_models_choice():
    codec = fastcodec.Codec(threads=1)
    meta = json.loads((DEFAULT / "model.json").read_text())
    assert codec.model.default_decoder == meta.get("default_decoder", "float")
    assert codec.model.default_decoder in codec.model.decoders
    img = synthetic(40, 56, seed=3)
    for q in (70, 100):
        data = codec.compress(img, quality=q)
        same = fastcodec.Codec(threads=1, decoder=codec.model.decoder_for(q)).decompress(data)
        assert np.array_equal(codec.decompress(data), same)


@needs_optional
def test_default_decoder_follows_the_files_quality(tmp_path):
    """model.json's "default_decoder_by_quality" picks the decoder by the file's quality when the
    caller names none; entries naming a missing decoder, or malformed, are ignored."""
    name = OPTIONAL[0]
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bundle)
    meta = json.loads((bundle / "model.json").read_text())
    meta["default_decoder"] = "float"
    meta["default_decoder_by_quality"] = [[40, name], [20, "nope"], "junk", [60, 7]]
    (bundle / "model.json").write_text(json.dumps(meta))
    codec = fastcodec.Codec(bundle, threads=1)
    assert codec.model.decoder_policy == [(name, 40.0)]
    img = synthetic(48, 64, seed=6)
    for q, want in ((1, name), (40, name), (40.01, "float"), (80, "float")):
        assert codec.model.decoder_for(q) == want
        data = codec.compress(img, quality=q)
        ref = {d: fastcodec.Codec(bundle, threads=1, decoder=d).decompress(data) for d in ("float", name)}
        assert not np.array_equal(ref["float"], ref[name])  # so that equality says which one ran
        assert np.array_equal(codec.decompress(data), ref[want]), q
    # the decoders a policy may pick are verified when the codec is made
    graph = bundle / f"{meta['decoders'][name]['graph']}.onnx"
    graph.write_bytes(graph.read_bytes()[:-100])
    with pytest.raises(ModelError, match="damaged"):
        fastcodec.Codec(bundle)
    assert fastcodec.Codec(bundle, decoder="float").model.decoder_for(30) == name


@needs_optional
@needs_kodak
def test_shipped_decoder_policy_keeps_its_promise():
    """Where the shipped model picks a faster decoder by quality, it loses at most 0.1 dB there
    (on kodim23 at the policy's highest quality) against the float decoder."""
    codec = fastcodec.Codec(threads=2)
    if not codec.model.decoder_policy:
        pytest.skip("the default model decodes every quality with its default decoder")
    ref = np.asarray(Image.open(kodak_files()[22]).convert("RGB"))
    flt = fastcodec.Codec(threads=2, decoder="float")
    for name, qmax in codec.model.decoder_policy:
        data = codec.compress(ref, quality=qmax)
        a, b = flt.decompress(data), codec.decompress(data)
        assert not np.array_equal(a, b)  # really another decoder (it may even be better: mixed at q100 +0.02 dB)
        loss = psnr(ref, a) - psnr(ref, b)
        assert loss <= 0.1, (name, qmax, loss)


@needs_optional
@needs_kodak
@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_decoder_is_close_to_float(name):
    """Same file, same symbols; the pixels differ a little. Bounds from kodim23 (measured for the
    shipped int8 decoder: -0.02 / -0.09 / -0.32 dB, the two outputs 47 dB apart); a decoder that
    ignored its input or a broken quantisation would fail."""
    ref = np.asarray(Image.open(kodak_files()[22]).convert("RGB"))
    flt, opt = fastcodec.Codec(threads=2, decoder="float"), fastcodec.Codec(threads=2, decoder=name)
    for q, bound in ((10, 0.1), (50, 0.2), (90, 0.5)):
        data = flt.compress(ref, quality=q)
        a, b = flt.decompress(data), opt.decompress(data)
        assert not np.array_equal(a, b)  # really another decoder
        pa, pb = psnr(ref, a), psnr(ref, b)
        assert pb > pa - bound, (q, pa, pb)
        assert psnr(a, b) > 42, q  # the two decoders agree closely


@needs_optional
@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_decoder_tiles_match_untiled(monkeypatch, name):
    """Its receptive field fits the tiles' halo (large images decode in tiles)."""
    img = synthetic(300, 420, seed=5)
    codec = fastcodec.Codec(decoder=name)
    data = codec.compress(img, quality=60)
    whole = codec.decompress(data)
    tiny_tiles(monkeypatch)
    assert np.abs(codec.decompress(data).astype(int) - whole).max() <= 1


@needs_optional
@pytest.mark.parametrize("name", OPTIONAL)
def test_optional_decoder_is_thread_safe(name):
    from concurrent.futures import ThreadPoolExecutor
    codec = fastcodec.Codec(threads=1, decoder=name)
    files = [codec.compress(synthetic(64 + 8 * i, 96, seed=i), quality=20 + 10 * i) for i in range(6)]
    want = [codec.decompress(f) for f in files]
    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(codec.decompress, files * 4))
    for i, g in enumerate(got):
        assert np.array_equal(g, want[i % len(files)])


@needs_optional
def test_damaged_optional_decoder_is_refused_but_the_model_still_works(tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bad)
    name = OPTIONAL[0]
    meta = json.loads((bad / "model.json").read_text())
    graph = bad / f"{meta['decoders'][name]['graph']}.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="damaged"):
        fastcodec.Codec(bad, decoder=name)
    img = synthetic(40, 56, seed=2)
    if meta.get("default_decoder") == name:  # the default decoder is checked when the codec is made
        with pytest.raises(ModelError, match="damaged"):
            fastcodec.Codec(bad)
    flt = fastcodec.Codec(bad, decoder="float")
    assert flt.decompress(flt.compress(img)).shape == img.shape
    graph.unlink()
    with pytest.raises(ModelError, match="cannot read decoder"):
        fastcodec.Codec(bad, decoder=name)


@needs_optional
def test_files_of_a_model_without_the_decoder_decode_with_its_float_one():
    """An archived earlier model offers no int8 decoder: its files still decode, with float."""
    older = [p for name, p in available_models().items() if name != default_model_name()
             and OPTIONAL[0] not in fastcodec.Codec(name, threads=1).model.decoders]
    if not older:
        pytest.skip("every shipped model offers the optional decoder")
    mid = json.loads((older[0] / "model.json").read_text())["id"]
    data = next((GOLDEN / mid).glob("*.fcc")).read_bytes()
    a = fastcodec.Codec(threads=1, decoder=OPTIONAL[0]).decompress(data)
    b = fastcodec.Codec(threads=1, decoder="float").decompress(data)
    assert np.array_equal(a, b)


@needs_optional
def test_archiving_keeps_the_decoders(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    import archive_model as archive
    models = tmp_path / "models"
    shutil.copytree(DEFAULT, models / "old")
    (models / "DEFAULT").write_text("new\n")
    archive.main(["old", "--models", str(models)])
    codec = fastcodec.Codec(models / "old", decoder=OPTIONAL[0])
    assert codec.model.decode_only and OPTIONAL[0] in codec.model.decoders
    img = synthetic(48, 64, seed=4)
    data = fastcodec.Codec(threads=1).compress(img, quality=50)
    ref = fastcodec.Codec(threads=1, decoder=OPTIONAL[0]).decompress(data)
    assert np.array_equal(codec.decompress(data), ref)


@needs_optional
def test_cli_decoder_option(tmp_path):
    src = tmp_path / "img.png"
    Image.fromarray(synthetic(60, 80)).save(src)
    fcc = tmp_path / "img.fcc"
    fastcodec.compress_file(src, fcc, quality=60)
    run = [sys.executable, "-m", "fastcodec", "decompress", str(fcc), "-o"]
    for dec in ("float", OPTIONAL[0]):
        r = subprocess.run(run + [str(tmp_path / f"{dec}.png"), "--decoder", dec], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        want = fastcodec.Codec(threads=1, decoder=dec).decompress(fcc)
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{dec}.png")), want)
    r = subprocess.run(run + [str(tmp_path / "x.png"), "--decoder", "nope"], capture_output=True, text=True)
    assert r.returncode == 1 and "decoder must be one of" in r.stderr
    assert not (tmp_path / "x.png").exists()
    r = subprocess.run([sys.executable, "-m", "fastcodec", "models", "--json"], capture_output=True, text=True)
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    assert rows[default_model_name()]["decoders"] == ["float", *OPTIONAL]
    meta = json.loads((DEFAULT / "model.json").read_text())
    assert rows[default_model_name()]["default_decoder_by_quality"] == meta.get("default_decoder_by_quality", [])
