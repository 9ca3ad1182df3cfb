"""16-bit lossless and near-lossless coding, measured side by side with the codecs a Python user
can install that keep 16-bit samples (PNG, JPEG XL, JPEG 2000 and JPEG-LS through imagecodecs;
WebP and Pillow's writers hold 8 bits, or 16-bit gray only).

There is no 16-bit photograph in the shared data, so the images are made from 8-bit photographs
in a way that gives them real extra precision: each f x f block of pixels is summed (f = 2: 10
significant bits, f = 4: 12 bits), as a sensor's or a scanner's binning does. Three variants of
every image:

- rgb: the sums scaled to the 16-bit range (round(sum * 65535 / (255 f^2))), as 16-bit PNG and
  TIFF exports of 10- to 14-bit sensors store them;
- rgb-lsb: the sums as they are (values up to 255 f^2), as DICOM and scientific cameras store
  them;
- gray: the luminance (R + 2G + B) / 4 of the sums, scaled to 16 bits (medical and astronomy
  images are mostly gray).

For every image and codec: bits per pixel of the whole file, that the decoded samples are the
original ones (or within max_error of them), and encode / decode wall time on this machine.
Prints markdown tables, writes JSON, a markdown report and a plot.

    python benchmarks/lossless16.py                       # the 24 Kodak images, f = 2
    python benchmarks/lossless16.py ~/photos --factor 4 --limit 10
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from lossless import image_files  # noqa: E402
DEFAULT = ROOT.parent / "shared" / "data" / "kodak"
VARIANTS = ("rgb", "rgb-lsb", "gray")


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def make_variants(rgb8: np.ndarray, f: int) -> dict:
    h, w = (rgb8.shape[0] // f) * f, (rgb8.shape[1] // f) * f
    s = rgb8[:h, :w].astype(np.int64).reshape(h // f, f, w // f, f, 3).sum(axis=(1, 3))
    top = 255 * f * f
    gray = (s[..., 0] + 2 * s[..., 1] + s[..., 2] + 2) // 4
    scale = lambda v: np.rint(v * (65535 / top)).astype(np.uint16)  # noqa: E731
    return {"rgb": scale(s), "rgb-lsb": s.astype(np.uint16), "gray": scale(gray)}


def codecs():
    import imagecodecs as ic

    import fastcodec

    codec = fastcodec.Codec()
    return {
        "fastcodec": (lambda x: codec.compress(x, lossless=True), codec.decompress),
        "PNG (level 9)": (lambda x: ic.png_encode(x, level=9), ic.png_decode),
        "JPEG XL lossless (effort 7)": (lambda x: ic.jpegxl_encode(x, lossless=True, effort=7), ic.jpegxl_decode),
        "JPEG 2000 reversible": (lambda x: ic.jpeg2k_encode(x, level=0, reversible=True), ic.jpeg2k_decode),
        "JPEG-LS": (lambda x: ic.jpegls_encode(x, level=0), ic.jpegls_decode),
    }


def near_codecs(k: int):
    import imagecodecs as ic

    import fastcodec

    codec = fastcodec.Codec()
    return {
        f"fastcodec max_error {k}": (lambda x: codec.compress(x, max_error=k), codec.decompress),
        f"JPEG-LS NEAR {k}": (lambda x: ic.jpegls_encode(x, level=k), ic.jpegls_decode),
    }


def measure(cs: dict, img: np.ndarray, max_error: int) -> dict:
    out = {}
    for name, (enc, dec) in cs.items():
        try:
            data, te = timed(lambda: enc(img))
            back, td = timed(lambda: dec(data))
        except Exception as e:  # a codec that cannot take this image: reported, not fatal
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        back = np.asarray(back).reshape(img.shape)
        err = int(np.abs(back.astype(np.int64) - img).max())
        mse = float(np.mean((back.astype(np.float64) - img) ** 2))
        out[name] = {"bytes": len(data), "bpp": 8 * len(data) / (img.shape[0] * img.shape[1]),
                     "encode_s": te, "decode_s": td, "max_error": err, "ok": err <= max_error,
                     "psnr": float("inf") if mse == 0 else 10 * np.log10(65535.0 ** 2 / mse)}
    return out


def summary(results: list, names: list, variant: str) -> list:
    rows = []
    base = None
    for name in names:
        per = [r[variant][name] for r in results if "bpp" in r[variant].get(name, {})]
        if not per:
            rows.append({"codec": name, "images": 0})
            continue
        bpp = float(np.mean([p["bpp"] for p in per]))
        if base is None:
            base = bpp
        rows.append({"codec": name, "images": len(per), "bpp": bpp, "vs_fastcodec": 100 * (bpp / base - 1),
                     "encode_s": float(np.mean([p["encode_s"] for p in per])),
                     "decode_s": float(np.mean([p["decode_s"] for p in per])),
                     "all_ok": all(p["ok"] for p in per), "psnr": float(np.mean([p["psnr"] for p in per]))})
    return rows


def table(rows: list, near: bool = False) -> str:
    head = "| codec | bpp | size vs fastcodec | encode s | decode s | " + ("PSNR (peak 65535) |" if near else "exact |")
    lines = [head, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r["images"]:
            lines.append(f"| {r['codec']} | failed | | | | |")
            continue
        last = f"{r['psnr']:.2f} dB" if near else ("yes" if r["all_ok"] else "**no**")
        vs = "—" if abs(r["vs_fastcodec"]) < 1e-9 and r is rows[0] else f"{r['vs_fastcodec']:+.1f} %"
        lines.append(f"| {r['codec']} | {r['bpp']:.3f} | {vs} | {r['encode_s']:.3f} | {r['decode_s']:.3f} | {last} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(DEFAULT))
    ap.add_argument("--factor", type=int, default=2, help="block size summed into one 16-bit pixel (2: 10 bits)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images")
    ap.add_argument("--max-error", type=int, default=2, help="near-lossless bound (on the rgb-lsb variant: the "
                    "scaled ones keep only every 64th or 16th value, and fastcodec codes them exactly within any "
                    "bound below that step)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lossless16"))
    args = ap.parse_args(argv)
    files = image_files(args.folder, args.limit)
    cs = codecs()
    ncs = near_codecs(args.max_error)
    results = []
    for i, path in enumerate(files):
        imgs = make_variants(np.asarray(Image.open(path).convert("RGB")), args.factor)
        r = {"image": path.name, "shape": list(imgs["rgb"].shape)}
        for v in VARIANTS:
            r[v] = measure(cs, imgs[v], 0)
        r["near"] = measure(ncs, imgs["rgb-lsb"], args.max_error)
        results.append(r)
        print(f"[{i + 1}/{len(files)}] {path.name}: fastcodec " +
              ", ".join(f"{v} {r[v]['fastcodec']['bpp']:.3f}" for v in VARIANTS) + " bpp", flush=True)
    bits = 8 + 2 * int(np.log2(args.factor))
    report = [f"# 16-bit lossless coding ({len(files)} images of {args.folder}, {args.factor}x{args.factor} "
              f"blocks summed: {bits} significant bits)", ""]
    sums = {}
    for v in VARIANTS:
        sums[v] = summary(results, list(cs), v)
        report += [f"## {v}", "", table(sums[v]), ""]
    sums["near"] = summary(results, list(ncs), "near")
    report += [f"## near-lossless, rgb-lsb, max error {args.max_error}", "", table(sums["near"], True), ""]
    text = "\n".join(report)
    print("\n" + text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text + "\n")
    out.with_suffix(".json").write_text(json.dumps({"factor": args.factor, "summary": sums, "images": results},
                                                   indent=1, default=float) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(cs)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        vals = [next((r.get("bpp", 0) for r in sums[v] if r["codec"] == name), 0) for v in VARIANTS]
        ax.bar(np.arange(len(VARIANTS)) + j * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(VARIANTS)) + 0.4 - width / 2)
    ax.set_xticklabels(VARIANTS)
    ax.set_ylabel("bits per pixel (lower is better)")
    ax.set_title(f"16-bit lossless, {len(files)} images, {bits} significant bits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)


if __name__ == "__main__":
    main()
