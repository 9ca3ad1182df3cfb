"""The ``fastcodec`` command line tool.

    fastcodec compress IN... [-o OUT] [-q Q | --target-bpp B | --target-size S | --target-psnr DB | --lossless |
                       --max-error K] [-j N] [--force] [--quiet|--json]
    fastcodec decompress IN.fcc... [-o OUT] [--format png] [--box L,T,R,B] [--reduce F] [-j N] [--force] [--quiet|--json]
    fastcodec info FILE.fcc [--detail] [--json]

Several inputs, folders (searched recursively) and globs are processed in parallel with one
shared Codec. Outputs are written atomically; existing outputs are skipped unless --force;
a failing file is reported and the batch goes on.

Exit codes: 0 every file done (or skipped because its output exists), 1 at least one file
failed, 2 usage error (bad options, no inputs), 130 interrupted.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from .errors import FastcodecError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".gif", ".avif")


def _number(kind, cast, lo, hi, lo_open=False, what=None):
    """argparse type: a number of `cast` in [lo, hi] (or (lo, hi) with lo_open)."""
    def parse(s):
        try:
            v = cast(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{kind} must be {what or 'a number'}, got {s!r}") from None
        inside = (lo < v < hi) if lo_open else (lo <= v <= hi)
        if not inside:  # also false for NaN
            rng = f"in ({lo}, {hi})" if lo_open else f"from {lo} to {hi}"
            raise argparse.ArgumentTypeError(f"{kind} must be {rng}, got {s}")
        return v
    return parse


_quality = _number("quality", float, 1, 100)
_bpp = _number("target bpp", float, 0, 64, lo_open=True)
_psnr = _number("target PSNR", float, 0, 100, lo_open=True)
_jobs = _number("jobs", int, 1, 256, what="a whole number")
_effort = _number("effort", int, 1, 3, what="a whole number")
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2}


def _box(s):
    """argparse type: a region LEFT,UPPER,RIGHT,LOWER in pixels (as PIL.Image.crop); checked
    against each file's size when it is decoded."""
    parts = s.replace(" ", "").split(",")
    try:
        box = tuple(int(v) for v in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"box must be four whole numbers LEFT,UPPER,RIGHT,LOWER "
                                         f"(pixels, right and lower excluded), got {s!r}")
    return box


def _size(s):
    """argparse type: a file size in bytes, with an optional unit (K/KB = 1000, KiB = 1024, M/MB, MiB)."""
    t = s.strip().lower().replace(" ", "")
    num = t.rstrip("kmibB")
    unit = t[len(num):]
    try:
        v = float(num) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"target size must be a number of bytes with an optional unit "
                                         f"(K, KB, KiB, M, MB, MiB), e.g. 150K, got {s!r}") from None
    if not (1 <= v <= 2 ** 40):  # also false for NaN
        raise argparse.ArgumentTypeError(f"target size must be from 1 byte to 1 TiB, got {s}")
    return int(v)



def _batch_options(p):
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("-j", "--jobs", type=_jobs, default=None,
                   help="files processed in parallel (default: number of CPU cores)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="print errors only")
    out.add_argument("--json", action="store_true", help="print one JSON object (per-file results and summary)")


def build_parser():
    from . import __version__

    p = argparse.ArgumentParser(prog="fastcodec", description="Learned image codec: compress images to .fcc "
                                "files and back.", epilog="exit codes: 0 ok, 1 some file failed, 2 usage "
                                "error, 130 interrupted")
    p.add_argument("--version", action="version", version=f"fastcodec {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("compress", help="compress images (PNG, JPEG, ...) to .fcc",
                       description="Compress images to .fcc files. Inputs may be files, folders (recursive) "
                       "or glob patterns.")
    c.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    c.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("-q", "--quality", type=_quality, help="quality 1..100, higher is better "
                   "(default 75)")
    g.add_argument("--target-bpp", type=_bpp, help="largest size in bits per pixel; quality is searched")
    g.add_argument("--target-size", type=_size, help="largest file size, e.g. 150K, 150000, 1.5MB or 100KiB "
                   "(K = 1000 bytes); quality is searched")
    g.add_argument("--target-psnr", type=_psnr, metavar="DB", help="smallest file with at least this PSNR (dB); "
                   "quality is searched, and above what the learned codec reaches (about 37 dB) the file is "
                   "near-lossless, above about 50 dB lossless")
    g.add_argument("--lossless", action="store_true", help="keep every pixel exactly (no network; format v3)")
    g.add_argument("--max-error", type=_number("max error", int, 0, 32), metavar="K",
                   help="near-lossless: every value within K levels of the original (1..32; 0 = --lossless)")
    c.add_argument("--encoder", default="default", help="analysis transform: default, or a faster one the model "
                   "offers (see 'fastcodec models'; 'fast' and its int8 version 'int8' trade some "
                   "compression for encode speed)")
    c.add_argument("--effort", type=_effort, default=1, help="1 (default): code the analysis transform's "
                   "latents as they come; 2 and 3: refine them for each image first (3: the hyper-latent too), about 7 "
                   "and 38 s per Kodak-size image on 2 cores, for about 7 %% and 11 %% fewer bits at the same PSNR "
                   "(decoding is unchanged)")
    c.add_argument("--strip-metadata", action="store_true", help="drop the inputs' EXIF, XMP and ICC profile (kept "
                   "by default; the EXIF orientation is always applied to the pixels, a dropped ICC profile "
                   "too: the colours are converted to sRGB)")
    c.add_argument("--exact", action="store_true", help="with transparency: code the colours of fully "
                   "transparent pixels as given (default: replace them by a smooth fill, which costs "
                   "almost nothing)")
    _batch_options(c)

    d = sub.add_parser("decompress", help="decode .fcc files to images",
                       description="Decode .fcc files to PNG (or --format). Inputs may be files, folders "
                       "(recursive) or glob patterns.")
    d.add_argument("inputs", nargs="+", metavar="INPUT", help=".fcc files, folders or globs")
    d.add_argument("-o", "--output", help="output file (one input) or folder (default: beside each input)")
    d.add_argument("--format", default=None, help="output format for folders: png (default), webp, jpg, bmp, tif")
    d.add_argument("--decoder", default=None, help="synthesis transform: float, or another the model offers "
                   "(see 'fastcodec models'; 'int8' is fastest and a little less accurate, 'mixed' between it and "
                   "'bitexact'; every decoder but 'float' gives the same pixels on every machine); default: the "
                   "model's own choice by quality")
    d.add_argument("--box", type=_box, default=None, metavar="L,T,R,B",
                   help="decode only this region: left, upper, right, lower in pixels (right and lower excluded, "
                   "as PIL's Image.crop); the same pixels as cropping the whole image, for a fraction of the work")
    d.add_argument("--reduce", type=int, choices=(1, 2, 4, 8), default=1, metavar="F",
                   help="decode the image reduced by F (2, 4 or 8; each pixel about the mean of an F x F block, "
                   "as PIL's Image.reduce), much faster than the whole image: for thumbnails; with --box, the box is "
                   "a region of the reduced image")
    _batch_options(d)

    sv = sub.add_parser("serve", help="run the HTTP service (needs the 'server' extra)",
                        description="Serve POST /v1/compress, POST /v1/decompress, /healthz, /metrics and "
                        "OpenAPI docs (/docs) on FastAPI + uvicorn.")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--concurrency", type=_jobs, default=None, help="requests coded at once (default: cores)")
    sv.add_argument("--queue", type=int, default=None, help="requests waiting beyond that before 503 "
                    "(default: 2 x concurrency)")
    sv.add_argument("--max-body-mb", type=float, default=50.0, help="largest request body (default 50 MB)")
    sv.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image (default 50 MP)")
    sv.add_argument("--max-effort", type=_effort, default=1, help="highest effort a request may ask for "
                    "(default 1: effort 2 and 3 cost about 40 and 240 times the encode time)")

    m = sub.add_parser("models", help="list the shipped models",
                       description="List the model bundles shipped with this installation: the default "
                                   "one encodes; archived (decode-only) ones decode the files written with them.")
    m.add_argument("--json", action="store_true", help="print JSON")

    i = sub.add_parser("info", help="show what a .fcc file holds", description="Show a .fcc file's header.")
    i.add_argument("input", help=".fcc file")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.add_argument("--detail", action="store_true", help="decode the symbols and compare the bits on disk "
                   "with the model's information content, per section")
    return p


def _fail(msg):
    print(f"fastcodec: error: {msg}", file=sys.stderr)
    return EXIT_FAILED


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "info":
            return _info(args)
        if args.cmd == "models":
            return _models(args)
        if args.cmd == "serve":
            try:
                from .server import serve
            except ImportError as e:
                return _fail(f"the server needs extra packages ({e.name}): pip install 'fastcodec[server]'")
            serve(args.host, args.port, args.concurrency, args.queue, int(args.max_body_mb * 2 ** 20),
                  args.max_pixels, max_effort=args.max_effort)
            return EXIT_OK
        return _batch(args)
    except FastcodecError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("fastcodec: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        return _fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))


def _models(args) -> int:
    from ._model import BITEXACT, available_models, decoder_graphs, default_model_name, encoder_graphs, is_decode_only

    default = default_model_name()
    rows = []
    for name, path in available_models().items():
        meta = json.loads((path / "model.json").read_text())
        archived = is_decode_only(path)
        rows.append({"name": name, "id": meta.get("id"), "default": name == default,
                     "use": "decode only" if archived else "encode+decode",
                     "levels": meta.get("levels"), "training_steps": meta.get("training_steps"),
                     "architecture": meta.get("arch", "hp"),
                     "encoders": [] if archived else list(encoder_graphs(meta)),
                     "decoders": [*decoder_graphs(meta), BITEXACT],
                     "default_decoder": meta.get("default_decoder", "float"),
                     "default_decoder_by_quality": meta.get("default_decoder_by_quality", []),
                     "postfilter_max_quality": (meta["postfilter"].get("max_quality", 100)
                                                if isinstance(meta.get("postfilter"), dict) else None),
                     "reduce_heads": (list(meta["reduce"].get("factors", []))
                                      if isinstance(meta.get("reduce"), dict) else [])})
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for r in rows:
        enc = f"  encoders: {', '.join(r['encoders'])}" if len(r["encoders"]) > 1 else ""
        enc += f"  decoders: {', '.join(r['decoders'])}" if len(r["decoders"]) > 1 else ""
        enc += "".join(f" ({n} up to quality {q:g})" for q, n in r["default_decoder_by_quality"])
        if r["postfilter_max_quality"] is not None:
            enc += f"  post-filter up to quality {r['postfilter_max_quality']:g}"
        if r["reduce_heads"]:
            enc += f"  reduce heads: {', '.join(f'1/{f}' for f in r['reduce_heads'])}"
        print(f"{r['name']:<8}{r['id']}  {r['use']:<14}{r['levels']:>3} levels {r['training_steps']:>8,} steps"
              f"{'  (default)' if r['default'] else ''}{enc}")
    return EXIT_OK


def _info(args) -> int:
    import fastcodec
    from . import format as fmt  # header parsing needs no model
    from .codec import _read_if_path

    hdr, _, _ = fmt.parse(_read_if_path(args.input))
    ext = {fmt.EXT_NAMES.get(t, f"type {t}"): size for t, size in hdr.extension_sizes}
    d = {"file": args.input, "width": hdr.width, "height": hdr.height,
         "channels": hdr.channels, "alpha": hdr.has_alpha, "quality": hdr.quality,
         "model": None if hdr.pixel_coded else hdr.model_id.hex(),
         "format_version": hdr.version, "bytes": hdr.file_size,
         "bpp": round(8 * hdr.file_size / (hdr.width * hdr.height), 4),
         "chunks": len(hdr.chunk_sizes),
         "sections": {"header": hdr.header_size, "hyper_latent": hdr.z_size, "latent": hdr.y_size, **ext}}
    if hdr.pixel_coded:  # lossless / near-lossless: stripes of pixels, no model
        del d["chunks"]
        d.update(max_error=hdr.max_error, stripes=len(hdr.chunk_sizes), stripe_rows=hdr.stripe_rows,
                 copies=bool(hdr.flags & fmt.FLAG_COPIES), bits=hdr.bits,
                 sections={"header": hdr.header_size, "pixels": hdr.y_size, **ext})
    if args.detail and not hdr.pixel_coded:
        d["detail"] = fastcodec.Codec().inspect(args.input)
    if args.json:
        print(json.dumps(d))
        return EXIT_OK
    kind = ("16-bit " if hdr.bits == 16 else "") + ("RGB" if hdr.channels == 3 else "grayscale") \
        + (" + alpha" if hdr.has_alpha else "")
    if hdr.pixel_coded:
        how = "lossless" if hdr.max_error == 0 else f"near-lossless (max error {hdr.max_error})"
        print(f"{d['file']}: {hdr.width}x{hdr.height} {kind}, {how}, format v{hdr.version}")
        print(f"  {d['bytes']} bytes, {d['bpp']} bpp, pixels in {d['stripes']} stripe(s) of {hdr.stripe_rows} rows"
              + (", with copies of earlier pixels" if d["copies"] else ""))
    else:
        print(f"{d['file']}: {hdr.width}x{hdr.height} {kind}, "
              f"quality {hdr.quality:g}, model {d['model']}, format v{hdr.version}")
        print(f"  {d['bytes']} bytes, {d['bpp']} bpp, latent in {d['chunks']} chunk(s)")
    for k, v in d["sections"].items():
        print(f"  {k:<13}{v:>10} bytes")
    if args.detail:
        print(f"  {'section':<13}{'bits':>10}{'info bits':>12}{'overhead':>10}")
        for k, v in d["detail"].items():
            if "information_bits" not in v:  # extension sections: not coded by the model
                continue
            print(f"  {k:<13}{v['bits']:>10}{v['information_bits']:>12.0f}{v['overhead_pct']:>9.2f}%")
    return EXIT_OK


def _expand(inputs, exts):
    """(path, relative path for mirroring under an output folder) for every input file."""
    out, missing = [], []
    for item in inputs:
        if os.path.isdir(item):
            for root, _, files in os.walk(item):
                for f in sorted(files):
                    if f.lower().endswith(exts):
                        p = os.path.join(root, f)
                        out.append((p, os.path.relpath(p, item)))
        elif os.path.exists(item):
            out.append((item, os.path.basename(item)))
        else:
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                missing.append(item)
            out.extend((m, os.path.basename(m)) for m in matches if os.path.isfile(m))
    seen, unique = set(), []
    for p, rel in out:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append((p, rel))
    return unique, missing


def _batch(args) -> int:
    import fastcodec
    from ._files import check_output, write_atomic
    compress = args.cmd == "compress"
    exts = IMAGE_EXTS if compress else (".fcc",)
    files, missing = _expand(args.inputs, exts)
    single = len(args.inputs) == 1 and len(files) == 1 and not os.path.isdir(args.inputs[0]) \
        and not (args.output and os.path.isdir(args.output))
    for m in missing:
        if single or not files:
            return _fail(f"no such file: {m!r}")
    if not files:
        print("fastcodec: error: no input files found", file=sys.stderr)
        return EXIT_USAGE
    if compress:
        ext = ".fcc"
    else:
        ext = "." + (args.format or "png").lower().lstrip(".")
        if args.format:
            fastcodec._format_from_ext("x" + ext)  # validates the format name

    def target(src, rel):
        if single and args.output:
            return args.output
        if args.output:
            return os.path.join(args.output, os.path.splitext(rel)[0] + ext)
        return os.path.splitext(src)[0] + ext

    jobs = args.jobs or os.cpu_count() or 1
    # several files at once: one inference thread per file, files in parallel
    codec = fastcodec.Codec(threads=1 if jobs > 1 and len(files) > 1 else 0,
                            encoder=getattr(args, "encoder", "default"),  # decompress has no --encoder
                            decoder=getattr(args, "decoder", None))  # nor compress a --decoder

    def work(item):
        src, rel = item
        dst = target(src, rel)
        t0 = time.perf_counter()
        rec = {"input": src, "output": dst}
        try:
            if os.path.exists(dst) and not args.force:
                if single:
                    check_output(dst, False, src)
                rec.update(status="skipped", reason="output exists (use --force)")
                return rec
            check_output(dst, args.force, src)
            os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
            if compress:
                data = codec.compress(src, quality=args.quality, target_bpp=args.target_bpp,
                                      target_size=args.target_size, target_psnr=args.target_psnr,
                                      keep_metadata=not args.strip_metadata,
                                      exact=args.exact, effort=args.effort, lossless=args.lossless,
                                      max_error=args.max_error)
                inf = codec.info(data)
                write_atomic(dst, data, args.force)
                rec.update(status="ok", bytes_in=os.path.getsize(src), bytes_out=len(data),
                           pixels=inf.width * inf.height, bpp=round(inf.bpp, 5), quality=inf.quality)
                if inf.max_error is not None:
                    rec["max_error"] = inf.max_error
            else:
                out, (w, h) = codec._decompress_encoded(src, fastcodec._format_from_ext(dst), box=args.box,
                                                        reduce=args.reduce)
                write_atomic(dst, out, args.force)
                rec.update(status="ok", bytes_in=os.path.getsize(src), bytes_out=len(out), pixels=w * h)
        except (FastcodecError, OSError) as e:
            rec.update(status="failed", error=str(e))
        rec["seconds"] = round(time.perf_counter() - t0, 4)
        return rec

    t0 = time.perf_counter()
    bar = None
    if not (args.quiet or args.json or single) and sys.stderr.isatty():
        try:
            from tqdm import tqdm
            bar = tqdm(total=len(files), unit="file", file=sys.stderr)
        except ImportError:
            bar = None
    results = []
    with ThreadPoolExecutor(max_workers=min(jobs, len(files))) as pool:
        for rec in pool.map(work, files):
            results.append(rec)
            if bar is not None:
                bar.update(1)
            if rec["status"] == "failed":
                msg = f"fastcodec: error: {rec['input']}: {rec['error']}"
                (bar.write(msg, file=sys.stderr) if bar is not None else print(msg, file=sys.stderr))
            elif not (args.quiet or args.json):
                line = _line(rec, compress)
                (bar.write(line) if bar is not None else print(line))
    if bar is not None:
        bar.close()
    summary = _summary(results, time.perf_counter() - t0, compress)
    if args.json:
        print(json.dumps({"files": results, "summary": summary}))
    elif not args.quiet and not single:
        print(f"{summary['ok']} done, {summary['skipped']} skipped, {summary['failed']} failed; "
              f"{summary['bytes_in']} -> {summary['bytes_out']} bytes"
              + (f", mean {summary['mean_bpp']:.4f} bpp" if summary.get("mean_bpp") is not None else "")
              + f", {summary['seconds']:.2f} s")
    if single and results[0]["status"] == "skipped":
        return _fail(f"output {results[0]['output']!r} exists; use --force to replace it")
    return EXIT_FAILED if summary["failed"] else EXIT_OK


def _line(rec, compress):
    if rec["status"] == "skipped":
        return f"{rec['input']}: skipped ({rec['reason']})"
    if compress:
        how = (f"quality {rec['quality']:g}" if rec.get("max_error") is None
               else "lossless" if rec["max_error"] == 0 else f"max error {rec['max_error']}")
        return (f"{rec['input']} -> {rec['output']}: {rec['bytes_out']} bytes, {rec['bpp']:.4f} bpp, "
                f"{how} ({rec['seconds']:.2f} s)")
    return f"{rec['input']} -> {rec['output']} ({rec['seconds']:.2f} s)"


def _summary(results, seconds, compress):
    ok = [r for r in results if r["status"] == "ok"]
    s = {"files": len(results), "ok": len(ok), "skipped": sum(r["status"] == "skipped" for r in results),
         "failed": sum(r["status"] == "failed" for r in results),
         "bytes_in": sum(r["bytes_in"] for r in ok), "bytes_out": sum(r["bytes_out"] for r in ok),
         "seconds": round(seconds, 3)}
    if compress and ok:
        s["mean_bpp"] = sum(r["bpp"] for r in ok) / len(ok)
    return s


if __name__ == "__main__":
    sys.exit(main())
