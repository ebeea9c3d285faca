"""Text queries on an ``openclip:`` encoder without importing open_clip or torch.

A fresh ``frozenlens search "…"`` needs the text tower only. Importing
open_clip and torch and building the model costs seconds; the exported text
graph (:mod:`frozenlens.models.openclip_onnx`) and a torch-free tokenizer
(:class:`~frozenlens.models.clip_bpe.ClipBpe`) do the same work.

- When a full :class:`~frozenlens.models.openclip.OpenClipEncoder` with an
  ONNX runtime is built from a **local checkpoint file** (``<arch>/<file>``,
  or a file with ``arch=``) whose tokenizer is open_clip's default BPE, it
  writes a small **manifest** to the artefact cache (:func:`write_manifest`):
  the identity, the text graph's name and key, the context length and the
  tower facts the engine reads. Its key hashes the name, the options that
  change the model and the digest of the checkpoint's bytes.
- :func:`light_encoder` (tried first by the registry) finds that manifest
  for the requested name and options and, when the text graph file checks
  out, returns a :class:`LightOpenClipEncoder`: texts go through ClipBpe and
  ONNX Runtime; anything else (images, image warm-up) builds the full
  encoder once, under a lock, and delegates to it. No manifest, a stale or
  damaged one, another device or option: ``None``, and the registry builds
  the full encoder (which writes the manifest for the next process).

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
from frozenlens.models.onnx_runtime import OnnxGraph, missing_for
from frozenlens.models.presets import PREFIX

logger = logging.getLogger(__name__)

MANIFEST = "openclip-text-manifest"
_FORMAT = 1
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
    try:
        cache.read(MANIFEST, key)
        return  # already written (the key includes the checkpoint's digest)
    except (OSError, ValueError):
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
    graph = encoder._onnx.text
    manifest = {
        "identity": encoder.identity.as_dict(), "graph": [graph.name, graph.key], "context_length": ctx,
        "input_size": encoder.input_size, "draft_size": encoder.draft_size, "image_tokens": encoder.image_tokens,
    }
    cache.write(MANIFEST, key, json.dumps(manifest).encode())


class LightOpenClipEncoder(Encoder):
    """An ``openclip:`` encoder whose text side is ClipBpe + the cached ONNX text graph (no torch).

    Image calls and :meth:`warm` with ``images`` build the full
    :class:`~frozenlens.models.openclip.OpenClipEncoder` once (``full()``, under a lock) and delegate to it.
    Thread-safe: ONNX Runtime sessions and the tokenizer may be called concurrently.
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
        name, key = manifest["graph"]
        threads = int(options.get("threads") or usable_cores())
        self._text = OnnxGraph.cached(cache, name, key, threads=threads)  # the graph the full encoder exported
        self._text.session()  # checks the file against its entry; raises if missing or damaged
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
        if images:
            self.full()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text)) + 2

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts → float32 (n, dim), L2-normalised (as the full encoder's ONNX text path)."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        out = [self._text.run({"tokens": self._tokenizer(texts[i : i + self.batch_size])})[0]
               for i in range(0, len(texts), self.batch_size)]
        vecs = np.concatenate(out).astype(np.float32, copy=False)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    def prepare(self, image: Image.Image) -> np.ndarray:
        return self.full().prepare(image)

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        return self.full().embed_prepared(batch)


__all__ = ["MANIFEST", "LightOpenClipEncoder", "light_encoder", "manifest_key", "write_manifest"]
