"""The command-line tool, run as a user would (a subprocess)."""
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import synthetic


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fastcodec", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_compress_decompress_info(tmp_path):
    src = tmp_path / "img.png"
    Image.fromarray(synthetic(60, 80)).save(src)
    r = run("compress", src, "-o", tmp_path / "img.fcc", "-q", "70")
    assert r.returncode == 0, r.stderr
    assert "bpp" in r.stdout
    r = run("info", tmp_path / "img.fcc", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert (d["width"], d["height"], d["quality"]) == (80, 60, 70.0)
    assert d["bytes"] == (tmp_path / "img.fcc").stat().st_size
    assert sum(d["sections"].values()) == d["bytes"]
    r = run("info", tmp_path / "img.fcc")
    assert "80x60" in r.stdout and "latent" in r.stdout
    r = run("decompress", tmp_path / "img.fcc", "-o", tmp_path / "out.png")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (60, 80, 3)


def test_default_output_names_and_force(tmp_path):
    src = tmp_path / "pic.png"
    Image.fromarray(synthetic(16, 16)).save(src)
    assert run("compress", src).returncode == 0
    fcc = tmp_path / "pic.fcc"
    assert fcc.exists()
    before = fcc.read_bytes()
    r = run("compress", src, "-q", "10")
    assert r.returncode == 1 and "exists" in r.stderr and "--force" in r.stderr
    assert fcc.read_bytes() == before  # not overwritten
    assert run("compress", src, "-q", "10", "--force").returncode == 0
    assert fcc.read_bytes() != before
    # decompress would overwrite the source PNG: refused without --force
    r = run("decompress", fcc)
    assert r.returncode == 1 and "exists" in r.stderr


def test_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.fcc"
    bad.write_bytes(b"\x89FCC\x01garbage")
    for args in (("decompress", bad, "-o", tmp_path / "x.png"), ("info", bad),
                 ("compress", tmp_path / "missing.png"), ("decompress", tmp_path / "missing.fcc")):
        r = run(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert r.stderr.startswith("fastcodec: error:") and r.stderr.count("\n") == 1, r.stderr


def test_usage_errors_and_help(tmp_path):
    r = run("compress", "x.png", "-q", "101")
    assert r.returncode == 2 and "quality" in r.stderr
    r = run("compress", "x.png", "-q", "50", "--target-bpp", "1")
    assert r.returncode == 2
    for cmd in ((), ("compress",), ("decompress",), ("info",)):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout
