import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASTCODEC_SHARED", ROOT.parent / "shared"))
KODAK = SHARED / "data" / "kodak"


def kodak_files():
    return sorted(KODAK.glob("kodim*.png")) if KODAK.is_dir() else []


needs_kodak = pytest.mark.skipif(not kodak_files(), reason=f"Kodak images not found at {KODAK} "
                                 "(set FASTCODEC_SHARED to the folder holding data/kodak)")


def outputs_by_kernel(code, cwd=None):
    """Runs ``code`` (which prints one line) in a fresh process with each kernel choice
    (FASTCODEC_CONV_KERNEL: the machine's best, avx2, generic) and returns {choice: its line}."""
    import subprocess
    import sys

    out = {}
    for kernel in ("", "avx2", "generic"):
        env = dict(os.environ, FASTCODEC_CONV_KERNEL=kernel)
        r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        out[kernel or "best"] = r.stdout.strip()
    return out


def same_bytes_on_every_kernel(code, cwd=None):
    """outputs_by_kernel for code that prints "<kernel name> <digest>": asserts one digest, and
    that the portable kernel was among those run."""
    lines = outputs_by_kernel(code, cwd).values()
    assert len({line.split()[1] for line in lines}) == 1, lines
    assert "generic" in {line.split()[0] for line in lines}


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def synthetic(h, w, seed=0):
    """A smooth natural-ish test image (gradients + texture), deterministic."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(xx / max(w, 1) * 3 + seed),
        128 + 100 * np.cos(yy / max(h, 1) * 2),
        128 + 60 * np.sin((xx + yy) / 17.0),
    ], axis=-1) + rng.normal(0, 4, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def tiny_tiles(monkeypatch, tile=8):
    """From now on (in this test) the codec runs its transforms in tiles of tile x tile latents,
    as it does for large images."""
    import fastcodec.codec as C
    monkeypatch.setattr(C, "TILE", tile)
    monkeypatch.setattr(C, "TILE_MAX", tile)


def latent_shapes(monkeypatch, method="_synthesise"):
    """From now on (in this test) Codec.<method> (a synthesis: self, model, latents, ...) records
    the shape (rows, columns) of the latents it runs on, in the list returned."""
    import fastcodec.codec as C
    seen = []
    real = getattr(C.Codec, method)

    def spy(self, m, y_hat, *rest):
        seen.append(tuple(y_hat.shape[2:]))
        return real(self, m, y_hat, *rest)

    monkeypatch.setattr(C.Codec, method, spy)
    return seen


@pytest.fixture(scope="session")
def codec():
    import fastcodec
    return fastcodec.Codec()


def repack(data, **changes):
    """Rebuilds a .fcc file with fresh checksums (after deliberate damage), optionally with
    changed header fields (model_id=..., quality=...)."""
    from fastcodec import format as fmt
    return fmt.repack(data, **changes)


# a wide-gamut stand-in: sRGB's red and green colorants swapped, so that applying the profile
# (converting to sRGB) visibly changes the pixels
SWAPPED_PRIMARIES = ((0.3851, 0.7169, 0.0971), (0.4361, 0.2225, 0.0139), (0.1431, 0.0606, 0.7141))


def icc_profile(space="RGB", primaries=SWAPPED_PRIMARIES, gamma=2.2, desc="fastcodec test profile"):
    """A minimal ICC v2 display profile built byte by byte (Pillow can only make sRGB, LAB and
    XYZ ones): RGB as a matrix/TRC profile with the given D50 colorants, or a gray TRC profile."""
    import struct

    s15 = lambda x: struct.pack(">i", int(round(x * 65536)))  # noqa: E731  s15Fixed16Number
    xyz = lambda v: b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)  # noqa: E731
    curv = b"curv\0\0\0\0" + struct.pack(">IH", 1, int(round(gamma * 256))) + b"\0\0"
    text = desc.encode() + b"\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(12 + 67)),
            (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"cprt", b"text\0\0\0\0none\0")]
    if space == "RGB":
        tags += [(sig, xyz(v)) for sig, v in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries)]
        tags += [(sig, curv) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    else:
        tags += [(b"kTRC", curv)]
    table, data, off = b"", b"", 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack(">II", off + len(data), len(body))
        data += body
    head = (struct.pack(">I", off + len(data)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntr"
            + (b"RGB " if space == "RGB" else b"GRAY") + b"XYZ " + bytes(12) + b"acsp" + bytes(28)
            + s15(0.9642) + s15(1.0) + s15(0.8249)).ljust(128, b"\0")
    return head + struct.pack(">I", len(tags)) + table + data
