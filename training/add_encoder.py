"""Add an optional, faster analysis transform to a shipped model bundle.

    python training/add_encoder.py hp2 fast training/runs/fast-encoder.npz [--note "..."]

The weights come from training/encoder_finetune.py: the bundle's own model with g_a replaced by
the lite analysis. Everything but g_a must equal the bundle's weights (models/<bundle>.weights.npz,
float16), or the encoder would not match the bundle's entropy model and decoder; this is
checked. The graph is written to models/<bundle>/encoder_<name>.onnx and listed in model.json
under "encoders" with its SHA-256. The model id does not change: it covers the graphs and tables
that decoding needs and the default encoder, and files written with any encoder decode alike.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import Analysis  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The lite analysis reaches 28 pixels around each latent's 16x16 block (5x5/2, 3x3/2, 5x5/2,
# 5x5/2: 2 + 2 + 8 + 16), inside the 32-pixel halo of the tiled transforms (fastcodec.codec).
ARCH = "lite"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", help="bundle name under models/ (e.g. hp2)")
    ap.add_argument("name", help="encoder name (letters and digits), e.g. fast")
    ap.add_argument("weights", help="weights npz from training/encoder_finetune.py")
    ap.add_argument("--note", default="", help="what it trades, stored in model.json")
    args = ap.parse_args(argv)
    if not args.name.isalnum() or args.name == "default":
        raise SystemExit("the encoder name must be letters and digits, and not 'default'")
    bundle = os.path.join(ROOT, "models", args.bundle)
    ref_path = os.path.join(ROOT, "models", f"{args.bundle}.weights.npz")
    with np.load(args.weights) as w, np.load(ref_path) as ref:
        for k in ref.files:
            if k.startswith("__") or k.startswith("g_a."):
                continue
            a, b = w[k].astype(np.float32), ref[k].astype(np.float32)
            if a.shape != b.shape or not np.allclose(a, b, rtol=1e-3, atol=1e-6):
                raise SystemExit(f"{args.weights} does not hold {args.bundle}'s {k}: train the encoder "
                                 f"against this bundle (training/encoder_finetune.py --model {ref_path})")
        enc = Analysis(int(ref["g_a.0.weight"].shape[0]), int(ref["g_a.6.weight"].shape[0]), ARCH)
        enc.load_state_dict({k[4:]: torch.from_numpy(w[k].astype(np.float32)) for k in w.files if k.startswith("g_a.")})
    enc.eval()
    graph = f"encoder_{args.name}"
    path = os.path.join(bundle, f"{graph}.onnx")
    with torch.no_grad():
        torch.onnx.export(enc, (torch.rand(1, 3, 128, 192),), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {2: "h", 3: "w"}, "y": {2: "h", 3: "w"}},
                          opset_version=17, dynamo=False, do_constant_folding=True)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    meta_path = os.path.join(bundle, "model.json")
    meta = json.load(open(meta_path))
    meta.setdefault("encoders", {})[args.name] = {"graph": graph, "sha256": digest, "architecture": ARCH,
                                                  "note": args.note}
    tmp = meta_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    os.replace(tmp, meta_path)
    print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB, sha256 {digest[:16]}..., listed in {meta_path}")


if __name__ == "__main__":
    main()
