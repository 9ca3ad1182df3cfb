"""The exception family of fastcodec.

Every error the package raises on purpose derives from :class:`FastcodecError`.
Errors caused by the caller's input also derive from :class:`ValueError`, so code
that already catches ``ValueError`` keeps working.
"""


class FastcodecError(Exception):
    """Base class of all fastcodec errors."""


class FormatError(FastcodecError, ValueError):
    """Compressed data is not a valid fastcodec file (bad magic, version, checksum, truncated, ...)."""


class ArgumentError(FastcodecError, ValueError):
    """An argument is out of its allowed range or of the wrong type or shape."""


class ImageError(FastcodecError, ValueError):
    """The input image cannot be read or is of an unsupported kind."""


class LimitError(FastcodecError, ValueError):
    """The image is larger than the configured limit (``max_pixels``)."""


class ModelError(FastcodecError):
    """The model a file names is not available, or the model files are damaged."""


class ResourceError(FastcodecError, MemoryError):
    """The native core ran out of memory."""


__all__ = ["FastcodecError", "FormatError", "ArgumentError", "ImageError", "LimitError", "ModelError",
           "ResourceError"]
