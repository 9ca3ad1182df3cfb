#!/usr/bin/env python3
"""Rate-distortion benchmark: fastcodec against the classic codecs, side by side in one run.

    python benchmarks/rd.py [FOLDER] [--out benchmarks/results] [--codecs jpeg,webp,avif6,...]

bpp counts whole files (headers included); PSNR is RGB PSNR of the 8-bit decoded image,
averaged per image; MS-SSIM on RGB (channel mean), also averaged per image. BD-rates use
PCHIP interpolation of log-rate over the overlapping quality range (Bjontegaard).
Writes rd.json, rd.md (markdown tables) and rd.png (RD plot) to --out.
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


# --------------------------------------------------------------------------- metrics
def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-10))


def _gauss_filter(x, win):
    from scipy.ndimage import correlate1d
    x = correlate1d(x, win, axis=0, mode="constant")
    x = correlate1d(x, win, axis=1, mode="constant")
    m = len(win) // 2
    return x[m:-m, m:-m]


def ms_ssim(a, b):
    """MS-SSIM (Wang et al. 2003) on RGB, 5 scales, Gaussian 11x11 sigma 1.5, mean over channels."""
    weights = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    win = g / g.sum()
    C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mcs = []
        for s in range(5):
            mx, my = _gauss_filter(x, win), _gauss_filter(y, win)
            sxx = _gauss_filter(x * x, win) - mx * mx
            syy = _gauss_filter(y * y, win) - my * my
            sxy = _gauss_filter(x * y, win) - mx * my
            cs = (2 * sxy + C2) / (sxx + syy + C2)
            if s == 4:
                ssim = ((2 * mx * my + C1) / (mx * mx + my * my + C1)) * cs
                mcs.append(max(ssim.mean(), 1e-8))
            else:
                mcs.append(max(cs.mean(), 1e-8))
                h, w = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
                x = x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
                y = y[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
        vals.append(np.prod(np.array(mcs) ** weights))
    return float(np.mean(vals))


def bd_rate(r1, d1, r2, d2):
    """Average rate difference (%) of curve 2 against curve 1 at equal distortion (PCHIP, log rate)."""
    from scipy.interpolate import PchipInterpolator
    r1, d1, r2, d2 = map(np.asarray, (r1, d1, r2, d2))
    o1, o2 = np.argsort(d1), np.argsort(d2)
    l1, l2 = np.log(r1[o1]), np.log(r2[o2])
    d1, d2 = d1[o1], d2[o2]
    lo, hi = max(d1.min(), d2.min()), min(d1.max(), d2.max())
    if hi <= lo:
        return float("nan")
    xs = np.linspace(lo, hi, 200)
    f1, f2 = PchipInterpolator(d1, l1)(xs), PchipInterpolator(d2, l2)(xs)
    avg = np.trapezoid(f2 - f1, xs) / (hi - lo)
    return float((np.exp(avg) - 1) * 100)


# --------------------------------------------------------------------------- codecs
def _pil_codec(fmt, **kw):
    def run(img, q):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=int(q), **kw)
        data = buf.getvalue()
        return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return run


def _ic(enc, dec, **kw):
    def run(img, q):
        import imagecodecs
        data = getattr(imagecodecs, enc)(img, **{k: (q if v is None else v) for k, v in kw.items()})
        return bytes(data), np.asarray(getattr(imagecodecs, dec)(data))[..., :3]
    return run


def _fastcodec(codec):
    def run(img, q):
        data = codec.compress(img, quality=q)
        return data, codec.decompress(data)
    return run


def _fastcodec_option(effort=1, **options):
    """fastcodec with one of the default model's optional encoders or decoders (created on first
    use), or at a higher encoder effort."""
    state = {}

    def run(img, q):
        if "codec" not in state:
            import fastcodec
            state["codec"] = fastcodec.Codec(threads=1, **options)
        data = state["codec"].compress(img, quality=q, effort=effort)
        return data, state["codec"].decompress(data)
    return run


FC_QUALITIES = [1, 8, 16, 25, 35, 45, 55, 65, 75, 85, 100]
# effort 3 takes about 40 s per Kodak image and point on one core: fewer points
FC_QUALITIES_E3 = [1, 16, 35, 55, 75, 100]


def codecs(fc_codec):
    # the learned codec's own curve: no exact files for synthetic-looking images (compress() would
    # return them where they are smaller, and their PSNR is infinite)
    import fastcodec.codec
    fastcodec.codec.SYNTHETIC_EQUAL_LEFT = 2.0
    return {
        "fastcodec": (_fastcodec(fc_codec), FC_QUALITIES),
        "fastcodec-fast": (_fastcodec_option(encoder="fast"), FC_QUALITIES),
        "fastcodec-int8enc": (_fastcodec_option(encoder="int8"), FC_QUALITIES),
        "fastcodec-int8": (_fastcodec_option(decoder="int8"), FC_QUALITIES),
        "fastcodec-mixed": (_fastcodec_option(decoder="mixed"), FC_QUALITIES),
        "fastcodec-float": (_fastcodec_option(decoder="float"), FC_QUALITIES),
        "fastcodec-nofilter": (_fastcodec_option(postfilter=False), FC_QUALITIES),
        "fastcodec-e2": (_fastcodec_option(effort=2), FC_QUALITIES),
        "fastcodec-e3": (_fastcodec_option(effort=3), FC_QUALITIES_E3),
        "jpeg": (_pil_codec("JPEG", subsampling=2), [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
        "webp": (_pil_codec("WEBP", method=6), [5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95]),
        "avif6": (_ic("avif_encode", "avif_decode", level=None, speed=6), [10, 20, 30, 40, 50, 60, 70, 80, 90]),
        "avif2": (_ic("avif_encode", "avif_decode", level=None, speed=2), [15, 30, 45, 60, 75, 90]),
        "jxl7": (_ic("jpegxl_encode", "jpegxl_decode", distance=None, effort=7),
                 [12.0, 8.0, 6.0, 4.5, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5]),
        "jpeg2000": (_ic("jpeg2k_encode", "jpeg2k_decode", level=None), [24, 26, 28, 30, 32, 34, 36, 38, 40, 44]),
    }


LABELS = {"fastcodec": "fastcodec", "fastcodec-fast": "fastcodec, fast encoder",
          "fastcodec-int8enc": "fastcodec, int8 encoder",
          "fastcodec-int8": "fastcodec, int8 decoder", "fastcodec-float": "fastcodec, float decoder",
          "fastcodec-mixed": "fastcodec, mixed decoder",
          "fastcodec-nofilter": "fastcodec, no post-filter",
          "fastcodec-e2": "fastcodec, effort 2", "fastcodec-e3": "fastcodec, effort 3",
          "jpeg": "JPEG 4:2:0 (Pillow)", "webp": "WebP m6 (Pillow)",
          "avif6": "AVIF speed 6", "avif2": "AVIF speed 2", "jxl7": "JPEG XL e7", "jpeg2000": "JPEG 2000"}


_W = {}


def _init_worker(files, msssim):
    _W["images"] = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    _W["msssim"] = msssim
    _W["table"] = None


def _cell(name, q):
    """One (codec, parameter) point over every image, in a worker process."""
    if _W["table"] is None:
        import fastcodec
        _W["table"] = codecs(fastcodec.Codec(threads=1))
    run = _W["table"][name][0]
    bpp, ps, ms = [], [], []
    for img in _W["images"]:
        data, out = run(img, q)
        bpp.append(8 * len(data) / (img.shape[0] * img.shape[1]))
        ps.append(psnr(img, out))
        if _W["msssim"]:
            ms.append(ms_ssim(img, out))
    return {"param": q, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(ps)),
            "msssim": float(np.mean(ms)) if ms else None}


def plot(results, names, bd, title, out):
    """rd.png: PSNR (and MS-SSIM) against bpp for every codec."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2 if "msssim" in bd else 1, figsize=(13 if "msssim" in bd else 7, 5),
                                 squeeze=False)
        for n in names:
            rs = results[n]
            style = (dict(lw=2.5, color="k", ls="-") if n == "fastcodec" else
                     dict(lw=1.8, color="k", ls="--") if n == "fastcodec-fast" else
                     dict(lw=1.8, color="k", ls="-.") if n == "fastcodec-int8enc" else
                     dict(lw=1.8, color="k", ls=":") if n in ("fastcodec-int8", "fastcodec-mixed", "fastcodec-float",
                                                             "fastcodec-nofilter") else
                     dict(lw=2.5, color="magenta", ls="-") if n == "fastcodec-e2" else
                     dict(lw=2.0, color="magenta", ls="--") if n == "fastcodec-e3" else
                     dict(lw=1.2, ls="-"))
            axes[0][0].plot([r["bpp"] for r in rs], [r["psnr"] for r in rs], "o", ms=3, label=LABELS[n], **style)
            if "msssim" in bd:
                axes[0][1].plot([r["bpp"] for r in rs], [-10 * np.log10(1 - r["msssim"]) for r in rs], "o", ms=3,
                                label=LABELS[n], **style)
        for ax, yl in zip(axes[0], ["RGB PSNR (dB)", "MS-SSIM (dB, -10 log10(1 - x))"]):
            ax.set_xlim(0, 2.0)
            ax.set_xlabel("bits per pixel (whole file)")
            ax.set_ylabel(yl)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.suptitle(f"Rate-distortion on {title}")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "rd.png"), dpi=110)
    except ImportError:
        print("matplotlib not installed: no plot")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "data" / "kodak"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--codecs", default=None, help="default: fastcodec (and fastcodec-fast where the model "
                    "ships a fast encoder, fastcodec-int8enc for an int8 one, fastcodec-int8, -mixed or -float for its "
                    "other decoders, fastcodec-nofilter without its post-filter, fastcodec-e2 at encoder effort 2 "
                    "where it has the refinement graph), jpeg, webp, avif6, avif2, jxl7, jpeg2000; also "
                    "known: fastcodec-e3 (effort 3: about 75 s per Kodak image and point on one core)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images")
    ap.add_argument("--no-msssim", action="store_true", help="skip MS-SSIM (faster)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (each codec "
                    "point runs single-threaded in one of them)")
    ap.add_argument("--replot", action="store_true", help="only redraw rd.png from --out's rd.json")
    args = ap.parse_args(argv)
    if args.replot:
        d = json.loads(Path(args.out, "rd.json").read_text())
        plot(d["results"], list(d["results"]), d["bd_rate"],
             f"{Path(d['meta']['folder']).name} ({d['meta']['images']} images)", args.out)
        return

    import fastcodec
    files = sorted(p for p in Path(args.folder).iterdir()
                   if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm", ".webp"))
    if args.limit:
        files = files[:args.limit]
    if not files:
        sys.exit(f"no images in {args.folder}")
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    if args.codecs is None:
        m = fastcodec.Codec(threads=1).model
        extra = ["fastcodec-fast"] if "fast" in m.encoders else []
        if "int8" in m.encoders:
            extra.append("fastcodec-int8enc")
        if "int8" in m.decoders:  # the decoder that is not the default one
            if m.decoder_policy:  # the default mixes decoders by quality: show each alone
                extra += ["fastcodec-float", "fastcodec-int8"] + (["fastcodec-mixed"] if "mixed" in m.decoders else [])
            else:
                extra.append("fastcodec-float" if m.default_decoder == "int8" else "fastcodec-int8")
        if m.postfilter is not None:
            extra.append("fastcodec-nofilter")
        if m.refine is not None:
            extra.append("fastcodec-e2")
        args.codecs = ",".join(["fastcodec", *extra, "jpeg,webp,avif6,avif2,jxl7,jpeg2000"])
    names = [n.strip() for n in args.codecs.split(",") if n.strip()]
    table = codecs(None)
    unknown = [n for n in names if n not in table]
    if unknown:
        sys.exit(f"unknown codecs {unknown}; known: {', '.join(table)}")
    from concurrent.futures import ProcessPoolExecutor
    t0 = time.time()
    with ProcessPoolExecutor(args.jobs, initializer=_init_worker,
                             initargs=([str(f) for f in files], not args.no_msssim)) as ex:
        futures = {n: [ex.submit(_cell, n, q) for q in table[n][1]] for n in names}
        results = {}
        for n in names:
            results[n] = [f.result() for f in futures[n]]
            print(f"{LABELS[n]:<22} {len(results[n])} points x {len(images)} images done at {time.time() - t0:.0f}s",
                  flush=True)

    # BD-rates: every codec against JPEG (the ladder), and fastcodec against every codec
    bd = {}
    for metric in ("psnr", "msssim"):
        if metric == "msssim" and args.no_msssim:
            continue
        key = (lambda r: r["psnr"]) if metric == "psnr" else (lambda r: -10 * np.log10(1 - r["msssim"]))
        bd[metric] = {}
        for ref in names:
            bd[metric][ref] = {}
            for other in names:
                if other == ref:
                    continue
                a, b = results[ref], results[other]
                bd[metric][ref][other] = bd_rate([r["bpp"] for r in a], [key(r) for r in a],
                                                 [r["bpp"] for r in b], [key(r) for r in b])
    os.makedirs(args.out, exist_ok=True)
    meta = {"folder": str(args.folder), "images": len(images), "fastcodec_model": fastcodec.Codec().model.id,
            "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0)}
    with open(os.path.join(args.out, "rd.json"), "w") as f:
        json.dump({"meta": meta, "results": results, "bd_rate": bd}, f, indent=1)

    lines = [f"Images: {len(images)} from `{Path(args.folder).name}`, fastcodec model `{meta['fastcodec_model']}`.", ""]
    if "jpeg" in names:
        lines += ["| codec | BD-rate vs JPEG (PSNR) | fastcodec vs it (PSNR) |" +
                  (" fastcodec vs it (MS-SSIM) |" if "msssim" in bd else ""),
                  "|---|---:|---:|" + ("---:|" if "msssim" in bd else "")]
        for n in names:
            vs_jpeg = bd["psnr"]["jpeg"].get(n, 0.0) if n != "jpeg" else 0.0
            fc = bd["psnr"][n].get("fastcodec", float("nan")) if n != "fastcodec" else float("nan")
            row = f"| {LABELS[n]} | {vs_jpeg:+.1f}% | {fc:+.1f}% |"
            if "msssim" in bd:
                fm = bd["msssim"][n].get("fastcodec", float("nan")) if n != "fastcodec" else float("nan")
                row += f" {fm:+.1f}% |"
            lines.append(row.replace("+nan%", "—").replace("nan%", "—"))
        lines.append("")
    lines += ["| codec | param | bpp | PSNR (dB) | MS-SSIM |", "|---|---:|---:|---:|---:|"]
    for n in names:
        for r in results[n]:
            ms = f"{r['msssim']:.4f}" if r["msssim"] is not None else "—"
            lines.append(f"| {LABELS[n]} | {r['param']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {ms} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "rd.md"), "w") as f:
        f.write(md)
    print(md)

    plot(results, names, bd, f"{Path(args.folder).name} ({len(images)} images)", args.out)


if __name__ == "__main__":
    main()
