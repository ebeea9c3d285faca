"""``flame:<llm>/<checkpoint>``: FLAME's frozen-LLM text tower with its ViT + projector image tower.

- Queries are read with the one-facet prompt (:data:`~frozenlens.models.flame_prompts.SHORT`)
  and cached (a bounded LRU: the LLM runs once per distinct query).
- Captions are read with the seven-facet prompt (:data:`~frozenlens.models.flame_prompts.LONG`)
  in one pass, the facets averaged (:meth:`FlameEncoder.encode_captions_in`).
  Captions up to the LLM's context are read whole (no chunking); a longer one
  is cut with a :class:`~frozenlens.errors.CaptionTruncatedWarning` naming it.
- The reranker gets the seven facet tokens as a text's tokens (:meth:`encode_text_facets`).
- Images: the checkpoint's ViT without ``ln_post``/``proj``, every token
  through the projector, the mean over patch tokens; 224 px, bicubic, OpenAI
  mean/std; four 2x2-pooled region tokens for the reranker. The same vector
  serves image→image search.

Each tower loads on first use, so a text search never builds the image tower
and indexing images without captions never loads the LLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frozenlens.errors import EncoderConfigError, WeightsNotFoundError
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings
from frozenlens.models.flame_presets import (
    CHECKPOINTS,
    LLM_ALIASES,
    FlameSpec,
    default_layer,
    llm_source,
    parse_flame_name,
)
from frozenlens.models.flame_prompts import LONG, SHORT

#: bumped whenever the embedding recipe (prompts, pooling, preprocessing) changes
RECIPE_VERSION = "1"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
INPUT_SIZE = 224


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _hidden_size(llm: str, cache_dir: str | None) -> int:
    if llm in LLM_ALIASES:
        return LLM_ALIASES[llm][1]
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(llm, cache_dir=cache_dir)
    except OSError as exc:
        raise WeightsNotFoundError(f"cannot read the config of the LLM {llm!r}: {exc}") from exc
    config = getattr(config, "text_config", None) or config
    return int(config.hidden_size)


class FlameEncoder(Encoder):
    """FLAME: frozen LLM text tower + ViT/projector image tower (see the module doc).

    Options: ``weights`` (checkpoint file or hub spec, overrides the name's),
    ``layer`` (block read; default FLAME's for known LLMs, else second-to-last),
    ``position_mode`` (``restart``/``continue``; default: what the checkpoint
    was trained with, else ``restart``), ``device``, ``dtype``, ``cache_dir``,
    ``batch_size`` (captions per LLM pass), ``query_cache_size``,
    ``max_length`` (tokens; default the LLM's context), ``arch`` (the
    checkpoint's open_clip ViT: a name such as ``ViT-L-14`` or an open_clip
    model config dict; default the preset's, else read from the checkpoint), and for tests or
    custom models already built towers: ``text_tower``, ``image_tower``.
    """

    input_size = INPUT_SIZE
    draft_size = INPUT_SIZE
    image_tokens = 4
    max_text_tokens = None  # the LLM reads long captions whole

    def __init__(
        self,
        name: str,
        *,
        weights: str | os.PathLike[str] | None = None,
        layer: int | None = None,
        position_mode: str | None = None,
        device: str | None = None,
        dtype: str | None = "auto",
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 8,
        image_batch_size: int = 32,
        query_cache_size: int = 1024,
        max_length: int | None = None,
        arch: str | dict[str, Any] | None = None,
        text_tower: Any = None,
        image_tower: Any = None,
    ) -> None:
        spec = parse_flame_name(name)
        if weights is not None:
            spec = FlameSpec(spec.llm, os.fspath(weights))
        if batch_size < 1 or image_batch_size < 1 or query_cache_size < 0:
            raise EncoderConfigError("batch sizes must be >= 1 and query_cache_size >= 0")
        preset = CHECKPOINTS.get(spec.checkpoint or "")
        if preset is not None and preset.llm != spec.llm:
            raise EncoderConfigError(
                f"checkpoint {preset.name!r} was trained with the LLM {preset.llm!r}, not {spec.llm!r}"
            )
        self.spec = spec
        self._cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.layer = default_layer(spec.llm) if layer is None else int(layer)
        self.position_mode = position_mode or (preset.position_mode if preset else "restart")
        self._device, self._dtype, self._max_length = device, dtype, max_length
        self.batch_size, self.image_batch_size = batch_size, image_batch_size
        self._arch: str | dict[str, Any] | None = arch or (preset.arch if preset else None)
        self._text = text_tower
        self._image = image_tower
        self._load_lock = threading.Lock()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = query_cache_size
        self._cache_lock = threading.Lock()
        dim = int(text_tower.hidden_size) if text_tower is not None else _hidden_size(
            llm_source(spec.llm), self._cache_dir)
        ckpt_id = self._checkpoint_id()
        recipe = f"{RECIPE_VERSION}|{llm_source(spec.llm)}|{self.layer}|{self.position_mode}|{ckpt_id}|{json.dumps(self._arch, sort_keys=True)}"
        self.identity = EncoderIdentity(
            name=spec.name, version=f"{RECIPE_VERSION}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}",
            dim=dim, visual_dim=dim,
        )

    # -- loading ------------------------------------------------------------

    def _checkpoint_id(self) -> str:
        ckpt = self.spec.checkpoint
        if self._image is not None:
            return f"built:{type(self._image).__name__}"
        if ckpt is None:
            return "none"
        if ckpt in CHECKPOINTS:
            return CHECKPOINTS[ckpt].source
        path = Path(ckpt).expanduser()
        if path.is_file():
            return _digest(path)
        return ckpt  # a hub spec: its name is its identity

    @property
    def text_tower(self) -> Any:
        """The LLM text tower, loaded on first use."""
        if self._text is None:
            with self._load_lock:
                if self._text is None:
                    from frozenlens.models.flame_loading import load_text_tower

                    self._text = load_text_tower(
                        llm_source(self.spec.llm), layer=self.layer, position_mode=self.position_mode,  # type: ignore[arg-type]
                        device=self._device, dtype=self._dtype, max_length=self._max_length,
                        cache_dir=self._cache_dir,
                    )
        return self._text

    @property
    def image_tower(self) -> Any:
        """The ViT + projector, loaded on first use."""
        if self._image is None:
            with self._load_lock:
                if self._image is None:
                    self._image = self._load_image_tower()
        return self._image

    def _load_image_tower(self) -> Any:
        from frozenlens.models.flame_image import load_flame_checkpoint
        from frozenlens.models.flame_loading import pick_device

        ckpt = self.spec.checkpoint
        if ckpt is None:
            raise EncoderConfigError(
                f"{self.spec.name} has no image checkpoint: name one (flame:<llm>/<checkpoint>) or pass --weights"
            )
        source = CHECKPOINTS[ckpt].source if ckpt in CHECKPOINTS else ckpt
        tower = load_flame_checkpoint(source, arch=self._arch, device=str(pick_device(self._device)),
                                      cache_dir=self._cache_dir)
        if int(tower.hidden_size) != self.identity.dim:
            raise EncoderConfigError(
                f"checkpoint {ckpt} projects to {tower.hidden_size} dimensions but the LLM "
                f"{self.spec.llm} has {self.identity.dim}"
            )
        return tower

    # -- texts --------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return int(self.text_tower.count_tokens(text, SHORT))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Queries: the one-facet prompt, L2-normalised (H,), cached per text."""
        texts = list(texts)
        out = np.zeros((len(texts), self.identity.dim), np.float32)
        missing: list[int] = []
        with self._cache_lock:
            for i, t in enumerate(texts):
                hit = self._cache.get(t)
                if hit is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(t)
                    out[i] = hit
        if missing:
            fresh = self.text_tower.encode([texts[i] for i in missing], SHORT, batch_size=self.batch_size)
            out[missing] = fresh
            if self._cache_size:
                with self._cache_lock:
                    for i, vec in zip(missing, fresh):
                        self._cache[texts[i]] = vec
                        self._cache.move_to_end(texts[i])
                    while len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        return out

    def encode_captions_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        """Captions: the seven-facet prompt in one pass, facets averaged, L2-normalised."""
        return self.text_tower.encode(list(texts), LONG, batch_size=self.batch_size)

    def encode_text_facets(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray:
        """(n, 7, H) facet tokens of the seven-facet prompt, each L2-normalised (the reranker's text tokens)."""
        facets = self.text_tower.facet_tokens(list(texts), LONG, batch_size=self.batch_size)
        return facets / np.maximum(np.linalg.norm(facets, axis=2, keepdims=True), 1e-12)

    # -- images -------------------------------------------------------------

    def prepare(self, image: Image.Image) -> np.ndarray:
        from frozenlens.models.clip_preprocess import prepare_image

        return prepare_image(image, self.input_size, "shortest", "bicubic")  # as open_clip's eval transform

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        x = batch.astype(np.float32) / 255.0
        x = (x - np.asarray(OPENAI_MEAN, np.float32)) / np.asarray(OPENAI_STD, np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # NHWC → NCHW
        pooled, tokens = [], []
        for s in range(0, len(x), self.image_batch_size):
            p, t = self.image_tower.embed(x[s:s + self.image_batch_size])
            pooled.append(p)
            tokens.append(t)
        semantic = np.concatenate(pooled) if pooled else np.zeros((0, self.identity.dim), np.float32)
        toks = np.concatenate(tokens) if tokens else np.zeros((0, self.image_tokens, self.identity.dim), np.float32)
        return ImageEmbeddings(semantic=semantic, visual=semantic.copy(), labels=None, tokens=toks)
