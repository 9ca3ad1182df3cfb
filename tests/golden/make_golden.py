#!/usr/bin/env python3
"""Writes the golden files of the shipped default model into tests/golden/<model id>/: small
.fcc files, the hash of their decoded symbols and their decoded pixels (PNG). Run after
exporting a new default model:

    python tests/golden/make_golden.py
    python tests/golden/make_golden.py --decoders   # only the pixels of the optional decoders
    python tests/golden/make_golden.py --pixels     # the pixels of every decoder, for the same files
    python tests/golden/make_golden.py --bitexact   # the exact decoders' pixels, every model's folder
                                                    # (and the default model's reduced decodes)

Pixels are stored for every decoder the model offers: <name>.png from the float reference and
<name>.<decoder>.png from each other one ("bitexact", and the optional ones of model.json
"decoders", e.g. int8), so a change in any of them fails tests/test_golden.py. Every decoder
but "float" is exact (the C++ executor): its pixels must come out identical on every machine.
"--decoders" and "--bitexact" rewrite them, for the existing golden files of every model folder
(after adding or retraining an optional decoder, or a change to the executor; the .fcc files
stay), "--pixels" the float ones too (after a new post-filter, which changes no symbol; the .fcc
files and the manifest stay).

A plain run writes the cases that have no file yet and keeps the ones that do (their manifest
entries and pixels are recomputed from the stored files); --rewrite encodes every case anew.

The folders of earlier models stay: their files must keep decoding, so their bundles keep
shipping (tests/test_golden.py fails when a golden folder's model is missing from models/).
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import fastcodec  # noqa: E402
import fastcodec.codec as C  # noqa: E402
from conftest import icc_profile, synthetic  # noqa: E402

CASES = [  # name, height, width, grayscale, quality, chunk symbols, alpha plane and metadata (version 2)
    ("rgb_q50", 48, 64, False, 50, None, False),
    ("gray_q90", 17, 33, True, 90, None, False),
    ("rgb_q10_chunks", 130, 200, False, 10, 4096, False),
    ("rgba_meta_q50", 40, 52, False, 50, None, True),
    ("la_q70", 21, 35, True, 70, None, True),
    ("rgb_icc_q60", 36, 44, False, 60, None, "icc"),  # since 0.12: an ICC profile (ancillary type 130)
]
GOLDEN_XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def with_extras(img, kind=True):
    """The image as a PIL image with an alpha plane (transparent hole, soft ramp, one odd
    column), EXIF (Make) and XMP: the version-2 cases; kind "icc": with a wide-gamut ICC profile."""
    if kind == "icc":
        im = Image.fromarray(img)
        im.info["icc_profile"] = icc_profile()
        return im
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip((np.hypot(yy - h / 2, xx - w / 2) - 5) * 50, 0, 255).astype(np.uint8)
    alpha[:, -1] = np.arange(h) * 7 % 256
    if img.ndim == 2:
        im = Image.fromarray(np.dstack([img, alpha]), "LA")
    else:
        im = Image.fromarray(np.dstack([img, alpha]), "RGBA")
    ex = Image.Exif()
    ex[0x010F] = "fastcodec golden"
    im.info["exif"] = ex.tobytes()
    im.info["xmp"] = GOLDEN_XMP
    return im


def symbol_hash(codec, data):
    _, _, z_sym, _, r, bins, _, _ = codec._decode_symbols(data)
    return hashlib.sha256(z_sym.astype("<i4").tobytes() + r.astype("<i4").tobytes() + bins.tobytes()).hexdigest()


# Kodak-size files whose exact pixels are kept as a SHA-256 (bitexact.json): the vector kernels'
# whole-chunk paths and several threads at work, on every machine that runs the tests
LARGE = [("large_q75", 512, 768, 75), ("large_q20", 512, 768, 20)]


def exact_decoders(codec, model_id):
    """The exact decoders (every one but "float") of the model a golden folder belongs to."""
    return [d for d in codec._model_for(bytes.fromhex(model_id)).decoders if d != "float"]


def exact_pixels():
    """Writes <name>.<decoder>.png of every exact decoder for the golden files of every model
    folder, and the default model's large files with the SHA-256 of each exact decoder's pixels
    (bitexact.json)."""
    codec = fastcodec.Codec(threads=1)
    for manifest in sorted(HERE.glob("*/golden.json")):
        mid = json.loads(manifest.read_text())["model"]
        for dec in exact_decoders(codec, mid):
            c = fastcodec.Codec(threads=1, decoder=dec)
            for name in json.loads(manifest.read_text())["files"]:
                px = c.decompress((manifest.parent / f"{name}.fcc").read_bytes())
                Image.fromarray(px).save(manifest.parent / f"{name}.{dec}.png")
                print(f"wrote {manifest.parent / f'{name}.{dec}.png'}")
    out = HERE / codec.model.id
    large = {}
    for name, h, w, q in LARGE:
        path = out / f"{name}.fcc"
        if not path.is_file():  # the files stay once written; only their pixels are recomputed
            path.write_bytes(codec.compress(synthetic(h, w, seed=h + w + q), quality=q))
        pixels = {}
        for dec in exact_decoders(codec, codec.model.id):
            px = fastcodec.Codec(threads=2, decoder=dec).decompress(path.read_bytes())
            pixels[dec] = hashlib.sha256(px.tobytes()).hexdigest()
        large[name] = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "shape": list(px.shape),
                       "pixels_sha256": pixels}
        if codec.model.reduce_factors():  # since 0.13: the reduced decodes (exact, whatever the decoder)
            large[name]["reduced_sha256"] = {
                str(f): hashlib.sha256(fastcodec.Codec(threads=2).decompress(path.read_bytes(), reduce=f)
                                       .tobytes()).hexdigest() for f in codec.model.reduce_factors()}
    (out / "bitexact.json").write_text(json.dumps({"model": codec.model.id, "files": large}, indent=1) + "\n")
    print(f"wrote {out / 'bitexact.json'}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--bitexact" in argv or "--decoders" in argv:
        exact_pixels()
        return
    codec = fastcodec.Codec(threads=1, decoder="float")
    out = HERE / codec.model.id
    if "--pixels" in argv:
        manifest = json.loads((out / "golden.json").read_text())
        for name in manifest["files"]:
            Image.fromarray(codec.decompress((out / f"{name}.fcc").read_bytes())).save(out / f"{name}.png")
            print(f"wrote {out / f'{name}.png'}")
        exact_pixels()
        return
    manifest = {"model": codec.model.id, "files": {}}
    out.mkdir(exist_ok=True)
    for name, h, w, gray, q, chunk, extras in CASES:
        img = synthetic(h, w, seed=h * w)
        if gray:
            img = img[..., 1]
        if extras:
            img = with_extras(img, extras)
        path = out / f"{name}.fcc"
        if path.is_file() and "--rewrite" not in argv:  # golden files stay once written (the encoder's
            data = path.read_bytes()                    # float analysis may round differently elsewhere)
        else:
            old = C.CHUNK_SYMBOLS
            if chunk:
                C.CHUNK_SYMBOLS = chunk
            try:
                data = codec.compress(img, quality=q)
            finally:
                C.CHUNK_SYMBOLS = old
            path.write_bytes(data)
        px = codec.decompress(data)
        Image.fromarray(px).save(out / f"{name}.png")
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "symbols": symbol_hash(codec, data),
                                   "shape": list(px.shape), "chunks": len(codec.info(data).chunk_sizes)}
        if extras:
            manifest["files"][name]["metadata"] = {k: v.hex() for k, v in sorted(codec.metadata(data).items())}
    (out / "golden.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    exact_pixels()


if __name__ == "__main__":
    main()
