"""Golden files (tests/golden): committed .fcc files must keep decoding to exactly the stored
symbols, and to the stored pixels within one level (float synthesis may round differently on
other machines). Regenerate with tests/golden/make_golden.py when the default model changes."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastcodec
from conftest import psnr

GOLDEN = Path(__file__).parent / "golden"
MANIFEST = json.loads((GOLDEN / "golden.json").read_text()) if (GOLDEN / "golden.json").exists() else None
pytestmark = pytest.mark.skipif(MANIFEST is None, reason="no golden files (run tests/golden/make_golden.py)")


def names():
    return sorted(MANIFEST["files"]) if MANIFEST else []


@pytest.mark.parametrize("name", names())
def test_golden_file_decodes_exactly(name):
    from golden.make_golden import symbol_hash
    entry = MANIFEST["files"][name]
    data = (GOLDEN / f"{name}.fcc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    codec = fastcodec.Codec(threads=1)
    assert symbol_hash(codec, data) == entry["symbols"]
    assert len(codec.info(data).chunk_sizes) == entry["chunks"]
    px = codec.decompress(data)
    ref = np.asarray(Image.open(GOLDEN / f"{name}.png"))
    assert px.shape == ref.shape == tuple(entry["shape"])
    assert np.abs(px.astype(int) - ref.astype(int)).max() <= 1
    assert psnr(ref, px) > 50
