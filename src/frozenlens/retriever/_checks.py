"""Argument validation and sorted-id helpers for the retriever (internal)."""

from __future__ import annotations

import numpy as np

from frozenlens.errors import FrozenLensError, QueryError

_INT64_MAX = np.iinfo(np.int64).max


def as_ids(ids: object, error: type[FrozenLensError]) -> np.ndarray:
    """Validate ids: 1-D, integer, non-negative -> int64 (n,). Raises ``error``."""
    a = np.asarray(ids)
    if a.ndim != 1:
        raise error(f"ids must be a 1-D array, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.dtype.kind not in "iu":
        raise error(f"ids must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.max() > _INT64_MAX:
        raise error("ids must fit in int64")
    a = a.astype(np.int64, copy=False)
    if a.min() < 0:
        raise error("ids must be >= 0 (-1 marks an empty result slot)")
    return np.ascontiguousarray(a)


def as_matrix(x: object, dim: int, what: str, error: type[FrozenLensError], *,
              allow_1d: bool = False) -> np.ndarray:
    """Validate floating vectors -> C-contiguous float32 (n, dim). Raises ``error``.

    float16/float64 are converted; integers, NaN and infinities are refused.
    With ``allow_1d`` a single (dim,) vector becomes (1, dim).
    """
    a = np.asarray(x)
    if a.dtype.kind != "f":
        raise error(f"{what} must be floating point, got dtype {a.dtype}")
    if allow_1d and a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        want = f"(n, {dim})" + (f" or ({dim},)" if allow_1d else "")
        raise error(f"{what} must have shape {want}, got {np.asarray(x).shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise error(f"{what} contain NaN or infinity (after conversion to float32)")
    return a


def as_top_k(k: object) -> int:
    """Validate a result count: an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QueryError(f"k must be a positive integer, got {k!r}")
    return int(k)


def isin_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """bool (n,): which of int64 (n,) ``needles`` occur in sorted int64 ``haystack``."""
    if haystack.size == 0:
        return np.zeros(needles.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(haystack, needles), haystack.size - 1)
    return haystack[pos] == needles
