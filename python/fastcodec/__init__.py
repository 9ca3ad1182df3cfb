"""fastcodec: a learned image codec.

    >>> import fastcodec
    >>> data = fastcodec.compress("photo.png", quality=75)     # bytes of a .fcc file
    >>> pixels = fastcodec.decompress(data)                    # uint8 array (H, W, 3); RGBA: (H, W, 4)
    >>> image = fastcodec.decompress_image(data)               # PIL.Image, with the EXIF, XMP and ICC profile kept
    >>> fastcodec.metadata(data)                               # {"exif": ..., "xmp": ..., "icc": ...} without decoding
    >>> fastcodec.compress_file("photo.png", "photo.fcc")      # atomic, never overwrites by default

For servers, create one :class:`Codec` and share it between threads: it loads the model
once and every method is thread-safe.
"""
from __future__ import annotations

import os
import threading

from . import format as _fmt
from ._files import check_output, write_atomic
from ._model import available_models
from .codec import Codec, FileInfo
from .errors import (ArgumentError, FastcodecError, FormatError, ImageError, LimitError, ModelError,
                     ResourceError)

__version__ = "0.17.0"

from ._pillow import register as _register_pillow  # noqa: E402

_register_pillow()
FORMAT_VERSION = _fmt.VERSION_PIXELS  # the newest format version it reads and writes

_default = None
_default_lock = threading.Lock()


def default_codec() -> Codec:
    """The process-wide codec used by the module-level functions (created on first use)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Codec()
    return _default


def compress(src, quality: float | None = None, target_bpp: float | None = None, target_size: int | None = None,
             keep_metadata: bool = True, exact: bool = False, effort: int = 1, lossless: bool = False,
             max_error: int | None = None, target_psnr: float | None = None) -> bytes:
    """Compress ``src`` (path, image bytes, PIL.Image or uint8 array) to .fcc bytes; quality 75 unless
    given. ``lossless=True`` keeps every pixel exactly, ``max_error=k`` every value within k levels
    (near-lossless); ``target_bpp`` / ``target_size`` / ``target_psnr`` search the quality for a size or
    a PSNR; see Codec.compress."""
    return default_codec().compress(src, quality=quality, target_bpp=target_bpp, target_size=target_size,
                                    keep_metadata=keep_metadata, exact=exact, effort=effort, lossless=lossless,
                                    max_error=max_error, target_psnr=target_psnr)


def decompress(data, box=None, reduce: int = 1):
    """Decode .fcc bytes or a .fcc path to a uint8 numpy array: (H, W, 3), (H, W) for grayscale,
    (H, W, 4) / (H, W, 2) with an alpha plane. ``box=(left, upper, right, lower)`` decodes only
    that region (as ``PIL.Image.crop``), the same pixels for a fraction of the work; ``reduce=2``,
    ``4`` or ``8`` the image reduced by that factor (as ``PIL.Image.reduce``), much faster, for
    thumbnails; see Codec.decompress."""
    return default_codec().decompress(data, box=box, reduce=reduce)


def decompress_image(data, box=None, reduce: int = 1):
    """Decode .fcc bytes or a .fcc path to a PIL.Image (RGB, L, RGBA or LA; EXIF, XMP and ICC profile in ``info``);
    ``box``: only that region, ``reduce``: reduced by 2, 4 or 8, as in ``decompress``."""
    return default_codec().decompress_image(data, box=box, reduce=reduce)


def info(data) -> FileInfo:
    """Header information of a .fcc file (bytes or path) without decoding it."""
    return default_codec().info(data)


def metadata(data) -> dict:
    """The EXIF, XMP and ICC profile of a .fcc file (bytes or path) without decoding it; see Codec.metadata."""
    return default_codec().metadata(data)


def compress_file(src, dst, quality: float | None = None, target_bpp: float | None = None,
                  overwrite: bool = False, target_size: int | None = None, keep_metadata: bool = True,
                  exact: bool = False, effort: int = 1, lossless: bool = False, max_error: int | None = None,
                  target_psnr: float | None = None) -> int:
    """Compress image file ``src`` to ``dst`` atomically; returns the number of bytes written."""
    dst = check_output(dst, overwrite, src)
    data = compress(src, quality=quality, target_bpp=target_bpp, target_size=target_size,
                    keep_metadata=keep_metadata, exact=exact, effort=effort, lossless=lossless, max_error=max_error,
                    target_psnr=target_psnr)
    write_atomic(dst, data, overwrite)
    return len(data)


def decompress_file(src, dst, overwrite: bool = False, format: str | None = None, box=None,
                    reduce: int = 1) -> None:
    """Decode .fcc file ``src`` and save it as an image (format from ``dst``'s extension, e.g. .png),
    with the file's alpha plane, EXIF, XMP and ICC profile where that format stores them (JPEG cannot store
    alpha: ArgumentError); ``box``: only that region, ``reduce``: reduced by 2, 4 or 8, as in ``decompress``."""
    dst = check_output(dst, overwrite, src)
    out, _ = default_codec()._decompress_encoded(src, format or _format_from_ext(dst), box=box, reduce=reduce)
    write_atomic(dst, out, overwrite)


def _format_from_ext(path) -> str:
    from PIL import Image

    ext = os.path.splitext(os.fspath(path))[1].lower()
    Image.init()
    fmt_name = Image.EXTENSION.get(ext)
    if fmt_name is None:
        raise ArgumentError(f"cannot tell the image format from extension {ext!r} of {os.fspath(path)!r}; "
                            "use .png, .bmp, .tif, .webp, .jpg or pass format=")
    return fmt_name


def models() -> list:
    """Names of the model bundles shipped with this installation."""
    return list(available_models())


__all__ = ["Codec", "FileInfo", "compress", "decompress", "decompress_image", "info", "metadata", "compress_file",
           "decompress_file", "models", "default_codec", "FastcodecError", "FormatError", "ArgumentError",
           "ImageError", "LimitError", "ModelError", "ResourceError", "FORMAT_VERSION", "__version__"]
