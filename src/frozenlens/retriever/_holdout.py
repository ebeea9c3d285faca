"""Searching an index as if some of its stored vectors were not there, for leave-one-out held-out queries
(:func:`~.tuning.leave_one_out`; why and what was measured: the :mod:`.tuning` module doc).

* :func:`reserved`: one stored id in :data:`RESERVE_EVERY`, chosen by a hash of the id, never trains an
  index, so queries drawn from them are as new to the centroids and codebooks as a fresh photo.
* :func:`unlinked`: an HNSW graph searched on a private copy of its links in which no node links to the
  held-out nodes (each list keeps its other links, in order), so the walk never reaches them -- the graph
  as the other n - q vectors built it, but for the links the builder's pruning dropped in favour of the
  removed nodes (which can only make it a little harder, never easier). The vectors are shared, not
  copied; the links cost ~260 bytes per vector for HNSW32 (measured) while a tuning runs (copied once per
  tuning: 0.5 s at 300 k vectors; then each knob value costs a plain search). The index itself is never
  changed (searchers may be using it).
* :func:`refined`: a re-ranked IVF that re-scores the ``k * k_factor`` best candidates other than the
  query's own, the shortlist a fresh query gets.

An IVF index needs nothing more: the lists probed depend on the query vector only, and the query's own id
is dropped from the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from ._refine import RefinedStore

#: one stored vector in this many (by a hash of its id) never trains an index; held-out queries come from them
RESERVE_EVERY = 32


def reserved(ids: np.ndarray) -> np.ndarray:
    """bool (n,): which of the int64 ``ids`` are kept out of every training sample (splitmix64 of the id, so
    the builder and the tuner agree without recording anything, and the choice survives growth)."""
    z = np.asarray(ids).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return ((z ^ (z >> np.uint64(31))) % np.uint64(RESERVE_EVERY)) == 0


def unlinked(index: Any, own: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """A search ``(queries float32 (q, d), k) -> ids int64 (q, k)`` over the HNSW graph of ``index`` (a
    :class:`~.vector_index.VectorIndex`) with the nodes of the stored ids ``own`` unreachable, at the
    index's efSearch *at call time* (a tuner changes it between calls; the vectors must not change);
    ``None`` when ``index`` is not an HNSW graph (search it as usual then). The copy of the links is
    made once, here."""
    store = index._active
    graph = getattr(store, "_hnsw", None)
    if graph is None:
        return None
    id_map = store._id_map_view()
    order = np.argsort(id_map, kind="stable")
    at = np.minimum(np.searchsorted(id_map[order], own), max(len(order) - 1, 0))
    cut = order[at[id_map[order[at]] == own]].astype(np.int32) if len(order) else np.zeros(0, np.int32)
    cut = cut[cut != graph.hnsw.entry_point]  # the walk starts there: its own query keeps it (1 query in n)
    copy = faiss.IndexHNSW(graph.storage, max(1, graph.hnsw.nb_neighbors(1)))
    copy.hnsw = graph.hnsw  # a copy of the links (SWIG assigns the struct by value)
    copy.ntotal, copy.is_trained = graph.ntotal, True
    _unlink(copy.hnsw, cut)
    packed = None if store.alive is None else np.packbits(store.alive, bitorder="little")

    def search(queries: np.ndarray, k: int) -> np.ndarray:
        params = faiss.SearchParametersHNSW(efSearch=max(k, int(graph.hnsw.efSearch)))
        if packed is not None:
            params.sel = faiss.IDSelectorBitmap(packed.size, faiss.swig_ptr(packed))
        _, pos = copy.search(np.ascontiguousarray(queries, np.float32), k, params=params)
        return np.where(pos >= 0, id_map[np.maximum(pos, 0)], -1)

    return search


def refined(index: Any, own: np.ndarray) -> Callable[[np.ndarray, int], np.ndarray] | None:
    """A search ``(queries, k) -> ids int64 (q, k)`` of a re-ranked IVF index (:class:`~._refine.RefinedStore`)
    that never returns ``own`` (one stored id per query row) and re-scores the ``k * k_factor`` best
    candidates *other than* the row's own -- the shortlist a fresh query gets (a search for k + 1 would
    re-score (k + 1) * k_factor: recall 0.005-0.02 too high, measured); ``k_factor`` as set at call
    time. ``None`` when ``index`` is not re-ranked."""
    store = index._active
    if not isinstance(store, RefinedStore):
        return None

    def search(queries: np.ndarray, k: int) -> np.ndarray:
        fetch = max(k, min(store.ntotal - 1, k * store.k_factor))
        _, cand = store.base.search(queries, fetch + 1)
        order = np.argsort(cand == own[:, None], axis=1, kind="stable")[:, :fetch]
        return store.rescore(queries, np.take_along_axis(cand, order, axis=1), k)[1]

    return search


def _unlink(hnsw: Any, cut: np.ndarray) -> None:
    """Remove every link to the nodes ``cut`` from ``hnsw`` (in place), keeping each list's order."""
    if cut.size == 0:
        return
    links = faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())
    hits = np.flatnonzero(np.isin(links, cut))
    if hits.size == 0:
        return
    offsets = faiss.vector_to_array(hnsw.offsets).astype(np.int64)
    cum = faiss.vector_to_array(hnsw.cum_nneighbor_per_level).astype(np.int64)
    node = np.searchsorted(offsets, hits, side="right") - 1
    level = np.searchsorted(cum, hits - offsets[node], side="right") - 1
    for start, stop in set(zip((offsets[node] + cum[level]).tolist(), (offsets[node] + cum[level + 1]).tolist())):
        row = links[start:stop]
        keep = row[(row >= 0) & ~np.isin(row, cut)]
        links[start:stop] = -1
        links[start:start + keep.size] = keep
