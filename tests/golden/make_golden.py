#!/usr/bin/env python3
"""Writes the golden files of the shipped default model into tests/golden/<model id>/: small
.fcc files, the hash of their decoded symbols and their decoded pixels (PNG). Run after
exporting a new default model:

    python tests/golden/make_golden.py
    python tests/golden/make_golden.py --decoders   # only the pixels of the optional decoders

Pixels are stored for every decoder the model offers: <name>.png from the float reference and
<name>.<decoder>.png from each optional one (model.json "decoders", e.g. int8), so a change in
any of them fails tests/test_golden.py. "--decoders" rewrites only the latter, for the existing
golden files (after adding or retraining an optional decoder; the .fcc files stay).

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
from conftest import synthetic  # noqa: E402

CASES = [  # name, height, width, grayscale, quality, chunk symbols
    ("rgb_q50", 48, 64, False, 50, None),
    ("gray_q90", 17, 33, True, 90, None),
    ("rgb_q10_chunks", 130, 200, False, 10, 4096),
]


def symbol_hash(codec, data):
    _, _, z_sym, _, r, bins, _ = codec._decode_symbols(data)
    return hashlib.sha256(z_sym.astype("<i4").tobytes() + r.astype("<i4").tobytes() + bins.tobytes()).hexdigest()


def decoder_pixels(model_id, names):
    """Writes <name>.<decoder>.png for each optional decoder of the default model."""
    out = HERE / model_id
    for dec in fastcodec.Codec(threads=1).model.decoders:
        if dec == "float":
            continue
        codec = fastcodec.Codec(threads=1, decoder=dec)
        for name in names:
            Image.fromarray(codec.decompress((out / f"{name}.fcc").read_bytes())).save(out / f"{name}.{dec}.png")
            print(f"wrote {out / f'{name}.{dec}.png'}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    codec = fastcodec.Codec(threads=1, decoder="float")
    out = HERE / codec.model.id
    if "--decoders" in argv:
        manifest = json.loads((out / "golden.json").read_text())
        decoder_pixels(codec.model.id, list(manifest["files"]))
        return
    manifest = {"model": codec.model.id, "files": {}}
    out.mkdir(exist_ok=True)
    for name, h, w, gray, q, chunk in CASES:
        img = synthetic(h, w, seed=h * w)
        if gray:
            img = img[..., 1]
        old = C.CHUNK_SYMBOLS
        if chunk:
            C.CHUNK_SYMBOLS = chunk
        try:
            data = codec.compress(img, quality=q)
        finally:
            C.CHUNK_SYMBOLS = old
        (out / f"{name}.fcc").write_bytes(data)
        px = codec.decompress(data)
        Image.fromarray(px).save(out / f"{name}.png")
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "symbols": symbol_hash(codec, data),
                                   "shape": list(px.shape), "chunks": len(codec.info(data).chunk_sizes)}
    (out / "golden.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(json.dumps(manifest, indent=1))
    decoder_pixels(codec.model.id, list(manifest["files"]))


if __name__ == "__main__":
    main()
