"""ONNX Runtime as a CPU runtime of the encoders' towers: export once, keep the graph, one session per tower.

A tower (a ``torch.nn.Module`` with fixed weights) is exported once with
torch's ONNX exporter; the graph is kept in the artefact cache directory and
run with an ``onnxruntime.InferenceSession`` afterwards, so later processes
need neither the export nor, where the caller allows it, torch at all.

- **Runtimes** (:data:`RUNTIMES`): ``"torch"`` (the reference), ``"onnx"``
  (ONNX Runtime, fp32: the same vectors within float rounding) and
  ``"onnx-int8"`` (weights quantised to int8 by
  ``onnxruntime.quantization.quantize_dynamic``: other vectors, so encoders
  make it part of their identity's version). :func:`resolve_runtime` is the one
  rule of what ``"auto"`` means and of what happens when ONNX Runtime is not
  installed: ``"auto"`` falls back to torch with a logged reason; an explicit
  ``"onnx"`` raises :class:`~frozenlens.errors.RuntimeUnavailableError`.
- **The graph files** (:class:`OnnxGraph`): ``<name>-<key>.onnx`` (the
  graph) and ``<name>-<key>.onnx.<token>.data`` (its weights, ONNX's external
  data), beside a small :class:`~frozenlens.models.artifact_cache.ArtifactCache`
  entry holding both files' lengths and SHA-256 and the weights file's name.
  ONNX Runtime memory-maps external weights and uses them in place, so a
  session holds one copy of the weights, read from the page cache as touched
  (a graph with inline weights is parsed into memory and copied into tensors:
  ~1.4x the weights at the peak, and seconds to load). The key hashes the
  weights' digest (given by the caller), the tower, the exporter's settings
  and the quantisation. Every load checks both files against the entry (the
  digests are remembered under each file's full ``stat`` signature,
  :meth:`~frozenlens.models.artifact_cache.ArtifactCache.file_digest`, so any
  write to a file makes it hashed again); a missing, truncated, stale or
  corrupt file (or one ONNX Runtime rejects) is logged and rebuilt, never
  trusted. A rebuild writes a new weights file (a new token) and then
  renames the graph that names it into place, so a session another process
  mapped from the old files keeps reading intact bytes.
- **The session** is built once per graph, under a lock, never per call;
  ``InferenceSession.run`` is safe to call from several threads at once.
  Intra-op threads: the caller's count (torch's thread count or the usable
  cores); idle threads do not spin (they would steal the cores of the
  decoder threads while indexing).

Importing this module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from frozenlens.errors import RuntimeUnavailableError
from frozenlens.models.artifact_cache import ArtifactCache, CacheEntryError, artifact_key, file_digest

logger = logging.getLogger(__name__)

#: the runtimes of a tower; "auto" picks one (see :func:`resolve_runtime`)
RUNTIMES = ("torch", "onnx", "onnx-int8")
#: ONNX opset of the exported graphs
OPSET = 18
#: version of the export recipe below; part of every graph's key (2: weights in an external data file;
#: 3: torch.export-based exporter, weights saved straight to that file)
GRAPH_FORMAT = 3
#: tensors of at least this many bytes go to the external weights file
EXTERNAL_MIN_BYTES = 1024
_EXPORT_LOCK = threading.Lock()  # the exporter flips torch's process-wide MHA fast-path switch


def missing_for(runtime: str) -> str | None:
    """Why ``runtime`` cannot run in this installation (a package is missing), or ``None``."""
    if runtime == "torch":
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    for package, pip in (("onnx", "onnx"), ("onnxscript", "onnxscript"), ("onnx_ir", "onnx-ir")):
        if importlib.util.find_spec(package) is None:  # torch's exporter (and int8 quantisation) need them
            return f"exporting the graphs needs the {pip} package (pip install {pip})"
    return None


def resolve_runtime(requested: str, *, auto: str, fallback: str, allowed: Sequence[str], what: str) -> str:
    """The runtime to use for ``requested`` (one of ``allowed`` or ``"auto"``).

    ``"auto"`` means ``auto`` when that can run here, else ``fallback`` (logged
    with the reason). An explicit ONNX runtime that cannot run raises
    :class:`RuntimeUnavailableError`; an unknown name raises ``ValueError``.
    """
    if requested != "auto" and requested not in allowed:
        raise ValueError(f"unknown runtime {requested!r} for {what}; use auto, {', '.join(allowed)}")
    chosen = auto if requested == "auto" else requested
    reason = missing_for(chosen)
    if reason is None:
        return chosen
    if requested == "auto":
        logger.info("%s: runtime %s unavailable (%s); using %s", what, chosen, reason, fallback)
        return fallback
    raise RuntimeUnavailableError(f"{what}: runtime {requested!r} is unavailable: {reason}")


def export_onnx(module: Any, example: tuple[Any, ...], inputs: Sequence[str], outputs: Sequence[str],
                dest: Path, data: Path) -> None:
    """``module`` (torch, eval mode) exported to the ONNX graph ``dest`` with its weights in ``data`` (same
    directory, named in the graph by its file name); the first axis of every input and output is dynamic.

    Uses torch's ``torch.export``-based exporter (opset :data:`OPSET`), whose
    graph refers to the module's own tensors until it is saved, one tensor at a
    time, straight to ``data``: a ViT-B/32 image tower exports at +0.44 GB over
    the loaded model, where the TorchScript exporter's in-memory proto and the
    external-data rewrite after it took +1.4 GB (``bench/bench_onnx_export.py``).
    The fused multi-head-attention fast path has no ONNX export, so
    it is switched off for the export (a process-wide switch: under a lock,
    restored after).
    """
    import onnx_ir
    import torch
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1 << 16)
    shapes = tuple({0: batch} for _ in example)
    with _EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation and tracing warnings of the exporter
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            program = torch.onnx.export(module, example, input_names=list(inputs), output_names=list(outputs),
                                        dynamic_shapes=shapes, opset_version=OPSET, dynamo=True, optimize=True,
                                        verbose=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
        if program is None:
            raise RuntimeError("torch.onnx.export returned no program")
        onnx_ir.save(program.model, dest, external_data=data.name, size_threshold_bytes=EXTERNAL_MIN_BYTES)
        _drop_tensors(program.model)
        del program
    _fsync(dest, data)


def _drop_tensors(model: Any) -> None:
    """Let go of the module's tensors that the saved ``model`` (an ``onnx_ir.Model``) refers to.

    onnxscript's rewrite rules (module-level objects) keep the last graph they
    matched, and onnx_ir's graph inputs keep the values once removed from them
    (the lifted parameters: zero-count keys of a ``Counter``); their
    ``const_value`` s are the module's own tensors. Left alone, the whole
    checkpoint stays resident for the life of the process (+0.6 GB for a
    ViT-B/32, measured), long after the model itself is gone.
    """
    graph = model.graph
    removed = getattr(graph.inputs, "_ref_counter", {})  # private in onnx_ir 1.1; absent elsewhere
    for value in (*graph.initializers.values(), *graph.inputs, *removed):
        value.const_value = None


def quantize_int8(fp32: Path, dest: Path, op_types: Sequence[str] | None) -> None:
    """Write ``fp32``'s graph with int8 dynamic quantisation (weights int8, activations quantised per call)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(fp32, dest, weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(op_types) if op_types else None)


class OnnxGraph:
    """One tower's exported graph, kept beside the artefact cache, and its one ONNX Runtime session.

    Args:
        cache: where the graph lives (its directory).
        name: artefact name, e.g. ``"openclip-text"`` (``"-int8"`` is appended for int8).
        key_parts: JSON-able facts the graph depends on, at least a digest of the weights.
        export: ``export(graph_path, data_path)`` writes the fp32 graph and its weights (external data named
            by ``data_path``'s file name), e.g. with :func:`export_onnx` (imports torch; called only when the
            files are unusable).
        int8: quantise the weights to int8 (dynamic quantisation of ``int8_ops``; ``None``: every supported op).
        threads: ONNX Runtime's intra-op threads.
        prepack: let ONNX Runtime re-pack the weights for its matrix kernels when the session is built
            (faster batches, ~0.5 s longer to load a ViT-B/32 image tower); ``False`` for towers called
            with one input at a time, e.g. a text query.
    """

    def __init__(self, cache: ArtifactCache, name: str, key_parts: Sequence[object],
                 export: Callable[[Path, Path], object],
                 *, int8: bool = False, int8_ops: Sequence[str] | None = None, threads: int = 1,
                 prepack: bool = True) -> None:
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self._cache = cache
        self._fp32_name = name
        self._fp32_key = artifact_key(name, GRAPH_FORMAT, OPSET, *key_parts)
        self.name = name + ("-int8" if int8 else "")
        self.key = artifact_key(self.name, GRAPH_FORMAT, OPSET, list(int8_ops or []), *key_parts) if int8 \
            else self._fp32_key
        self._export = export
        self._int8 = int8
        self._int8_ops = tuple(int8_ops) if int8_ops else None
        self.threads = threads
        self.prepack = prepack
        self._lock = threading.Lock()
        self._session: Any = None
        #: how often this object exported (or quantised) the graph: 0 when it came from the cache
        self.builds = 0

    @classmethod
    def cached(cls, cache: ArtifactCache, name: str, key: str, *, threads: int = 1, prepack: bool = True) -> OnnxGraph:
        """A graph another encoder exported, known by its name and key only; never exported here:
        :meth:`session` raises ``FileNotFoundError`` when the file is missing or unusable."""
        graph = cls(cache, name, [], _not_cached, threads=threads, prepack=prepack)
        graph.name, graph.key = name, key
        return graph

    @property
    def path(self) -> Path:
        """The ``.onnx`` file of this graph."""
        return self.graph_path(self.name, self.key)

    def graph_path(self, name: str, key: str) -> Path:
        return self._cache.path(name, key).with_suffix(".onnx")

    @property
    def loaded(self) -> bool:
        """Whether the session exists (built by the first :meth:`run` or :meth:`session`)."""
        return self._session is not None

    def session(self) -> Any:
        """The ``InferenceSession``, built once (thread-safe); the graph comes from the cache or is built."""
        session = self._session
        if session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._load()
                session = self._session
        return session

    def run(self, feeds: dict[str, Any]) -> list[Any]:
        """All outputs (numpy arrays) for ``feeds`` (input name → numpy array). Thread-safe."""
        return self.session().run(None, feeds)

    # ------------------------------------------------------------ internals
    def ensure(self) -> None:
        """Make sure the graph's files are in the cache and intact (built if not), without a session."""
        with self._lock:
            if self._session is None and not self._usable():
                self._build_once()

    def _load(self) -> Any:
        path = self.path
        if self._usable():
            try:
                return self._open(path)
            except ValueError as exc:
                logger.warning("ONNX graph %s is unusable (%s); rebuilding it", path, exc)
                with _build_lock(path):
                    self._build()
        else:
            self._build_once()
        try:
            return self._open(path)
        except ValueError as exc:  # a graph just built that ONNX Runtime rejects: not a cache problem
            raise RuntimeUnavailableError(f"ONNX Runtime cannot run the exported graph {path.name}: {exc}") from exc

    def _usable(self) -> bool:
        """Whether the graph's files match their entry (logged when not)."""
        try:
            self._check(self.name, self.key)
            return True
        except FileNotFoundError:
            logger.info("building ONNX graph %s", self.path.name)
        except (OSError, ValueError) as exc:
            logger.warning("ONNX graph %s is unusable (%s); rebuilding it", self.path, exc)
        return False

    def _build_once(self) -> None:
        """Build the graph unless another process (or encoder) did while this one waited for the build lock."""
        with _build_lock(self.path):
            try:
                self._check(self.name, self.key)
                return  # built meanwhile
            except (OSError, ValueError):
                self._build()

    def _build(self) -> None:
        if self._int8:
            fp32 = self._ensure_fp32()
            self._write(self.name, self.key, lambda dest, data: _quantised(fp32, dest, data, self._int8_ops))
        else:
            self._write(self.name, self.key, self._export)
        self.builds += 1

    def _ensure_fp32(self) -> Path:
        """The fp32 graph int8 is quantised from (checked, or exported)."""
        path = self.graph_path(self._fp32_name, self._fp32_key)
        try:
            self._check(self._fp32_name, self._fp32_key)
        except (OSError, ValueError):
            self._write(self._fp32_name, self._fp32_key, self._export)
        return path

    def _check(self, name: str, key: str) -> None:
        """``FileNotFoundError`` / ``CacheEntryError`` unless the graph file matches its entry."""
        entry = json.loads(bytes(self._cache.read(name, key)))
        path = self.graph_path(name, key)
        data = entry.get("data")
        if not isinstance(data, str) or not data.startswith(path.name + ".") or "/" in data:
            raise CacheEntryError("the entry names no weights file of this graph")
        for file, size_key, sha_key in ((path, "size", "sha256"), (path.with_name(data), "data_size", "data_sha256")):
            size = file.stat().st_size
            if size != entry.get(size_key):
                raise CacheEntryError(f"{file.name}: size {size} != {entry.get(size_key)} (truncated or replaced)")
            if self._cache.file_digest(file) != entry.get(sha_key):
                raise CacheEntryError(f"{file.name}: checksum mismatch")

    def _write(self, name: str, key: str, produce: Callable[[Path, Path], object]) -> None:
        """Make the graph with ``produce(tmp_path, data_path)`` (the graph, its weights in a new external
        data file), rename the graph into place, then write the entry; old weights files go last."""
        dest = self.graph_path(name, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        data = dest.with_name(f"{dest.name}.{secrets.token_hex(8)}.data")
        try:
            produce(tmp, data)
            entry = {"size": tmp.stat().st_size, "sha256": file_digest(tmp), "data": data.name,
                     "data_size": data.stat().st_size, "data_sha256": file_digest(data)}
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                data.unlink()
            raise
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._cache.write(name, key, json.dumps(entry).encode())
        for old in dest.parent.glob(f"{dest.name}.*.data"):  # a mapped one stays readable until unmapped
            if old != data:
                with contextlib.suppress(OSError):
                    old.unlink()

    def _open(self, path: Path) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.prepack:
            opts.add_session_config_entry("session.disable_prepacking", "1")
        opts.log_severity_level = 3  # errors only (no "initializer not used" warnings)
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except (RuntimeError, ValueError) as exc:  # pybind errors (InvalidProtobuf, Fail ...) are RuntimeErrors
            raise CacheEntryError(f"ONNX Runtime rejects it: {str(exc)[:200]}") from exc


@contextlib.contextmanager
def _build_lock(graph: Path) -> Iterator[None]:
    """One build of ``graph`` at a time across processes (an exclusive ``flock`` on ``<graph>.lock``):
    a second builder waits, then finds the files made, and never deletes a weights file being written."""
    graph.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(graph.with_name(graph.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl
        except ImportError:  # not POSIX: builds are not serialised across processes
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _quantised(fp32: Path, graph: Path, data: Path, op_types: Sequence[str] | None) -> None:
    """``fp32`` quantised (:func:`quantize_int8`) to ``graph`` with its weights moved to ``data``: the
    quantiser writes one self-contained file, which is loaded and saved again with external data (an int8
    graph is a quarter of the fp32 weights)."""
    import onnx

    quantize_int8(fp32, graph, op_types)
    model = onnx.load(str(graph))
    onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data.name, size_threshold=EXTERNAL_MIN_BYTES)
    del model
    _fsync(graph, data)


def _fsync(*files: Path) -> None:
    for file in files:
        with file.open("rb+") as f:
            os.fsync(f.fileno())


def _not_cached(dest: Path, data: Path) -> None:
    raise FileNotFoundError("the graph is not in the cache (it is exported by the encoder that owns the model)")


__all__ = ["EXTERNAL_MIN_BYTES", "GRAPH_FORMAT", "OPSET", "RUNTIMES", "OnnxGraph", "export_onnx", "missing_for", "quantize_int8",
           "resolve_runtime"]
