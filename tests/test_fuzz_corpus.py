"""Replays the kept fuzz corpus (tests/corpus/decompress) through fastcodec.decompress: every
input must decode or raise a FastcodecError. Crashing or hanging inputs found by fuzzing
(fuzz/fuzz_decompress.py) are added to that folder as regression cases."""
from pathlib import Path

import numpy as np
import pytest

import fastcodec
from conftest import repack

CORPUS = sorted((Path(__file__).parent / "corpus" / "decompress").glob("*"))


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_corpus_input(path):
    try:
        fastcodec.Codec(max_pixels=4_000_000).decompress(path.read_bytes())
    except fastcodec.FastcodecError:
        pass


def test_seeded_mutations_with_repaired_checksums():
    codec = fastcodec.Codec(max_pixels=4_000_000)
    seed = fastcodec.compress(np.full((40, 56, 3), 90, np.uint8), quality=60)
    rng = np.random.default_rng(123)
    decoded = 0
    for _ in range(300):
        b = bytearray(seed)
        for _ in range(int(rng.integers(1, 6))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        for data in (bytes(b), _try_repack(bytes(b))):
            if data is None:
                continue
            try:
                codec.decompress(data)
                decoded += 1
            except fastcodec.FastcodecError:
                pass
    assert decoded > 0  # repaired mutations do reach the decoders


def _try_repack(data):
    try:
        return repack(data)
    except fastcodec.FastcodecError:
        return None
