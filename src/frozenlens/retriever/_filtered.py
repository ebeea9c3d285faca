"""Filtered nearest-neighbour search for ``VectorIndex`` (internal).

Two entry points, both for one float32 (1, d) query and returning 1-D
float32 scores and int64 ids, best first, at most k of them:

* :func:`search_allowed` -- the caller knows the complete allowed id set.
  Exact stores and large sets use the FAISS ID selector; on approximate
  stores a small set is rescored exactly from reconstructed vectors (faster
  than a filtered graph/IVF walk, and exact); anything the selector cannot
  serve falls back to :func:`over_fetch`.
* :func:`over_fetch` -- only a predicate is known. Ask FAISS for
  ``k * factor`` candidates, keep the accepted ones, and grow the fetch (and
  IVF ``nprobe``) geometrically until k are accepted or nothing is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from frozenlens.errors import QueryError
from frozenlens.retriever._checks import isin_sorted
from frozenlens.retriever._stores import ReconstructUnsupported, SelectorUnsupported, Store

log = logging.getLogger(__name__)

#: on approximate stores, allowed sets up to this many floats (ids x dim;
#: 16 MiB) are rescored exactly instead of searched with an ID selector
EXACT_RESCORE_MAX_FLOATS = 1 << 22

Accept = Callable[[np.ndarray], np.ndarray]
Result = tuple[np.ndarray, np.ndarray]


def _empty() -> Result:
    return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)


def best_first(scores: np.ndarray, metric: str) -> np.ndarray:
    """Indices ordering ``scores`` best first (ip: descending, l2: ascending)."""
    return np.argsort(-scores if metric == "ip" else scores, kind="stable")


def search_allowed(store: Store, q: np.ndarray, k: int, allowed: np.ndarray, *,
                   metric: str, n_live: int) -> Result:
    """Top-``k`` among ``allowed`` (sorted unique int64 ids, all live).

    ``n_live`` is the number of live vectors in ``store``. The ID-selector
    search widens by the inverse selectivity (IVF nprobe, HNSW efSearch), so
    a 1% filter explores as many allowed candidates as an unfiltered search.
    """
    k = min(k, allowed.size)
    if k == 0:
        return _empty()
    small = allowed.size * q.shape[1] <= EXACT_RESCORE_MAX_FLOATS
    if store.exact or not small:
        try:
            d, i = store.search(q, k, allowed=allowed, effort=n_live / allowed.size)
            if np.count_nonzero(i[0] >= 0) == k:
                return d[0], i[0]
            log.debug("ID-selector search found fewer than k=%d of %d allowed", k, allowed.size)
        except SelectorUnsupported:
            pass
    if small:
        try:
            x = store.reconstruct(allowed)  # float32 (a, d)
        except ReconstructUnsupported:
            pass
        else:
            scores = x @ q[0] if metric == "ip" else ((x - q[0]) ** 2).sum(axis=1)
            top = best_first(scores, metric)[:k]
            return scores[top].astype(np.float32), allowed[top]
    return over_fetch(store, q, k, lambda ids: isin_sorted(allowed, ids), 4, n_live=n_live)


def over_fetch(store: Store, q: np.ndarray, k: int, accept: Accept, factor: int, *,
               n_live: int) -> Result:
    """Top-``k`` accepted by ``accept(ids int64 (n,)) -> bool (n,)``.

    Each round fetches ``factor`` times more candidates with ``factor`` times
    the search breadth (IVF nprobe, HNSW efSearch), until k are accepted or
    every live vector has been seen. ``accept`` sees each candidate id once;
    ``n_live`` is the number of live vectors in ``store``.
    """
    fetch, effort = min(n_live, k * factor), 1.0
    decided = accepted = np.zeros(0, dtype=np.int64)  # both sorted
    ids, scores, keep = np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, bool)
    while fetch > 0:
        d, i = store.search(q, fetch, effort=effort)
        valid = i[0] >= 0
        ids, scores = i[0][valid], d[0][valid]
        new = ids[~isin_sorted(decided, ids)]
        if new.size:
            mask = np.asarray(accept(new))
            if mask.dtype != np.bool_ or mask.shape != new.shape:
                raise QueryError(f"accept must return a bool mask of shape {new.shape}, "
                                 f"got {mask.dtype} {mask.shape}")
            decided = np.union1d(decided, new)
            accepted = np.union1d(accepted, new[mask])
        keep = isin_sorted(accepted, ids)
        if np.count_nonzero(keep) >= k:
            break
        if ids.size >= n_live:
            break  # every live vector has been seen
        if (fetch >= n_live or ids.size < fetch) and effort >= store.max_effort:
            break  # every reachable live vector has been seen
        fetch, effort = min(n_live, fetch * factor), min(store.max_effort, effort * factor)
    return scores[keep][:k].astype(np.float32), ids[keep][:k].astype(np.int64)
