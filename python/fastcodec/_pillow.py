"""Pillow plugin: after ``import fastcodec``, ``Image.open("x.fcc")`` and ``im.save("x.fcc", quality=80)``.

Registered format name "FCC", extension ".fcc", MIME type "image/x-fastcodec".
Opening reads only the header (size and mode are known at once); pixels are decoded on load().
"""
from __future__ import annotations

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
        head = self.fp.read(fmt.FIXED_SIZE)
        if not _accept(head):
            raise SyntaxError("not a fastcodec file")
        if len(head) < fmt.FIXED_SIZE:
            raise SyntaxError("truncated fastcodec header")
        w = int.from_bytes(head[8:12], "little")
        h = int.from_bytes(head[12:16], "little")
        channels = head[6]
        self._size = (w, h)
        self._mode = "L" if channels == 1 else "RGB"
        self.info["quality"] = int.from_bytes(head[16:18], "little") / 100.0
        self.info["model"] = head[18:26].hex()
        tile = getattr(ImageFile, "_Tile", None)
        args = ("fcc", (0, 0, w, h), 0, self._mode)
        self.tile = [tile(*args) if tile else args]


class FccDecoder(ImageFile.PyDecoder):
    _pulls_fd = True

    def decode(self, buffer):
        from . import default_codec

        self.fd.seek(0)
        arr = default_codec().decompress(self.fd.read())
        self.set_as_raw(arr.tobytes(), self.mode)
        return -1, 0


def _save(im, fp, filename):
    from . import default_codec

    info = im.encoderinfo
    data = default_codec().compress(im, quality=info.get("quality", 75), target_bpp=info.get("target_bpp"),
                                    target_size=info.get("target_size"))
    fp.write(data)


def register():
    Image.register_open(FORMAT, FccImageFile, _accept)
    Image.register_decoder("fcc", FccDecoder)
    Image.register_save(FORMAT, _save)
    Image.register_extension(FORMAT, ".fcc")
    Image.register_mime(FORMAT, MIME)
