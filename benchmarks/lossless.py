"""Lossless and near-lossless coding, measured side by side with the lossless codecs a Python user
can install (Pillow PNG, WebP lossless, JPEG XL, JPEG-LS and JPEG 2000 through imagecodecs).

For every image: file size (bits per pixel of the whole file), that the decoded pixels are the
original ones (lossless) or within max_error of them (near-lossless, against JPEG-LS's NEAR),
PSNR, and encode / decode wall time on this machine (one image at a time, each codec with its
default threading). Prints markdown tables, writes JSON, a markdown report and a plot.

    python benchmarks/lossless.py                       # the 24 Kodak images
    python benchmarks/lossless.py ~/photos --limit 10   # any folder of images

Three synthetic images made here (a screenshot of text rows drawn by Pillow, a page of
anti-aliased text in DejaVu Sans, a matplotlib line chart; none stored, the same every run) are
measured too, in a table of their own (--no-synthetic leaves them out).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "kodak"


def image_files(folder, limit: int = 0) -> list:
    """The images of a folder (sorted; the first limit of them if given); exits if there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif",
                                                                             ".tiff", ".bmp", ".webp"))
    files = files[:limit] if limit else files
    if not files:
        sys.exit(f"no images in {folder}")
    return files


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def lossless_codecs():
    import imagecodecs as ic
    import fastcodec

    codec = fastcodec.Codec()

    def png_enc(x):
        b = io.BytesIO()
        Image.fromarray(x).save(b, "PNG", optimize=True)
        return b.getvalue()

    return {
        "fastcodec": (lambda x: codec.compress(x, lossless=True), codec.decompress),
        "PNG (Pillow, optimize)": (png_enc, lambda d: np.asarray(Image.open(io.BytesIO(d)))),
        "WebP lossless (method 6)": (lambda x: ic.webp_encode(x, lossless=True, level=100, method=6), ic.webp_decode),
        "JPEG XL lossless (effort 7)": (lambda x: ic.jpegxl_encode(x, lossless=True, effort=7), ic.jpegxl_decode),
        "JPEG-LS": (lambda x: ic.jpegls_encode(x, level=0), ic.jpegls_decode),
        "JPEG 2000 reversible": (lambda x: ic.jpeg2k_encode(x, level=0, reversible=True), ic.jpeg2k_decode),
    }


def synthetic_images() -> dict:
    """{name: (H, W, 3) uint8}: what screenshots, documents and charts look like."""
    from PIL import ImageDraw, ImageFont

    shot = Image.new("RGB", (800, 600), (246, 246, 246))
    d = ImageDraw.Draw(shot)
    d.rectangle((0, 0, 800, 30), fill=(40, 60, 90))
    for i in range(16):
        d.rectangle((10, 40 + i * 34, 790, 68 + i * 34), outline=(200, 200, 210), fill=(255, 255, 255))
        d.text((16, 46 + i * 34), f"Row {i}: the quick brown fox jumps over the lazy dog {i * 37 % 101}",
               fill=(20, 20, 20))
    out = {"screenshot 800x600": np.asarray(shot)}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import font_manager
    except ImportError:
        print("matplotlib not installed: the text page and the chart are left out")
        return out
    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 15)
    page = Image.new("RGB", (900, 700), "white")
    d = ImageDraw.Draw(page)
    words = "Lossless coding keeps every pixel of the image exactly as it was, which matters for text".split()
    rng = np.random.default_rng(1)
    for r in range(36):
        d.text((20, 12 + r * 19), " ".join(rng.choice(words, 11)), fill=(30, 30, 30), font=font)
    out["text page 900x700"] = np.asarray(page)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    x = np.linspace(0, 10, 400)
    for k in range(4):
        ax.plot(x, np.sin(x + k) * (k + 1), label=f"series {k}")
    ax.legend()
    ax.grid(True)
    ax.set_title("A chart")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out["chart 800x500"] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(DEFAULT), help="folder of images (default: Kodak)")
    ap.add_argument("--limit", type=int, default=0, help="use the first N images only")
    ap.add_argument("--near", default="1,2,4", help="max_error values for the near-lossless table")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for lossless.{json,md,png}")
    ap.add_argument("--no-synthetic", action="store_true", help="leave out the synthetic images' table")
    args = ap.parse_args(argv)
    import imagecodecs as ic
    import fastcodec

    files = image_files(args.folder, args.limit)
    near = [int(k) for k in args.near.split(",") if k]
    codecs = lossless_codecs()
    codec = fastcodec.Codec()
    rows = {name: [] for name in codecs}
    nrows = {(name, k): [] for k in near for name in ("fastcodec", "JPEG-LS")}
    for f in files:
        x = np.ascontiguousarray(np.asarray(Image.open(f).convert("RGB")))
        n = x.shape[0] * x.shape[1]
        for name, (enc, dec) in codecs.items():
            data, te = timed(lambda: enc(x))
            y, td = timed(lambda: dec(data))
            y = np.asarray(y)
            assert y.shape == x.shape and np.array_equal(y, x), f"{name} is not lossless on {f.name}"
            rows[name].append({"image": f.name, "bpp": 8 * len(data) / n, "encode_s": te, "decode_s": td})
        for k in near:
            for name, enc, dec in (("fastcodec", lambda x: codec.compress(x, max_error=k), codec.decompress),
                                   ("JPEG-LS", lambda x: ic.jpegls_encode(x, level=k), ic.jpegls_decode)):
                data, te = timed(lambda: enc(x))
                y, td = timed(lambda: dec(data))
                err = int(np.abs(np.asarray(y).astype(int) - x).max())
                assert err <= k, f"{name} max_error {k}: error {err} on {f.name}"
                nrows[(name, k)].append({"image": f.name, "bpp": 8 * len(data) / n, "psnr": psnr(x, y),
                                         "max_err": err, "encode_s": te, "decode_s": td})
        print(f"{f.name}: " + ", ".join(f"{name.split(' ')[0]} {rows[name][-1]['bpp']:.3f}" for name in codecs),
              flush=True)

    synth = {} if args.no_synthetic else synthetic_images()
    srows = {name: [] for name in codecs}
    for label, x in synth.items():
        n = x.shape[0] * x.shape[1]
        for name, (enc, dec) in codecs.items():
            data, te = timed(lambda: enc(x))
            y, td = timed(lambda: dec(data))
            assert np.array_equal(np.asarray(y), x), f"{name} is not lossless on {label}"
            srows[name].append({"image": label, "bpp": 8 * len(data) / n, "encode_s": te, "decode_s": td})
        print(f"{label}: " + ", ".join(f"{name.split(' ')[0]} {srows[name][-1]['bpp']:.3f}" for name in codecs),
              flush=True)

    def mean(rs, key):
        return float(np.mean([r[key] for r in rs]))

    ref = mean(rows["fastcodec"], "bpp")
    lines = [f"Lossless on {len(files)} images of {args.folder} ({os.cpu_count()} cores; bits per pixel of the "
             "whole file, mean per image; wall time per image, one run):", "",
             "| codec | bpp | vs fastcodec | encode s | decode s |", "|---|---:|---:|---:|---:|"]
    for name, rs in rows.items():
        b = mean(rs, "bpp")
        lines.append(f"| {name} | {b:.3f} | {100 * (b / ref - 1):+.1f} % | {mean(rs, 'encode_s'):.3f} | "
                     f"{mean(rs, 'decode_s'):.3f} |")
    lines += ["", "Near-lossless (every value within max_error of the original; JPEG-LS's NEAR = max_error):", "",
              "| max_error | codec | bpp | PSNR dB | largest error | encode s | decode s |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    for k in near:
        for name in ("fastcodec", "JPEG-LS"):
            rs = nrows[(name, k)]
            lines.append(f"| {k} | {name} | {mean(rs, 'bpp'):.3f} | {mean(rs, 'psnr'):.2f} | "
                         f"{max(r['max_err'] for r in rs)} | {mean(rs, 'encode_s'):.3f} | {mean(rs, 'decode_s'):.3f} |")
    if synth:
        names = list(codecs)
        lines += ["", "Synthetic images (made by the benchmark: Pillow text rows, a page of anti-aliased text, a "
                  "matplotlib chart), bits per pixel and encode / decode seconds:", "",
                  "| image | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for i, label in enumerate(synth):
            lines.append(f"| {label} | " + " | ".join(
                f"{srows[nm][i]['bpp']:.3f} ({srows[nm][i]['encode_s']:.2f} / {srows[nm][i]['decode_s']:.3f})"
                for nm in names) + " |")
    text = "\n".join(lines)
    print()
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lossless.json").write_text(json.dumps({"folder": args.folder, "images": len(files),
                                                   "lossless": rows, "synthetic": srows,
                                                   "near": {f"{n}@{k}": r for (n, k), r in nrows.items()}}, indent=1))
    (out / "lossless.md").write_text(f"# `benchmarks/lossless.py`\n\n{text}\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        names = list(rows)
        a1.barh(names, [mean(rows[n], "bpp") for n in names], color=["C3"] + ["C0"] * (len(names) - 1))
        a1.invert_yaxis()
        a1.set_xlabel("bits per pixel (lossless, lower is better)")
        for name, c in (("fastcodec", "C3"), ("JPEG-LS", "C0")):
            a2.plot([mean(nrows[(name, k)], "bpp") for k in near], [mean(nrows[(name, k)], "psnr") for k in near],
                    "o-", color=c, label=name)
        a2.set_xlabel("bits per pixel")
        a2.set_ylabel("PSNR (dB)")
        a2.set_title(f"near-lossless, max_error {', '.join(map(str, near))}")
        a2.legend()
        a2.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "lossless.png", dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")
    print(f"\nwrote {out / 'lossless.md'}, {out / 'lossless.json'}, {out / 'lossless.png'}")


if __name__ == "__main__":
    main()
