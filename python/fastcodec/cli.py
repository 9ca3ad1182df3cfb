"""The ``fastcodec`` command line tool.

Exit codes: 0 success, 1 a file failed (bad input, corrupt file, exists without --force),
2 usage error (bad options).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .errors import FastcodecError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _quality(s):
    try:
        q = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"quality must be a number from 1 to 100, got {s!r}") from None
    if not 1 <= q <= 100:
        raise argparse.ArgumentTypeError(f"quality must be from 1 to 100, got {s}")
    return q


def _bpp(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"target bpp must be a number, got {s!r}") from None
    if not 0 < v < 64:
        raise argparse.ArgumentTypeError(f"target bpp must be in (0, 64), got {s}")
    return v


def build_parser():
    p = argparse.ArgumentParser(prog="fastcodec", description="Learned image codec: compress images to .fcc "
                                "files and back.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"fastcodec {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    c = sub.add_parser("compress", help="compress an image (PNG, JPEG, ...) to .fcc",
                       description="Compress an image to a .fcc file.")
    c.add_argument("input", help="image file readable by Pillow")
    c.add_argument("-o", "--output", help="output path (default: input with .fcc extension)")
    g = c.add_mutually_exclusive_group()
    g.add_argument("-q", "--quality", type=_quality, default=75.0, help="quality 1..100, higher is better "
                   "(default 75)")
    g.add_argument("--target-bpp", type=_bpp, help="largest size in bits per pixel; quality is searched")
    c.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    c.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")

    d = sub.add_parser("decompress", help="decode a .fcc file to an image",
                       description="Decode a .fcc file to PNG (or another format by extension).")
    d.add_argument("input", help=".fcc file")
    d.add_argument("-o", "--output", help="output image path (default: input with .png extension)")
    d.add_argument("-f", "--force", action="store_true", help="overwrite an existing output")
    d.add_argument("--threads", type=int, default=0, help="inference threads (default: all cores)")

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
        return _run(args)
    except FastcodecError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("fastcodec: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        return _fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))


def _run(args) -> int:
    import fastcodec

    if args.cmd == "info":
        from . import format as fmt  # header parsing needs no model
        from .codec import _read_if_path

        hdr, _, _ = fmt.parse(_read_if_path(args.input))
        d = {"file": args.input, "width": hdr.width, "height": hdr.height,
             "channels": hdr.channels, "quality": hdr.quality, "model": hdr.model_id.hex(),
             "format_version": hdr.version, "bytes": hdr.file_size,
             "bpp": round(8 * hdr.file_size / (hdr.width * hdr.height), 4),
             "chunks": len(hdr.chunk_sizes),
             "sections": {"header": hdr.header_size, "hyper_latent": hdr.z_size, "latent": hdr.y_size}}
        if args.detail:
            d["detail"] = fastcodec.Codec().inspect(args.input)
        if args.json:
            print(json.dumps(d))
        else:
            print(f"{d['file']}: {hdr.width}x{hdr.height} {'RGB' if hdr.channels == 3 else 'grayscale'}, "
                  f"quality {hdr.quality:g}, model {d['model']}, format v{hdr.version}")
            print(f"  {d['bytes']} bytes, {d['bpp']} bpp, latent in {d['chunks']} chunk(s)")
            for k, v in d["sections"].items():
                print(f"  {k:<13}{v:>10} bytes")
            if args.detail:
                print(f"  {'section':<13}{'bits':>10}{'info bits':>12}{'overhead':>10}")
                for k, v in d["detail"].items():
                    print(f"  {k:<13}{v['bits']:>10}{v['information_bits']:>12.0f}{v['overhead_pct']:>9.2f}%")
        return EXIT_OK

    if getattr(args, "threads", 0) < 0:
        return _fail("--threads must be >= 0")
    codec = fastcodec.Codec(threads=args.threads)
    t0 = time.perf_counter()
    if args.cmd == "compress":
        out = args.output or os.path.splitext(args.input)[0] + ".fcc"
        from ._files import check_output, write_atomic

        check_output(out, args.force, args.input)
        data = codec.compress(args.input, quality=args.quality, target_bpp=args.target_bpp)
        write_atomic(out, data, args.force)
        inf = codec.info(data)
        print(f"{args.input} -> {out}: {len(data)} bytes, {inf.bpp:.4f} bpp, quality {inf.quality:g} "
              f"({time.perf_counter() - t0:.2f} s)")
        return EXIT_OK
    if args.cmd == "decompress":
        out = args.output or os.path.splitext(args.input)[0] + ".png"
        from ._files import check_output, write_atomic
        import io

        check_output(out, args.force, args.input)
        im = codec.decompress_image(args.input)
        buf = io.BytesIO()
        im.save(buf, format=fastcodec._format_from_ext(out))
        write_atomic(out, buf.getvalue(), args.force)
        print(f"{args.input} -> {out}: {im.width}x{im.height} ({time.perf_counter() - t0:.2f} s)")
        return EXIT_OK
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
