"""The command-line tool, run as a user would (a subprocess)."""
import io
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


def test_target_size(tmp_path):
    src = tmp_path / "img.png"
    Image.fromarray(synthetic(120, 160, seed=3)).save(src)
    for arg, limit in (("1.2K", 1200), ("1500", 1500), ("2KiB", 2048)):
        out = tmp_path / f"img-{limit}.fcc"
        r = run("compress", src, "-o", out, "--target-size", arg)
        assert r.returncode == 0, r.stderr
        assert 0.8 * limit < out.stat().st_size <= limit


def test_usage_errors_and_help(tmp_path):
    r = run("compress", "x.png", "-q", "101")
    assert r.returncode == 2 and "quality" in r.stderr
    r = run("compress", "x.png", "-q", "50", "--target-bpp", "1")
    assert r.returncode == 2
    for bad in ("abc", "0", "1.5GB", "2e12"):
        r = run("compress", "x.png", "--target-size", bad)
        assert r.returncode == 2 and "target size" in r.stderr, (bad, r.stderr)
    r = run("compress", "x.png", "--target-bpp", "1", "--target-size", "10K")
    assert r.returncode == 2
    for cmd in ((), ("compress",), ("decompress",), ("info",)):
        r = run(*cmd, "--help")
        assert r.returncode == 0 and "usage" in r.stdout


def test_batch_folder_with_a_bad_file(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for i, p in enumerate([src / "a.png", src / "b.jpg", src / "sub" / "c.png"]):
        Image.fromarray(synthetic(24 + i, 40, seed=i)).save(p)
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    r = run("compress", src, "-o", out, "-q", "40", "--json", "-j", "2")
    assert r.returncode == 1, r.stderr  # one file failed, the others were done
    d = json.loads(r.stdout)
    assert d["summary"]["ok"] == 3 and d["summary"]["failed"] == 1 and d["summary"]["files"] == 4
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.fcc")) == ["a.fcc", "b.fcc", "sub/c.fcc"]
    bad = [f for f in d["files"] if f["status"] == "failed"][0]
    assert bad["input"].endswith("broken.png") and "cannot decode" in bad["error"]
    assert not list(out.rglob(".fastcodec-*"))  # no temporary files left

    # again: existing outputs are skipped, not overwritten
    before = (out / "a.fcc").read_bytes()
    r = run("compress", src / "a.png", src / "b.jpg", "-o", out, "-q", "90", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout)["summary"]["skipped"] == 2
    assert (out / "a.fcc").read_bytes() == before
    r = run("compress", str(src / "*.png"), "-o", out, "-q", "90", "--force", "--quiet")
    assert r.returncode == 1 and r.stdout == ""  # broken.png matched the glob and failed
    assert (out / "a.fcc").read_bytes() != before

    # decode the folder back to PNGs
    back = tmp_path / "back"
    r = run("decompress", out, "-o", back)
    assert r.returncode == 0, r.stderr
    assert "3 done" in r.stdout
    assert np.asarray(Image.open(back / "sub" / "c.png")).shape == (26, 40, 3)


def test_no_inputs_is_a_usage_error(tmp_path):
    r = run("compress", str(tmp_path / "*.png"))
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr
    r = run("compress", tmp_path)  # empty folder
    assert r.returncode == 2 and "no input files" in r.stderr


def test_models_lists_bundles_and_old_files_decode(tmp_path):
    from pathlib import Path
    r = run("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    import fastcodec
    assert sorted(x["name"] for x in rows) == sorted(fastcodec.models())
    default = [x for x in rows if x["default"]]
    assert len(default) == 1 and default[0]["use"] == "encode+decode"
    assert default[0]["id"] == fastcodec.Codec(threads=1).model.id
    spec = fastcodec.Codec(threads=1).model.postfilter
    assert default[0]["postfilter_max_quality"] == (spec["max_quality"] if spec else None)
    assert default[0]["reduce_heads"] == list(fastcodec.Codec(threads=1).model.reduce_factors())
    r = run("models")
    assert r.returncode == 0 and "(default)" in r.stdout
    assert ("post-filter up to quality" in r.stdout) == (spec is not None)
    assert ("reduce heads: 1/" in r.stdout) == bool(default[0]["reduce_heads"])
    # a file of every model with golden files decodes through the command line
    for mid in (x["id"] for x in rows):
        golden = Path(__file__).parent / "golden" / mid / "rgb_q50.fcc"
        if golden.exists():
            out = tmp_path / f"{mid}.png"
            r = run("decompress", golden, "-o", out)
            assert r.returncode == 0, r.stderr
            assert np.asarray(Image.open(out)).shape == (48, 64, 3)


def test_effort(tmp_path):
    import fastcodec
    src = tmp_path / "img.png"
    img = synthetic(64, 96, seed=2)
    Image.fromarray(img).save(src)
    r = run("compress", src, "-o", tmp_path / "e2.fcc", "-q", "50", "--effort", "2")
    assert r.returncode == 0, r.stderr
    data = (tmp_path / "e2.fcc").read_bytes()
    assert data == fastcodec.compress(img, quality=50, effort=2)  # the CLI passes the effort on
    assert data != fastcodec.compress(img, quality=50)
    for bad in ("0", "4", "2.5", "max"):
        r = run("compress", src, "-o", tmp_path / "x.fcc", "--effort", bad)
        assert r.returncode == 2 and "effort must be" in r.stderr, (bad, r.stderr)


def test_decompress_a_region(tmp_path):
    src = tmp_path / "img.png"
    Image.fromarray(synthetic(70, 90, seed=5)).save(src)
    assert run("compress", src, "-o", tmp_path / "img.fcc", "-q", "50").returncode == 0
    r = run("decompress", tmp_path / "img.fcc", "-o", tmp_path / "whole.png")
    assert r.returncode == 0, r.stderr
    r = run("decompress", tmp_path / "img.fcc", "-o", tmp_path / "part.png", "--box", "10,20,60,45")
    assert r.returncode == 0, r.stderr
    whole, part = (np.asarray(Image.open(tmp_path / n)) for n in ("whole.png", "part.png"))
    assert part.shape == (25, 50, 3) and np.array_equal(part, whole[20:45, 10:60])
    # malformed: a usage error; outside this file's 90 x 70: the file fails, one line
    r = run("decompress", tmp_path / "img.fcc", "-o", tmp_path / "x.png", "--box", "1,2,3")
    assert r.returncode == 2 and "LEFT,UPPER,RIGHT,LOWER" in r.stderr
    r = run("decompress", tmp_path / "img.fcc", "-o", tmp_path / "x.png", "--box", "0,0,91,70")
    assert r.returncode == 1 and "right <= 90" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_16bit_gray_png_round_trip(tmp_path):
    """A 16-bit gray PNG, compressed losslessly and written back as a 16-bit PNG; JPEG refused."""
    y, x = np.mgrid[0:40, 0:56]
    img = ((x * 1000 + y * 577) % 65536).astype(np.uint16)
    Image.fromarray(img).save(tmp_path / "deep.png")
    r = run("compress", tmp_path / "deep.png", "--lossless")
    assert r.returncode == 0, r.stderr
    r = run("info", tmp_path / "deep.fcc", "--json")
    d = json.loads(r.stdout)
    assert (d["bits"], d["max_error"], d["channels"]) == (16, 0, 1)
    assert "16-bit grayscale" in run("info", tmp_path / "deep.fcc").stdout
    r = run("decompress", tmp_path / "deep.fcc", "-o", tmp_path / "back.png")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "back.png")), img)
    r = run("decompress", tmp_path / "deep.fcc", "-o", tmp_path / "back.jpg")
    assert r.returncode != 0 and "8 bits" in r.stderr and not (tmp_path / "back.jpg").exists()


def test_target_psnr(tmp_path):
    img = synthetic(48, 64, seed=9)
    Image.fromarray(img).save(tmp_path / "a.png")
    r = run("compress", tmp_path / "a.png", "--target-psnr", "33", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)["files"][0]
    out = np.asarray(Image.open(io.BytesIO(fastcodec_png(tmp_path / "a.fcc"))))
    mse = np.mean((out.astype(float) - img) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) >= 33 and rec["quality"] is not None
    r = run("compress", tmp_path / "a.png", "--target-psnr", "33", "-q", "50", "--force")
    assert r.returncode == 2 and "not allowed with" in r.stderr
    r = run("compress", tmp_path / "a.png", "--target-psnr", "0", "--force")
    assert r.returncode == 2 and "target PSNR" in r.stderr


def fastcodec_png(path):
    import fastcodec

    buf = io.BytesIO()
    Image.fromarray(fastcodec.decompress(path)).save(buf, "PNG")
    return buf.getvalue()
