"""Exact re-ranking of an IVF shortlist (internal): :class:`RefinedStore`.

A factory string ending in FAISS's refine suffix -- ``",Refine(SQfp16)"`` or
``",RFlat"`` -- builds an IVF index (the *base*: e.g. OPQ + IVF + PQ) plus a
*refinement* index holding every vector at full precision (``SQfp16`` is
lossless for the float16 vectors the product stores). A search asks the base
for ``k * k_factor`` candidates and keeps the best ``k`` by their exact score
from the refinement codes -- what FAISS's ``IndexRefine::search`` does.

FAISS's ``IndexRefine`` cannot be searched as is here: it finds a candidate's
refinement code by the base index's internal *position*, while our IVF lists
hold database ids (and FAISS cannot add with ids to an ``IndexRefine``). So
the refinement codes sit in an ``IndexIDMap2`` keyed by the same ids, and the
re-scoring reconstructs candidates by id. The ``IndexRefine`` that FAISS's
factory builds is kept as the owner of both parts, so training, training
thresholds and cloning go through FAISS as for any other factory.

``k_factor`` is the second knob :mod:`.tuning` sets (after ``nprobe``); both
are saved with the index.
"""

from __future__ import annotations

import faiss
import numpy as np

from frozenlens.retriever._stores import IvfStore, Store, make_store

#: candidates per wanted result before tuning (FAISS's own default is 1: no re-ranking)
DEFAULT_K_FACTOR = 8
#: floats decoded at once while re-scoring (16 MiB)
_RESCORE_FLOATS = 1 << 22


def _refine_parts(index: faiss.Index) -> tuple[faiss.Index, faiss.Index] | None:
    """(base, refinement) of an ``IndexRefine`` (views owned by ``index``), else None."""
    if not isinstance(index, faiss.IndexRefine):
        return None
    return faiss.downcast_index(index.base_index), faiss.downcast_index(index.refine_index)


class RefinedStore:
    """An :class:`IvfStore` whose results are re-scored exactly from an id-keyed refinement index."""

    exact = False
    tombstones = False
    alive = None
    ndead = 0
    ef_search = None

    def __init__(self, parent: faiss.IndexRefine, refine_map: faiss.IndexIDMap2 | None = None,
                 k_factor: int = DEFAULT_K_FACTOR) -> None:
        base, refine = _refine_parts(parent)  # type: ignore[misc]
        #: owner of both parts (training, thresholds, cloning)
        self.index = parent
        self.base = IvfStore(base)
        #: the refinement codes by database id (wraps ``parent``'s refinement index)
        self.refine_map = refine_map if refine_map is not None else faiss.IndexIDMap2(refine)
        self.metric = int(base.metric_type)
        self.k_factor = k_factor

    @classmethod
    def from_parts(cls, base: faiss.Index, refine_map: faiss.IndexIDMap2, k_factor: int) -> RefinedStore:
        """A store over a loaded ``base`` IVF index and its loaded ``refine_map`` (owning proxies)."""
        parent = faiss.IndexRefine(base, faiss.downcast_index(refine_map.index))
        store = cls(parent, refine_map, k_factor)
        store._owners = (base, refine_map)  # the parent does not own its loaded parts
        return store

    # -- sizes, knobs ---------------------------------------------------------
    @property
    def ntotal(self) -> int:
        return self.base.ntotal

    @property
    def nlist(self) -> int:
        return self.base.nlist

    @property
    def nprobe(self) -> int:
        return self.base.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.base.nprobe = value

    @property
    def max_effort(self) -> float:
        return self.base.max_effort

    def stored_ids(self) -> np.ndarray:
        return self.base.stored_ids()

    # -- mutation ---------------------------------------------------------------
    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.base.add(ids, x)
        try:
            self.refine_map.add_with_ids(x, ids)
        except BaseException:
            self.base.remove(ids)
            raise

    def remove(self, ids: np.ndarray) -> None:
        self.base.remove(ids)
        self.refine_map.remove_ids(faiss.IDSelectorBatch(ids))

    def merge_from(self, other: RefinedStore) -> None:
        """Append ``other``'s lists and refinement codes (same training, disjoint ids); ``other`` ends empty."""
        self.base.merge_from(other.base)
        self.refine_map.merge_from(other.refine_map, 0)

    def empty_copy(self) -> RefinedStore:
        """An empty store with this one's training and knobs."""
        base = self.base.empty_copy()
        refine = faiss.clone_index(faiss.downcast_index(self.refine_map.index))
        refine.reset()
        return RefinedStore.from_parts(base.index, faiss.IndexIDMap2(refine), self.k_factor)

    def compact(self) -> None:
        """Nothing to do: IVF and refinement removals are physical."""

    # -- search -------------------------------------------------------------------
    def search(self, q: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of float32 (m, d) queries by exact score among the base's ``k * k_factor`` best
        (optionally within ``allowed`` ids; ``effort`` widens ``nprobe`` as for :class:`IvfStore`)."""
        fetch = max(k, min(self.ntotal, k * self.k_factor))
        _, cand = self.base.search(q, fetch, allowed=allowed, effort=effort)
        return self.rescore(q, cand, k)

    def rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` of int64 (m, f) candidate ids (-1: none) of float32 (m, d) queries, by exact score."""
        m, f = cand.shape
        ip = self.metric == faiss.METRIC_INNER_PRODUCT
        worst = -np.inf if ip else np.inf
        scores = np.full((m, f), worst, np.float32)
        step = max(1, _RESCORE_FLOATS // max(1, f * q.shape[1]))
        for lo in range(0, m, step):
            block = cand[lo : lo + step]
            valid = block >= 0
            if not valid.any():
                continue
            x = self.refine_map.reconstruct_batch(np.ascontiguousarray(block[valid]))
            rows = np.nonzero(valid)[0] + lo
            if ip:
                s = np.einsum("nd,nd->n", x, q[rows])
            else:
                s = ((x - q[rows]) ** 2).sum(axis=1)
            part = scores[lo : lo + step]
            part[valid] = s
        order = np.argsort(-scores if ip else scores, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(scores, order, axis=1)
        ids = np.take_along_axis(cand, order, axis=1)
        return best, np.where(np.isfinite(best), ids, -1)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Exact stored vectors (from the refinement codes)."""
        return self.refine_map.reconstruct_batch(np.ascontiguousarray(ids, np.int64))


AnyStore = Store | RefinedStore


def make_any_store(index: faiss.Index, *, alive: np.ndarray | None = None) -> AnyStore:
    """:func:`~frozenlens.retriever._stores.make_store`, plus :class:`RefinedStore` for an ``IndexRefine``."""
    if _refine_parts(index) is not None:
        return RefinedStore(index)
    return make_store(index, alive=alive)
