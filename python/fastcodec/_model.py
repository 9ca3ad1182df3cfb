"""Loading of shipped model bundles (ONNX graphs + coding tables) and the model registry."""
from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _core
from .errors import ArgumentError, ModelError

MODELS_DIR = Path(__file__).resolve().parent / "models"
GRAPHS = ("encoder", "hyper_encoder", "hyper_decoder", "decoder")
# graphs that only encoding needs: an archived (decode-only) bundle of an earlier default model
# drops them and records their SHA-256 in model.json ("archived_graphs"), so its id still checks
ENCODE_GRAPHS = ("encoder", "hyper_encoder")
# the decoder name of the deterministic executor (every bundle whose graphs it can read)
BITEXACT = "bitexact"


def _optional_graphs(meta: dict, kind: str, base: str = "default") -> dict:
    out = {base: kind}
    for name, spec in (meta.get(f"{kind}s") or {}).items():
        if isinstance(spec, dict) and isinstance(spec.get("graph"), str) and spec["graph"].startswith(f"{kind}_"):
            out[name] = spec["graph"]
        elif (kind == "decoder" and isinstance(spec, dict) and isinstance(spec.get("file"), str)
              and spec["file"] == f"decoder_{name}.npz"):
            out[name] = spec["file"]  # a mixed decoder: arrays for the C++ executor, no graph
    return out


def _file(graph: str) -> str:
    """The file of a graph name from _optional_graphs: a stem of an ONNX graph, or an .npz."""
    return graph if graph.endswith(".npz") else f"{graph}.onnx"


def encoder_graphs(meta: dict) -> dict:
    """name -> graph file stem of every analysis transform a bundle offers: "default"
    (encoder.onnx, part of the model id) and the optional faster ones that model.json lists under
    "encoders" ({"fast": {"graph": "encoder_fast", "sha256": ...}}). Those are not part of the
    id: only the analysis transform differs, so their files carry the bundle's id and decode
    with its decoders (docs/format.md, "Models")."""
    return _optional_graphs(meta, "encoder")


def decoder_graphs(meta: dict) -> dict:
    """name -> graph file stem of every synthesis transform a bundle offers: "float"
    (decoder.onnx, the float reference, part of the model id) and the optional ones that
    model.json lists under "decoders" ({"int8": {"graph": "decoder_int8", "sha256": ...}}): other
    implementations of the same synthesis (an int8 one, fine-tuned for its quantisation) that
    read the same latents, so any file of the model decodes with any of them; the pixels differ
    slightly (docs/format.md, "Models"). model.json's "default_decoder" names the one used
    when the caller names none."""
    return _optional_graphs(meta, "decoder", "float")


def is_decode_only(path: Path) -> bool:
    """Whether the bundle at path is archived (lacks a graph that only encoding needs)."""
    return any(not (path / f"{n}.onnx").is_file() for n in ENCODE_GRAPHS)


def bundle_id(path: Path, archived: dict | None = None) -> str:
    """Model id: first 16 hex digits of SHA-256 over the graphs and tables, in a fixed order.
    archived: SHA-256 (hex) of encode-only graphs that the bundle no longer holds."""
    h = hashlib.sha256()
    for name in GRAPHS:
        f = path / f"{name}.onnx"
        if not f.is_file() and archived and name in archived:
            h.update(bytes.fromhex(archived[name]))
        else:
            h.update(hashlib.sha256(f.read_bytes()).digest())
    h.update(hashlib.sha256((path / "tables.npz").read_bytes()).digest())
    return h.hexdigest()[:16]


def _coder_specs(t, prefix):
    off = t[f"{prefix}_freqs_off"]
    flat = t[f"{prefix}_freqs"]
    return [(int(t[f"{prefix}_mode"][i]), int(t[f"{prefix}_vmin"][i]), int(t[f"{prefix}_vmax"][i]),
             int(t[f"{prefix}_nruns"][i]), flat[off[i]:off[i + 1]].astype(np.uint32))
            for i in range(len(off) - 1)]


_release = None


def _release_options():
    """onnxruntime RunOptions that shrink the CPU arena at the end of a run (created once; a
    RunOptions object may be shared by concurrent runs)."""
    global _release
    if _release is None:
        import onnxruntime as ort

        ro = ort.RunOptions()
        ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        _release = ro
    return _release


@dataclass
class Model:
    """One model bundle. Sessions are created lazily and shared by all threads (onnxruntime's
    InferenceSession.run is thread-safe; the native coder sets are immutable)."""

    path: Path
    meta: dict
    id: str
    gains: np.ndarray
    igains: np.ndarray
    grid: tuple  # (log_min, inv_step, nbins)
    hyper_scale: object  # deterministic scale branch (C++), selects the coding tables
    y_coders: object
    z_coders: object
    z_offset: np.ndarray
    z_group: np.ndarray  # coding table of each hyper-latent channel (unused channels share one)
    tables: dict
    threads: int = 0
    optimization: str = "all"
    _sessions: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _verified: dict = field(default_factory=dict)  # (kind, name) -> graph whose SHA-256 checked
    _bitexact: object = None
    _hyper_refine: object = None

    @property
    def decode_only(self) -> bool:
        """An archived bundle: it decodes the files written with it but encodes nothing."""
        return is_decode_only(self.path)

    @property
    def encoders(self) -> dict:
        """name -> graph of each analysis transform this bundle offers (see encoder_graphs)."""
        return {} if self.decode_only else encoder_graphs(self.meta)

    @property
    def decoders(self) -> dict:
        """name -> graph of each synthesis transform this bundle offers (see decoder_graphs), and
        "bitexact": the float graphs run by the deterministic C++ executor (see bitexact). Every
        decoder but "float" (onnxruntime's float kernels) decodes to the same pixels on every
        machine: the int8 ones run in the C++ executor too (exact_synthesis)."""
        return {**decoder_graphs(self.meta), BITEXACT: "decoder"}

    def bitexact(self):
        """The bit-exact decoder of this bundle (built once, on first use): the hyper-decoder's
        mean branch, the synthesis and (on first use, once the caller has verified its graph)
        the post-filter, read from the bundle's own ONNX files and run by _core.Net, so that
        every machine decodes a file to the same pixels (_bitexact.py). ModelError where the
        graphs are not of a form it runs."""
        ex = self._bitexact
        if ex is None:
            with self._lock:
                ex = self._bitexact
                if ex is None:
                    from ._bitexact import BitExactDecoder
                    ex = BitExactDecoder(self.path, self.gains.shape[1])
                    self._bitexact = ex
        return ex

    def exact_synthesis(self, name: str):
        """The synthesis of decoder ``name`` as the deterministic C++ executor runs it: the float
        graphs ("bitexact") or an int8 graph (every other decoder but "float": _core.QSynthesis,
        integer convolutions, the same pixels on every machine). ModelError where the graph is not
        of a form it runs."""
        ex = self.bitexact()
        if name == BITEXACT:
            return ex.synthesis
        graph = self.check_decoder(name)
        if graph.endswith(".npz"):
            return ex.mixed(name, self.path / graph)
        return ex.int8(name, self.path / f"{graph}.onnx")

    def igain_bitexact(self, quality: float) -> np.ndarray:
        """The inverse gain of a quality as gain_vectors computes it, but with a fixed sequence of
        IEEE-754 operations (_core.det_interp, no libm), so every machine gets the same bits."""
        lo, t = self._level(quality)
        a, b = self.igains[lo], self.igains[lo + 1]
        return np.array([_core.det_interp(float(u), float(v), float(t)) for u, v in zip(a, b)], np.float32)

    @property
    def default_decoder(self) -> str:
        """The decoder used when none is named: model.json's "default_decoder", else "float"."""
        name = self.meta.get("default_decoder")
        return name if isinstance(name, str) and name in self.decoders else "float"

    def decoder_for(self, quality: float) -> str:
        """The decoder for a file of this quality when the caller names none. model.json's
        "default_decoder_by_quality", a list of [max_quality, name] pairs in ascending order,
        picks the first decoder whose max_quality the file's quality does not exceed (an int8
        decoder for the qualities where it costs at most 0.1 dB, say); other files, and bundles
        without the list, decode with default_decoder."""
        for name, qmax in self.decoder_policy:
            if quality <= qmax:
                return name
        return self.default_decoder

    @property
    def decoder_policy(self) -> list:
        """The valid entries of model.json's "default_decoder_by_quality" as (name, max_quality),
        in ascending order of max_quality (entries naming a decoder the bundle lacks are ignored,
        so that an archived bundle falls back to its float decoder)."""
        out = []
        for entry in self.meta.get("default_decoder_by_quality") or ():
            if (isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str)
                    and entry[1] in self.decoders and isinstance(entry[0], (int, float))):
                out.append((entry[1], float(entry[0])))
        return sorted(out, key=lambda e: e[1])

    @property
    def postfilter(self) -> dict | None:
        """model.json's "postfilter" ({"graph": "postfilter", "sha256": ..., "max_quality": q}) or
        None: a small network that the decoder runs on the synthesis output of files up to
        max_quality (docs/format.md, "Models"). Not part of the id: it changes the pixels a
        decoder makes, never the symbols."""
        return self._graph_spec("postfilter", "postfilter")

    def postfilter_for(self, quality: float) -> bool:
        """Whether files of this quality get the post-filter (where the model has one)."""
        spec = self.postfilter
        return spec is not None and quality <= float(spec.get("max_quality", 100))

    def check_postfilter(self) -> str:
        """The post-filter's graph, its file verified against model.json's SHA-256 (ModelError)."""
        return self._check_graph("postfilter", {"default": "postfilter"}, "default", self.postfilter["sha256"])

    @property
    def postfilter_int8(self) -> dict | None:
        """model.json's "postfilter_int8" ({"file": "postfilter_int8.npz", "sha256": ...,
        "max_quality": q}) or None: the post-filter in integers (_core.QFilter, exact on every
        machine), which files decoded by an int8 decoder get up to max_quality instead of the float
        filter (docs/format.md, "The int8 post-filter"). Like the float filter, not part of the id."""
        spec = self.meta.get("postfilter_int8")
        ok = (self.postfilter is not None and isinstance(spec, dict) and spec.get("file") == "postfilter_int8.npz"
              and isinstance(spec.get("sha256"), str))
        return spec if ok else None

    def int8_postfilter_for(self, decoder: str, quality: float) -> bool:
        """Whether a file of this quality, decoded by ``decoder``, gets the int8 post-filter
        rather than the float one: an int8 decoder (any but "float" and "bitexact"), a bundle with
        the int8 filter, and a quality up to its max_quality."""
        spec = self.postfilter_int8
        return (spec is not None and decoder not in ("float", BITEXACT) and self.postfilter_for(quality)
                and quality <= float(spec.get("max_quality", 100)))

    def check_postfilter_int8(self) -> Path:
        """The int8 post-filter's file, verified against model.json's SHA-256 (ModelError)."""
        return self._check_file("postfilter_int8", "postfilter_int8.npz", self.postfilter_int8["sha256"],
                                "the int8 post-filter")

    @property
    def reduce(self) -> dict | None:
        """model.json's "reduce" ({"file": "reduce.npz", "sha256": ..., "factors": [8, 4, 2]}) or
        None: small output heads on the synthesis's inner features (1/8 and 1/4 resolution) that
        decode an image reduced by those factors without its full-resolution layers
        (Codec.decompress's reduce). Decoder-side only, so not part of the id."""
        spec = self.meta.get("reduce")
        ok = (isinstance(spec, dict) and spec.get("file") == "reduce.npz" and isinstance(spec.get("sha256"), str)
              and isinstance(spec.get("factors"), list))
        return spec if ok else None

    def reduce_factors(self) -> tuple:
        """The factors this bundle's reduce heads decode (empty without them)."""
        spec = self.reduce
        return tuple(int(f) for f in spec["factors"] if f in (2, 4, 8)) if spec else ()

    def check_reduce(self) -> Path:
        """The reduce heads' file, verified against model.json's SHA-256 (ModelError)."""
        return self._check_file("reduce", "reduce.npz", self.reduce["sha256"], "the reduce heads' file")

    def _check_file(self, key: str, name: str, want: str, what: str) -> Path:
        """The bundle's file ``name`` (``what`` in messages), verified against model.json's
        SHA-256 ``want`` once (ModelError)."""
        done = self._verified.get((key, "default"))
        if done is not None:
            return done
        path = self.path / name
        try:
            got = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as e:
            raise ModelError(f"model {self.path.name}: cannot read {what}: {e}") from None
        if got != want:
            raise ModelError(f"model {self.path.name}: {what} ({name}) is damaged: "
                             f"SHA-256 {got[:16]}..., model.json says {str(want)[:16]}...")
        self._verified[(key, "default")] = path
        return path

    @property
    def refine(self) -> dict | None:
        """model.json's "refine" ({"graph": "synthesis_vjp", "sha256": ...}) or None: the gradient
        of the synthesis transform, which the encoder's latent refinement (effort 2 and 3) runs.
        Encoder-side only, so not part of the id."""
        return None if self.decode_only else self._graph_spec("refine", "synthesis_vjp")

    def _graph_spec(self, key: str, graph: str) -> dict | None:
        """model.json's entry ``key`` if it names ``graph`` and a SHA-256, else None."""
        spec = self.meta.get(key)
        ok = isinstance(spec, dict) and spec.get("graph") == graph and isinstance(spec.get("sha256"), str)
        return spec if ok else None

    def hyper_refine(self):
        """(hyper-synthesis, hyper-latent rate) in numpy for effort 3's refinement of the
        hyper-latent (_refine.py), built once: the hyper-synthesis from the mean branch of
        hyper_decoder.onnx and the scale branch of the tables, the rate from the tables' pmfs."""
        hr = self._hyper_refine
        if hr is None:
            from . import _refine
            from ._bitexact import _Graph, _chain_ops
            t = self.tables
            with self._lock:
                hr = self._hyper_refine
                if hr is None:
                    try:
                        ops = _chain_ops(_Graph(self.path / "hyper_decoder.onnx"), "z", "mu",
                                         slice_first=self.gains.shape[1])
                        log_lo, inv_step, nbins = self.grid
                        hs = _refine.HyperSynthesis([(o[1], o[2], o[3]) for o in ops[:-1]],
                                                    (ops[-1][1], ops[-1][2]), (t["hs_w2"], t["hs_b2"]),
                                                    log_lo, log_lo + (nbins - 1) / inv_step)
                        hr = (hs, _refine.HyperRate(t["z_pmf"], t["z_pmf_off"], t["z_pmf_vmin"],
                                                    self.z_offset, self.z_group))
                    except (OSError, ValueError, KeyError, IndexError) as e:
                        raise ModelError(f"model {self.path.name}: effort 3 cannot read its "
                                         f"hyper-synthesis ({e})") from None
                    self._hyper_refine = hr
        return hr

    def check_refine(self) -> str:
        """The synthesis gradient graph, its file verified against model.json's SHA-256
        (ArgumentError where the bundle has none)."""
        if self.refine is None:
            raise ArgumentError(f"effort 2 and 3 refine the latents with the model's synthesis gradient "
                                f"graph, which model {self.path.name} does not have; use effort 1")
        return self._check_graph("refine", {"default": "synthesis_vjp"}, "default", self.refine["sha256"])

    def check_encoder(self, name: str) -> str:
        """The graph of encoder ``name`` (ArgumentError if the bundle has none of that name), its
        file verified against model.json's SHA-256."""
        return self._check_graph("encoder", self.encoders, name)

    def check_decoder(self, name: str) -> str:
        """The graph of decoder ``name`` (ArgumentError if the bundle has none of that name), its
        file verified against model.json's SHA-256."""
        return self._check_graph("decoder", self.decoders, name)

    def _check_graph(self, kind: str, graphs: dict, name: str, want: str | None = None) -> str:
        done = self._verified.get((kind, name))
        if done is not None:
            return done
        graph = graphs.get(name)
        if graph is None:
            raise ArgumentError(f"{kind} must be one of {', '.join(repr(e) for e in graphs)} "
                                f"for model {self.path.name}, got {name!r}")
        if graph != kind or want is not None:
            want = want if want is not None else self.meta[f"{kind}s"][name].get("sha256")
            try:
                got = hashlib.sha256((self.path / _file(graph)).read_bytes()).hexdigest()
            except OSError as e:
                raise ModelError(f"model {self.path.name}: cannot read {kind} {name!r}: {e}") from None
            if got != want:
                raise ModelError(f"model {self.path.name}: {kind} {name!r} ({_file(graph)}) is damaged: "
                                 f"SHA-256 {got[:16]}..., model.json says {str(want)[:16]}...")
        self._verified[(kind, name)] = graph
        return graph

    @property
    def levels(self) -> int:
        return self.gains.shape[0]

    @property
    def stride(self) -> int:
        return int(self.meta.get("stride", 64))

    def session(self, name: str):
        """The onnxruntime session of a graph (created once, shared by every thread)."""
        s = self._sessions.get(name)
        if s is None:
            with self._lock:
                s = self._sessions.get(name)
                if s is None:
                    import onnxruntime as ort

                    so = ort.SessionOptions()
                    so.graph_optimization_level = {
                        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[self.optimization]
                    if self.threads:
                        so.intra_op_num_threads = self.threads
                    so.inter_op_num_threads = 1
                    # no spin-waiting after a run: idle onnxruntime workers would otherwise take the
                    # cores from the native coder threads that run between the graphs
                    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
                    s = ort.InferenceSession(str(self.path / f"{name}.onnx"), sess_options=so,
                                             providers=["CPUExecutionProvider"])
                    self._sessions[name] = s
        return s

    def _out_shape(self, name: str, shape) -> tuple:
        """Output shape of a graph for an input of ``shape`` (N, C, H, W)."""
        f = self.stride // 4  # latent downsampling of the analysis transform
        # optional graphs: encoder_<name>, decoder_<name>
        kind = next((k for k in ("encoder", "decoder") if name.startswith(k)), name)
        up = {"encoder": (1, f), "decoder": (f, 1), "hyper_encoder": (1, 4), "hyper_decoder": (4, 1)}[kind]
        latent, hyper = self.gains.shape[1], self.z_offset.shape[0]
        channels = {"encoder": latent, "decoder": 3, "hyper_encoder": hyper, "hyper_decoder": latent}[kind]
        return (shape[0], channels, shape[2] * up[0] // up[1], shape[3] * up[0] // up[1])

    def run(self, name: str, feeds: dict, release: bool = False):
        """Runs a graph; returns its outputs.

        ``release=True`` (large images) hands the onnxruntime arena's memory back to the system at
        the end of the run; the arena otherwise keeps every buffer it ever grew to, for good. The
        output then goes into an array of our own (I/O binding): an output tensor allocated in
        the arena would pin the arena block it sits in until the array dies (measured: a 69 MiB
        output of the hyper-decoder held 154 MiB, and 420 MiB after a second run).
        """
        s = self.session(name)
        if not release:
            return s.run(None, feeds)
        (key, x), = feeds.items()
        x = np.ascontiguousarray(x, dtype=np.float32)  # bound by address: must be C-contiguous float32
        out = np.empty(self._out_shape(name, x.shape), np.float32)
        binding = s.io_binding()
        binding.bind_cpu_input(key, x)
        binding.bind_output(s.get_outputs()[0].name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
        s.run_with_iobinding(binding, _release_options())
        return [out]

    def scale_bins(self, z_int: np.ndarray) -> np.ndarray:
        """Coding-table index of every latent element from the integer hyper-latent: computed by
        the deterministic C++ scale branch, identical on every machine (see cpp/hyper.hpp)."""
        return self.hyper_scale.bins(z_int, *self.grid, threads=max(1, min(self.threads or 2, 8)))

    def bin_scales(self, bins: np.ndarray) -> np.ndarray:
        """The Gaussian scale that each coding-table index stands for (the centre of its bin on
        the log-scale grid), float32, same shape as bins."""
        log_min, inv_step, nbins = self.grid
        table = np.exp(log_min + np.arange(nbins) / inv_step).astype(np.float32)
        return table[bins]

    def lam(self, quality: float) -> float:
        """The rate-distortion trade-off (loss = lambda * 255^2 * MSE + bpp) that a quality's
        gains interpolate: log-linear between the trained levels' lambdas, like the gains."""
        lams = self.meta.get("lambdas")
        if not isinstance(lams, list) or len(lams) != self.levels:
            raise ModelError(f"model {self.path.name}: model.json lists no lambda per gain level")
        lo, t = self._level(quality)
        return float(np.exp((1 - t) * np.log(lams[lo]) + t * np.log(lams[lo + 1])))

    def _level(self, quality: float):
        """Where a quality in [1, 100] falls between the trained levels: (lower level, fraction
        towards the next), quality spread linearly over the levels."""
        pos = (quality - 1.0) / 99.0 * (self.levels - 1)
        lo = min(int(np.floor(pos)), self.levels - 2)
        return lo, pos - lo

    def gain_vectors(self, quality: float):
        """Gain and inverse gain for a quality in [1, 100]: log-linear between trained levels."""
        lo, t = self._level(quality)
        t = np.float32(t)
        lg = np.log(self.gains[lo:lo + 2].astype(np.float64))
        lig = np.log(self.igains[lo:lo + 2].astype(np.float64))
        g = np.exp((1 - t) * lg[0] + t * lg[1]).astype(np.float32)
        ig = np.exp((1 - t) * lig[0] + t * lig[1]).astype(np.float32)
        return g, ig


def load_model(path, threads: int = 0, verify: bool = True, optimization: str = "all") -> Model:
    path = Path(path)
    try:
        meta = json.loads((path / "model.json").read_text())
        archived = meta.get("archived_graphs") or {}
        missing = [n for n in GRAPHS if not (path / f"{n}.onnx").is_file()
                   and not (n in ENCODE_GRAPHS and isinstance(archived.get(n), str) and len(archived[n]) == 64)]
        if missing:
            raise ModelError(f"model bundle {path} lacks {', '.join(missing)}.onnx")
        with np.load(path / "tables.npz") as npz:
            t = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"cannot load model bundle {path}: {e}") from None
    try:
        mid = bundle_id(path, archived) if verify else meta["id"]
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load model bundle {path}: {e}") from None
    if mid != meta.get("id"):
        raise ModelError(f"model bundle {path} is damaged: its files hash to {mid}, model.json says {meta.get('id')}")
    grid = (float(t["scale_log_min"]), float(t["scale_inv_step"]), int(t["scale_nbins"]))
    layers = [(np.ascontiguousarray(t["hs_w0"], np.float32), np.ascontiguousarray(t["hs_b0"], np.float32), 2, True),
              (np.ascontiguousarray(t["hs_w1"], np.float32), np.ascontiguousarray(t["hs_b1"], np.float32), 2, True),
              (np.ascontiguousarray(t["hs_w2"], np.float32), np.ascontiguousarray(t["hs_b2"], np.float32), 1, False)]
    zc = t["z_offset"].shape[0]
    z_group = t["z_group"].astype(np.int64) if "z_group" in t else np.arange(zc)  # older bundles: one per channel
    if z_group.shape != (zc,) or z_group.min() < 0 or z_group.max() >= min(zc, 256):
        raise ModelError(f"model bundle {path} has an invalid hyper-latent table map z_group")
    lo = float(t["scale_log_min"])
    hi = lo + (grid[2] - 1) / grid[1]
    return Model(path=path, meta=meta, id=mid, gains=t["gains"].astype(np.float32),
                 igains=t["igains"].astype(np.float32), grid=grid,
                 hyper_scale=_core.HyperScale(layers, np.float32(lo), np.float32(hi)),
                 y_coders=_core.CoderSet(_coder_specs(t, "y")), z_coders=_core.CoderSet(_coder_specs(t, "z")),
                 z_offset=t["z_offset"].astype(np.int32), z_group=z_group.astype(np.uint8), tables=t,
                 threads=threads, optimization=optimization)


def available_models(models_dir: Path = MODELS_DIR) -> dict:
    """name -> path of every bundle shipped in the package."""
    if not models_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(models_dir.iterdir()) if (p / "model.json").is_file()}


def default_model_name(models_dir: Path = MODELS_DIR) -> str:
    f = models_dir / "DEFAULT"
    if f.is_file():
        return f.read_text().strip()
    names = list(available_models(models_dir))
    if not names:
        raise ModelError(f"no model bundles found in {models_dir}; the installation is incomplete")
    return names[-1]
