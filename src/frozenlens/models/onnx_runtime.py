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
- **The graph file** (:class:`OnnxGraph`): ``<name>-<key>.onnx`` beside a
  small :class:`~frozenlens.models.artifact_cache.ArtifactCache` entry holding
  its length and SHA-256. The key hashes the weights' digest (given by the
  caller), the tower, the exporter's settings and the quantisation. Every
  load checks the file's size and SHA-256 against the entry (the digest is
  remembered under the file's full ``stat`` signature,
  :meth:`~frozenlens.models.artifact_cache.ArtifactCache.file_digest`, so any
  write to the file makes it hashed again); a missing, truncated, stale or
  corrupt file (or one ONNX Runtime rejects) is logged and rebuilt, never
  trusted. The graph is a plain file so that ONNX Runtime reads it itself
  (no extra copy of a few hundred MB of weights in Python's memory).
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
import io
import json
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from frozenlens.errors import RuntimeUnavailableError
from frozenlens.models.artifact_cache import ArtifactCache, CacheEntryError, artifact_key, file_digest

logger = logging.getLogger(__name__)

#: the runtimes of a tower; "auto" picks one (see :func:`resolve_runtime`)
RUNTIMES = ("torch", "onnx", "onnx-int8")
#: ONNX opset of the exported graphs
OPSET = 17
#: version of the export recipe below; part of every graph's key
GRAPH_FORMAT = 1
_EXPORT_LOCK = threading.Lock()  # the exporter flips torch's process-wide MHA fast-path switch


def missing_for(runtime: str) -> str | None:
    """Why ``runtime`` cannot run in this installation (a package is missing), or ``None``."""
    if runtime == "torch":
        return None
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if importlib.util.find_spec("onnx") is None:  # torch's exporter and int8 quantisation write through it
        return "exporting the graphs needs the onnx package (pip install onnx)"
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


def export_onnx(module: Any, example: tuple[Any, ...], inputs: Sequence[str], outputs: Sequence[str]) -> bytes:
    """``module`` (torch, eval mode) exported to ONNX bytes; the first axis of every input and output is dynamic.

    Uses torch's TorchScript-based exporter (opset :data:`OPSET`). The fused
    multi-head-attention fast path has no ONNX export, so it is switched off
    for the export (a process-wide switch: under a lock, restored after).
    """
    import torch

    buf = io.BytesIO()
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
    with _EXPORT_LOCK, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the exporter
        fast = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            torch.onnx.export(module, example, buf, input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        finally:
            torch.backends.mha.set_fastpath_enabled(fast)
    return buf.getvalue()


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
        export: builds the fp32 graph's bytes (imports torch; called only when the file is unusable).
        int8: quantise the weights to int8 (dynamic quantisation of ``int8_ops``; ``None``: every supported op).
        threads: ONNX Runtime's intra-op threads.
    """

    def __init__(self, cache: ArtifactCache, name: str, key_parts: Sequence[object], export: Callable[[], bytes],
                 *, int8: bool = False, int8_ops: Sequence[str] | None = None, threads: int = 1) -> None:
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
        self._lock = threading.Lock()
        self._session: Any = None
        #: how often this object exported (or quantised) the graph: 0 when it came from the cache
        self.builds = 0

    @classmethod
    def cached(cls, cache: ArtifactCache, name: str, key: str, *, threads: int = 1) -> OnnxGraph:
        """A graph another encoder exported, known by its name and key only; never exported here:
        :meth:`session` raises ``FileNotFoundError`` when the file is missing or unusable."""
        graph = cls(cache, name, [], _not_cached, threads=threads)
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
    def _load(self) -> Any:
        path = self.path
        try:
            self._check(self.name, self.key)
            return self._open(path)
        except FileNotFoundError:
            logger.info("building ONNX graph %s", path.name)
        except (OSError, ValueError) as exc:
            logger.warning("ONNX graph %s is unusable (%s); rebuilding it", path, exc)
        if self._int8:
            fp32 = self._ensure_fp32()
            self._write(self.name, self.key, lambda dest: quantize_int8(fp32, dest, self._int8_ops))
        else:
            graph = self._export()
            self._write(self.name, self.key, lambda dest: dest.write_bytes(graph))
        self.builds += 1
        try:
            return self._open(path)
        except ValueError as exc:  # a graph just built that ONNX Runtime rejects: not a cache problem
            raise RuntimeUnavailableError(f"ONNX Runtime cannot run the exported graph {path.name}: {exc}") from exc

    def _ensure_fp32(self) -> Path:
        """The fp32 graph int8 is quantised from (checked, or exported)."""
        path = self.graph_path(self._fp32_name, self._fp32_key)
        try:
            self._check(self._fp32_name, self._fp32_key)
        except (OSError, ValueError):
            graph = self._export()
            self._write(self._fp32_name, self._fp32_key, lambda dest: dest.write_bytes(graph))
        return path

    def _check(self, name: str, key: str) -> None:
        """``FileNotFoundError`` / ``CacheEntryError`` unless the graph file matches its entry."""
        entry = json.loads(bytes(self._cache.read(name, key)))
        path = self.graph_path(name, key)
        size = path.stat().st_size
        if size != entry.get("size"):
            raise CacheEntryError(f"size {size} != {entry.get('size')} (truncated or replaced)")
        if self._cache.file_digest(path) != entry.get("sha256"):
            raise CacheEntryError("checksum mismatch")

    def _write(self, name: str, key: str, produce: Callable[[Path], object]) -> None:
        """Make the graph file atomically with ``produce(tmp_path)``, then its entry."""
        dest = self.graph_path(name, key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            produce(tmp)
            with tmp.open("rb+") as f:
                os.fsync(f.fileno())
            entry = {"size": tmp.stat().st_size, "sha256": file_digest(tmp)}
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._cache.write(name, key, json.dumps(entry).encode())

    def _open(self, path: Path) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only (no "initializer not used" warnings)
        try:
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except (RuntimeError, ValueError) as exc:  # pybind errors (InvalidProtobuf, Fail ...) are RuntimeErrors
            raise CacheEntryError(f"ONNX Runtime rejects it: {str(exc)[:200]}") from exc


def _not_cached() -> bytes:
    raise FileNotFoundError("the graph is not in the cache (it is exported by the encoder that owns the model)")


__all__ = ["GRAPH_FORMAT", "OPSET", "RUNTIMES", "OnnxGraph", "export_onnx", "missing_for", "quantize_int8",
           "resolve_runtime"]
