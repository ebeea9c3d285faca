"""An ``openclip:`` encoder without importing open_clip or torch, from its exported graphs.

A fresh ``frozenlens search "…"`` needs the text tower only, and indexing the
image tower only. Importing open_clip and torch and building the model costs
seconds and holds a second copy of the weights; the exported graphs
(:mod:`frozenlens.models.openclip_onnx`), a torch-free tokenizer
(:class:`~frozenlens.models.clip_bpe.ClipBpe`) and the PIL preprocessing
(:func:`~frozenlens.models.clip_preprocess.prepare_image`) do the same work.

- When a full :class:`~frozenlens.models.openclip.OpenClipEncoder` with an
  ONNX runtime is built from a **local checkpoint file** (``<arch>/<file>``,
  or a file with ``arch=``) whose tokenizer is open_clip's default BPE, it
  exports both towers' graphs (once per weights) and writes a small
  **manifest** to the artefact cache (:func:`write_manifest`): the identity,
  the text and image graphs' names and keys, the context length, the
  preprocessing and the tower facts the engine reads. Its key hashes the
  name, the options that change the model and the digest of the
  checkpoint's bytes.
- :func:`light_encoder` (tried first by the registry) finds that manifest
  for the requested name and options and returns a
  :class:`LightOpenClipEncoder`: texts go through ClipBpe and the text graph,
  images through the PIL preprocessing and the image graph, each graph
  checked on its tower's first call. A graph that is missing or fails its
  check is never trusted: that tower's calls build the full encoder once,
  under a lock, and delegate to it (which exports the graph again for the
  next process). No manifest, a stale one, another device or option:
  ``None``, and the registry builds the full encoder (which writes the
  manifest for the next process).

Importing this module imports neither torch nor open_clip.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frozenlens.cores import usable_cores
from frozenlens.models.artifact_cache import ArtifactCache, artifact_key
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings
from frozenlens.models.clip_preprocess import checked_pixels, no_images, prepare_image
from frozenlens.models.onnx_runtime import OnnxGraph, missing_for
from frozenlens.models.openclip_onnx import run_image_graph
from frozenlens.models.presets import PREFIX

logger = logging.getLogger(__name__)

MANIFEST = "openclip-text-manifest"
_FORMAT = 2  # 2: the image graph and the preprocessing too
#: options that do not change what the text tower computes (the others: no light path)
_NEUTRAL = frozenset({"batch_size", "image_batch_size", "cache_dir", "threads"})
_PROBES = ("a dog on the beach", "Ein Hund am Strand!", "猫が寝ている", "собака", "l'été 2019 &amp; <b>x</b>", "a " * 90)


def _checkpoint(spec: str, arch: str | None) -> tuple[str, Path] | None:
    """(arch, checkpoint file) of a local-file name, without open_clip; ``None`` for other names."""
    path = Path(spec).expanduser()
    if arch and path.is_file():
        return arch, path
    head, sep, tail = spec.partition("/")
    if sep and tail and Path(tail).expanduser().is_file() and (arch in (None, head)):
        return head, Path(tail).expanduser()
    return None


def _no_gpu() -> bool:
    """True when no GPU driver is present, so torch would run on the CPU (checked without importing torch)."""
    return not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/kfd").exists())


def manifest_key(spec: str, options: dict[str, Any], runtime: str) -> str | None:
    """The manifest's key for ``openclip:<spec>`` with ``options`` on ``runtime``; ``None``: no light path."""
    if runtime not in ("onnx", "onnx-int8"):
        return None
    other = {k: v for k, v in options.items() if k not in _NEUTRAL}
    arch = other.pop("arch", None)
    preprocess = other.pop("preprocess", None)
    other.pop("runtime", None)
    if other.pop("device", None) not in (None, "cpu") or other.pop("precision", "auto") not in ("auto", "fp32"):
        return None
    if other:  # language, weights ...: not a plain CLIP text tower from a file
        return None
    found = _checkpoint(spec.removeprefix(PREFIX), arch)
    if found is None:
        return None
    arch_name, path = found
    try:
        digest = ArtifactCache().file_digest(path)  # remembered by the file's stat signature
    except OSError:
        return None
    return artifact_key(MANIFEST, _FORMAT, spec.removeprefix(PREFIX), arch_name, digest, preprocess or {}, runtime)


def light_encoder(spec: str, options: dict[str, Any], full: Callable[[], Encoder]) -> LightOpenClipEncoder | None:
    """A :class:`LightOpenClipEncoder` for ``openclip:<spec>`` with ``options``, or ``None`` (build the full one).

    ``full`` builds the full encoder (``OpenClipEncoder(spec, **options)``) when an image call needs it.
    """
    requested = str(options.get("runtime", "auto"))
    runtime = "onnx" if requested == "auto" else requested
    if missing_for(runtime) is not None or (options.get("device") is None and not _no_gpu()):
        return None
    key = manifest_key(spec, options, runtime)
    if key is None:
        return None
    cache = ArtifactCache()
    try:
        manifest = json.loads(bytes(cache.read(MANIFEST, key)))
        enc = LightOpenClipEncoder(manifest, cache, full, options)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.info("no torch-free text path for %s (%s): building the full encoder", spec, exc)
        return None
    return enc


def write_manifest(encoder: Any, spec: str, options: dict[str, Any]) -> None:
    """Record ``encoder`` (a full OpenClipEncoder on an ONNX runtime) for :func:`light_encoder`, if it qualifies.

    Qualifies: a local checkpoint file, open_clip's default BPE tokenizer (checked by comparing
    :class:`~frozenlens.models.clip_bpe.ClipBpe`'s ids with the tokenizer's on probe strings).
    """
    key = manifest_key(spec, options, encoder.runtime)
    if key is None or encoder._onnx is None:
        return
    cache = ArtifactCache()
    graph, image = encoder._onnx.text, encoder._onnx.image
    try:
        old = json.loads(bytes(cache.read(MANIFEST, key)))
        if old.get("graph") == [graph.name, graph.key] and old.get("image_graph") == [image.name, image.key]:
            return  # already written for these graphs (the key includes the checkpoint's digest)
        # else it names the graphs of an older export recipe (GRAPH_FORMAT, OPSET, versions in their keys):
        # rewritten below, or every process would find them unusable and load the torch model
    except (OSError, ValueError, AttributeError):
        pass
    tok = encoder.tokenizer
    if type(tok).__name__ != "SimpleTokenizer" or getattr(tok, "reduction_fn", None) is not None or \
            getattr(getattr(tok, "clean_fn", None), "__name__", "") != "_clean_lower" or tok.vocab_size != 49408:
        return
    from frozenlens.models.clip_bpe import ClipBpe

    ctx = int(tok.context_length)
    if not np.array_equal(ClipBpe(context_length=ctx)(list(_PROBES)), tok(list(_PROBES)).numpy()):
        logger.info("%s: the torch-free tokenizer differs from the model's; no torch-free text path", spec)
        return
    graph.ensure()  # both towers' graphs exported now, once per weights: later processes need no torch
    image.ensure()
    cfg = encoder.preprocess_cfg
    manifest = {
        "identity": encoder.identity.as_dict(), "graph": [graph.name, graph.key], "context_length": ctx,
        "image_graph": [image.name, image.key], "input_size": encoder.input_size, "draft_size": encoder.draft_size,
        "image_tokens": encoder.image_tokens, "image_batch_size": encoder.image_batch_size,
        "preprocess": {k: cfg[k] for k in ("size", "resize_mode", "interpolation", "fill_color")},
    }
    cache.write(MANIFEST, key, json.dumps(manifest).encode())


class LightOpenClipEncoder(Encoder):
    """An ``openclip:`` encoder on its cached ONNX graphs: ClipBpe + the text graph, PIL + the image graph (no torch).

    The image graph is checked on the first image call (or :meth:`warm` with ``images``); when it is
    missing or damaged, the full :class:`~frozenlens.models.openclip.OpenClipEncoder` is built once
    (``full()``, under a lock) and every later image call delegates to it. Thread-safe: ONNX Runtime
    sessions and the tokenizer may be called concurrently.
    """

    def __init__(self, manifest: dict[str, Any], cache: ArtifactCache, full: Callable[[], Encoder],
                 options: dict[str, Any]) -> None:
        from frozenlens.models.clip_bpe import ClipBpe

        self._build_full = full
        self.identity = EncoderIdentity(**manifest["identity"])
        self.input_size = int(manifest["input_size"])
        self.draft_size = int(manifest["draft_size"])
        self.image_tokens = int(manifest["image_tokens"])
        self.max_text_tokens = int(manifest["context_length"])
        self.batch_size = int(options.get("batch_size", 64))
        self.image_batch_size = int(options.get("image_batch_size", manifest["image_batch_size"]))
        self._preprocess = dict(manifest["preprocess"])
        name, key = manifest["graph"]
        threads = int(options.get("threads") or usable_cores())
        # the graphs the full encoder exported; each is checked on its tower's first call
        self._text = OnnxGraph.cached(cache, name, key, threads=threads, prepack=False)  # as the full encoder's
        self._image = OnnxGraph.cached(cache, *manifest["image_graph"], threads=threads)
        self._tokenizer = ClipBpe(context_length=self.max_text_tokens)
        self._full: Encoder | None = None
        self._full_lock = threading.Lock()

    @property
    def runtime(self) -> str:
        return "onnx-int8" if self.identity.version.endswith("+int8") else "onnx"

    def full(self) -> Encoder:
        """The full encoder (open_clip, torch), built once on first need."""
        if self._full is None:
            with self._full_lock:
                if self._full is None:
                    full = self._build_full()
                    if full.identity != self.identity:
                        raise ValueError(f"cached identity {self.identity} != {full.identity}")
                    self._full = full
        return self._full

    def warm(self, *, text: bool = True, images: bool = False) -> None:
        if text:
            self._graph(self._text)
        if images:
            self._graph(self._image)

    def _graph(self, graph: OnnxGraph) -> OnnxGraph | None:
        """``graph`` with its session, or ``None`` when that tower's calls go to the full encoder."""
        if self._full is None:
            try:
                graph.session()  # built once; checks the files against their entry
                return graph
            except (OSError, ValueError) as exc:  # missing, truncated, stale or rejected
                logger.info("%s: no usable cached %s graph (%s); building the full encoder",
                            self.identity.name, graph.name, exc)
                self.full()
        return None

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text)) + 2

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts → float32 (n, dim), L2-normalised (as the full encoder's ONNX text path)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        graph = self._graph(self._text)
        if graph is None:
            return self.full().encode_texts(texts)
        out = [graph.run({"tokens": self._tokenizer(texts[i : i + self.batch_size])})[0]
               for i in range(0, len(texts), self.batch_size)]
        return _unit(np.concatenate(out))

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The model's eval resize/crop (as the full encoder's) → uint8 (S, S, 3). Thread-safe."""

        p = self._preprocess
        return prepare_image(image, int(p["size"]), p["resize_mode"], p["interpolation"], int(p["fill_color"]))

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        """uint8 (n, S, S, 3) → semantic = visual float32 (n, dim), L2-normalised (as the full encoder's)."""
        graph = self._graph(self._image)
        if graph is None:
            return self.full().embed_prepared(batch)
        batch = checked_pixels(batch, self.input_size)
        if batch.shape[0] == 0:
            return no_images(self.identity.dim)
        pooled, cells = run_image_graph(graph, batch)  # (b, dim), (b, G*G, dim) or None
        vecs = _unit(pooled)
        return ImageEmbeddings(semantic=vecs, visual=vecs.copy(), labels=None,
                               tokens=_unit(cells) if cells is not None else None)


def _unit(x: np.ndarray) -> np.ndarray:
    """float32 rows along the last axis scaled to unit length (torch's ``normalize``: norm clamped at 1e-12)."""
    x = x.astype(np.float32, copy=False)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


__all__ = ["MANIFEST", "LightOpenClipEncoder", "light_encoder", "manifest_key", "write_manifest"]
