"""Atomic file output: write a temporary file beside the target, fsync, then rename."""
from __future__ import annotations

import os
import tempfile

from .errors import ArgumentError


def check_output(dst, overwrite: bool, src=None) -> str:
    dst = os.fspath(dst)
    if src is not None and isinstance(src, (str, os.PathLike)) and os.path.exists(dst) \
            and os.path.exists(src) and os.path.samefile(dst, src):
        raise ArgumentError(f"output {dst!r} is the input file; refusing to overwrite the input")
    if os.path.isdir(dst):
        raise ArgumentError(f"output {dst!r} is a directory")
    if os.path.exists(dst) and not overwrite:
        raise ArgumentError(f"output {dst!r} exists; pass overwrite=True (CLI: --force) to replace it")
    return dst


def write_atomic(dst: str, data: bytes, overwrite: bool = False) -> None:
    d = os.path.dirname(os.path.abspath(dst))
    fd, tmp = tempfile.mkstemp(prefix=".fastcodec-", suffix=".part", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, dst)
        else:
            # link() fails if dst appeared meanwhile, so a concurrent writer is never clobbered
            try:
                os.link(tmp, dst)
            except FileExistsError:
                raise ArgumentError(f"output {dst!r} exists; pass overwrite=True (CLI: --force) to replace it") \
                    from None
            except OSError:
                if os.path.exists(dst):
                    raise ArgumentError(f"output {dst!r} exists") from None
                os.replace(tmp, dst)  # file systems without hard links
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
