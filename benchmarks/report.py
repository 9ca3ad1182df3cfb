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
    f = lambda v: "—" if v is None or v != v else f"{v:+.1f}%"  # noqa: E731
    if "jpeg" in res:
        e2 = "fastcodec-e2" in res
        out += ["| codec | BD-rate vs JPEG 4:2:0 (PSNR) | fastcodec vs this codec (PSNR) | (MS-SSIM) |"
                + (" fastcodec effort 2 vs this codec (PSNR) | (MS-SSIM) |" if e2 else ""),
                "|---|---:|---:|---:|" + ("---:|---:|" if e2 else "")]
        for n in res:
            vs = 0.0 if n == "jpeg" else bd["psnr"]["jpeg"].get(n)
            fc = bd["psnr"][n].get("fastcodec") if n != "fastcodec" else None
            fm = bd.get("msssim", {}).get(n, {}).get("fastcodec") if n != "fastcodec" else None
            row = f"| {n} | {f(vs)} | {f(fc)} | {f(fm)} |"
            if e2:
                row += (f" {f(bd['psnr'][n].get('fastcodec-e2'))} | "
                        f"{f(bd.get('msssim', {}).get(n, {}).get('fastcodec-e2'))} |" if n != "fastcodec-e2" else " — | — |")
            out.append(row)
        out += ["", "(negative = fewer bits for the same quality; — = the curves do not overlap in quality)", ""]
    e3 = RES / "effort3" / "rd.json"
    if e3.exists():
        d3 = json.loads(e3.read_text())
        b3, m3 = d3["bd_rate"], d3["meta"]
        names = [n for n in d3["results"] if not n.startswith("fastcodec")]
        out += [f"Effort 3 (`compress(effort=3)`, 40 refinement steps, about 40 s per image and point on one "
                f"core) was measured in a second run of `benchmarks/rd.py` on {m3['images']} of the images "
                f"(every other one, {m3['date']}), with the same codecs, at qualities "
                + ", ".join(str(r["param"]) for r in d3["results"]["fastcodec-e3"]) + ":", "",
                "| BD-rate (PSNR / MS-SSIM) of | " + " | ".join(names) + " | fastcodec (effort 1) |",
                "|---|" + "---:|" * (len(names) + 1)]
        for row in ("fastcodec", "fastcodec-e3"):
            cells = [f"{f(b3['psnr'][o].get(row))} / {f(b3.get('msssim', {}).get(o, {}).get(row))}"
                     for o in names + (["fastcodec"] if row != "fastcodec" else [])]
            if row == "fastcodec":
                cells.append("—")
            out.append(f"| {row} | " + " | ".join(cells) + " |")
        out += ["", "![rate-distortion at effort 3, every other Kodak image](benchmarks/results/effort3/rd.png)", ""]
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
