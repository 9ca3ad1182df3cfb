"""Distributed batch coding on Ray (``pip install 'fastcodec[ray]'``).

One machine codes about as many images per second as it has cores; a Ray cluster adds machines.
Each Ray worker holds one :class:`fastcodec.Codec` (model loaded once per worker, not per image)
and writes its outputs itself, atomically, so nothing large flows back to the driver.

    import ray, fastcodec.ray
    ray.init()                                    # or ray.init("ray://head:10001") for a cluster
    stats = fastcodec.ray.compress_folder("photos/", "fcc/", quality=75)
    fastcodec.ray.decompress_folder("fcc/", "png/")

For your own pipelines, ``CompressBatch`` / ``DecompressBatch`` are callable classes for
``ray.data.Dataset.map_batches`` over rows with ``bytes`` (file content) and ``path`` columns:

    ds = ray.data.read_binary_files("s3://bucket/photos/", include_paths=True)
    ds = ds.map_batches(fastcodec.ray.CompressBatch, fn_constructor_kwargs={"quality": 70},
                        concurrency=8, batch_size=16)
    ds.write_parquet("s3://bucket/fcc/")          # columns: path, fcc, bytes, error

Scaling out: the work is embarrassingly parallel; throughput grows with the number of worker
CPUs (``concurrency`` actors, one inference thread each; by default one fewer than the cluster's
CPUs, leaving room for the tasks that read the inputs). Input and output folders must be
reachable from every node (a shared file system or object storage).
"""
from __future__ import annotations

import os

import numpy as np

from . import Codec
from ._files import write_atomic
from .errors import FastcodecError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".ppm")


def _out_path(path, src_root, dst_root, ext):
    rel = os.path.relpath(path, src_root) if src_root else os.path.basename(path)
    return os.path.join(dst_root, os.path.splitext(rel)[0] + ext)


def _save(dst, data: bytes, overwrite: bool) -> str:
    """Writes dst atomically; returns an error message, or "" on success."""
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    if os.path.exists(dst) and not overwrite:
        return "output exists"
    write_atomic(dst, data, overwrite)
    return ""


def _columns(rows, extra=()):
    keys = ("path", "output", "bytes", "error") + tuple(extra)
    return {k: np.array([r[i] for r in rows], dtype=object) for i, k in enumerate(keys)}


class CompressBatch:
    """map_batches callable: rows with ``bytes`` (and ``path``) -> ``fcc`` bytes (or written files)."""

    def __init__(self, quality: float | None = None, target_bpp: float | None = None, src_root: str | None = None,
                 dst_root: str | None = None, overwrite: bool = False, threads: int = 1, effort: int = 1,
                 lossless: bool = False, max_error: int | None = None, target_psnr: float | None = None):
        self.codec = Codec(threads=threads)
        self.quality, self.target_bpp, self.effort, self.target_psnr = quality, target_bpp, effort, target_psnr
        self.lossless, self.max_error = lossless, max_error
        self.src_root, self.dst_root, self.overwrite = src_root, dst_root, overwrite

    def __call__(self, batch: dict) -> dict:
        paths = list(batch.get("path", [""] * len(batch["bytes"])))
        rows = []
        for path, data in zip(paths, batch["bytes"]):
            dst, err, fcc = "", "", b""
            try:
                fcc = self.codec.compress(bytes(data), quality=self.quality, target_bpp=self.target_bpp,
                                          effort=self.effort, lossless=self.lossless, max_error=self.max_error,
                                          target_psnr=self.target_psnr)
                if self.dst_root is not None:
                    dst = _out_path(path, self.src_root, self.dst_root, ".fcc")
                    err = _save(dst, fcc, self.overwrite)
            except (FastcodecError, OSError) as e:
                err = str(e)
            rows.append((path, dst, len(fcc), err, fcc))
        if self.dst_root is not None:
            return _columns([r[:4] for r in rows])
        return _columns(rows, ("fcc",))


class DecompressBatch:
    """map_batches callable: rows with ``bytes`` (.fcc content) and ``path`` -> image files."""

    def __init__(self, src_root: str | None = None, dst_root: str = ".", format: str = "png",
                 overwrite: bool = False, threads: int = 1):
        self.codec = Codec(threads=threads)
        self.src_root, self.dst_root, self.format, self.overwrite = src_root, dst_root, format, overwrite

    def __call__(self, batch: dict) -> dict:
        rows = []
        for path, data in zip(batch["path"], batch["bytes"]):
            dst, size, err = _out_path(path, self.src_root, self.dst_root, "." + self.format), 0, ""
            try:
                if os.path.exists(dst) and not self.overwrite:
                    err = "output exists"
                else:
                    out, _ = self.codec._decompress_encoded(bytes(data), {"jpg": "JPEG"}.get(self.format,
                                                                                             self.format.upper()))
                    err = _save(dst, out, self.overwrite)
                    size = 0 if err else len(out)
            except (FastcodecError, OSError) as e:
                err = str(e)
            rows.append((path, dst, size, err))
        return _columns(rows)


def _files(src, exts):
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs if f.lower().endswith(exts))


def _run(src, cls, exts, concurrency, batch_size, **kw):
    import ray

    files = _files(src, exts)
    if not files:
        return {"files": 0, "ok": 0, "failed": 0, "bytes": 0, "errors": []}
    ds = ray.data.read_binary_files(files, include_paths=True)
    # one CPU stays free for the read tasks that feed the actors (all CPUs held by actors starve them)
    concurrency = concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    ds = ds.map_batches(cls, fn_constructor_kwargs=dict(src_root=src, **kw), concurrency=concurrency,
                        batch_size=batch_size)
    rows = ds.select_columns(["path", "bytes", "error"]).take_all()
    errors = [(r["path"], r["error"]) for r in rows if r["error"]]
    return {"files": len(rows), "ok": len(rows) - len(errors), "failed": len(errors),
            "bytes": int(sum(r["bytes"] for r in rows)), "errors": errors}


def compress_folder(src: str, dst: str, quality: float | None = None, target_bpp: float | None = None,
                    overwrite: bool = False, concurrency: int | None = None, batch_size: int = 8,
                    effort: int = 1, lossless: bool = False, max_error: int | None = None,
                    target_psnr: float | None = None) -> dict:
    """Compress every image under ``src`` to ``dst`` (same relative paths, .fcc) on the Ray cluster
    ``ray.init()`` connected to; returns counts, bytes written and per-file errors. ``effort``
    2 or 3 (see Codec.compress) suits batch jobs: smaller files for more encoder time;
    ``lossless=True`` / ``max_error=k`` archive the pixels exactly / within k levels, ``target_psnr``
    the smallest files of at least that PSNR."""
    return _run(src, CompressBatch, IMAGE_EXTS, concurrency, batch_size, quality=quality, target_bpp=target_bpp,
                dst_root=dst, overwrite=overwrite, effort=effort, lossless=lossless, max_error=max_error,
                target_psnr=target_psnr)


def decompress_folder(src: str, dst: str, format: str = "png", overwrite: bool = False,
                      concurrency: int | None = None, batch_size: int = 8) -> dict:
    """Decode every .fcc file under ``src`` to images under ``dst`` on the Ray cluster."""
    return _run(src, DecompressBatch, (".fcc",), concurrency, batch_size, dst_root=dst, format=format,
                overwrite=overwrite)
