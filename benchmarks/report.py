#!/usr/bin/env python3
"""Writes the measured results (benchmarks/results/*.json, *.md) into README.md between the
<!-- results:start --> and <!-- results:end --> markers.

    python benchmarks/report.py
"""
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RES = ROOT / "benchmarks" / "results"


def rd_section():
    d = json.loads((RES / "rd.json").read_text())
    res, bd, meta = d["results"], d["bd_rate"], d["meta"]
    out = [f"Measured by `benchmarks/rd.py` on the {meta['images']} Kodak images in one run ({meta['date']}, "
           f"model `{meta['fastcodec_model']}`): bpp of whole files, RGB PSNR averaged per image.", "",
           "![rate-distortion on Kodak](benchmarks/results/rd.png)", ""]
    if "jpeg" in res:
        out += ["| codec | BD-rate vs JPEG 4:2:0 (PSNR) | fastcodec vs this codec (PSNR) | (MS-SSIM) |",
                "|---|---:|---:|---:|"]
        for n in res:
            vs = 0.0 if n == "jpeg" else bd["psnr"]["jpeg"].get(n)
            fc = bd["psnr"][n].get("fastcodec") if n != "fastcodec" else None
            fm = bd.get("msssim", {}).get(n, {}).get("fastcodec") if n != "fastcodec" else None
            f = lambda v: "—" if v is None or v != v else f"{v:+.1f}%"  # noqa: E731
            out.append(f"| {n} | {f(vs)} | {f(fc)} | {f(fm)} |")
        out += ["", "(negative = fewer bits for the same quality; — = the curves do not overlap in quality)", ""]
    out += ["fastcodec against Pillow JPEG 4:2:0 at the same rates (mean over the images):", "",
            "| fastcodec quality | bpp | PSNR dB | MS-SSIM | JPEG quality at nearest bpp | JPEG bpp | JPEG PSNR dB |",
            "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["fastcodec"]:
        j = min(res["jpeg"], key=lambda x: abs(x["bpp"] - r["bpp"])) if "jpeg" in res else None
        ms = f"{r['msssim']:.4f}" if r.get("msssim") else "—"
        out.append(f"| {r['param']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {ms} | "
                   + (f"{j['param']} | {j['bpp']:.3f} | {j['psnr']:.2f} |" if j else "— | — | — |"))
    return out


def main():
    parts = []
    if (RES / "rd.json").exists():
        parts += rd_section()
    for name, title in (("overhead.md", "Entropy coding: bits on disk vs the model's information content"),
                        ("speed.md", "Speed and memory on this machine (2 cores)"),
                        ("loadtest.md", "HTTP service under load (Kodak images, this machine)")):
        if (RES / name).exists():
            parts += ["", f"### {title}", "", (RES / name).read_text().strip()]
    readme = (ROOT / "README.md").read_text()
    a, b = readme.index("<!-- results:start -->"), readme.index("<!-- results:end -->")
    readme = readme[:a] + "<!-- results:start -->\n" + "\n".join(parts) + "\n" + readme[b:]
    (ROOT / "README.md").write_text(readme)


if __name__ == "__main__":
    main()
