"""Seeded, stable splits of a collection by key: k-fold cross-validation and hold-out parts.

Every assignment is a function of (seed, key) only, through :func:`hash_unit`
(BLAKE2b of ``"{seed}:{key}"`` as a number in [0, 1)): the same keys and seed
always give the same folds, and an item never lands in two folds.

* :func:`kfold` — k folds of (almost) equal size: the keys are ordered by
  their hash and dealt round-robin, so fold sizes differ by at most one
  (adding keys may move others to another fold: fix the collection first).
  Used by ``bench/rerank_cv.py`` to cross-validate the reranker by Tux Paint
  stamp (a stamp's captions in every language share its fold).
* :func:`holdout` — True for about ``fraction`` of the keys (an independent
  hash threshold; stable as the collection grows: a key never moves between
  the two sides). Used for the validation part inside a fold and by
  :func:`frozenlens.reranker.data.split_by_image`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from frozenlens.errors import EvalError

__all__ = ["hash_unit", "holdout", "kfold"]


def hash_unit(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key``."""
    h = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def kfold(keys: Sequence[str], k: int, seed: int) -> np.ndarray:
    """int64 (n,): the fold (0..k-1) of each key. Keys must be distinct."""
    if k < 2:
        raise EvalError(f"k-fold needs k >= 2, not {k}")
    if len(set(keys)) != len(keys):
        raise EvalError("k-fold keys must be distinct")
    if len(keys) < k:
        raise EvalError(f"{len(keys)} keys cannot fill {k} folds")
    order = sorted(range(len(keys)), key=lambda i: (hash_unit(keys[i], seed), keys[i]))
    out = np.empty(len(keys), np.int64)
    out[order] = np.arange(len(keys)) % k
    return out


def holdout(keys: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """bool (n,): True for the held-out part (each key with probability ``fraction``)."""
    if not 0.0 < fraction < 1.0:
        raise EvalError(f"the held-out fraction must be between 0 and 1, not {fraction}")
    return np.fromiter((hash_unit(str(key), seed) < fraction for key in keys), bool, len(keys))
