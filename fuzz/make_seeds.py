#!/usr/bin/env python3
"""Writes the seed files of the decompress fuzz corpus (tests/corpus/decompress/seed*.fcc):
small valid files of the shipped default model. Seeds name their model, so run this after
exporting a new default model (crash regressions found by fuzzing are kept under other names).

    python fuzz/make_seeds.py
"""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import fastcodec  # noqa: E402
from conftest import synthetic  # noqa: E402

SEEDS = [(8, 8, 50), (33, 20, 1), (70, 64, 90), (1, 1, 75), (100, 17, 30)]  # width, height, quality
# version-2 seeds (alpha plane, EXIF, XMP): the extension parser and the alpha inflater
EXT_SEEDS = [(24, 18, 60, 4), (9, 31, 40, 2)]  # width, height, quality, channels (RGBA or gray + alpha)


def main():
    out = HERE.parent / "tests" / "corpus" / "decompress"
    out.mkdir(parents=True, exist_ok=True)
    for i, (w, h, q) in enumerate(SEEDS):
        data = fastcodec.compress(synthetic(h, w, seed=i), quality=q)
        (out / f"seed{i}.fcc").write_bytes(data)
        print(f"seed{i}.fcc: {w}x{h} q{q}, {len(data)} bytes, model {fastcodec.info(data).model_id}")
    for j, (w, h, q, ch) in enumerate(EXT_SEEDS):
        img = synthetic(h, w, seed=10 + j)
        alpha = (np.arange(h * w).reshape(h, w) * 37 % 256).astype(np.uint8)
        alpha[: h // 2] = 255
        im = Image.fromarray(np.dstack([img, alpha]) if ch == 4 else np.dstack([img[..., 0], alpha]),
                             "RGBA" if ch == 4 else "LA")
        ex = Image.Exif()
        ex[0x010F] = "seed"
        im.info.update(exif=ex.tobytes(), xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
        data = fastcodec.compress(im, quality=q)
        name = f"seed{len(SEEDS) + j}.fcc"
        (out / name).write_bytes(data)
        print(f"{name}: {w}x{h} q{q} {im.mode} + EXIF + XMP, {len(data)} bytes, format v{fastcodec.info(data).version}")


if __name__ == "__main__":
    main()
