"""Turning whatever the user passes into uint8 RGB pixels (and back into images)."""
from __future__ import annotations

import io
import os

import numpy as np

from .errors import ImageError, LimitError
from .format import is_icc_profile


_RGB_MODES = ("RGB", "RGBA", "RGBa", "P", "PA")
_GRAY_MODES = ("L", "LA", "La", "1", "I", "I;16", "I;16L", "I;16B", "I;16N")


def _from_pil(im, keep_icc: bool = True, deep: bool = False):
    """PIL image -> (pixels (H, W) or (H, W, 3) uint8, channels, alpha (H, W) uint8 or None, metadata).
    deep (lossless and near-lossless coding): 16-bit gray is returned as uint16 instead.

    Conversions (documented in the README):
    - EXIF orientation is applied, so the pixels are stored upright (and the kept EXIF and XMP
      no longer carry an orientation).
    - 'L' and '1' are grayscale: coded as RGB, decoded back to one channel.
    - 'I;16*' / 'I' (16/32-bit grayscale) are scaled to 8 bits (value >> 8 for 16-bit).
    - 'P', 'PA', 'LA', 'La', 'RGBA', 'RGBa' and images with a transparent colour key: an alpha
      plane that is not fully opaque is kept (coded losslessly); a fully opaque one is dropped.
    - 'CMYK', 'YCbCr', 'LAB', 'HSV' are converted to RGB by Pillow.
    - Animated images (more than one frame) are rejected.
    - An embedded ICC profile of the image's colour space (RGB, or gray for grayscale) is kept
      as it is, with the pixels untouched, so that wide-gamut photos (Display P3, Adobe RGB) keep
      their colours; one that maps to sRGB within a level is dropped (the pixels are sRGB, which
      a file without a profile means); with keep_icc=False, or for a profile that does not fit
      (CMYK, or a profile of the other colour space), it is applied instead: the pixels are
      converted to sRGB and the profile is dropped. A profile that cannot be read is ignored.
    - metadata: {"exif": TIFF-layout EXIF bytes, "xmp": XMP packet bytes, "icc": ICC profile
      bytes}, those present.
    """
    from PIL import ImageOps

    if getattr(im, "n_frames", 1) > 1:
        raise ImageError(f"animated image with {im.n_frames} frames: fastcodec codes single images; "
                         "extract one frame first (im.seek(i))")
    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not stop coding; orientation is then as stored
        pass
    meta = _metadata(im.info)
    icc = im.info.get("icc_profile")
    if isinstance(icc, (bytes, bytearray)) and icc:
        space = bytes(icc[16:20]) if is_icc_profile(icc) else None  # the profile's data colour space
        fits = (space == b"RGB " and im.mode in _RGB_MODES) or (space == b"GRAY" and im.mode in _GRAY_MODES)
        if fits and _like_srgb(icc, space):
            pass  # the pixels are sRGB already (most cameras' JPEGs): nothing to store or convert
        elif keep_icc and fits:
            meta["icc"] = bytes(icc)
        elif im.mode in ("RGB", "RGBA", "CMYK", "L"):
            converted = _to_srgb(im, icc)
            if converted is not im:
                meta["lossy_conversion"] = "has an ICC profile that was applied (its colours converted to sRGB)"
            im = converted
    mode = im.mode
    if mode in ("RGB", "L", "1") and im.info.get("transparency") is not None:
        mode = "LA" if mode != "RGB" else "RGBA"  # a transparent colour key becomes an alpha plane
        im = im.convert(mode)
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), 1, None, meta
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im.convert("I"), dtype=np.int64)
        if deep and a.min(initial=0) >= 0 and a.max(initial=0) < 65536:
            return a.astype(np.uint16), 1, None, meta
        shift = 8 if a.max(initial=0) < 65536 else 24
        meta["lossy_conversion"] = f"has {16 if shift == 8 else 32}-bit gray values (mode {mode!r}), scaled to 8 bits"
        return (np.clip(a, 0, None) >> shift).astype(np.uint8), 1, None, meta
    if mode == "F":
        raise ImageError("floating-point images (mode 'F') are not supported: convert to 8-bit first")
    if mode in ("P", "PA", "LA", "RGBA", "RGBa", "La"):
        rgba = np.asarray(im.convert("RGBA"))  # premultiplied modes are un-premultiplied here
        alpha = _alpha_or_none(rgba[..., 3])
        if mode in ("LA", "La"):
            return np.ascontiguousarray(rgba[..., 0]), 1, alpha, meta
        return rgba[..., :3], 3, alpha, meta
    if mode != "RGB":
        meta["lossy_conversion"] = f"is in mode {mode!r}, converted to RGB"
        im = im.convert("RGB")
    return np.asarray(im), 3, None, meta


def _alpha_or_none(alpha: np.ndarray):
    """A copy of the alpha plane, or None when it is fully opaque (nothing to store)."""
    return None if (alpha == 255).all() else np.ascontiguousarray(alpha)


def _metadata(info: dict) -> dict:
    """EXIF (TIFF layout, without the 'Exif\\0\\0' prefix) and XMP bytes from a PIL image's info;
    malformed EXIF (no TIFF header) is dropped."""
    out = {}
    exif = info.get("exif")
    if isinstance(exif, (bytes, bytearray)):
        exif = bytes(exif)
        if exif.startswith(b"Exif\x00\x00"):
            exif = exif[6:]
        if exif[:4] in (b"II*\x00", b"MM\x00*") and len(exif) > 8:
            out["exif"] = exif
    xmp = info.get("xmp", info.get("XML:com.adobe.xmp"))
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    if isinstance(xmp, (bytes, bytearray)) and xmp.strip(b"\x00 \t\r\n"):
        out["xmp"] = bytes(xmp)
    return out


def _like_srgb(icc: bytes, space: bytes) -> bool:
    """Whether a profile maps colours to sRGB within one level: 216 colours of a 6 x 6 x 6 grid
    (6 gray levels for a gray profile) through the profile to sRGB. Such a profile (the sRGB
    profile of most cameras' and phones' JPEGs, 0.5-3 kB) need not be stored: a file without a
    profile is sRGB. A profile that cannot be read is not like sRGB, nor is any without
    Pillow's colour management (a build without LittleCMS): it is then kept."""
    from PIL import Image

    try:
        from PIL import ImageCms
    except ImportError:
        return False

    v = np.linspace(0, 255, 6).round().astype(np.uint8)
    if space == b"GRAY":
        grid, mode = v[None, :], "L"
    else:
        grid, mode = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(1, -1, 3), "RGB"
    try:
        out = ImageCms.profileToProfile(Image.fromarray(np.ascontiguousarray(grid), mode),
                                        ImageCms.ImageCmsProfile(io.BytesIO(icc)), ImageCms.createProfile("sRGB"),
                                        outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return False
    want = np.repeat(grid[..., None], 3, -1) if mode == "L" else grid
    return int(np.abs(np.asarray(out, dtype=np.int16) - want).max()) <= 1


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


def _from_array(a: np.ndarray, deep: bool = False):
    if deep and a.dtype == np.uint16:  # lossless / near-lossless 16-bit samples
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3):
            return a, 1 if a.ndim == 2 else 3, None
        raise ImageError(f"16-bit numpy input must have shape (H, W), (H, W, 1) or (H, W, 3), got {a.shape} "
                         "(16-bit images with an alpha channel are not supported: drop the alpha, or convert "
                         "to uint8)")
    if a.dtype != np.uint8:
        raise ImageError(f"numpy input must be uint8, got {a.dtype}; scale and convert it (e.g. "
                         "np.clip(x * 255, 0, 255).astype(np.uint8))"
                         + ("; uint16 is taken by lossless and max_error coding" if a.dtype == np.uint16 else ""))
    if a.ndim == 2:
        return a, 1, None
    if a.ndim == 3 and a.shape[2] == 1:
        return a[..., 0], 1, None
    if a.ndim == 3 and a.shape[2] == 2:  # grayscale + alpha
        return a[..., 0], 1, _alpha_or_none(a[..., 1])
    if a.ndim == 3 and a.shape[2] == 3:
        return a, 3, None
    if a.ndim == 3 and a.shape[2] == 4:
        return a[..., :3], 3, _alpha_or_none(a[..., 3])
    raise ImageError(f"numpy input must have shape (H, W), (H, W, 1), (H, W, 2), (H, W, 3) or (H, W, 4), "
                     f"got {a.shape}")


def _reads_16_as_8(im) -> bool:
    """Whether Pillow decodes this (not yet loaded) image's 16-bit colour samples to 8 bits (a 16-bit
    RGB PNG or TIFF: its tiles' raw mode is 'RGB;16B' and the like)."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(raw, str) and ";16" in raw:
            return True
    return False


def _png16(data: bytes, im, keep_icc: bool):
    """(pixels uint16 (H, W, 3), 3, None, metadata) of a 16-bit RGB PNG, which Pillow would give as
    8 bits: its chunks read here, the image data inflated (at most what H x W needs) and its row
    filters undone by the native core. Interlaced and RGBA ones, those whose EXIF orientation is
    not upright, and (keep_icc=False) those whose ICC profile would be applied raise ImageError."""
    import struct

    from . import _core
    from .errors import FormatError
    from .format import _inflate_exactly

    if im.format != "PNG":
        raise ImageError(f"this {im.format} image has 16-bit colour samples, which Pillow reads as 8 bits: pass "
                         "a uint16 array (e.g. from tifffile) to code all 16, or convert it to 16-bit PNG")
    pos, idat, head = 8, [], None
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n:
            break
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body[:13]) if n >= 13 else None
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if head is None:
        raise ImageError("cannot decode 16-bit PNG: it has no valid IHDR chunk")
    w, h, depth, color, _, _, interlace = head
    if depth != 16 or color not in (2, 6):
        raise ImageError(f"cannot decode this PNG as 16-bit RGB (bit depth {depth}, colour type {color})")
    if color == 6:
        raise ImageError("16-bit RGBA PNG: 16-bit images with an alpha channel are not supported; drop the alpha, "
                         "or convert to 8 bits")
    if interlace:
        raise ImageError("interlaced 16-bit PNG: not supported; save it without interlacing")
    orientation = im.getexif().get(0x0112, 1)
    if orientation not in (None, 1):
        raise ImageError(f"16-bit PNG with EXIF orientation {orientation}: rotate the pixels upright first")
    row = 6 * w
    try:
        raw = _inflate_exactly(b"".join(idat), h * (row + 1), "image data", f"{h} x (1 + {row})")
        rows = _core.png_unfilter(raw, h, row, 6)
    except FormatError as e:
        raise ImageError(f"cannot decode 16-bit PNG: {e}") from None
    pix = rows.view(">u2").reshape(h, w, 3).astype(np.uint16)
    meta = _metadata(im.info)
    icc = im.info.get("icc_profile")
    if isinstance(icc, (bytes, bytearray)) and icc:
        rgb = is_icc_profile(icc) and bytes(icc[16:20]) == b"RGB "
        if rgb and _like_srgb(icc, b"RGB "):
            pass  # sRGB already: nothing to store
        elif rgb and keep_icc:
            meta["icc"] = bytes(icc)
        else:  # applying a profile would convert the samples (at 8 bits, by Pillow)
            meta["lossy_conversion"] = "has an ICC profile that would have to be applied to 16-bit samples"
    return pix, 3, None, meta


def load_pixels(src, max_pixels: int):
    """Returns (pixels uint8 (H, W, 3), channels)."""
    pix, ch, _, _ = load_image(src, max_pixels)
    return pix, ch


def load_image(src, max_pixels: int, keep_icc: bool = True, deep: bool = False):
    """Returns (pixels uint8 (H, W, 3) view, channels (1 or 3), alpha (H, W) uint8 or None,
    metadata dict with "exif" / "xmp" / "icc" bytes where the source has them). keep_icc=False:
    an embedded ICC profile is applied (pixels converted to sRGB) instead of kept (_from_pil).
    deep (lossless and near-lossless coding): 16-bit gray images and uint16 arrays give uint16
    pixels (without alpha)."""
    from PIL import Image

    meta = {}
    if isinstance(src, np.ndarray):
        pix, ch, alpha = _from_array(src, deep)
    elif isinstance(src, Image.Image):
        _check_size(src.width, src.height, max_pixels)
        if deep and _reads_16_as_8(src):
            raise ImageError("this image has 16-bit colour samples, which Pillow gave as 8 bits: pass the file "
                             "itself (a path or its bytes; 16-bit RGB PNG is read in full) or a uint16 array")
        pix, ch, alpha, meta = _from_pil(src, keep_icc, deep)
    elif isinstance(src, (str, os.PathLike, bytes, bytearray, memoryview)):
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src
        if not isinstance(fp, io.BytesIO):
            if os.path.isdir(fp):
                raise ImageError(f"{os.fspath(fp)!r} is a directory, not an image file")
            if not os.path.exists(fp):
                raise ImageError(f"no such file: {os.fspath(fp)!r}")
        if deep and not isinstance(fp, io.BytesIO):  # 16-bit RGB PNG is read here, not by Pillow
            try:
                with open(fp, "rb") as f:
                    fp = io.BytesIO(f.read())
            except PermissionError as e:
                raise ImageError(f"cannot read {os.fspath(src)!r}: permission denied") from e
            except OSError as e:
                raise ImageError(f"cannot read {os.fspath(src)!r}: {e}") from None
        try:
            with Image.open(fp) as im:
                _check_size(im.width, im.height, max_pixels)
                if deep and _reads_16_as_8(im):
                    pix, ch, alpha, meta = _png16(fp.getvalue(), im, keep_icc)
                else:
                    im.load()
                    pix, ch, alpha, meta = _from_pil(im, keep_icc, deep)
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
    return pix, ch, alpha, meta


def fill_transparent(pixels: np.ndarray, alpha: np.ndarray, rows: int = 256) -> np.ndarray:
    """A copy of pixels (H, W, 3) uint8 whose fully transparent pixels (alpha 0) are replaced by a
    smooth extension of the visible ones, so that the codec spends (almost) no bits on colours
    nobody sees (libwebp does the same unless told ``exact``). Visible and semi-transparent
    pixels keep their values.

    Push-pull: the visible pixels are averaged down a 2x2 pyramid, then, from the coarsest level
    up, each level's empty cells take the value of their parent. Memory: the pyramid starts at half
    resolution (float32 means and counts, about 1.8 bytes per pixel in all, in place); upsampling
    runs in blocks of ``rows`` rows, so no full-size temporary is made besides the output.
    """
    known = alpha > 0
    if known.all():
        return pixels
    out = np.array(pixels, dtype=np.uint8, copy=True)
    if not known.any():
        out[:] = 0  # nothing visible: the cheapest colours
        return out
    h, w = known.shape
    # level 1 (half resolution): sums and counts of the visible pixels in each 2x2 cell
    c = np.zeros(((h + 1) // 2, (w + 1) // 2, 3), np.float32)
    n = np.zeros(c.shape[:2], np.float32)
    for dy in (0, 1):
        for dx in (0, 1):
            k = known[dy::2, dx::2]
            c[:k.shape[0], :k.shape[1]] += pixels[dy::2, dx::2] * k[..., None]
            n[:k.shape[0], :k.shape[1]] += k
    pyr = [(c, n)]
    while c.shape[0] > 1 or c.shape[1] > 1:  # sums and counts of 2x2 cells of the level below
        hh, ww = n.shape
        c = np.pad(c, ((0, hh & 1), (0, ww & 1), (0, 0))).reshape((hh + 1) // 2, 2, (ww + 1) // 2, 2, 3).sum((1, 3))
        n = np.pad(n, ((0, hh & 1), (0, ww & 1))).reshape((hh + 1) // 2, 2, (ww + 1) // 2, 2).sum((1, 3))
        pyr.append((c, n))
    for c, n in pyr:  # sums -> means, in place
        c /= np.maximum(n, 1.0)[..., None]
    for (c, n), (parent, _) in zip(reversed(pyr[:-1]), reversed(pyr[1:])):  # pull, coarse to fine
        for r0 in range(0, n.shape[0], rows):
            r1 = min(n.shape[0], r0 + rows)
            up = np.repeat(np.repeat(parent[r0 // 2:(r1 + 1) // 2], 2, axis=0), 2, axis=1)[:r1 - r0, :n.shape[1]]
            np.copyto(c[r0:r1], up, where=(n[r0:r1] == 0)[..., None])
    est = pyr[0][0]
    for r0 in range(0, h, rows):  # full resolution: only the transparent pixels change
        r1 = min(h, r0 + rows)
        half = np.clip(np.rint(est[r0 // 2:(r1 + 1) // 2]), 0, 255).astype(np.uint8)
        fill = np.repeat(np.repeat(half, 2, axis=0), 2, axis=1)[:r1 - r0, :w]
        np.copyto(out[r0:r1], fill, where=~known[r0:r1, :, None])
    return out


def _check_size(w, h, max_pixels):
    if w * h > max_pixels:
        raise LimitError(f"image of {w}x{h} = {w * h} pixels exceeds max_pixels={max_pixels}; "
                         "raise the limit with Codec(max_pixels=...) if this is intended")


def to_output(rgb: np.ndarray, channels: int, alpha: np.ndarray | None = None) -> np.ndarray:
    """Decoded RGB (+ alpha) -> (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) uint8."""
    if channels == 1:
        # the encoder coded R = G = B; the mean of the decoded channels is the best estimate
        gray = ((rgb.astype(np.uint16).sum(axis=2) + 1) // 3).astype(np.uint8)
        return gray if alpha is None else np.stack([gray, alpha], axis=2)
    if alpha is None:
        return rgb
    out = np.empty(rgb.shape[:2] + (4,), np.uint8)
    out[..., :3] = rgb
    out[..., 3] = alpha
    return out


def to_image(a: np.ndarray, metadata: dict | None = None):
    """A decoded array -> PIL image ('L', 'LA', 'RGB' or 'RGBA'; 16-bit gray: 'I;16'), with the
    file's EXIF, XMP and ICC profile in ``im.info`` (pil_info). Pillow has no 16-bit RGB mode:
    ArgumentError for one (write_png16 writes it as PNG)."""
    from PIL import Image

    from .errors import ArgumentError

    if a.dtype == np.uint16:
        if a.ndim != 2:
            raise ArgumentError("a 16-bit RGB image has no PIL.Image mode: use decompress() for the uint16 "
                                "array, or decompress_file / the CLI to write a 16-bit PNG")
        im = Image.fromarray(a)  # mode 'I;16'
        im.info.update(pil_info(metadata or {}))
        return im
    mode = "L" if a.ndim == 2 else {2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    im = Image.fromarray(a, mode)
    im.info.update(pil_info(metadata or {}))
    return im


def pil_info(metadata: dict) -> dict:
    """A file's metadata as PIL ``info`` entries: "exif" with Pillow's 'Exif\\0\\0' prefix (as its
    JPEG reader gives it), "xmp" as is, the ICC profile as "icc_profile" (Pillow's key)."""
    keys = {"icc": "icc_profile"}
    return {keys.get(key, key): b"Exif\x00\x00" + value if key == "exif" else value
            for key, value in metadata.items()}


# formats that store an alpha channel, and those that store EXIF / XMP (Pillow's writers)
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF", "BMP", "TGA", "ICO", "GIF", "JPEG2000", "AVIF"}
_META_FORMATS = {"PNG": ("exif", "xmp", "icc_profile"), "JPEG": ("exif", "xmp", "icc_profile"),
                 "WEBP": ("exif", "xmp", "icc_profile"), "AVIF": ("exif", "xmp", "icc_profile"),
                 "TIFF": ("exif", "icc_profile")}


def encode_image(im, format: str, **params) -> bytes:
    """Saves a decoded image (``to_image``) in a Pillow format, with its EXIF, XMP and ICC profile
    where the format stores them. An image with an alpha channel cannot be written as JPEG: ArgumentError
    (the transparency would be lost), where a format's writer takes RGBA but not LA, LA is written
    as RGBA."""
    from PIL import PngImagePlugin

    from .errors import ArgumentError

    fmt = format.upper()
    if im.mode in ("LA", "RGBA") and fmt not in _ALPHA_FORMATS:
        raise ArgumentError(f"the image has an alpha channel, which {format} cannot store; write PNG, WebP "
                            "or TIFF, or drop the alpha first (Image.convert('RGB'))")
    for key in _META_FORMATS.get(fmt, ()):
        if im.info.get(key) and key not in params:
            params[key] = im.info[key]
    if fmt == "PNG" and params.get("xmp"):  # Pillow's PNG writer takes XMP as an iTXt chunk
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", params.pop("xmp").decode("utf-8", "replace"), zip=True)
        params["pnginfo"] = info
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt, **params)
    except (OSError, KeyError) as e:
        if im.mode != "LA":
            raise ArgumentError(f"cannot write a {im.mode} image as {format}: {e}") from None
        buf = io.BytesIO()
        im.convert("RGBA").save(buf, format=fmt, **params)
    return buf.getvalue()


# formats that store 16-bit samples (a decoded 16-bit file): PNG (gray and RGB) and TIFF (gray)
_DEEP_FORMATS = {"PNG": (1, 3), "TIFF": (1,)}


def encode_array(a: np.ndarray, metadata: dict, format: str, **params) -> bytes:
    """A decoded array (``decompress``) in a Pillow format with its metadata (``encode_image``); a
    16-bit one (uint16) only as PNG (gray or RGB, with its EXIF, XMP and ICC profile) or TIFF (gray):
    ArgumentError for other formats, which hold 8 bits."""
    from .errors import ArgumentError

    if a.dtype != np.uint16:
        return encode_image(to_image(a, metadata), format, **params)
    fmt = format.upper()
    channels = 1 if a.ndim == 2 else a.shape[2]
    if channels not in _DEEP_FORMATS.get(fmt, ()):
        kind = "gray" if channels == 1 else "RGB"
        allowed = " or ".join(f for f, c in _DEEP_FORMATS.items() if channels in c)
        raise ArgumentError(f"a 16-bit {kind} image cannot be written as {format}, which holds 8 bits per sample; "
                            f"write {allowed} (or decompress() for the uint16 array)")
    if fmt == "PNG":
        return write_png16(a, metadata)
    return encode_image(to_image(a, metadata), format, **params)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(a: np.ndarray, metadata: dict | None = None, level: int = 6) -> bytes:
    """A 16-bit PNG (gray or RGB, big-endian samples, every row with PNG's Sub filter) of a uint16
    (H, W) or (H, W, 3) array, with an ICC profile (iCCP), EXIF (eXIf) and XMP (iTXt) from metadata.
    Pillow reads and writes 16-bit gray but not 16-bit RGB, hence this writer."""
    import struct
    import zlib

    h, w = a.shape[:2]
    channels = 1 if a.ndim == 2 else a.shape[2]
    bpp = 2 * channels  # bytes per pixel, PNG's Sub filter's distance
    rows = np.ascontiguousarray(a, dtype=">u2").view(np.uint8).reshape(h, w * bpp)
    out = [b"\x89PNG\r\n\x1a\n",
           _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 0 if channels == 1 else 2, 0, 0, 0))]
    metadata = metadata or {}
    if metadata.get("icc"):
        out.append(_png_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(metadata["icc"])))
    if metadata.get("exif"):
        out.append(_png_chunk(b"eXIf", metadata["exif"]))
    if metadata.get("xmp"):
        out.append(_png_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + metadata["xmp"]))
    z = zlib.compressobj(level)
    idat = []
    for r0 in range(0, h, 256):  # in blocks of rows: no full-size temporary besides the input
        block = rows[r0:r0 + 256]
        filt = np.empty((block.shape[0], 1 + block.shape[1]), np.uint8)
        filt[:, 0] = 1  # Sub: each byte minus the byte bpp before it (mod 256)
        filt[:, 1:1 + bpp] = block[:, :bpp]
        np.subtract(block[:, bpp:], block[:, :-bpp], out=filt[:, 1 + bpp:])
        idat.append(z.compress(filt.tobytes()))
    idat.append(z.flush())
    out.append(_png_chunk(b"IDAT", b"".join(idat)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)
