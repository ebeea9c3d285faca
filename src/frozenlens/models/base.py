"""The encoder interface every image/text tower pair implements.

An encoder maps images and texts into one shared, L2-normalised space (the
*semantic* space, used for text→image search) and maps images into a second
*visual* space used for image→image search ("more like this"). For CLIP-style
models both image spaces may be the same vectors.

Implementations live in sibling modules and are created by name through
:mod:`frozenlens.models.registry`. This is the only layer that imports torch,
open_clip, transformers or packaged model weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class EncoderIdentity:
    """What an index records about the encoder that built it.

    ``name`` is the registry name (e.g. ``"lite"``), ``version`` changes
    whenever the encoder's outputs change, ``dim`` is the semantic (text and
    image) dimension, ``visual_dim`` the image→image dimension.
    """

    name: str
    version: str
    dim: int
    visual_dim: int

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.name} v{self.version} (dim {self.dim}, visual {self.visual_dim})"


Label = tuple[str, float]


@dataclass(frozen=True)
class ImageEmbeddings:
    """Everything an encoder computes for a batch of ``n`` images.

    semantic: float32 (n, dim), L2-normalised, comparable with text vectors.
    visual:   float32 (n, visual_dim), L2-normalised, for image→image search.
    labels:   per image, the top class labels with probabilities (descending),
              or ``None`` when the encoder has no classifier to explain with.
    tokens:   float32 (n, n_tokens, dim), L2-normalised rows in the semantic
              space: a few region tokens (e.g. a 2x2 grid pooled from the
              image tower's feature map) for the reranker, or ``None`` when
              the encoder has none.
    """

    semantic: np.ndarray
    visual: np.ndarray
    labels: list[list[Label]] | None = None
    tokens: np.ndarray | None = None


def split_embeddings(emb: ImageEmbeddings) -> list[ImageEmbeddings]:
    """One ``ImageEmbeddings`` of n = 1 per row of ``emb``."""
    return [
        ImageEmbeddings(
            semantic=emb.semantic[i : i + 1],
            visual=emb.visual[i : i + 1],
            labels=emb.labels[i : i + 1] if emb.labels is not None else None,
            tokens=emb.tokens[i : i + 1] if emb.tokens is not None else None,
        )
        for i in range(emb.semantic.shape[0])
    ]


def stack_embeddings(rows: Sequence[ImageEmbeddings]) -> ImageEmbeddings:
    """Concatenate per-row embeddings (the inverse of :func:`split_embeddings`)."""
    labels = None if any(r.labels is None for r in rows) else [lab for r in rows for lab in r.labels]
    tokens = None if any(r.tokens is None for r in rows) else np.concatenate([r.tokens for r in rows])
    return ImageEmbeddings(
        semantic=np.concatenate([r.semantic for r in rows]),
        visual=np.concatenate([r.visual for r in rows]),
        labels=labels,
        tokens=tokens,
    )



class Encoder(ABC):
    """A frozen image tower + text tower pair.

    Thread-safety contract: every method may be called from several threads at
    once (the engine runs one search per core, and an index job beside them).
    A call keeps its settings to itself: a text's language travels with the
    call (:meth:`encode_texts_in`), and no state shared between calls (the
    encoder, its models) is changed per call. Where a library object really is
    not safe to call concurrently or keeps a per-call setting as state (an NLLB
    tokenizer's source language), the encoder holds a lock around that call
    only (tokenising), never around a forward pass. Process-wide settings
    (BLAS and OpenMP thread counts) are not changed per call, or only through
    a scope that leaves them as it found them when concurrent calls
    interleave (see :mod:`frozenlens.models._blas`). Lazy loading is locked.
    :meth:`prepare` is pure (decoder worker threads call it).
    """

    #: identity recorded in the index manifest
    identity: EncoderIdentity
    #: side of the square uint8 array :meth:`prepare` returns
    input_size: int
    #: shorter-side size a decoder may reduce to before calling :meth:`prepare`
    #: (``Image.draft`` hint); never smaller than what prepare needs
    draft_size: int

    #: image tokens per image :meth:`embed_prepared` returns in
    #: ``ImageEmbeddings.tokens`` (0 = none); stored beside the vectors for the reranker
    image_tokens: int = 0

    #: most tokens the text tower reads; the indexer splits longer captions
    #: into chunks (see :mod:`frozenlens.indexer.chunking`). ``None`` = no limit.
    max_text_tokens: int | None = None

    def warm(self, *, text: bool = True, images: bool = False) -> None:
        """Load now what the first text call (and with ``images`` the first image call) would load.

        Encoders that load parts lazily (``lite``) override it; the default does
        nothing (everything was loaded by the constructor).
        """
        del text, images  # nothing is loaded lazily

    def count_tokens(self, text: str) -> int:
        """Tokens the text tower's tokenizer makes of ``text`` (default: words)."""
        return len(text.split())

    @abstractmethod
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize/crop one RGB image to uint8 (input_size, input_size, 3)."""

    @abstractmethod
    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        """Embed a uint8 batch (n, input_size, input_size, 3)."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts → float32 (n, dim), L2-normalised."""

    def encode_texts_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        """Embed texts known to be written in ``lang`` (ISO 639-1, e.g. ``"de"``).

        Text towers whose tokenizer needs the source language (NLLB-CLIP) use
        it; the others ignore it. ``None`` = unknown. → float32 (n, dim).
        """
        return self.encode_texts(texts)

    def encode_captions_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        """Embed captions of indexed images (``lang`` as in :meth:`encode_texts_in`) → float32 (n, dim).

        Default: the same as a query. A text tower that reads captions with
        another prompt than queries (FLAME: seven facets) overrides it.
        """
        return self.encode_texts_in(texts, lang)

    def encode_text_facets(self, texts: Sequence[str], lang: str | None = None) -> np.ndarray | None:
        """float32 (n, k, dim) L2-normalised text tokens for the reranker, or None.

        ``None`` (the default): the reranker embeds the text's words and
        sentences as its tokens. FLAME returns its seven facet embeddings.
        """
        return None

    def embed_images(self, images: Sequence[Image.Image]) -> ImageEmbeddings:
        """Prepare and embed RGB PIL images (convenience for small batches)."""
        if len(images) == 0:
            return ImageEmbeddings(
                semantic=np.zeros((0, self.identity.dim), np.float32),
                visual=np.zeros((0, self.identity.visual_dim), np.float32),
                labels=[],
            )
        batch = np.stack([self.prepare(im.convert("RGB")) for im in images])
        return self.embed_prepared(batch)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB PIL images into the semantic space → float32 (n, dim)."""
        return self.embed_images(images).semantic
