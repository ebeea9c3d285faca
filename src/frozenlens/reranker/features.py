"""Token sequences for the reranker, built from frozen encoder outputs.

Text side: a query (or training caption) becomes its global embedding plus the
embeddings of its *units* — its sentences when it has several, else its words
(CJK runs without spaces are cut into two-character pieces) — all embedded by
the same frozen text tower, so each token lives in the shared space.

Image side: the image's global semantic embedding, its visual embedding and
the encoder's stored region tokens (``ImageEmbeddings.tokens``); images
without region tokens (indexed before they existed) get a mask.

Everything here is numpy in, numpy (or a :class:`PairBatch`) out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from frozenlens.indexer.chunking import split_sentences
from frozenlens.models.base import Encoder
from frozenlens.reranker.model import MAX_TEXT_SLOTS, PairBatch

#: text tokens besides the global one
MAX_UNITS = 7
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"^[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+$")


def text_units(text: str, max_units: int = MAX_UNITS) -> list[str]:
    """The sentences (several) or words (one sentence) of ``text`` that become
    its extra tokens, at most ``max_units``; ``[]`` when the text is one word."""
    text = text.strip()
    sentences = [s for s in split_sentences(text) if s.strip()]
    if len(sentences) > 1:
        return sentences[:max_units]
    units: list[str] = []
    for word in _WORD.findall(text):
        if _CJK.match(word) and len(word) > 2:
            units.extend(word[i : i + 2] for i in range(0, len(word), 2))
        elif len(word) >= 2 or _CJK.match(word):
            units.append(word)
    units = list(dict.fromkeys(units))  # keep order, drop repeats
    if len(units) <= 1:
        return []
    return units[:max_units]


@dataclass(frozen=True)
class TextTokens:
    """n texts as token sequences: global float32 (n, dim), tokens float32
    (n, M, dim) with slot 0 = global, mask bool (n, M) True = real token."""

    global_: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.global_.shape[0])


@dataclass(frozen=True)
class ImageTokens:
    """n images: semantic float32 (n, dim), visual float32 (n, visual_dim),
    tokens float32 (n, 1 + T, dim) with slot 0 = semantic, mask bool (n, 1 + T)."""

    semantic: np.ndarray
    visual: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return int(self.semantic.shape[0])

    @classmethod
    def build(cls, semantic: np.ndarray, visual: np.ndarray, regions: np.ndarray | None,
              has_regions: np.ndarray | None = None) -> ImageTokens:
        """From global vectors and region tokens float32 (n, T, dim) (or None);
        ``has_regions`` bool (n,) marks images whose region rows are real."""
        semantic = np.asarray(semantic, np.float32)
        n, dim = semantic.shape
        if regions is None or regions.shape[1] == 0:
            regions = np.zeros((n, 0, dim), np.float32)
        tokens = np.concatenate([semantic[:, None, :], np.asarray(regions, np.float32)], axis=1)
        mask = np.ones(tokens.shape[:2], dtype=bool)
        if has_regions is not None:
            mask[:, 1:] &= np.asarray(has_regions, bool)[:, None]
        return cls(semantic, np.asarray(visual, np.float32), tokens, mask)

    @classmethod
    def from_store(cls, store, ids: Sequence[int], dim: int, visual_dim: int,  # noqa: ANN001 - a Store
                   n_tokens: int | None = None) -> ImageTokens:
        """The stored vectors and region tokens of images ``ids`` (in that order).

        ``n_tokens``: region tokens per image (the encoder's ``image_tokens``);
        ``None`` takes the largest stored count. Images without stored tokens
        of that count get masked-out region slots.
        """
        semantic = store.vectors("semantic", ids, dim)
        visual = store.vectors("visual", ids, visual_dim)
        toks = store.tokens(ids, dim)
        if n_tokens is None:
            n_tokens = max((t.shape[0] for t in toks.values()), default=0)
        regions = np.zeros((len(ids), n_tokens, dim), np.float32)
        has = np.zeros(len(ids), bool)
        for j, i in enumerate(ids):
            t = toks.get(i)
            if t is not None and t.shape[0] == n_tokens:
                regions[j], has[j] = t, True
        return cls.build(semantic, visual, regions, has)

    def take(self, idx: np.ndarray) -> ImageTokens:
        return ImageTokens(self.semantic[idx], self.visual[idx], self.tokens[idx], self.mask[idx])


def encode_texts_with_units(
    encoder: Encoder, texts: Sequence[str], langs: Sequence[str | None] | None = None,
    max_units: int = MAX_UNITS, batch_size: int = 256,
) -> TextTokens:
    """Embed texts and their units (one encoder call per language and batch).

    An encoder with its own text tokens (:meth:`Encoder.encode_text_facets`,
    e.g. FLAME's seven facets) gives those instead of words and sentences.
    """
    texts = list(texts)
    langs = list(langs) if langs is not None else [None] * len(texts)
    if len(langs) != len(texts):
        raise ValueError("one language per text (or None)")
    facets = _facet_tokens(encoder, texts, langs, batch_size)
    if facets is not None:
        return facets
    units = [text_units(t, max_units) for t in texts]
    m = 1 + max((len(u) for u in units), default=0)
    if m > MAX_TEXT_SLOTS:
        raise ValueError(f"at most {MAX_TEXT_SLOTS - 1} units per text")
    # every distinct (language, string) once
    wanted: dict[tuple[str | None, str], int] = {}
    for t, u, lang in zip(texts, units, langs, strict=True):
        for s in [t, *u]:
            wanted.setdefault((lang, s), len(wanted))
    by_lang: dict[str | None, list[tuple[str, int]]] = {}
    for (lang, s), row in wanted.items():
        by_lang.setdefault(lang, []).append((s, row))
    dim = encoder.identity.dim
    table = np.zeros((len(wanted), dim), np.float32)
    for lang, items in by_lang.items():
        for start in range(0, len(items), batch_size):
            part = items[start : start + batch_size]
            table[[r for _, r in part]] = encoder.encode_texts_in([s for s, _ in part], lang)
    n = len(texts)
    tokens = np.zeros((n, m, dim), np.float32)
    mask = np.zeros((n, m), bool)
    for i, (t, u, lang) in enumerate(zip(texts, units, langs, strict=True)):
        rows = [wanted[(lang, s)] for s in [t, *u]]
        tokens[i, : len(rows)] = table[rows]
        mask[i, : len(rows)] = True
    return TextTokens(tokens[:, 0].copy(), tokens, mask)


def _facet_tokens(encoder: Encoder, texts: list[str], langs: list[str | None], batch_size: int) -> TextTokens | None:
    """[the text's vector; its facet tokens] per text, or None when the encoder has no facets."""
    if not texts:
        return None
    dim = encoder.identity.dim
    glob = np.zeros((len(texts), dim), np.float32)
    tokens: np.ndarray | None = None
    by_lang: dict[str | None, list[int]] = {}
    for i, lang in enumerate(langs):
        by_lang.setdefault(lang, []).append(i)
    for lang, rows in by_lang.items():
        for start in range(0, len(rows), batch_size):
            part = rows[start:start + batch_size]
            sub = [texts[i] for i in part]
            facets = encoder.encode_text_facets(sub, lang)
            if facets is None:
                return None
            if tokens is None:
                if 1 + facets.shape[1] > MAX_TEXT_SLOTS:
                    raise ValueError(f"at most {MAX_TEXT_SLOTS - 1} facet tokens per text")
                tokens = np.zeros((len(texts), 1 + facets.shape[1], dim), np.float32)
            glob[part] = encoder.encode_texts_in(sub, lang)
            tokens[part, 1:] = facets
    assert tokens is not None
    tokens[:, 0] = glob
    return TextTokens(glob, tokens, np.ones(tokens.shape[:2], bool))


def pair_batch(text: TextTokens, text_idx: np.ndarray, images: ImageTokens, image_idx: np.ndarray,
               device: torch.device | str = "cpu") -> PairBatch:
    """B pairs (text_idx[b], image_idx[b]) → :class:`PairBatch` tensors."""
    ti = np.asarray(text_idx, np.int64)
    ii = np.asarray(image_idx, np.int64)
    t_global = text.global_[ti]  # (B, dim)
    i_global = images.semantic[ii]  # (B, dim)
    cosine = np.einsum("bd,bd->b", t_global, i_global)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    return PairBatch(
        text=tensor(text.tokens[ti]), text_mask=tensor(text.mask[ti]),
        image=tensor(images.tokens[ii]), image_mask=tensor(images.mask[ii]),
        visual=tensor(images.visual[ii]), cosine=tensor(cosine.astype(np.float32)),
    )
