"""Cross-modal retrieval metrics (numpy in, numbers out).

Input: a similarity matrix ``scores`` float32 (T, I) — text t against image
i, higher is more similar — and ``text_image`` int (T,), the index of the one
image each text describes. An image may have any number of texts (zero
included).

- **Text→image (T2I)**: every text is a query over all I images; its rank is
  the position of its image.
- **Image→text (I2T)**: every image that has at least one text is a query
  over all T texts; its rank is the position of the *first* of its texts
  (the Karpathy protocol: an image is retrieved correctly at k if ANY of its
  captions is among the top k). Images without texts are not I2T queries.

Ranks are 1-based. **Ties are broken pessimistically**: an item that scores
exactly as high as the correct one is ranked before it, so

    rank = 1 + #(wrong items whose score >= the best correct score)

(ties among an image's own captions do not count against it: whichever
comes first is correct). A constant score matrix therefore gets the worst
possible ranks instead of a lucky R@1, and the result does not depend on the
order of images or texts.

``R@k`` is the fraction of queries with rank <= k (in [0, 1]); mean rank is
the mean of the ranks; median rank the ``numpy.median`` of the 1-based ranks
(a half-integer when the two middle ranks differ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np

from frozenlens.errors import EvalError

__all__ = ["RetrievalMetrics", "i2t_ranks", "recall_at", "retrieval_metrics", "t2i_ranks"]

#: rows (texts) or columns (images) compared at once; bounds the temporary
#: boolean matrix to CHUNK x max(T, I) bytes
CHUNK = 256


@dataclass(frozen=True)
class RetrievalMetrics:
    """Recall at 1/5/10 (fractions in [0, 1]) and 1-based mean/median ranks,
    text→image (``t2i_*``) and image→text (``i2t_*``)."""

    t2i_r1: float
    t2i_r5: float
    t2i_r10: float
    t2i_mean_rank: float
    t2i_median_rank: float
    i2t_r1: float
    i2t_r5: float
    i2t_r10: float
    i2t_mean_rank: float
    i2t_median_rank: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def macro_average(cls, items: Sequence[RetrievalMetrics]) -> RetrievalMetrics:
        """Field-wise unweighted mean over ``items`` (e.g. over languages).

        Mean and median ranks are averaged too (a mean of medians)."""
        if not items:
            raise EvalError("cannot average zero results")
        return cls(**{
            f.name: float(np.mean([getattr(m, f.name) for m in items])) for f in fields(cls)
        })


def _check(scores: np.ndarray, text_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    text_image = np.asarray(text_image)
    if scores.ndim != 2:
        raise EvalError(f"scores must be a (texts, images) matrix, got shape {scores.shape}")
    n_texts, n_images = scores.shape
    if n_texts == 0 or n_images == 0:
        raise EvalError(f"scores must have at least one text and one image, got shape {scores.shape}")
    if text_image.shape != (n_texts,) or not np.issubdtype(text_image.dtype, np.integer):
        raise EvalError(
            f"text_image must be integer of shape ({n_texts},), got {text_image.dtype} {text_image.shape}"
        )
    if text_image.min() < 0 or text_image.max() >= n_images:
        raise EvalError(f"text_image holds image indices outside [0, {n_images})")
    if not np.isfinite(scores).all():
        raise EvalError("scores contain NaN or infinite values")
    return scores, text_image.astype(np.int64)


def t2i_ranks(scores: np.ndarray, text_image: np.ndarray) -> np.ndarray:
    """1-based rank of each text's image among all images → int64 (T,).

    scores: (T, I) float; text_image: int (T,). Pessimistic ties (see module doc).
    """
    scores, text_image = _check(scores, text_image)
    n_texts = scores.shape[0]
    ranks = np.empty(n_texts, np.int64)
    for start in range(0, n_texts, CHUNK):
        block = scores[start : start + CHUNK]  # (c, I)
        rows = np.arange(block.shape[0])
        correct = block[rows, text_image[start : start + CHUNK]]  # (c,)
        # counts the correct image itself (>= is true) plus every wrong one that ties or wins
        ranks[start : start + CHUNK] = (block >= correct[:, None]).sum(axis=1)
    return ranks


def i2t_ranks(scores: np.ndarray, text_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of the best-ranked own caption of each image → (ranks int64 (Q,), images int64 (Q,)).

    scores: (T, I) float; text_image: int (T,). ``images`` lists the query
    images (those with at least one text), ascending. Pessimistic ties.
    """
    scores, text_image = _check(scores, text_image)
    n_images = scores.shape[1]
    correct = scores[np.arange(scores.shape[0]), text_image]  # (T,) score of each text with its image
    best = np.full(n_images, -np.inf, dtype=np.float64)
    np.maximum.at(best, text_image, correct.astype(np.float64))  # (I,) best own-caption score
    queries = np.flatnonzero(np.isfinite(best))
    # own captions scoring >= the best one (i.e. == it): they are correct, not counted against
    own_ties = np.bincount(text_image[correct >= best[text_image]], minlength=n_images)
    ranks = np.empty(len(queries), np.int64)
    for start in range(0, len(queries), CHUNK):
        cols = queries[start : start + CHUNK]
        block = scores[:, cols]  # (T, c)
        at_least = (block >= best[cols][None, :].astype(block.dtype)).sum(axis=0)  # (c,)
        ranks[start : start + CHUNK] = 1 + at_least - own_ties[cols]
    return ranks, queries


def recall_at(ranks: np.ndarray, k: int) -> float:
    """Fraction of ``ranks`` (1-based) that are <= ``k``."""
    return float(np.mean(ranks <= k)) if len(ranks) else 0.0


def retrieval_metrics(scores: np.ndarray, text_image: np.ndarray) -> RetrievalMetrics:
    """T2I and I2T R@1/5/10 and mean/median rank for ``scores`` (T, I) and ``text_image`` (T,)."""
    t2i = t2i_ranks(scores, text_image)
    i2t, _ = i2t_ranks(scores, text_image)
    return RetrievalMetrics(
        t2i_r1=recall_at(t2i, 1),
        t2i_r5=recall_at(t2i, 5),
        t2i_r10=recall_at(t2i, 10),
        t2i_mean_rank=float(np.mean(t2i)),
        t2i_median_rank=float(np.median(t2i)),
        i2t_r1=recall_at(i2t, 1),
        i2t_r5=recall_at(i2t, 5),
        i2t_r10=recall_at(i2t, 10),
        i2t_mean_rank=float(np.mean(i2t)),
        i2t_median_rank=float(np.median(i2t)),
    )
