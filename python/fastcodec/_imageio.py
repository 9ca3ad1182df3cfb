"""Turning whatever the user passes into uint8 RGB pixels (and back into images)."""
from __future__ import annotations

import io
import os

import numpy as np

from .errors import ImageError, LimitError


def _from_pil(im):
    """PIL image -> (H, W, 3) uint8 array, channels (1 = grayscale, 3 = colour).

    Conversions (documented in the README):
    - EXIF orientation is applied, so the pixels are stored upright.
    - 'L' and '1' are grayscale: coded as RGB, decoded back to one channel.
    - 'I;16*' / 'I' (16/32-bit grayscale) are scaled to 8 bits (value >> 8 for 16-bit).
    - 'P', 'LA', 'PA', 'RGBA', 'RGBa': alpha must be fully opaque, otherwise ImageError
      (fastcodec has no alpha channel yet); the colours are kept.
    - 'CMYK', 'YCbCr', 'LAB', 'HSV' are converted to RGB by Pillow.
    - Animated images (more than one frame) are rejected.
    - An embedded ICC profile is applied: the pixels are converted to sRGB (fastcodec files are
      sRGB), so colours look the same after decoding; the profile itself is not stored.
    """
    from PIL import Image, ImageOps

    if getattr(im, "n_frames", 1) > 1:
        raise ImageError(f"animated image with {im.n_frames} frames: fastcodec codes single images; "
                         "extract one frame first (im.seek(i))")
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not stop coding; orientation is then as stored
        pass
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "RGBA", "CMYK", "L"):
        im = _to_srgb(im, icc)
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), 1
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im.convert("I"), dtype=np.int64)
        shift = 8 if a.max(initial=0) < 65536 else 24
        return (np.clip(a, 0, None) >> shift).astype(np.uint8), 1
    if mode == "F":
        raise ImageError("floating-point images (mode 'F') are not supported: convert to 8-bit first")
    if mode in ("P", "PA", "LA", "RGBA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise ImageError(f"image has transparency (mode {mode!r}): fastcodec codes RGB only; "
                             "composite it onto a background or convert('RGB') first")
        if mode in ("LA", "La"):
            return np.ascontiguousarray(rgba[..., 0]), 1
        return rgba[..., :3], 3
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im), 3


def _to_srgb(im, icc: bytes):
    """Converts an image with an embedded ICC profile to sRGB (grayscale stays grayscale)."""
    import io as _io

    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(_io.BytesIO(icc))
        if im.mode == "L":
            return im  # a gray profile maps gray to gray; nothing to convert for an sRGB output
        dst = ImageCms.createProfile("sRGB")
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, src, dst, outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return im  # a broken profile: keep the pixels as they are


def _from_array(a: np.ndarray):
    if a.dtype != np.uint8:
        raise ImageError(f"numpy input must be uint8, got {a.dtype}; scale and convert it (e.g. "
                         "np.clip(x * 255, 0, 255).astype(np.uint8))")
    if a.ndim == 2:
        return a, 1
    if a.ndim == 3 and a.shape[2] == 1:
        return a[..., 0], 1
    if a.ndim == 3 and a.shape[2] == 3:
        return a, 3
    if a.ndim == 3 and a.shape[2] == 4:
        if (a[..., 3] != 255).any():
            raise ImageError("array has a non-opaque alpha channel: fastcodec codes RGB only")
        return a[..., :3], 3
    raise ImageError(f"numpy input must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")


def load_pixels(src, max_pixels: int):
    """Returns (pixels uint8 (H, W) or (H, W, 3) view, channels)."""
    from PIL import Image

    if isinstance(src, np.ndarray):
        pix, ch = _from_array(src)
    elif isinstance(src, Image.Image):
        _check_size(src.width, src.height, max_pixels)
        pix, ch = _from_pil(src)
    elif isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src
        if not isinstance(fp, io.BytesIO):
            if os.path.isdir(fp):
                raise ImageError(f"{os.fspath(fp)!r} is a directory, not an image file")
            if not os.path.exists(fp):
                raise ImageError(f"no such file: {os.fspath(fp)!r}")
        try:
            with Image.open(fp) as im:
                _check_size(im.width, im.height, max_pixels)
                im.load()
                pix, ch = _from_pil(im)
        except (ImageError, LimitError):
            raise
        except Image.DecompressionBombError as e:
            raise LimitError(str(e)) from None
        except PermissionError as e:
            raise ImageError(f"cannot read {os.fspath(src)!r}: permission denied") from e
        except (OSError, SyntaxError, ValueError) as e:
            what = "bytes" if isinstance(fp, io.BytesIO) else repr(os.fspath(src))
            raise ImageError(f"cannot decode image from {what}: {e}") from None
    else:
        raise ImageError(f"cannot compress an object of type {type(src).__name__}: pass a path, "
                         "encoded image bytes, a PIL.Image or a uint8 numpy array")
    h, w = pix.shape[:2]
    if h == 0 or w == 0:
        raise ImageError(f"image has zero size ({w}x{h})")
    _check_size(w, h, max_pixels)
    if ch == 1:
        pix = np.repeat(pix[..., None], 3, axis=2)
    return pix, ch


def _check_size(w, h, max_pixels):
    if w * h > max_pixels:
        raise LimitError(f"image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}; "
                         "raise the limit with Codec(max_pixels=...) if this is intended")


def to_output(rgb: np.ndarray, channels: int) -> np.ndarray:
    if channels == 1:
        # the encoder coded R = G = B; the mean of the decoded channels is the best estimate
        return ((rgb.astype(np.uint16).sum(axis=2) + 1) // 3).astype(np.uint8)
    return rgb
