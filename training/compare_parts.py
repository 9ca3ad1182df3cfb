#!/usr/bin/env python3
"""How good are a bundle's optional parts, next to another bundle's? (after training/cascade.py)

    python training/compare_parts.py hp2 hp3 [--every-nth 4] [--qualities 5,20,35,50,65,80,95]

For each bundle, every option it ships is measured against the same bundle's reference path
(default encoder, bit-exact decoder with the float post-filter) on the same Kodak images, as a
BD-rate (PSNR, benchmarks/rd.py's Bjøntegaard computation) and as the mean dB at each quality:
the int8 and mixed decoders (each with its post-filter, the int8 one where the bundle has it),
the default decoder policy, the fast and int8 encoders. A new bundle's parts made by the cascade
should cost about what the older bundle's cost; the reference paths themselves are compared last.
Kodak is only measured here, never trained or tuned on.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from rd import bd_rate, psnr  # noqa: E402

OPTIONS = [  # name, encoder, decoder (None: the bundle's policy)
    ("reference", "default", "bitexact"),
    ("int8 decoder", "default", "int8"),
    ("mixed decoder", "default", "mixed"),
    ("default policy", "default", None),
    ("fast encoder", "fast", "bitexact"),
    ("int8 encoder", "int8", "bitexact"),
]


def measure(bundle, images, qualities):
    import fastcodec

    meta = fastcodec.Codec(bundle).model.meta
    out = {}
    for name, enc, dec in OPTIONS:
        if (dec not in (None, "bitexact") and dec not in meta.get("decoders", {})) or \
                (enc != "default" and enc not in meta.get("encoders", {})):
            continue
        c = fastcodec.Codec(bundle, threads=2, encoder=enc, **({"decoder": dec} if dec else {}))
        rows = []
        for q in qualities:
            bits = db = 0.0
            for im in images:
                data = c.compress(im, quality=q)
                bits += 8 * len(data) / (im.shape[0] * im.shape[1])
                db += psnr(im, c.decompress(data))
            rows.append((bits / len(images), db / len(images)))
        out[name] = np.array(rows)
        print(f"  {bundle} {name}: " + " ".join(f"{b:.3f}/{d:.2f}" for b, d in rows), flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--kodak", default=os.path.join(ROOT, "..", "shared", "data", "kodak"))
    ap.add_argument("--every-nth", type=int, default=4)
    ap.add_argument("--qualities", default="5,20,35,50,65,80,95")
    a = ap.parse_args(argv)
    files = sorted(f for f in os.listdir(a.kodak) if f.startswith("kodim"))[::a.every_nth]
    if not files:
        raise SystemExit(f"no Kodak images in {a.kodak}")
    images = [np.asarray(Image.open(os.path.join(a.kodak, f)).convert("RGB")) for f in files]
    qualities = [float(q) for q in a.qualities.split(",")]
    print(f"{len(images)} Kodak images ({', '.join(files)}), qualities {a.qualities}; bpp/dB per quality")
    res = {b: measure(b, images, qualities) for b in a.bundles}
    print("\n| option | " + " | ".join(f"{b}: BD-rate, dB at q{qualities[0]:g} / q{qualities[len(qualities) // 2]:g} / "
                                        f"q{qualities[-1]:g}" for b in a.bundles) + " |")
    print("|---|" + "---:|" * len(a.bundles))
    for name, _, _ in OPTIONS[1:]:
        cells = []
        for b in a.bundles:
            r, o = res[b].get("reference"), res[b].get(name)
            if o is None:
                cells.append("—")
                continue
            bd = bd_rate(r[:, 0], r[:, 1], o[:, 0], o[:, 1])
            d = o[:, 1] - r[:, 1]
            cells.append(f"{bd:+.1f} %, {d[0]:+.3f} / {d[len(d) // 2]:+.3f} / {d[-1]:+.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if len(a.bundles) > 1:
        r0 = res[a.bundles[0]]["reference"]
        for b in a.bundles[1:]:
            r = res[b]["reference"]
            print(f"\nreference path, {b} against {a.bundles[0]}: BD-rate {bd_rate(r0[:, 0], r0[:, 1], r[:, 0], r[:, 1]):+.1f} %")


if __name__ == "__main__":
    main()
