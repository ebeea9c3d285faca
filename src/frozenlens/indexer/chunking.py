"""Split long captions into chunks that fit a text tower's context.

Rule: split into sentences (``. ! ?`` followed by a space, and the CJK full
stops ``。！？`` anywhere), then greedily pack consecutive sentences into
chunks of at most ``max_tokens`` tokens as counted by the encoder's own
tokenizer. A single sentence longer than that is cut into windows of words
(or of characters for scripts written without spaces) that fit.

Pooling (see :func:`pool_chunks`): the caption's vector is the L2-normalised
mean of its chunk vectors weighted by each chunk's token count, so a long
caption is represented by all of its text, not just its first 77 tokens. The
chunk vectors themselves are kept (they are what caption search matches, and
the reranker's text tokens).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..models.base import Encoder

#: (pooled caption vector float32 (d,), [(chunk text, n_tokens or None, chunk vector float32 (d,)), ...])
EmbeddedCaption = tuple[np.ndarray, list[tuple[str, int | None, np.ndarray]]]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_WORD = re.compile(r"\S+\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (whitespace-trimmed, empty ones dropped)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s and s.strip()]


def chunk_text(text: str, count_tokens: Callable[[str], int], max_tokens: int | None) -> list[str]:
    """Chunks of ``text``, each with ``count_tokens(chunk) <= max_tokens``.

    ``max_tokens=None`` means no limit: the whole text is one chunk. Empty
    text gives no chunks.
    """
    text = " ".join(text.split())
    if not text:
        return []
    if max_tokens is None or count_tokens(text) <= max_tokens:
        return [text]
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    pieces: list[str] = []
    for sentence in split_sentences(text):
        if count_tokens(sentence) <= max_tokens:
            pieces.append(sentence)
        else:
            pieces.extend(_windows(sentence, count_tokens, max_tokens))
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if current and count_tokens(candidate) > max_tokens:
            chunks.append(current)
            current = piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def _windows(sentence: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Cut one over-long sentence into consecutive windows that fit."""
    units = _WORD.findall(sentence)
    if len(units) <= 1:  # no spaces (CJK, Thai ...): cut by characters
        units = list(sentence)
    out: list[str] = []
    current = ""
    for unit in units:
        candidate = current + unit
        if current and count_tokens(candidate.strip()) > max_tokens:
            out.append(current.strip())
            current = unit
        else:
            current = candidate
    if current.strip():
        out.append(current.strip())
    # a single unit longer than the context (e.g. a 300-character URL) is kept
    # whole: the encoder truncates it, which is the best that can be done
    return out


def pool_chunks(vectors: np.ndarray, token_counts: list[int]) -> np.ndarray:
    """Caption vector from chunk vectors float32 (n, d) → float32 (d,), unit norm."""
    if vectors.shape[0] == 1:
        return vectors[0].astype(np.float32)
    weights = np.asarray(token_counts, dtype=np.float32)[:, None]
    pooled = (vectors * weights).sum(axis=0)
    norm = float(np.linalg.norm(pooled))
    return (pooled / norm if norm > 0 else vectors[0]).astype(np.float32)


def embed_captions(
    encoder: Encoder, texts: Sequence[str], langs: Sequence[str | None] | None = None
) -> list[EmbeddedCaption]:
    """Chunk each caption for ``encoder`` and embed all chunks, one call per language.

    A caption that fits is one chunk (``n_tokens`` None, vector = caption
    vector); a longer one gets its chunks and their pooled vector. ``langs``
    (one per caption, ``None`` = unknown) reaches text towers whose tokenizer
    needs the source language.
    """
    plans = [chunk_text(t, encoder.count_tokens, encoder.max_text_tokens) or [t] for t in texts]
    flat = [c for chunks in plans for c in chunks]
    flat_langs = [lang for chunks, lang in zip(plans, langs or [None] * len(plans)) for _ in chunks]
    vecs = np.zeros((len(flat), encoder.identity.dim), np.float32)
    for lang in dict.fromkeys(flat_langs):
        rows = [i for i, x in enumerate(flat_langs) if x == lang]
        vecs[rows] = encoder.encode_captions_in([flat[i] for i in rows], lang)
    out: list[EmbeddedCaption] = []
    k = 0
    for chunks in plans:
        v = vecs[k : k + len(chunks)]
        k += len(chunks)
        if len(chunks) == 1:
            out.append((v[0], [(chunks[0], None, v[0])]))
        else:
            counts = [encoder.count_tokens(c) for c in chunks]
            out.append((pool_chunks(v, counts), list(zip(chunks, counts, v))))
    return out
