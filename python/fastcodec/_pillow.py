"""Pillow plugin: after ``import fastcodec``, ``Image.open("x.fcc")`` and ``im.save("x.fcc", quality=80)``.

Registered format name "FCC", extension ".fcc", MIME type "image/x-fastcodec".
Opening parses the container (size, mode, EXIF, XMP and ICC profile are known at once; the checksums are
verified on load()); pixels are decoded on load(), or only a region's by ``im.crop(box)`` before
load() (Codec.decompress's box), or reduced by 2, 4 or 8 after ``im.draft(mode, size)`` (which
``im.thumbnail`` calls, as for JPEG: Codec.decompress's reduce). Modes: RGB, L, and RGBA / LA for files with
an alpha plane. Saving keeps the image's alpha, EXIF, XMP and ICC profile (``exif=`` / ``xmp=`` /
``icc_profile=`` override them;
``keep_metadata=False`` drops them; ``exact=True`` keeps the colours of fully transparent pixels;
``effort=2`` or ``3`` refines the latents for smaller files, see Codec.compress).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFile

from . import format as fmt

FORMAT = "FCC"
MIME = "image/x-fastcodec"


def _accept(prefix: bytes) -> bool:
    return prefix[:4] == fmt.MAGIC


class FccImageFile(ImageFile.ImageFile):
    format = FORMAT
    format_description = "fastcodec learned image"

    def _open(self):
        from ._imageio import pil_info
        from .errors import FastcodecError

        head = self.fp.read(fmt.FIXED_SIZE)
        if not _accept(head):
            raise SyntaxError("not a fastcodec file")
        if len(head) < fmt.FIXED_SIZE:
            raise SyntaxError("truncated fastcodec header")
        try:  # the whole container (files are small); checksums are left to load()
            hdr, _, _, ext = fmt.parse_all(head + self.fp.read(), max_pixels=1 << 40, verify_crc=False)
        except FastcodecError as e:
            raise SyntaxError(f"invalid fastcodec file: {e}") from None
        w, h = hdr.width, hdr.height
        self._size = (w, h)
        self._mode = ("L" if hdr.channels == 1 else "RGB") + ("A" if hdr.has_alpha else "")
        if hdr.pixel_coded:  # lossless / near-lossless (format version 3): no quality, no model
            self.info["max_error"] = hdr.max_error
            self.info["lossless"] = hdr.max_error == 0
            if hdr.bits == 16:  # 16-bit gray is 'I;16'; Pillow has no 16-bit RGB mode: the high bytes, as
                # Pillow's own PNG reader gives a 16-bit RGB PNG (decompress() returns all 16 bits)
                self.info["bits"] = 16
                self._mode = "I;16" if hdr.channels == 1 else "RGB"
        else:
            self.info["quality"] = hdr.quality
            self.info["model"] = hdr.model_id.hex()
        self.info.update(pil_info(fmt.metadata_of(ext)))
        tile = getattr(ImageFile, "_Tile", None)
        args = ("fcc", (0, 0, w, h), 0, self._mode)
        self.tile = [tile(*args) if tile else args]
        self._reduce = 1

    def draft(self, mode, size):
        """Before load(): with a size, decode the image reduced by the largest of 8, 4 and 2 that
        keeps it at least that large (Codec.decompress's reduce, several times faster than the
        whole image), as Pillow's JPEG reader does; ``Image.thumbnail`` calls this. The mode stays.
        Returns (mode, box of the reduced image in the original's coordinates), or None where
        nothing changes."""
        if not self.tile or not size or self._reduce != 1:
            return None
        scale = min(self.size[0] // max(1, int(size[0])), self.size[1] // max(1, int(size[1])))
        f = next(s for s in (8, 4, 2, 1) if scale >= s)
        if f == 1:
            return None
        w, h = self.size
        self._reduce = f
        self._size = (-(-w // f), -(-h // f))
        tile = getattr(ImageFile, "_Tile", None)
        args = ("fcc", (0, 0) + self._size, 0, self._mode)
        self.tile = [tile(*args) if tile else args]
        self.decoderconfig = (f,)  # passed to FccDecoder after the tile's arguments
        return self.mode, (0, 0, w / f, h / f)

    def crop(self, box=None):
        """Before the pixels are loaded, an integer box inside the image decodes only that
        region (Codec.decompress's box: the same pixels, a fraction of the work for a small
        region of a large image; after draft(), of the reduced image); anything else crops as
        Pillow does, after a full load."""
        inside = (box is not None and self.tile and len(box) == 4
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in box)
                  and 0 <= box[0] < box[2] <= self.width and 0 <= box[1] < box[3] <= self.height)
        if not inside or (self.info.get("bits") == 16 and self.mode == "RGB"):
            return super().crop(box)
        from . import default_codec

        self.fp.seek(0)
        im = default_codec().decompress_image(self.fp.read(), box=tuple(box), reduce=self._reduce)
        im.info = self.info.copy()
        return im


class FccDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer):
        from . import default_codec

        self.fd.seek(0)
        reduce = self.args[1] if len(self.args) > 1 else 1  # FccImageFile.draft's factor
        arr = default_codec().decompress(self.fd.read(), reduce=reduce)
        if arr.dtype == np.uint16:  # a 16-bit file: 'I;16' (little-endian), or the high bytes of RGB
            arr = arr.astype("<u2") if arr.ndim == 2 else (arr >> 8).astype(np.uint8)
        self.set_as_raw(arr.tobytes(), self.mode)
        return -1, 0


def _save(im, fp, filename):
    from . import default_codec

    info = im.encoderinfo
    override = {k: info[k].tobytes() if hasattr(info[k], "tobytes") else info[k]
                for k in ("exif", "xmp", "icc_profile") if k in info}
    if override:  # Pillow's convention: save(..., exif=..., xmp=..., icc_profile=...) replaces the image's own
        im = im.copy()
        im.info.update(override)
    data = default_codec().compress(im, quality=info.get("quality"), target_bpp=info.get("target_bpp"),
                                    target_size=info.get("target_size"), target_psnr=info.get("target_psnr"),
                                    keep_metadata=bool(info.get("keep_metadata", True)),
                                    exact=bool(info.get("exact", False)), effort=info.get("effort", 1),
                                    lossless=bool(info.get("lossless", False)), max_error=info.get("max_error"))
    fp.write(data)


def register():
    Image.register_open(FORMAT, FccImageFile, _accept)
    Image.register_decoder("fcc", FccDecoder)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".fcc")
    Image.register_mime(FORMAT, MIME)
