#!/usr/bin/env python3
"""Speed and memory: encode/decode megapixels per second and peak RSS, fastcodec next to AVIF,
JPEG XL, WebP and JPEG, measured in the same run on this machine.

    python benchmarks/speed.py [--sizes kodak,4mp] [--large] [--threads 1,2] [--repeat 3]

`fastcodec` runs the default model with its default encoder and decoder (and its post-filter at
quality 75, where the model has one). `fastcodec-fast` runs it with the fastest options it ships:
the optional int8 encoder (or else the fast one; same file format, some compression traded for
encode speed), the optional int8 decoder (same files, slightly different pixels) and no
post-filter. `fastcodec-float` decodes with the float synthesis in onnxruntime instead of the
bit-exact executor that `fastcodec` uses at quality 75 (the same function; onnxruntime's pixels
may differ by a level across machines). The `compressai` rows run CompressAI's mean-scale hyperprior (Minnen et al. 2018 without the
context model, N=96, M=192 like the shipped model; ConvTranspose synthesis and GDN) with its own
rANS coder, compress() and decompress() end to end, in the separate environment that
benchmarks/compressai_env.sh creates (CompressAI pins numpy<2). Its weights are random (only
speed is measured, so no bpp). The `torch` rows are fastcodec's own architecture in PyTorch
eager mode, networks only.

Every (codec, size, threads) cell runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its
own. Test images are natural photographs: Kodak as is, larger sizes made from Kodak images
(mosaics resized with Lanczos). --large adds 24 MP and 50 MP.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
SIZES = {"kodak": (512, 768), "4mp": (1632, 2448), "24mp": (4000, 6000), "50mp": (5773, 8660)}


def make_image(name):
    from PIL import Image
    files = sorted(KODAK.glob("kodim*.png"))
    if name == "kodak":
        return np.asarray(Image.open(files[22]).convert("RGB"))
    h, w = SIZES[name]
    tiles = [Image.open(f).convert("RGB").resize((768, 512)) for f in files[:9]]
    mosaic = Image.new("RGB", (768 * 3, 512 * 3))
    for i, t in enumerate(tiles):
        mosaic.paste(t, ((i % 3) * 768, (i // 3) * 512))
    return np.asarray(mosaic.resize((w, h), Image.LANCZOS))


def codec_fns(name, threads):
    if name in ("fastcodec", "fastcodec-fast", "fastcodec-float"):
        import fastcodec
        if name == "fastcodec-fast":
            m = fastcodec.Codec(threads=1).model
            enc = next((e for e in ("int8", "fast") if e in m.encoders), "default")
            c = fastcodec.Codec(threads=threads, encoder=enc,
                                decoder="int8" if "int8" in m.decoders else None, postfilter=False)
        elif name == "fastcodec-float":  # the float synthesis in onnxruntime instead of the bit-exact executor
            c = fastcodec.Codec(threads=threads, decoder="float")
        else:
            c = fastcodec.Codec(threads=threads)
        return (lambda a: c.compress(a, quality=75)), c.decompress
    if name in ("jpeg", "webp"):
        from PIL import Image
        fmt, kw = ("JPEG", {"quality": 85, "subsampling": 2}) if name == "jpeg" else ("WEBP", {"quality": 80, "method": 4})

        def enc(a):
            b = io.BytesIO()
            Image.fromarray(a).save(b, fmt, **kw)
            return b.getvalue()
        return enc, (lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")))
    if name == "torch":
        # the same architecture in PyTorch eager mode on the CPU (networks only, no entropy
        # coding): a stand-in for running it in CompressAI, which needs its own environment
        import torch
        sys.path.insert(0, str(ROOT / "training"))
        from model import HyperpriorCodec, load_weights
        torch.set_num_threads(threads)
        default = (ROOT / "models" / "DEFAULT").read_text().strip()
        sd, _, arch = load_weights(ROOT / "models" / f"{default}.weights.npz")
        m = HyperpriorCodec(96, 192, arch=arch)
        m.load_state_dict(sd)
        m.eval()
        lvl = torch.tensor([5.0])

        def enc(a):
            with torch.no_grad():
                h, wd = a.shape[:2]
                x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
                x = torch.nn.functional.pad(x, (0, -wd % 64, 0, -h % 64), mode="replicate")
                g, _ = m.gains(lvl)
                y = m.g_a(x) * g
                z = torch.round(m.h_a(y))
                mu, _ = m.hyper_params(z)
                return torch.round(y - mu), z, mu

        def dec(d):
            with torch.no_grad():
                r, z, mu = d
                _, ig = m.gains(lvl)
                m.hyper_params(z)
                return m.g_s((r + mu) * ig)
        return (lambda a: _Sized(enc(a))), (lambda d: dec(d.v))
    if name == "compressai":
        import torch
        _torchvision_stand_in()
        from compressai.models import MeanScaleHyperprior
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        m = MeanScaleHyperprior(N=96, M=192).eval()
        m.update(force=True)

        def enc(a):
            with torch.no_grad():
                h, wd = a.shape[:2]
                x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float() / 255
                x = torch.nn.functional.pad(x, (0, -wd % 64, 0, -h % 64), mode="replicate")
                return _Sized(m.compress(x))

        def dec(d):
            with torch.no_grad():
                return m.decompress(d.v["strings"], d.v["shape"])["x_hat"]
        return enc, dec
    import imagecodecs
    if name == "avif6":
        return (lambda a: imagecodecs.avif_encode(a, level=60, speed=6, numthreads=threads)), \
            (lambda d: imagecodecs.avif_decode(d, numthreads=threads))
    if name == "jxl7":
        return (lambda a: imagecodecs.jpegxl_encode(a, distance=2.0, effort=7, numthreads=threads)), \
            (lambda d: imagecodecs.jpegxl_decode(d, numthreads=threads))
    raise ValueError(name)


def _has_fast_encoder():
    import fastcodec
    m = fastcodec.Codec(threads=1).model
    return "fast" in m.encoders or "int8" in m.decoders


def _torchvision_stand_in():
    """CompressAI imports torchvision.transforms only to list its classes. The torchvision wheels
    available here are CUDA builds that fail to load against the CPU torch; give it an empty
    module then (the models never use torchvision)."""
    import types
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")
        tv.transforms = tvt
        sys.modules["torchvision"], sys.modules["torchvision.transforms"] = tv, tvt


class _Sized:
    """Wraps an encoder result whose size is not reported (the torch rows have no bitstream;
    CompressAI's random weights give meaningless sizes)."""

    def __init__(self, v):
        self.v = v

    def __len__(self):
        return 0


def worker(codec, size, threads, repeat):
    img = make_image(size)
    enc, dec = codec_fns(codec, threads)
    data = enc(img)  # warm-up (model loading, allocations)
    dec(data)
    te, td = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        data = enc(img)
        te.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        dec(data)
        td.append(time.perf_counter() - t0)
    mp = img.shape[0] * img.shape[1] / 1e6
    print(json.dumps({"codec": codec, "size": size, "threads": threads, "mp": mp,
                      "encode_s": min(te), "decode_s": min(td), "bpp": 8 * len(data) / (mp * 1e6),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="kodak,4mp")
    ap.add_argument("--large", action="store_true", help="add 24mp and 50mp")
    ap.add_argument("--codecs", default="fastcodec,fastcodec-fast,torch,compressai,avif6,jxl7,webp,jpeg")
    ap.add_argument("--compressai-python", default=os.environ.get(
        "FASTCODEC_COMPRESSAI_PYTHON", str(ROOT / "benchmarks" / ".venv-compressai" / "bin" / "python")),
        help="interpreter of the CompressAI environment (benchmarks/compressai_env.sh)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        c, s, t, r = args.worker
        return worker(c, s, int(t), int(r))
    sizes = args.sizes.split(",") + (["24mp", "50mp"] if args.large else [])
    rows = []
    print("| image | codec | threads | encode s | encode MP/s | decode s | decode MP/s | bpp | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        for codec in args.codecs.split(","):
            for th in map(int, args.threads.split(",")):
                env = dict(os.environ, OMP_NUM_THREADS=str(th))
                py = sys.executable
                if codec == "fastcodec-fast" and not _has_fast_encoder():
                    print(f"| {size} | {codec} | {th} | skipped: the default model ships no fast encoder or decoder |||||")
                    continue
                if codec == "compressai":
                    py = args.compressai_python
                    if not os.path.exists(py):
                        print(f"| {size} | {codec} | {th} | skipped: no CompressAI environment at {py} "
                              f"(bash benchmarks/compressai_env.sh) |||||")
                        continue
                p = subprocess.run([py, __file__, "--worker", codec, size, str(th), str(args.repeat)],
                                   capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    print(f"| {size} | {codec} | {th} | failed: {p.stderr.strip().splitlines()[-1][:80]} |||||")
                    continue
                r = json.loads(p.stdout.strip().splitlines()[-1])
                rows.append(r)
                print(f"| {size} ({r['mp']:.1f} MP) | {codec} | {th} | {r['encode_s']:.3f} | {r['mp'] / r['encode_s']:.2f} "
                      f"| {r['decode_s']:.3f} | {r['mp'] / r['decode_s']:.2f} | {r['bpp']:.3f} | {r['peak_rss_mib']:.0f} |"
                      .replace("| 0.000 |", "| — |"),
                      flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
