"""Atomic file output: write a temporary file beside the target, fsync, then rename."""
from __future__ import annotations

import os
import tempfile

from .errors import ArgumentError

# The process umask, read once at import (os.umask can only be read by setting it, which is not
# thread-safe later on): outputs get the permissions a plain open() would give them.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


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
        # mkstemp makes the file private (0600); give it what open() would (0666 less the umask),
        # or keep the permissions of the file it replaces
        try:
            mode = os.stat(dst).st_mode & 0o7777 if overwrite else None
        except OSError:
            mode = None
        os.fchmod(fd, mode if mode is not None else 0o666 & ~_UMASK)
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
