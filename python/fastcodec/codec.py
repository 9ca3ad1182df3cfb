"""The Codec: model sessions and coding tables loaded once, shared safely between threads."""
from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _core, _refine, format as fmt
from ._imageio import encode_array, fill_transparent, load_image, to_image, to_output
from ._model import Model, _release_options, available_models, default_model_name, load_model
from .errors import ArgumentError, FastcodecError, FormatError, ImageError, ModelError

QUALITY_MIN, QUALITY_MAX = 1, 100
EFFORT_MIN, EFFORT_MAX = 1, 3
# Tiling of the analysis/synthesis transforms, in latent pixels (x16 image pixels): images whose
# latent exceeds TILE_MAX on a side are processed in TILE x TILE tiles with HALO overlap.
TILE, HALO, TILE_MAX = 64, 2, 80
# The synthesis tiles need a wider halo: its receptive field reaches 30 image pixels and the
# post-filter's 17 more, past HALO's 32; with 3 latent pixels (48) tiles decode exactly as the
# whole image would (tests/test_bitexact.py), for about 6 % more work per tile.
SYNTHESIS_HALO = 3
# The hyper-transforms run in tiles of the hyper-latent grid (x4 latent, x64 image pixels) once it
# exceeds HYPER_TILE_MAX on a side; the halo (2 hyper-latent pixels) covers their receptive fields
# (hyper-analysis: 7 latent pixels; hyper-synthesis: 1.75 hyper-latent pixels).
HYPER_TILE, HYPER_TILE_MAX = 32, 40
# The latent refinement (effort 2, 3) runs the synthesis gradient in smaller tiles (its
# activations and their gradients take about 3x the synthesis's memory). Measured at 4 MP,
# 2 threads, effort 2, alone in a process: peak RSS 834 MiB, as at effort 1 (838 MiB).
REFINE_TILE, REFINE_TILE_MAX = 32, 48
# Refining the hyper-latent in tiles (effort 3, see Codec._refine): the hyper-latent margin
# around a tile's window that its hyper-synthesis sees (the hyper-synthesis reaches 1.75
# hyper-latent pixels), and how far from the tiles already refined the hyper-latent stays fixed
# (a moved element changes the means up to 7 latents away, under 2 hyper-latent pixels).
Z_MARGIN, Z_MARGIN_FREE = 3, 2


# Latent chunks: the encoder splits the latent channels into independently decodable chunks of
# about CHUNK_SYMBOLS symbols each (one chunk for Kodak-size images).
CHUNK_SYMBOLS = 1 << 19

# Lossless / near-lossless files (format version 3) code stripes of about this many pixels each,
# independently: in parallel, and in bounded memory.
STRIPE_PIXELS = 1 << 20
STRIPE_SPLIT = 1 << 18
# ... unless copies of earlier pixels save more than this fraction of the bits (synthetic
# images) and the image fits one stripe: then it is coded as one stripe if that is smaller
COPY_ONE_STRIPE = 0.9
# compress(max_error=k) also tries lossless coding (with copies) when the near-lossless file
# takes fewer bits per pixel than this (synthetic images; photographs take 2-6 there), and keeps
# the lossless file if it is smaller: every value is then exact, within k all the more
NEAR_TRY_LOSSLESS_BPP = 2.0
# compress(quality / target) also codes an image losslessly when at least this fraction of its
# pixels equal their left neighbour (screenshots, text, charts: 0.85-0.95; photographs: Kodak and
# the training photos at most 0.40), and keeps the lossless file if it is the smaller one (or, with
# a target, if it fits): a screenshot at quality 75 would take 1.39 bpp for 30.6 dB, kept exactly
# it takes 0.043. Above 1 turns this off.
SYNTHETIC_EQUAL_LEFT = 0.6

# compress(target_bpp=...) stops searching once the file is within this fraction below the budget
TARGET_SLACK = 0.002


def chunk_count(channels: int, plane: int) -> int:
    return max(1, min(channels, fmt.MAX_CHUNKS, -(-channels * plane // CHUNK_SYMBOLS)))


def chunk_ranges(channels: int, n: int):
    """Channel range [c0, c1) of each of n chunks (docs/format.md)."""
    return [(i * channels // n, (i + 1) * channels // n) for i in range(n)]


_pool = None
_pool_lock = threading.Lock()


def _map(fn, items):
    """Runs fn over items, on a shared thread pool when there are several (the native coder
    releases the GIL); exceptions propagate. Results in order."""
    items = list(items)
    if len(items) <= 1:
        return [fn(x) for x in items]
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from concurrent.futures import ThreadPoolExecutor
                _pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1),
                                           thread_name_prefix="fastcodec")
    return list(_pool.map(fn, items))


def _small(hy: int, wy: int) -> bool:
    """Whether a latent of hy x wy runs untiled. Larger images run in tiles, and every graph
    hands its arena memory back after its last run for the image (Model.run(release=True))."""
    return hy <= TILE_MAX and wy <= TILE_MAX


def _tiles(n: int, tile: int | None = None, halo: int | None = None):
    """(start, end, window start, window end) of each tile along an axis of n latent pixels.

    The axis splits into equal tiles of at most TILE; each tile's window adds HALO on both
    sides and, at the image edges, shifts inwards instead of shrinking, so that every window of
    an image has the same shape. onnxruntime then plans its memory once and the arena reuses one
    block for all tiles (see _tile_grid)."""
    tile = tile or TILE
    halo = HALO if halo is None else halo
    count = -(-n // tile)
    size = -(-n // count)
    win = min(n, size + 2 * halo)
    out = []
    for t0 in range(0, n, size):
        a0 = min(max(0, t0 - halo), n - win)
        out.append((t0, min(t0 + size, n), a0, a0 + win))
    return out


def _tile_grid(hy: int, wy: int, tile: int | None = None, halo: int | None = None):
    """Every (row tile, column tile, is-last) of a latent of hy x wy. Tiles of one image share
    the onnxruntime arena, which is handed back after the last one: measured at 24 MP (2
    threads, 2026-11-27), releasing it after every tile page-faults each tile's buffers anew
    (12.9 s encode, 18.2 s decode against 10.6 s and 15.6 s), keeping it for good holds about
    1 GiB after the call."""
    rows, cols = _tiles(hy, tile, halo), _tiles(wy, tile, halo)
    n = len(rows) * len(cols)
    return [(r, c, i * len(cols) + j == n - 1) for i, r in enumerate(rows) for j, c in enumerate(cols)]


def _hyper(m: Model, name: str, x: np.ndarray, net=None, threads: int = 1) -> np.ndarray:
    """Runs a hyper-transform: "hyper_encoder" (latent y to z, 4x down) or "hyper_decoder" (z to
    the means, 4x up), in tiles of the hyper-latent grid for very large images, so that their
    memory stays bounded too (measured at 50 MP: the untiled hyper-decoder set the peak, 1846 MiB).
    net: a _core.Net that computes the same function (the bit-exact decoder's mean branch)
    instead of the onnxruntime graph."""
    down = name == "hyper_encoder"
    k = 4  # resolution ratio between the latent and the hyper-latent
    zh, zw = (x.shape[2] // k, x.shape[3] // k) if down else x.shape[2:]
    key = "y" if down else "z"

    def run(t, release):
        if net is None:
            return m.run(name, {key: t}, release=release)[0]
        out = net.run(np.ascontiguousarray(t, dtype=np.float32), 0.0, threads)
        if release:
            net.trim()
        return out

    if zh <= HYPER_TILE_MAX and zw <= HYPER_TILE_MAX:
        return run(x, not _small(zh * k, zw * k))
    i, o = (k, 1) if down else (1, k)  # input and output pixels per hyper-latent pixel
    out = None
    for (t0, t1, a0, a1), (u0, u1, b0, b1), last in _tile_grid(zh, zw, HYPER_TILE):
        res = run(x[:, :, a0 * i:a1 * i, b0 * i:b1 * i], last)
        if out is None:
            out = np.empty((x.shape[0], res.shape[1], zh * o, zw * o), np.float32)
        out[:, :, t0 * o:t1 * o, u0 * o:u1 * o] = res[:, :, (t0 - a0) * o:(t1 - a0) * o, (u0 - b0) * o:(u1 - b0) * o]
    return out


@dataclass(frozen=True)
class FileInfo:
    width: int
    height: int
    channels: int
    quality: float | None  # None for lossless / near-lossless files (format version 3)
    model_id: str | None  # None for lossless / near-lossless files: they need no model
    version: int
    file_size: int
    header_size: int
    z_size: int
    chunk_sizes: tuple
    alpha: bool = False  # the file holds an alpha plane (decoded as a 4th or 2nd channel)
    metadata: tuple = ()  # the metadata it carries: "exif", "xmp", "icc"
    extension_sizes: tuple = ()  # ((name, bytes), ...) of its extension sections (format version 2)
    max_error: int | None = None  # lossless (0) / near-lossless files: the largest difference from the original
    bits: int = 8  # bits per sample of the decoded image: 16 for 16-bit lossless / near-lossless files

    @property
    def lossless(self) -> bool:
        """True for a lossless file: it decodes to exactly the pixels it was made from."""
        return self.max_error == 0

    @property
    def y_size(self) -> int:
        return sum(self.chunk_sizes)

    @property
    def output_channels(self) -> int:
        """Channels of the decoded array: 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)."""
        return self.channels + (1 if self.alpha else 0)

    @property
    def bpp(self) -> float:
        return 8.0 * self.file_size / (self.width * self.height)


def _check_quality(quality) -> float:
    if isinstance(quality, bool) or not isinstance(quality, (int, float, np.integer, np.floating)):
        raise ArgumentError(f"quality must be a number from {QUALITY_MIN} to {QUALITY_MAX}, got {quality!r}")
    q = float(quality)
    if not (QUALITY_MIN <= q <= QUALITY_MAX):
        raise ArgumentError(f"quality must be from {QUALITY_MIN} to {QUALITY_MAX}, got {quality!r}")
    return round(q, 2)  # the file stores hundredths


def _check_box(box, width: int, height: int) -> tuple:
    """A region to decode, as in ``PIL.Image.crop``: (left, upper, right, lower) in pixels, the
    right and lower edges excluded, inside the width x height image and not empty."""
    ok = (isinstance(box, (tuple, list)) and len(box) == 4
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in box))
    if not ok:
        raise ArgumentError(f"box must be four integers (left, upper, right, lower), got {box!r}")
    left, upper, right, lower = (int(v) for v in box)
    if not (0 <= left < right <= width and 0 <= upper < lower <= height):
        raise ArgumentError(f"box must satisfy 0 <= left < right <= {width} and 0 <= upper < lower <= {height} "
                            f"(the image is {width} x {height}), got {tuple(box)!r}")
    return left, upper, right, lower


REDUCE_FACTORS = (1, 2, 4, 8)


def _check_reduce(reduce) -> int:
    if (isinstance(reduce, bool) or not isinstance(reduce, (int, np.integer))
            or int(reduce) not in REDUCE_FACTORS):
        raise ArgumentError(f"reduce must be one of {', '.join(map(str, REDUCE_FACTORS))}, got {reduce!r}")
    return int(reduce)


def reduce_pixels(a: np.ndarray, f: int) -> np.ndarray:
    """uint8 or uint16 (H, W) or (H, W, C) -> (ceil(H / f), ceil(W / f)[, C]): the rounded mean of each
    f x f block, the blocks at the right and lower edges over the pixels they have (as
    PIL.Image.reduce)."""
    h, w = a.shape[:2]
    hr, wr = -(-h // f), -(-w // f)
    pad = np.zeros((hr * f, wr * f) + a.shape[2:], np.uint32)
    pad[:h, :w] = a
    s = pad.reshape(hr, f, wr, f, *a.shape[2:]).sum(axis=(1, 3))
    n = (np.minimum(np.arange(1, hr + 1) * f, h) - np.arange(hr) * f)[:, None] \
        * (np.minimum(np.arange(1, wr + 1) * f, w) - np.arange(wr) * f)[None, :]
    if a.ndim == 3:
        n = n[:, :, None]
    return ((s + n // 2) // n).astype(a.dtype)


def _regula_falsi(probe, lo: float, hi: float, f_lo: float, f_hi: float, low, done, resolution: float,
                  steps: int) -> tuple:
    """Where an increasing function of quality crosses zero, between qualities lo and hi whose
    values f_lo (on the low side) and f_hi (on the high side) are known: regula falsi on the
    0.01 quality grid with the Illinois step (a stale end's weight halved), bisection where that
    stalls. probe(q) -> (f, payload); low(f): whether q joins the low side; done(f_lo, f_hi) on the
    true values stops early, and so does a bracket of `resolution` or `steps` probes. Returns
    (lo, hi, payload at lo, payload at hi), a payload None for an end not probed here.
    (The quality searches of compress: target_bpp / target_size and target_psnr.)"""
    w_lo, w_hi = f_lo, f_hi  # interpolation weights
    p_lo = p_hi = None
    side = 0
    for _ in range(steps):
        if hi - lo <= resolution or done(f_lo, f_hi):
            break
        t = w_lo / (w_lo - w_hi)
        mid = round(lo + min(max(t, 0.05), 0.95) * (hi - lo), 2)
        if not lo < mid < hi:
            mid = round((lo + hi) / 2, 2)
            if not lo < mid < hi:
                break
        f, payload = probe(mid)
        if low(f):
            lo, f_lo, w_lo, p_lo = mid, f, f, payload
            w_hi = w_hi / 2 if side == -1 else w_hi  # Illinois: the other end went stale
            side = -1
        else:
            hi, f_hi, w_hi, p_hi = mid, f, f, payload
            w_lo = w_lo / 2 if side == 1 else w_lo
            side = 1
    return lo, hi, p_lo, p_hi


def _window(lo: int, hi: int, n: int, halo: int, f: int) -> tuple:
    """Latent rows (or columns) [a0, a1) whose synthesis decodes pixels [lo, hi) exactly: the
    latents under them, widened by the halo and clipped to the n latents of the image."""
    return max(0, lo // f - halo), min(n, -(-hi // f) + halo)


class Codec:
    """A loaded codec. Create once, use from any number of threads.

    Parameters
    ----------
    model: name of a shipped model (``fastcodec.models()``) or a path to a bundle directory;
        default: the package's default model. Files coded with any shipped model decode.
    threads: onnxruntime intra-op threads per call (0 = onnxruntime's default: all cores).
    max_pixels: largest image (width * height) accepted for encoding or decoding.
    optimization: onnxruntime graph optimisation level, "all" (default), "extended", "basic" or
        "disabled". Decoded symbols never depend on it (see docs/format.md, "Determinism").
    encoder: analysis transform used by ``compress``: "default", or a faster one the model
        offers (``Codec().model.encoders``; "fast" and "int8", its int8 version, where shipped):
        it trades some compression for encode speed, and its files decode like any other (same
        model id, same decoder).
    decoder: synthesis transform used by ``decompress``: None (default) for the one the file's
        model prefers for the file's quality (``Codec().model.decoder_for(quality)``: the int8
        decoder, then the mixed one, each up to the quality where it costs at most 0.1 dB, where
        the model says so, else ``Codec().model.default_decoder``), "float" for the float
        reference, or another implementation the model offers (``Codec().model.decoders``;
        "int8" where shipped: the same synthesis in int8, fine-tuned for it, fastest, a little
        less accurate; "mixed" (since 0.10): int8 with its first stages in float and 12-bit
        inputs, about half the int8 decoder's loss for about 1.6x its time; see the model
        card). Files of a model that lacks the named decoder (an archived earlier model) decode
        with that model's float one.
    postfilter: run the model's post-filter (where it has one, for the qualities it covers:
        ``Codec().model.postfilter``) on the synthesis output: a small network trained to remove
        the synthesis's remaining errors. False skips it: faster decoding, slightly worse pixels.
        The int8 decoders run the model's int8 post-filter instead where it has one
        (``Codec().model.postfilter_int8``, up to its max_quality): the same network in integers,
        exact on every machine and, on CPUs with AVX-512 VNNI, about 2.7x faster than the float one.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int = 0,
                 max_pixels: int = fmt.DEFAULT_MAX_PIXELS, optimization: str = "all", encoder: str = "default",
                 decoder: str | None = None, postfilter: bool = True):
        if optimization not in ("all", "extended", "basic", "disabled"):
            raise ArgumentError(f"optimization must be 'all', 'extended', 'basic' or 'disabled', got {optimization!r}")
        self.optimization = optimization
        if not isinstance(threads, int) or threads < 0:
            raise ArgumentError(f"threads must be an integer >= 0, got {threads!r}")
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise ArgumentError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.threads = threads
        self.max_pixels = max_pixels
        self._paths = available_models()
        if model is None:
            model = default_model_name()
        if isinstance(model, (str, os.PathLike)) and os.fspath(model) in self._paths:
            path = self._paths[os.fspath(model)]
        elif isinstance(model, (str, os.PathLike)) and Path(model).is_dir():
            path = Path(model)
        else:
            raise ModelError(f"unknown model {model!r}; shipped models: {', '.join(self._paths) or 'none'}")
        self.model = load_model(path, threads=threads, optimization=optimization)
        if not isinstance(encoder, str):
            raise ArgumentError(f"encoder must be a name such as 'default' or 'fast', got {encoder!r}")
        self.encoder = encoder
        # a decode-only bundle encodes nothing: compress() says so, whatever the encoder
        self._encoder_graph = "encoder" if self.model.decode_only else self.model.check_encoder(encoder)
        if decoder is not None and not isinstance(decoder, str):
            raise ArgumentError(f"decoder must be None or a name such as 'float' or 'int8', got {decoder!r}")
        self.decoder = decoder
        if not isinstance(postfilter, bool):
            raise ArgumentError(f"postfilter must be True or False, got {postfilter!r}")
        self.postfilter = postfilter
        if postfilter and self.model.postfilter is not None:
            self.model.check_postfilter()
        # refuses a name the codec's own model lacks, or a damaged graph, now rather than at decode
        for name in ([decoder] if decoder is not None
                     else [self.model.default_decoder, *(n for n, _ in self.model.decoder_policy)]):
            self.model.check_decoder(name)
        self._by_id = {self.model.id: self.model}
        self._lock = threading.Lock()

    # -- models -------------------------------------------------------------------------------
    def _model_for(self, model_id: bytes) -> Model:
        key = model_id.hex()
        m = self._by_id.get(key)
        if m is not None:
            return m
        with self._lock:
            m = self._by_id.get(key)
            if m is not None:
                return m
            for path in self._paths.values():
                try:
                    mid = json.loads((path / "model.json").read_text()).get("id")
                except (OSError, ValueError):
                    continue
                if mid == key:
                    m = load_model(path, threads=self.threads, optimization=self.optimization)
                    self._by_id[key] = m
                    return m
        raise ModelError(f"the file was written with model {key}, which this installation does not have "
                         f"(it has: {', '.join(self._by_id)}); install the fastcodec version that wrote it")

    # -- encoding -------------------------------------------------------------------------------
    def _analyse(self, pixels: np.ndarray):
        """Analysis transform, in overlapping tiles for large images (bounded memory).

        Tiles are TILE latent pixels (16 * TILE image pixels) wide with a HALO of latent pixels on
        every inner side; the halo (32 image pixels) covers the analysis transform's receptive
        field radius (30 pixels: four 5x5 stride-2 convolutions, 2 + 4 + 8 + 16), so tiled and
        untiled latents agree up to float rounding. The synthesis transform reaches 1.875 latent
        pixels (3x3 convolutions at 1/16, 1/8, 1/4 and 1/2 resolution), inside the same halo.
        (HALO was 4 until 0.2: the same bytes, 13% more work per inner tile.)
        """
        m = self.model
        h, w = pixels.shape[:2]
        s = m.stride
        ph, pw = -(-h // s) * s, -(-w // s) * s
        f = s // 4  # latent downsampling factor (16)
        hy, wy = ph // f, pw // f
        if _small(hy, wy):
            (y,) = m.run(self._encoder_graph, {"x": _core.pixels_to_tensor(pixels, ph, pw)})
            return y
        y = None
        for (ty0, ty1, a0, a1), (tx0, tx1, b0, b1), last in _tile_grid(hy, wy):
            # pixel window of the tile with its halo; beyond the image: edge replication
            view = pixels[a0 * f:min(a1 * f, h), b0 * f:min(b1 * f, w)]
            x = _core.pixels_to_tensor(view, (a1 - a0) * f, (b1 - b0) * f)
            (yt,) = m.run(self._encoder_graph, {"x": x}, release=last)
            if y is None:
                y = np.empty((1, yt.shape[1], hy, wy), np.float32)
            y[:, :, ty0:ty1, tx0:tx1] = yt[:, :, ty0 - a0:ty1 - a0, tx0 - b0:tx1 - b0]
        return y

    def _decoder_name(self, m: Model, quality: float) -> str:
        """The decoder for a file of this quality and model: the one the caller named, if the
        model has it (files of older models decode with their float decoder otherwise), else the
        model's choice for the quality."""
        name = self.decoder if self.decoder is not None else m.decoder_for(quality)
        return name if name in m.decoders else "float"

    def _net_threads(self) -> int:
        return self.threads or max(1, min(os.cpu_count() or 1, 8))

    def _synthesise(self, m: Model, y_hat: np.ndarray, h: int, w: int, quality: float) -> np.ndarray:
        """Synthesis transform (and the model's post-filter) to uint8 RGB (h, w, 3), in
        overlapping tiles for large images: the post-filter runs on each tile's synthesis output
        before the halo is cut (SYNTHESIS_HALO covers the reach of both, so tiles change nothing).
        Every decoder but "float" runs in the deterministic C++ executor (m.exact_synthesis:
        the float graphs for "bitexact", integer convolutions for the int8 ones) instead of
        onnxruntime, and so does the post-filter."""
        f = m.stride // 4
        name = self._decoder_name(m, quality)
        filt = self.postfilter and m.postfilter_for(quality)
        if filt:
            m.check_postfilter()
            qv = np.array([quality / 100.0], np.float32)
        exact = name != "float"
        if exact:
            ex, threads = m.bitexact(), self._net_threads()
            synthesis = m.exact_synthesis(name)

            # the int8 decoders get the int8 post-filter where the bundle has one for this quality
            pf = None
            if filt:
                pf = (ex.postfilter_int8(m.check_postfilter_int8()) if m.int8_postfilter_for(name, quality)
                      else ex.postfilter)

            def run(feed, release=False):  # release: the tile loop's finally trims the buffers
                x = synthesis.run(feed["y"], 0.0, threads)
                if pf is not None:
                    x = pf.run(x, np.float32(quality / 100.0), threads)
                return x
        else:
            graph = m.check_decoder(name)

            def run(feed, release=False):
                (x,) = m.run(graph, feed, release=release)
                if filt:
                    (x,) = m.run("postfilter", {"x": x, "q": qv})
                return x

        return self._tiled(run, y_hat, h, w, f, ex if exact else None)

    def _synthesise_reduced(self, m: Model, y_hat: np.ndarray, h: int, w: int, factor: int) -> np.ndarray:
        """The image reduced by ``factor`` (h, w: its reduced size), uint8 RGB: the synthesis's
        first stages and that factor's head (BitExactDecoder.reduced), in the same tiles as
        _synthesise (the head reaches 2 latent pixels, within SYNTHESIS_HALO), no post-filter."""
        ex, threads = m.bitexact(), self._net_threads()
        net = ex.reduced(factor, m.check_reduce())

        def run(feed, release=False):
            return net.run(feed["y"], 0.0, threads)

        return self._tiled(run, y_hat, h, w, (m.stride // 4) // factor, ex)

    @staticmethod
    def _tiled(run, y_hat: np.ndarray, h: int, w: int, f: int, ex=None) -> np.ndarray:
        """run({"y": latents}) -> (1, 3, f H, f W) over the whole latent, or over overlapping tiles
        of it for large images, to uint8 (h, w, 3). f: output pixels per latent pixel. ex: the
        bit-exact decoder whose buffers the tiles share (None for onnxruntime's graphs)."""
        hy, wy = y_hat.shape[2:]
        if _small(hy, wy):
            x = run({"y": y_hat})
            return _core.tensor_to_pixels(np.ascontiguousarray(x, dtype=np.float32), h, w)
        out = np.empty((h, w, 3), np.uint8)
        if ex is not None:
            ex.hold()  # every tile reuses the first one's buffers; trimmed after the last
        try:
            for (ty0, ty1, a0, a1), (tx0, tx1, b0, b1), last in _tile_grid(hy, wy, halo=SYNTHESIS_HALO):
                yt = np.ascontiguousarray(y_hat[:, :, a0:a1, b0:b1])
                x = run({"y": yt}, release=last)
                # keep the tile's own pixels (inside the image) and drop the halo
                r0, r1 = ty0 * f, min(ty1 * f, h)
                c0, c1 = tx0 * f, min(tx1 * f, w)
                if r1 <= r0 or c1 <= c0:
                    continue
                px = _core.tensor_to_pixels(np.ascontiguousarray(x, dtype=np.float32), r1 - a0 * f, c1 - b0 * f)
                out[r0:r1, c0:c1] = px[r0 - a0 * f:, c0 - b0 * f:]
        finally:
            if ex is not None:
                ex.trim()
        return out

    def _code(self, y: np.ndarray, quality: float, pixels: np.ndarray | None = None, effort: int = 1):
        m = self.model
        gain, igain = m.gain_vectors(quality)
        y_g = np.ascontiguousarray(y * gain[None, :, None, None], dtype=np.float32)
        z = _hyper(m, "hyper_encoder", y_g)
        z_int = np.rint(z).astype(np.int32)  # rint: half to even; any fixed rule works, the decoder reads z
        mu = np.ascontiguousarray(_hyper(m, "hyper_decoder", z_int.astype(np.float32)))
        bins = m.scale_bins(z_int)
        if effort > 1:
            u, z_new = self._refine(m, y_g, z, mu, bins, igain, quality, pixels, effort)
            if z_new is not None:
                # the hyper-latent was refined too: the means and coding tables follow it
                z_int = z_new
                mu = np.ascontiguousarray(_hyper(m, "hyper_decoder", z_int.astype(np.float32)))
                bins = m.scale_bins(z_int)
            r = _core.quantize_latent(u, np.ones_like(gain), mu)
        else:
            del y_g
            r = _core.quantize_latent(np.ascontiguousarray(y, dtype=np.float32), gain, mu)
        z_sym = (z_int - m.z_offset[None, :, None, None]).ravel()
        z_groups = np.repeat(m.z_group, z_int.shape[2] * z_int.shape[3])
        return r, bins, z_sym, z_groups

    def _refine(self, m: Model, y_g, z, mu, bins, igain, quality: float, pixels: np.ndarray, effort: int):
        """Latent refinement (see _refine.py): gained latents whose rounding codes the image at a
        lower lambda * distortion + rate, and the integer hyper-latent to code them with (None:
        the one the analysis gave, z rounded). Images beyond REFINE_TILE_MAX latents on a side
        refine tile by tile (REFINE_TILE latents with the synthesis's HALO), so memory stays
        bounded; a tile's halo sees the already refined latents of the tiles before it, and only
        its own latents are kept. Where the hyper-latent is refined as well (_refine.JOINT), a
        tile moves the hyper-latent elements under its own latents, except those within
        Z_MARGIN_FREE of the tiles before it (above and to the left), whose means and scales
        must not change under their refined latents; so every tile's latents are refined
        against the means and scales they are coded with."""
        graph = m.check_refine()
        session = m.session(graph)
        sigma = m.bin_scales(bins)
        lam = m.lam(quality)
        steps, lr = _refine.EFFORT_STEPS[effort], _refine.LEARNING_RATE[effort]
        joint = bool(_refine.JOINT.get(effort))
        extra = {}
        if "pf" in {i.name for i in session.get_inputs()}:
            # the graph includes the post-filter: aim at the pixels a default decoder makes (the
            # filter runs at this quality), if the graph's filter is the bundle's filter
            spec = m.postfilter
            same = spec is not None and m.refine.get("postfilter_sha256") == spec["sha256"]
            extra = {"q": np.array([quality / 100.0], np.float32),
                     "pf": np.array([1.0 if same and m.postfilter_for(quality) else 0.0], np.float32)}
        f = m.stride // 4
        h, w = pixels.shape[:2]
        hy, wy = y_g.shape[2:]
        small = hy <= REFINE_TILE_MAX and wy <= REFINE_TILE_MAX
        grid = [((0, hy, 0, hy), (0, wy, 0, wy), True)] if small else _tile_grid(hy, wy, REFINE_TILE)
        out = y_g.copy()
        if joint:
            hyper, zrate = m.hyper_refine()
            zc = z.astype(np.float32, copy=True)
            zh, zw = zc.shape[2:]
        for k, ((ty0, ty1, a0, a1), (tx0, tx1, b0, b1), last) in enumerate(grid):
            view = pixels[a0 * f:min(a1 * f, h), b0 * f:min(b1 * f, w)]
            x = _core.pixels_to_tensor(view, (a1 - a0) * f, (b1 - b0) * f)
            mask = np.zeros((1, 1, x.shape[2], x.shape[3]), np.float32)
            mask[..., :view.shape[0], :view.shape[1]] = 1.0  # the padding is cropped away: no distortion
            opts = _release_options() if last and not small else None

            def run_vjp(yq, xt, mt, opts=opts):
                return session.run(None, {"y": yq, "x": xt, "m": mt, **extra}, opts)

            win = (slice(None), slice(None), slice(a0, a1), slice(b0, b1))
            if joint:
                # the hyper-latent under the window and a margin beyond the hyper-synthesis's reach
                za0, za1 = max(0, a0 // 4 - Z_MARGIN), min(zh, -(-a1 // 4) + Z_MARGIN)
                zb0, zb1 = max(0, b0 // 4 - Z_MARGIN), min(zw, -(-b1 // 4) + Z_MARGIN)
                free = np.zeros((1, 1, za1 - za0, zb1 - zb0), bool)
                r0 = -(-(ty0 + (4 * Z_MARGIN_FREE if ty0 else 0)) // 4)  # first hyper-latent row it may move
                c0 = -(-(tx0 + (4 * Z_MARGIN_FREE if tx0 else 0)) // 4)
                r1, c1 = ty1 // 4, tx1 // 4  # ... up to the last one wholly under its own latents
                if r1 > r0 and c1 > c0:
                    free[..., r0 - za0:r1 - za0, c0 - zb0:c1 - zb0] = True
                u, v = _refine.refine_joint(run_vjp, out[win], zc[:, :, za0:za1, zb0:zb1], hyper, zrate, igain, x,
                                            mask, lam, steps, lr, _refine.Z_LEARNING_RATE, seed=k, free=free,
                                            offset=(a0 - 4 * za0, b0 - 4 * zb0))
                zc[:, :, za0:za1, zb0:zb1] = v
            else:
                u = _refine.refine(run_vjp, out[win], mu[win], sigma[win], igain, x, mask, lam, steps, lr, seed=k)
            out[:, :, ty0:ty1, tx0:tx1] = u[:, :, ty0 - a0:ty1 - a0, tx0 - b0:tx1 - b0]
        return out, (np.rint(zc).astype(np.int32) if joint else None)

    def compress(self, src, quality: float | None = None, target_bpp: float | None = None,
                 target_size: int | None = None, keep_metadata: bool = True, exact: bool = False,
                 effort: int = 1, lossless: bool = False, max_error: int | None = None,
                 target_psnr: float | None = None) -> bytes:
        """Compress an image to .fcc bytes.

        ``src``: a path, encoded image bytes, a ``PIL.Image`` or a uint8 array (H, W[, 1|2|3|4]).
        An alpha channel that is not fully opaque is kept, losslessly (a fully opaque one is
        dropped); the decoded array then has 4 channels (2 for grayscale).
        ``quality``: 1..100 (hundredths allowed), higher is better; 75 when not given.
        ``target_bpp``: if given, ``quality`` is ignored and searched for (about 5-9 codings of
        the latent, one analysis transform) so that the file is at most this many bits per pixel
        and within 0.2 % of it where the 0.01 quality steps allow (quality 1 if even that is
        larger).
        ``target_size``: the same with a budget for the whole file in bytes (headers included);
        give at most one of ``target_bpp`` and ``target_size``. The alpha plane and metadata
        count towards the budget.
        ``target_psnr``: the smallest file whose decoded image (by this Codec's decoder) has at
        least this PSNR in dB against the source (RGB or gray, 8 bits; with an alpha plane, over
        the pixels that are not fully transparent): the learned codec's quality is searched for
        (4-8 codings and decodings); above what quality 100 reaches (about 37 dB on Kodak) the
        file is near-lossless with the largest max_error that reaches it, and above about 50 dB
        lossless. ``quality`` is ignored; not with ``target_bpp`` / ``target_size``.
        ``keep_metadata``: keep the source's EXIF, XMP and ICC profile (paths, bytes and PIL
        images; the orientation is applied to the pixels and removed from EXIF and XMP; an RGB or
        gray ICC profile is stored as it is, the pixels untouched, so wide-gamut colours survive).
        False drops them, e.g. to strip camera details or GPS positions before publishing; the
        ICC profile is then applied (the pixels converted to sRGB) before it is dropped.
        ``exact``: with an alpha plane, code the colours of fully transparent pixels as given.
        By default they are replaced by a smooth extension of the visible ones (invisible, and
        almost free: half the file or less for a cut-out); semi-transparent and opaque pixels are
        coded as given either way.
        ``effort``: 1 (default) codes the analysis transform's latents as they come; 2 and 3
        refine them for the image first (gradient steps on lambda * distortion + rate through
        the synthesis transform, see _refine.py; effort 3 moves the hyper-latent too): 12 and 60
        steps, about 7 and 38 s for a Kodak image on 2 cores, for about 7 % and 11 % fewer bits
        at the same PSNR (BD-rate on Kodak).
        The files are ordinary files of the same model: every decoder reads them, no slower.
        With ``target_bpp``/``target_size`` the search runs at effort 1 and the refinement once,
        at the quality found (the result then usually comes out a little below the budget; if
        refining ever made it larger than the budget, the unrefined file is returned).
        ``lossless``: code the pixels exactly instead (format version 3, no network: the file
        decodes to the very pixels given, alpha included). ``max_error``: near-lossless, every
        decoded value within this many levels of the original (1..32; 0 is lossless). Neither
        takes a quality, target or effort.

        Synthetic images (screenshots, text, charts: most pixels equal their left neighbour) are
        also coded losslessly when a quality or target is asked for, and that file is returned
        when it is smaller than the learned codec's (or fits the target): it is exact as well.
        ``info(data).lossless`` tells which one it is.
        """
        if not isinstance(lossless, bool):
            raise ArgumentError(f"lossless must be True or False, got {lossless!r}")
        if not isinstance(keep_metadata, bool):
            raise ArgumentError(f"keep_metadata must be True or False, got {keep_metadata!r}")
        if max_error is not None:
            if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) \
                    or not 0 <= max_error <= fmt.MAX_ERROR:
                raise ArgumentError(f"max_error must be a whole number from 0 (lossless) to {fmt.MAX_ERROR}, "
                                    f"got {max_error!r}")
            if lossless and max_error != 0:
                raise ArgumentError(f"lossless=True means max_error=0, got max_error={max_error}")
        if lossless or max_error is not None:
            given = [name for name, v in (("quality", quality), ("target_bpp", target_bpp),
                                          ("target_size", target_size), ("target_psnr", target_psnr))
                     if v is not None]
            if effort != 1:
                given.append("effort")
            if given:
                raise ArgumentError(f"lossless and near-lossless coding take no {' / '.join(given)}: the file "
                                    "keeps every pixel (within max_error); drop those arguments, or lossless / "
                                    "max_error for the learned codec")
            return self._compress_pixels(src, 0 if max_error is None else int(max_error), keep_metadata)
        if quality is None:
            quality = 75
        if self.model.decode_only:
            raise ModelError(f"model {self.model.path.name} ({self.model.id}) ships for decoding only, so that "
                             f"files written with it keep decoding; compress with the default model "
                             f"({default_model_name()}) or another full bundle")
        if target_bpp is not None and target_size is not None:
            raise ArgumentError("give target_bpp or target_size, not both")
        if target_psnr is not None:
            if target_bpp is not None or target_size is not None:
                raise ArgumentError("give target_psnr or a size target (target_bpp / target_size), not both")
            if isinstance(target_psnr, bool) or not isinstance(target_psnr, (int, float, np.integer, np.floating)) \
                    or not 0 < target_psnr <= 100:  # also rejects NaN
                raise ArgumentError(f"target_psnr must be a number of dB in (0, 100], got {target_psnr!r}")
        if target_bpp is not None and (isinstance(target_bpp, bool) or not isinstance(target_bpp, (int, float))
                                       or not (0 < target_bpp < 64)):  # also rejects NaN
            raise ArgumentError(f"target_bpp must be a number in (0, 64), got {target_bpp!r}")
        if target_size is not None and (isinstance(target_size, bool)
                                        or not isinstance(target_size, (int, np.integer)) or target_size < 1):
            raise ArgumentError(f"target_size must be a whole number of bytes >= 1, got {target_size!r}")
        if not isinstance(exact, bool):
            raise ArgumentError(f"exact must be True or False, got {exact!r}")
        if isinstance(effort, bool) or not isinstance(effort, (int, np.integer)) or not EFFORT_MIN <= effort <= EFFORT_MAX:
            raise ArgumentError(f"effort must be a whole number from {EFFORT_MIN} to {EFFORT_MAX}, got {effort!r}")
        effort = int(effort)
        if effort > 1:
            self.model.check_refine()
        q = _check_quality(quality) if target_bpp is None and target_size is None and target_psnr is None else None
        pixels, channels, alpha, meta = load_image(src, self.max_pixels, keep_icc=keep_metadata)
        h, w = pixels.shape[:2]
        ext = _extensions(alpha, meta, keep_metadata)  # coded once, whatever quality the search tries
        exact_file = self._exact_if_synthetic(pixels, channels, ext)
        source, visible = pixels, (None if alpha is None or exact else alpha > 0)  # what target_psnr measures
        if alpha is not None:
            if not exact:
                pixels = fill_transparent(pixels, alpha)
            del alpha
        y = self._analyse(pixels)
        if effort == 1:
            del pixels
            pixels = None
        if target_psnr is not None:
            return self._compress_to_psnr(y, source, visible, channels, ext, float(target_psnr), exact_file,
                                          pixels, effort)
        del source
        if target_bpp is not None or target_size is not None:
            budget = target_bpp * h * w / 8.0 if target_bpp is not None else float(target_size)
            if exact_file is not None and len(exact_file) <= budget:
                return exact_file  # every pixel, within the budget
            best, q = self._compress_to_target(y, h, w, channels, budget, ext)
            if exact_file is not None and len(best) > budget and len(exact_file) <= len(best):
                return exact_file  # nothing fits: the smallest file, and an exact one
            if effort == 1:
                return best
            refined = self._pack(y, q, h, w, channels, ext, pixels, effort)
            return refined if len(refined) <= budget or len(best) > budget else best
        data = self._pack(y, q, h, w, channels, ext, pixels, effort)
        return exact_file if exact_file is not None and len(exact_file) <= len(data) else data

    def _exact_if_synthetic(self, pixels: np.ndarray, channels: int, ext: list) -> bytes | None:
        """The lossless file of an image whose pixels mostly equal their left neighbour (see
        SYNTHETIC_EQUAL_LEFT), None for others. pixels: (H, W, 3) as load_image gives them (alpha
        and metadata, already coded, in ext)."""
        h, w = pixels.shape[:2]
        if w < 2 or SYNTHETIC_EQUAL_LEFT > 1:
            return None
        rows = pixels[::max(1, h // 256)]  # up to 256 rows are enough to tell
        if np.mean(np.all(rows[:, 1:] == rows[:, :-1], axis=2)) < SYNTHETIC_EQUAL_LEFT:
            return None
        return _pixel_file(pixels, channels, 0, ext)

    def _compress_pixels(self, src, max_error: int, keep_metadata: bool) -> bytes:
        """compress(lossless=True / max_error=k): format version 3, stripes coded in parallel by
        the native pixel coder (cpp/pixels.cpp). The alpha plane is kept exactly, colours of
        transparent pixels too."""
        pixels, channels, alpha, meta = load_image(src, self.max_pixels, keep_icc=keep_metadata, deep=True)
        if "lossy_conversion" in meta:
            raise ImageError(f"{'lossless' if max_error == 0 else 'near-lossless'} coding keeps 8 or 16 bits per "
                             f"channel of RGB or gray, and this image {meta['lossy_conversion']}: the file would "
                             "not hold its pixels; convert it first (to 8-bit RGB or L, or 16-bit gray), keep "
                             "its ICC profile (keep_metadata=True), or use the lossy codec")
        h, w = pixels.shape[:2]
        ext = _extensions(alpha, meta, keep_metadata)
        data = _pixel_file(pixels, channels, max_error, ext)
        if max_error and (8 * len(data) < NEAR_TRY_LOSSLESS_BPP * h * w
                          or _sparse_values(pixels if channels == 3 else pixels[..., :1]) is not None):
            # near-lossless files do not copy pixels, lossless ones do: a synthetic image (a
            # screenshot: 0.046 bpp lossless, 0.71 with max_error 1) is smaller kept exactly; nor
            # do they have a sample map: a 10-bit image scaled to 16 bits is smaller as exact ranks
            # than within a max_error below its step of 64 (Kodak: 15.5 against 18.7 bpp at 16)
            exact = _pixel_file(pixels, channels, 0, ext)
            if len(exact) < len(data):
                data = exact
        return data

    def _pack(self, y, q, h, w, channels, ext=(), pixels=None, effort: int = 1) -> bytes:
        m = self.model
        r, bins, z_sym, z_groups = self._code(y, q, pixels, effort)
        zbytes = m.z_coders.encode(z_sym, z_groups)
        ranges = chunk_ranges(r.shape[1], chunk_count(r.shape[1], r.shape[2] * r.shape[3]))
        chunks = _map(lambda c: m.y_coders.encode(r[0, c[0]:c[1]].ravel(), bins[0, c[0]:c[1]].ravel()), ranges)
        return fmt.pack(w, h, channels, q, bytes.fromhex(m.id), zbytes, chunks, ext)

    def _compress_to_target(self, y, h, w, channels, budget: float, ext=()) -> tuple:
        """The file of the highest quality (to the file's 0.01 resolution) that fits the budget
        (bytes), or quality 1 if none does, and that quality. The analysis transform ran once;
        each try re-codes the latent.

        File size grows smoothly and monotonically with quality, nearly linearly in log size, so
        the search interpolates log(size) inside the bracket (regula falsi with the Illinois
        step, which halves a stale end's weight) and falls back to bisection when that stalls.
        It stops once the bracket is 0.01 wide or the best file is within TARGET_SLACK of the
        budget: 5-9 codings on Kodak instead of the 16 of plain bisection."""
        lo, hi = float(QUALITY_MIN), float(QUALITY_MAX)
        best = self._pack(y, lo, h, w, channels, ext)
        if len(best) > budget:
            return best, lo
        top = self._pack(y, hi, h, w, channels, ext)
        if len(top) <= budget:
            return top, hi
        goal = math.log(budget)

        def probe(q):
            data = self._pack(y, q, h, w, channels, ext)
            return math.log(len(data)) - goal, data

        # f_lo <= 0 < f_hi; bisection alone needs 14 steps for the 0.01 resolution
        lo, _, found, _ = _regula_falsi(probe, lo, hi, math.log(len(best)) - goal, math.log(len(top)) - goal,
                                        low=lambda f: f <= 0, done=lambda f_lo, _: f_lo >= math.log(1 - TARGET_SLACK),
                                        resolution=0.011, steps=20)
        return found or best, lo

    def _compress_to_psnr(self, y, source, visible, channels, ext, target: float, exact_file, pixels,
                          effort: int) -> bytes:
        """compress(target_psnr=...): the smallest file whose decoded image has at least the
        target PSNR against source ((H, W, 3) uint8 as load_image gives it; over the visible
        pixels only if given), from the learned codec's qualities, else near-lossless max_error,
        else lossless (and the exact file of a synthetic image, where it is smaller).

        PSNR grows smoothly and almost monotonically with quality, so the search interpolates it
        (regula falsi with the Illinois step, bisection where that stalls) and stops when the
        bracket is 0.1 quality wide or a file lies within 0.02 dB above the target; every file
        it returns was decoded and measured, so the target holds whatever the curve's shape."""
        h, w = source.shape[:2]
        ref = source[..., :1] if channels == 1 else source
        if visible is not None:
            ref = ref[visible]

        def psnr(data) -> float:
            out = self.decompress(data)
            out = out.reshape(h, w, -1)[..., :ref.shape[-1]]
            if visible is not None:
                out = out[visible]
            mse = float(np.mean((out.astype(np.float64) - ref) ** 2)) if ref.size else 0.0
            return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)

        def learned(q):
            data = self._pack(y, q, h, w, channels, ext)
            return psnr(data) - target, data

        found = []
        lo, hi = float(QUALITY_MIN), float(QUALITY_MAX)
        f_hi, top = learned(hi)
        if f_hi >= 0:
            f_lo, best = learned(lo)
            if f_lo >= 0:
                found.append((best, lo))
            else:
                _, hi, _, best = _regula_falsi(learned, lo, hi, f_lo, f_hi, low=lambda f: f < 0,
                                               done=lambda _, f_hi: f_hi <= 0.02, resolution=0.1, steps=16)
                found.append((best or top, hi))
            if effort > 1:
                refined = self._pack(y, found[0][1], h, w, channels, ext, pixels, effort)
                if len(refined) < len(found[0][0]) and psnr(refined) >= target:
                    found[0] = (refined, found[0][1])
        else:
            # beyond the learned codec: near-lossless, whose PSNR follows from max_error k (the
            # errors spread evenly over -k..k: MSE = k (k + 1) / 3), checked by decoding
            k = fmt.MAX_ERROR
            while k > 1 and 10 * math.log10(3 * 255.0 ** 2 / (k * (k + 1))) < target:
                k -= 1
            for k in range(min(fmt.MAX_ERROR, k + 1), 0, -1):
                data = _pixel_file(source, channels, k, ext)
                if psnr(data) >= target:
                    found.append((data, k))
                    break
            else:
                found.append((_pixel_file(source, channels, 0, ext), 0))
        if exact_file is not None:
            found.append((exact_file, 0))
        return min((d for d, _ in found), key=len)

    def compress_many(self, sources, quality: float | None = None, target_bpp: float | None = None,
                      workers: int | None = None, return_exceptions: bool = False,
                      target_size: int | None = None, keep_metadata: bool = True, exact: bool = False,
                      effort: int = 1, lossless: bool = False, max_error: int | None = None,
                      target_psnr: float | None = None) -> list:
        """Compress many images concurrently with this codec; results in input order.

        With ``return_exceptions=True`` a failing input yields its exception object instead of
        stopping the batch. Pair with ``Codec(threads=1)`` so that ``workers`` images run at once
        without oversubscribing the cores.
        """
        return self._many(lambda s: self.compress(s, quality=quality, target_bpp=target_bpp, target_size=target_size,
                                                  keep_metadata=keep_metadata, exact=exact, effort=effort,
                                                  lossless=lossless, max_error=max_error,
                                                  target_psnr=target_psnr),
                          sources, workers, return_exceptions)

    def decompress_many(self, files, workers: int | None = None, return_exceptions: bool = False,
                        reduce: int = 1) -> list:
        """Decode many .fcc files (bytes or paths) concurrently; results in input order.
        reduce: 2, 4 or 8 for thumbnails of them all (see decompress)."""
        _check_reduce(reduce)  # a bad factor fails the call, not each item
        return self._many(lambda f: self.decompress(f, reduce=reduce), files, workers, return_exceptions)

    @staticmethod
    def _many(fn, items, workers, return_exceptions):
        from concurrent.futures import ThreadPoolExecutor

        def call(x):
            try:
                return fn(x)
            except FastcodecError as e:
                if return_exceptions:
                    return e
                raise

        items = list(items)
        workers = workers or min(len(items), os.cpu_count() or 1) or 1
        # a private pool: the shared one serves the chunk-level parallelism inside each call
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fastcodec-batch") as ex:
            return list(ex.map(call, items))

    # -- decoding -------------------------------------------------------------------------------
    def info(self, data) -> FileInfo:
        data = _read_if_path(data)
        hdr, _, _ = fmt.parse(data, max_pixels=self.max_pixels)
        return file_info(hdr)

    def metadata(self, data) -> dict:
        """The EXIF, XMP and ICC profile a .fcc file carries (bytes or path), without decoding
        it: ``{"exif": bytes, "xmp": bytes, "icc": bytes}``, the keys present. EXIF is in TIFF
        layout (no 'Exif\\0\\0' prefix): ``PIL.Image.Exif().load(data["exif"])`` reads it; "icc"
        is the profile as the source embedded it (``PIL.ImageCms.ImageCmsProfile(io.BytesIO(...))``)."""
        data = _read_if_path(data)
        _, _, _, ext = fmt.parse_all(data, max_pixels=self.max_pixels)
        return fmt.metadata_of(ext)

    def _decode_symbols(self, data, ext_out: dict | None = None, box=None, reduce: int = 1):
        """Parses and entropy-decodes a file: (header, model, hyper-latent symbols and groups,
        residuals, scale bins, means, window). The means cover the latent window (a0, a1, b0, b1):
        rows [a0, a1) and columns [b0, b1), all latents without a box; with a box (pixels,
        _check_box) the ones that its synthesis needs. The symbols always cover the whole image
        (the streams are sequential, and parsing them needs every scale bin). reduce > 1: the box
        is one of the image reduced by that factor, and the means are the bit-exact decoder's
        whatever the Codec's decoder (the reduced decoding's)."""
        data = _read_if_path(data)
        hdr, zdata, chunks, ext = fmt.parse_all(data, max_pixels=self.max_pixels)
        if ext_out is not None:
            ext_out.update(ext)
        m = self._model_for(hdr.model_id)
        s = m.stride
        ph, pw = -(-hdr.height // s) * s, -(-hdr.width // s) * s
        zc = m.z_offset.shape[0]
        zh, zw = ph // s, pw // s
        z_groups = np.repeat(m.z_group, zh * zw)
        z_sym = m.z_coders.decode(zdata, z_groups)
        z_int = np.ascontiguousarray(z_sym.reshape(1, zc, zh, zw) + m.z_offset[None, :, None, None])
        f = s // 4  # pixels per latent
        win = (0, ph // f, 0, pw // f)
        z_in = z_int
        if box is not None:
            left, upper, right, lower = _check_box(box, -(-hdr.width // reduce), -(-hdr.height // reduce))
            if reduce > 1:  # the pixels of the whole image under the box
                left, upper = left * reduce, upper * reduce
                right, lower = min(right * reduce, hdr.width), min(lower * reduce, hdr.height)
            win = (*_window(upper, lower, ph // f, SYNTHESIS_HALO, f), *_window(left, right, pw // f, SYNTHESIS_HALO, f))
            # the hyper-latents under that window, with the hyper-decoder's halo (its tiles' HALO)
            za0, za1 = _window(win[0], win[1], zh, HALO, 4)
            zb0, zb1 = _window(win[2], win[3], zw, HALO, 4)
            z_in = np.ascontiguousarray(z_int[:, :, za0:za1, zb0:zb1])
        if reduce > 1 or self._decoder_name(m, hdr.quality) != "float":  # an exact decoder: the exact mean too
            mu = _hyper(m, "hyper_decoder", z_in.astype(np.float32), net=m.bitexact().mean,
                        threads=self._net_threads())
        else:
            mu = _hyper(m, "hyper_decoder", z_in.astype(np.float32))
        if box is not None:
            mu = mu[:, :, win[0] - 4 * za0:win[1] - 4 * za0, win[2] - 4 * zb0:win[3] - 4 * zb0]
        bins = m.scale_bins(z_int)
        M = bins.shape[1]
        if len(chunks) > M:
            raise FormatError(f"file declares {len(chunks)} latent chunks, the model has only {M} channels")
        r = np.empty(bins.shape, np.int32)

        def decode_chunk(i, c):
            try:
                r[0, c[0]:c[1]] = m.y_coders.decode(chunks[i], bins[0, c[0]:c[1]].ravel()).reshape(
                    r[0, c[0]:c[1]].shape)
            except FormatError as e:
                raise FormatError(f"latent chunk {i + 1} of {len(chunks)}: {e}") from None

        _map(lambda ic: decode_chunk(*ic), list(enumerate(chunk_ranges(M, len(chunks)))))
        return hdr, m, z_sym, z_groups, r, bins, mu, win

    def decompress(self, data, box=None, reduce: int = 1) -> np.ndarray:
        """Decode .fcc bytes (or a path to a .fcc file) to a uint8 array: (H, W, 3) RGB, (H, W)
        grayscale, or with the file's alpha plane (H, W, 4) RGBA and (H, W, 2) grayscale + alpha.

        box: decode only this region, ``(left, upper, right, lower)`` in pixels as in
        ``PIL.Image.crop`` (right and lower excluded). The result is the same region of the whole
        decoded image, pixel for pixel, with every decoder but "float" (onnxruntime's, within
        one level), and costs the entropy decoding of the whole file plus the synthesis of the
        region and a margin of 48 pixels: for a 1 MP region of a large photo a small fraction of
        decoding it all.

        reduce: 2, 4 or 8 decodes the image reduced by that factor, ceil(H / reduce) x
        ceil(W / reduce) pixels, each about the mean of a reduce x reduce block (as
        ``PIL.Image.reduce``), for thumbnails: the model's reduce heads read the synthesis's inner
        features and skip its full-resolution layers (at 24 MP, reduce=8 decodes several times
        faster than the whole image), deterministically on every machine, whatever decoder the
        Codec names and without the post-filter. A model without a head for the factor decodes
        the whole image and averages its blocks. With box, the box is a region of the reduced
        image (inside ceil(W / reduce) x ceil(H / reduce)): the same pixels as cropping the
        whole reduced image, from the latents under it only (tiles of a zoomable image)."""
        return self._decompress(data, {}, box, reduce)

    def _decompress(self, data, ext: dict, box=None, reduce: int = 1) -> np.ndarray:
        reduce = _check_reduce(reduce)
        data = _read_if_path(data)
        if fmt.is_pixel_file(data):
            return self._decompress_pixels(data, ext, box, reduce)
        hdr, m, _, _, r, _, mu, (a0, a1, b0, b1) = self._decode_symbols(data, ext, box, reduce)
        # the alpha plane first: a damaged one fails before the costly synthesis
        alpha = fmt.decode_alpha(ext[fmt.EXT_ALPHA], hdr.width, hdr.height) if fmt.EXT_ALPHA in ext else None
        if reduce > 1:
            return self._decompress_reduced(hdr, m, r, mu, (a0, a1, b0, b1), alpha, box, reduce)
        if self._decoder_name(m, hdr.quality) != "float":
            igain = m.igain_bitexact(hdr.quality)
        else:
            _, igain = m.gain_vectors(hdr.quality)
        if box is None:
            y_hat = _core.dequantize_latent(r, np.ascontiguousarray(mu), igain)
            del r, mu
            return to_output(self._synthesise(m, y_hat, hdr.height, hdr.width, hdr.quality), hdr.channels, alpha)
        # a region: the synthesis of its latent window, whose top-left latent is pixel
        # (16 a0, 16 b0); the window's own edges lie SYNTHESIS_HALO latents outside the box
        # (or on the image's edges), so the box's pixels are those of the whole image
        left, upper, right, lower = _check_box(box, hdr.width, hdr.height)
        f = m.stride // 4
        r = np.ascontiguousarray(r[:, :, a0:a1, b0:b1])
        y_hat = _core.dequantize_latent(r, np.ascontiguousarray(mu), igain)
        del r, mu
        px = self._synthesise(m, y_hat, lower - a0 * f, right - b0 * f, hdr.quality)
        px = px[upper - a0 * f:, left - b0 * f:]
        if alpha is not None:
            alpha = alpha[upper:lower, left:right]
        return to_output(np.ascontiguousarray(px), hdr.channels, alpha)

    def _decompress_pixels(self, data, ext: dict, box, f: int) -> np.ndarray:
        """A lossless / near-lossless file (format version 3): only the stripes under the box are
        decoded, in parallel; reduce f > 1 averages the decoded blocks (box: of the reduced image)."""
        hdr, _, stripes, e = fmt.parse_all(data, max_pixels=self.max_pixels)
        ext.update(e)
        alpha = fmt.decode_alpha(e[fmt.EXT_ALPHA], hdr.width, hdr.height) if fmt.EXT_ALPHA in e else None
        W, H = -(-hdr.width // f), -(-hdr.height // f)
        left, upper, right, lower = (0, 0, W, H) if box is None else _check_box(box, W, H)
        top, lft, bot, rgt = upper * f, left * f, min(lower * f, hdr.height), min(right * f, hdr.width)
        R, C = hdr.stripe_rows, hdr.channels
        s0, s1 = top // R, -(-bot // R)
        deep = bool(hdr.flags & fmt.FLAG_DEEP)
        out = np.empty((min(s1 * R, hdr.height) - s0 * R, hdr.width, C), np.uint16 if deep else np.uint8)

        def decode(i):
            r0 = (i - s0) * R
            rows = min(R, hdr.height - i * R)
            try:
                _core.pixel_decode_stripe(stripes[i], hdr.width, rows, C, hdr.max_error, out[r0:r0 + rows],
                                          bool(hdr.flags & fmt.FLAG_COPIES), deep, bool(hdr.flags & fmt.FLAG_CONTEXTS2))
            except FormatError as e:
                raise FormatError(f"stripe {i + 1} of {len(stripes)}: {e}") from None

        _map(decode, range(s0, s1))
        px = out[top - s0 * R:bot - s0 * R, lft:rgt]
        if fmt.EXT_MAP in e:  # the samples are ranks of the values the map lists
            values = fmt.decode_map(e[fmt.EXT_MAP])
            if px.size and int(px.max()) >= values.size:
                raise FormatError(f"sample {int(px.max())} outside the sample map's {values.size} values")
            px = values[px]
        if alpha is not None:
            alpha = alpha[top:bot, lft:rgt]
        if C == 1:
            px = px[..., 0]
            px = np.ascontiguousarray(px) if alpha is None else np.stack([px, alpha], axis=2)
        else:
            px = to_output(np.ascontiguousarray(px), 3, alpha)
        return reduce_pixels(px, f) if f > 1 else px

    def _decompress_reduced(self, hdr, m: Model, r, mu, win, alpha, box, f: int) -> np.ndarray:
        """decompress(reduce=f > 1): the reduce head of the model, or where it has none for f the
        whole decode's pixels under the box reduced; box: a region of the reduced image."""
        left, upper, right, lower = (0, 0, -(-hdr.width // f), -(-hdr.height // f)) if box is None \
            else _check_box(box, -(-hdr.width // f), -(-hdr.height // f))
        # the box's pixels in the whole image: it starts on a multiple of f, so its blocks are the image's
        top, lft, bot, rgt = upper * f, left * f, min(lower * f, hdr.height), min(right * f, hdr.width)
        if alpha is not None:
            alpha = alpha[top:bot, lft:rgt]
        heads = f in m.reduce_factors()
        if heads or self._decoder_name(m, hdr.quality) != "float":
            igain = m.igain_bitexact(hdr.quality)
        else:
            _, igain = m.gain_vectors(hdr.quality)
        a0, a1, b0, b1 = win
        y_hat = _core.dequantize_latent(np.ascontiguousarray(r[:, :, a0:a1, b0:b1]), np.ascontiguousarray(mu), igain)
        del r, mu
        if heads:
            fr = (m.stride // 4) // f  # reduced pixels per latent
            px = self._synthesise_reduced(m, y_hat, lower - a0 * fr, right - b0 * fr, f)
            return to_output(np.ascontiguousarray(px[upper - a0 * fr:, left - b0 * fr:]), hdr.channels,
                             None if alpha is None else reduce_pixels(alpha, f))
        # no head for this factor: the blocks of the whole decode (gray made from RGB first, as there)
        fp = m.stride // 4
        px = self._synthesise(m, y_hat, bot - a0 * fp, rgt - b0 * fp, hdr.quality)[top - a0 * fp:, lft - b0 * fp:]
        return reduce_pixels(to_output(px, hdr.channels, alpha), f)

    def inspect(self, data) -> dict:
        """Bits on disk against the model's information content (sum of -log2 p of every coded
        symbol under the discretised distributions the coder uses), per section. Lossless and
        near-lossless files (format version 3) have no model: ArgumentError (``info`` describes them)."""
        data = _read_if_path(data)
        if fmt.is_pixel_file(data):
            raise ArgumentError("inspect compares a learned file's bits with its model's information content; "
                                "lossless and near-lossless files (format version 3) have no model: use info()")
        hdr, m, z_sym, z_groups, r, bins, _, _ = self._decode_symbols(data)
        t = m.tables
        out = {}
        for name, size, vals, groups, prefix in (("hyper_latent", hdr.z_size, z_sym, z_groups, "z"),
                                                 ("latent", hdr.y_size, r.ravel(), bins.ravel(), "y")):
            # (each latent chunk ends on a byte boundary: at most 7 padding bits per chunk)
            info = _information_bits(vals, groups, t[f"{prefix}_pmf"], t[f"{prefix}_pmf_off"],
                                     t[f"{prefix}_pmf_vmin"])
            out[name] = {"bytes": size, "bits": 8 * size, "symbols": int(vals.size), "information_bits": info,
                         "overhead_pct": 100.0 * (8 * size / info - 1) if info > 0 else float("nan")}
        info_total = sum(v["information_bits"] for v in out.values())
        head = 8 * hdr.header_size
        ext_bits = 8 * hdr.ext_size  # alpha plane and metadata: not coded by the model
        if hdr.extension_sizes:
            out["extensions"] = {"bytes": hdr.ext_size, "bits": ext_bits,
                                 "sections": {fmt.EXT_NAMES.get(t, f"type {t}"): size for t, size in hdr.extension_sizes}}
        out["total"] = {"bytes": hdr.file_size, "bits": 8 * hdr.file_size, "header_bits": head,
                        "extension_bits": ext_bits, "information_bits": info_total,
                        "overhead_pct": 100.0 * ((8 * hdr.file_size - ext_bits) / (info_total + head) - 1),
                        "overhead_vs_information_pct": 100.0 * ((8 * hdr.file_size - ext_bits) / info_total - 1)}
        return out

    def decompress_image(self, data, box=None, reduce: int = 1):
        """Decode to a ``PIL.Image`` ('RGB', 'L', or 'RGBA' / 'LA' with an alpha plane) whose
        ``info`` holds the file's EXIF, XMP and ICC profile ("exif", "xmp", "icc_profile"), so
        that ``im.save`` keeps them.
        box: only this region; reduce: the image reduced by 2, 4 or 8; as in ``decompress``."""
        ext = {}
        a = self._decompress(data, ext, box, reduce)
        return to_image(a, fmt.metadata_of(ext))

    def _decompress_encoded(self, data, format: str, box=None, reduce: int = 1, **params) -> tuple:
        """(bytes of the decoded image in a Pillow format with its alpha and metadata where the
        format holds them, (width, height)); a 16-bit file as a 16-bit PNG (or TIFF if gray)."""
        ext = {}
        a = self._decompress(data, ext, box, reduce)
        return encode_array(a, fmt.metadata_of(ext), format, **params), (a.shape[1], a.shape[0])


def file_info(hdr: fmt.Header) -> FileInfo:
    names = tuple((fmt.EXT_NAMES.get(t, f"type {t}"), size) for t, size in hdr.extension_sizes)
    return FileInfo(hdr.width, hdr.height, hdr.channels, hdr.quality,
                    None if hdr.pixel_coded else hdr.model_id.hex(), hdr.version,
                    hdr.file_size, hdr.header_size, hdr.z_size, hdr.chunk_sizes, alpha=hdr.has_alpha,
                    metadata=tuple(n for n, _ in names if n in dict(fmt.METADATA)), extension_sizes=names,
                    max_error=hdr.max_error, bits=hdr.bits)


def _extensions(alpha, meta: dict, keep_metadata: bool) -> list:
    """A file's extension sections: its alpha plane (if any), then its metadata unless dropped."""
    ext = [] if alpha is None else [(fmt.EXT_ALPHA, fmt.encode_alpha(alpha))]
    if keep_metadata:
        ext += [(t, meta[name]) for name, t in fmt.METADATA if name in meta]
    return ext


def _pixel_file(pixels: np.ndarray, channels: int, max_error: int, ext: list) -> bytes:
    """A version-3 file of (H, W, 3) pixels as load_image gives them (one plane if channels is 1)
    with the extension sections ext; uint16 pixels make a 16-bit file (flag FLAG_DEEP)."""
    h, w = pixels.shape[:2]
    planes = pixels if channels == 3 else pixels[..., :1]
    used = _sparse_values(planes) if max_error == 0 else None
    if used is not None:
        # a 16-bit image of fewer levels than its range (a 10- or 12-bit sensor's values scaled to
        # 16 bits: every 64th or 16th value) is coded as the ranks of its values, which the
        # sample map lists (halves the file of a scaled 10-bit photograph)
        rank = (np.cumsum(used) - 1).astype(np.uint16)
        planes = rank[planes]
        ext = [(fmt.EXT_MAP, fmt.encode_map(used))] + list(ext)
    rows, stripes, flags = _pixel_stripes(planes, max_error)
    if pixels.dtype == np.uint16:
        flags |= fmt.FLAG_DEEP
    return fmt.pack_pixels(w, h, channels, max_error, rows, stripes, ext, flags)


def _sparse_values(planes: np.ndarray):
    """For 16-bit samples that use at most half of the values up to their largest: a bool array of
    the 65536 values, True for those used (the sample map); None otherwise (and for 8 bits)."""
    if planes.dtype != np.uint16:
        return None
    used = np.zeros(65536, bool)
    used[planes.ravel()] = True
    return used if 2 * int(used.sum()) <= int(np.flatnonzero(used)[-1]) + 1 else None


def _pixel_stripes(planes: np.ndarray, max_error: int) -> tuple:
    """(stripe rows, stripe payloads, version-3 flags) of (H, W, 1 | 3) pixels, the stripes coded
    in parallel by the native pixel coder (cpp/pixels.cpp)."""
    h, w = planes.shape[:2]
    rows = stripe_rows(h, w)
    # lossless stripes may copy earlier pixels (format flag FLAG_COPIES): a stripe that does
    # starts with the mode bit 1; the others, coded without one, get the mode bit 0 in front
    coded = _map(lambda r0: _core.pixel_encode_stripe(planes[r0:r0 + rows], max_error, matches=True,
                                                      contexts2=True), range(0, h, rows))
    if len(coded) > 1 and h * w <= STRIPE_PIXELS and planes.dtype == np.uint8 and \
            sum(c[2] + c[3] for c in coded) < COPY_ONE_STRIPE * sum(c[5] for c in coded):
        # copies pay a lot (a screenshot, text, a chart): one stripe finds the repeats the split
        # hides from each other, which is worth more than decoding on two cores
        one = _core.pixel_encode_stripe(planes, max_error, matches=True, contexts2=True)
        if one[2] + one[3] < sum(c[2] + c[3] for c in coded):
            rows, coded = h, [one]
    # contexts 2 (FLAG_CONTEXTS2) make photographs 2.2 % smaller; an image made of copies (a
    # screenshot, a chart: they save more than a tenth of its bits) may be smaller with the first
    # contexts (the screenshot of benchmarks/lossless.py: 0.043 against 0.046 bpp), so those are
    # coded both ways (photographs, whose copies save 2-3 %, are not: twice the time for nothing)
    ctx2 = True
    if sum(c[2] + c[3] for c in coded) < COPY_ONE_STRIPE * sum(c[5] for c in coded):
        first = _map(lambda r0: _core.pixel_encode_stripe(planes[r0:r0 + rows], max_error, matches=True),
                     range(0, h, rows))
        if sum(c[2] + c[3] for c in first) < sum(c[2] + c[3] for c in coded):
            coded, ctx2 = first, False
    copies = any(c[4] for c in coded)
    flags = (fmt.FLAG_CONTEXTS2 if ctx2 else 0) | (fmt.FLAG_COPIES if copies else 0)
    return rows, [c[0] if c[4] or not copies else _mode_bit_0(c[0], c[2] + c[3]) for c in coded], flags


def _mode_bit_0(data: bytes, nbits: int) -> bytes:
    """A stripe's nbits-bit stream with a 0 bit in front (zero padding to whole bytes)."""
    v = int.from_bytes(data, "big") >> (8 * len(data) - nbits)
    n = (nbits + 8) // 8
    return (v << (8 * n - nbits - 1)).to_bytes(n, "big")


def stripe_rows(height: int, width: int) -> int:
    """Rows per stripe of a lossless / near-lossless file: at most about STRIPE_PIXELS pixels each
    (so a large image codes in parallel, in bounded memory), and at least two stripes from
    STRIPE_SPLIT pixels up (two cores then share a Kodak-size image: measured 0.077 s instead of
    0.119 to encode and 0.054 instead of 0.076 to decode, for the same size); rows shared evenly,
    at least 16, at most the image. The same on every machine, so the file is too."""
    n = height * width
    stripes = max(-(-n // STRIPE_PIXELS), 2 if n >= STRIPE_SPLIT else 1)
    return min(height, max(16, -(-height // stripes)))


def _information_bits(values, groups, pmf, off, vmin) -> float:
    """Sum of -log2 p(value) with p the pmf of each symbol's group. Like the coder, which gives
    every symbol a code of at most 24 bits, probabilities are floored at 2^-24 (values outside
    the stored pmf, which the model deems impossible, count as 2^-24 as well)."""
    floor = 2.0 ** -24
    idx = values.astype(np.int64) - vmin[groups]
    size = off[groups.astype(np.int64) + 1] - off[groups]
    ok = (idx >= 0) & (idx < size)
    p = np.full(values.shape, floor)
    p[ok] = pmf[(off[groups] + idx)[ok]]
    return float(-np.log2(np.maximum(p, floor)).sum())


def _read_if_path(data):
    if isinstance(data, (str, os.PathLike)):
        try:
            with open(data, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ArgumentError(f"no such file: {os.fspath(data)!r}") from None
        except IsADirectoryError:
            raise ArgumentError(f"{os.fspath(data)!r} is a directory, not a .fcc file") from None
        except PermissionError:
            raise ArgumentError(f"cannot read {os.fspath(data)!r}: permission denied") from None
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ArgumentError(f"expected .fcc bytes or a path, got {type(data).__name__}")
    return data
