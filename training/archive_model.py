"""Turn an earlier default model's bundle into a decode-only (archived) bundle.

    python training/archive_model.py hp1

Files name the model id they were written with, so every model that a release wrote files with
keeps shipping. Decoding needs only hyper_decoder.onnx, decoder.onnx and tables.npz: this drops
encoder.onnx and hyper_encoder.onnx (about 6 MB for the hp architecture) and records their
SHA-256 in model.json ("archived_graphs"), so the model id, which covers all five files, still
checks. Optional encoders (model.json "encoders", not part of the id) are dropped with their
entries. An archived bundle decodes; compressing with it raises ModelError. Never archive the
default model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from fastcodec._model import ENCODE_GRAPHS, load_model  # the package's own definition and loader

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", help="bundle name under models/, e.g. hp1")
    ap.add_argument("--models", default=str(ROOT / "models"))
    args = ap.parse_args(argv)
    path = Path(args.models) / args.name
    default = (Path(args.models) / "DEFAULT").read_text().strip()
    if args.name == default:
        sys.exit(f"{args.name} is the default model (models/DEFAULT): export a new default first")
    meta = json.loads((path / "model.json").read_text())
    archived = dict(meta.get("archived_graphs") or {})
    for g in ENCODE_GRAPHS:
        f = path / f"{g}.onnx"
        if f.is_file():
            archived[g] = hashlib.sha256(f.read_bytes()).hexdigest()
    meta["archived_graphs"] = archived
    optional = [spec.get("graph") for spec in (meta.pop("encoders", None) or {}).values() if isinstance(spec, dict)]
    if isinstance(meta.pop("refine", None), dict):  # the encoder's refinement graph: encode-only too
        optional.append("synthesis_vjp")
    tmp = path / "model.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, path / "model.json")
    for g in list(ENCODE_GRAPHS) + [g for g in optional if isinstance(g, str)
                                    and (g.startswith("encoder_") or g == "synthesis_vjp")]:
        (path / f"{g}.onnx").unlink(missing_ok=True)
    m = load_model(path)  # the id must still check, loaded the way the package loads it
    print(f"archived {path}: id {m.id} verified, decode only: {m.decode_only}")


if __name__ == "__main__":
    main()
