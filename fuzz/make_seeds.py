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

import fastcodec  # noqa: E402
from conftest import synthetic  # noqa: E402

SEEDS = [(8, 8, 50), (33, 20, 1), (70, 64, 90), (1, 1, 75), (100, 17, 30)]  # width, height, quality


def main():
    out = HERE.parent / "tests" / "corpus" / "decompress"
    out.mkdir(parents=True, exist_ok=True)
    for i, (w, h, q) in enumerate(SEEDS):
        data = fastcodec.compress(synthetic(h, w, seed=i), quality=q)
        (out / f"seed{i}.fcc").write_bytes(data)
        print(f"seed{i}.fcc: {w}x{h} q{q}, {len(data)} bytes, model {fastcodec.info(data).model_id}")


if __name__ == "__main__":
    main()
