"""FAISS stores behind :class:`frozenlens.retriever.VectorIndex` (internal).

A *store* owns one CPU FAISS index and the way our int64 ids are attached to
its vectors. Two kinds exist, picked from what the factory string builds:

* :class:`IdMapStore` -- ``IndexIDMap2`` over a non-IVF index (Flat, HNSW,
  PQ, SQ ...). When the inner index cannot ``remove_ids`` (HNSW), removals are
  *tombstones*: a bool mask over internal positions, applied with an
  ``IDSelectorBitmap`` at search time; :meth:`IdMapStore.compact` rebuilds.
* :class:`IvfStore` -- the IVF family, possibly under a pre-transform such as
  OPQ. IVF inverted lists store our 64-bit ids themselves, so the index is
  used directly, with a hashtable direct map for ``reconstruct`` and
  ``remove_ids``. ``IndexIDMap2`` over IVF is *not* usable in faiss 1.15: IVF
  ``remove_ids`` does not renumber the remaining internal ids while the
  IDMap compacts its position table, so every removal makes later results
  come back under wrong ids.

Every search here returns raw FAISS output: float32 (m, k) scores and int64
(m, k) ids, -1 where a slot is empty (its score is meaningless).
"""

from __future__ import annotations

import logging
import math

import faiss
import numpy as np

from frozenlens.errors import IndexInputError
from frozenlens.retriever import _ondisk

log = logging.getLogger(__name__)

METRICS = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

#: FAISS k-means wants this many training points per centroid (it warns below).
MIN_POINTS_PER_CENTROID = 39
#: ... and subsamples to this many per centroid, so more training data is waste.
MAX_POINTS_PER_CENTROID = 256
#: never train on fewer vectors than this, even for tiny codebooks (SQ ranges)
MIN_TRAIN_POINTS = 1024


def want_gpu(use_gpu: bool | None) -> bool:
    """None: use GPUs if FAISS sees any; False: never; True: required."""
    get = getattr(faiss, "get_num_gpus", None)
    gpus = int(get()) if get is not None else 0
    if use_gpu and gpus == 0:
        raise IndexInputError("use_gpu=True but FAISS sees no GPU (is faiss-gpu installed?)")
    return gpus > 0 and use_gpu is not False


class SelectorUnsupported(Exception):
    """This index type cannot take an ID selector in its search parameters."""


class ReconstructUnsupported(Exception):
    """This index type cannot reconstruct stored vectors."""


def components(index: faiss.Index) -> list[faiss.Index]:
    """All indexes nested in ``index`` (itself first), downcast to their classes."""
    out: list[faiss.Index] = []
    stack = [index]
    while stack:
        ix = faiss.downcast_index(stack.pop())
        out.append(ix)
        for attr in ("index", "base_index", "storage"):
            sub = getattr(ix, attr, None)
            if isinstance(sub, faiss.Index):
                stack.append(sub)
    return out


def _find_hnsw(index: faiss.Index) -> faiss.IndexHNSW | None:
    return next((c for c in components(index) if isinstance(c, faiss.IndexHNSW)), None)


def codebook_size(index: faiss.Index) -> int:
    """Largest number of centroids any k-means inside ``index`` must fit."""
    k = 1
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        k = max(k, int(ivf.nlist))
    for c in components(index):
        pq = getattr(c, "pq", None)
        if isinstance(pq, faiss.ProductQuantizer):
            k = max(k, int(pq.ksub))
        if isinstance(c, faiss.IndexPreTransform):
            for i in range(c.chain.size()):
                if isinstance(faiss.downcast_VectorTransform(c.chain.at(i)), faiss.OPQMatrix):
                    k = max(k, 256)  # OPQ trains an 8-bit PQ internally
    return k


def transform_points(index: faiss.Index) -> int:
    """Points the pre-transforms need: ``2 * d_in`` for a PCA (a full-rank
    covariance, so a PCA to any output size can train), else 0."""
    need = 0
    for c in components(index):
        if isinstance(c, faiss.IndexPreTransform):
            for i in range(c.chain.size()):
                t = faiss.downcast_VectorTransform(c.chain.at(i))
                if isinstance(t, faiss.PCAMatrix):
                    need = max(need, 2 * int(t.d_in))
    return need


def training_threshold(index: faiss.Index) -> int:
    """``max(39 * K, 1024, PCA needs)`` where K is the largest codebook (nlist, 2**nbits)."""
    return max(MIN_POINTS_PER_CENTROID * codebook_size(index), MIN_TRAIN_POINTS, transform_points(index))


def max_training_points(index: faiss.Index) -> int:
    """Beyond ``256 * K`` points FAISS k-means subsamples anyway (a PCA wants ``2 * d_in``)."""
    return max(MAX_POINTS_PER_CENTROID * codebook_size(index), MIN_TRAIN_POINTS, transform_points(index))


def disable_polysemous_training(index: faiss.Index) -> None:
    """Skip polysemous code re-ordering: we never use Hamming filtering, and it
    triples PQ training time."""
    for c in components(index):
        if hasattr(c, "do_polysemous_training"):
            c.do_polysemous_training = False


def _id_selector_array(ids: np.ndarray) -> tuple[faiss.IDSelectorArray, np.ndarray]:
    keep = np.ascontiguousarray(ids, dtype=np.int64)
    return faiss.IDSelectorArray(keep.size, faiss.swig_ptr(keep)), keep


class IdMapStore:
    """``IndexIDMap2`` over a non-IVF index; tombstones if it cannot remove."""

    def __init__(self, index: faiss.IndexIDMap2, *, alive: np.ndarray | None = None) -> None:
        self.index = index
        self.inner = faiss.downcast_index(index.index)
        self._hnsw = _find_hnsw(self.inner)
        self.exact = isinstance(self.inner, faiss.IndexFlat)
        self.tombstones = not self._can_remove(self.inner)
        if self.tombstones and self._hnsw is None:
            raise IndexInputError(
                f"{type(self.inner).__name__} supports neither remove_ids nor ID selectors"
            )
        #: bool (ntotal,) over internal positions; None while nothing is dead
        self.alive = alive
        self._packed: np.ndarray | None = None  # alive as a little-endian bitmap
        self._selector_ok: bool | None = True if (self.exact or self._hnsw is not None) else None

    @staticmethod
    def _can_remove(inner: faiss.Index) -> bool:
        """Probe by removing nothing: a no-op where supported, an error elsewhere."""
        try:
            inner.remove_ids(faiss.IDSelectorBatch(np.zeros(0, dtype=np.int64)))
        except RuntimeError:
            return False
        return True

    # -- sizes and ids -----------------------------------------------------
    @property
    def ntotal(self) -> int:
        """Physical vector count, tombstones included."""
        return int(self.index.ntotal)

    @property
    def ndead(self) -> int:
        return 0 if self.alive is None else int(self.ntotal - np.count_nonzero(self.alive))

    def _id_map(self) -> np.ndarray:
        """int64 (ntotal,) external id of each internal position (a copy)."""
        return faiss.vector_to_array(self.index.id_map).astype(np.int64, copy=False)

    def _id_map_view(self) -> np.ndarray:
        """Like :meth:`_id_map` but zero-copy: valid until the next mutation."""
        n = self.ntotal
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        return faiss.rev_swig_ptr(self.index.id_map.data(), n)

    def stored_ids(self) -> np.ndarray:
        """int64 (n,) ids of live vectors, in internal order."""
        ids = self._id_map()
        return ids if self.alive is None else ids[self.alive]

    # -- mutation -----------------------------------------------------------
    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        self.index.add_with_ids(x, ids)
        if self.alive is not None:
            self.alive = np.concatenate([self.alive, np.ones(len(ids), dtype=bool)])
            self._packed = None

    def remove(self, ids: np.ndarray) -> None:
        """Remove ``ids`` (int64, all present and live)."""
        if not self.tombstones:
            self.index.remove_ids(faiss.IDSelectorBatch(ids))
            return
        alive = np.ones(self.ntotal, dtype=bool) if self.alive is None else self.alive
        self.alive = alive & ~np.isin(self._id_map_view(), ids)
        self._packed = None
        log.debug("tombstoned %d ids (%d dead of %d)", len(ids), self.ndead, self.ntotal)

    def compact(self) -> None:
        """Physically drop tombstoned vectors by rebuilding the index."""
        if self.alive is None:
            return
        keep = self.alive
        x = self.inner.reconstruct_n(0, self.ntotal)[keep]
        ids = self._id_map()[keep]
        self.index.reset()
        self.index.add_with_ids(x, ids)
        self.alive = None
        self._packed = None
        log.info("compacted index: %d vectors kept", len(ids))

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), vectors float32 (n, d)) of a Flat store."""
        return self._id_map(), self.inner.reconstruct_n(0, self.ntotal)

    # -- search ---------------------------------------------------------------
    def _params(self, sel: faiss.IDSelector | None, k: int,
                effort: float) -> faiss.SearchParameters | None:
        if self._hnsw is not None:
            # FAISS does not widen efSearch to k by itself: deep ranks would be poor
            ef = max(k, math.ceil(self._hnsw.hnsw.efSearch * effort))
            return faiss.SearchParametersHNSW(sel=sel, efSearch=min(ef, max(k, self.ntotal)))
        return None if sel is None else faiss.SearchParameters(sel=sel)

    def search(self, q: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of float32 (m, d) queries, optionally within ``allowed`` ids.

        ``effort`` multiplies the HNSW search breadth (efSearch).
        """
        if allowed is not None and self._selector_ok is False:
            raise SelectorUnsupported
        try:
            if self.alive is None:
                batch = None if allowed is None else faiss.IDSelectorBatch(allowed)
                return self.index.search(q, k, params=self._params(batch, k, effort))
            if self._packed is None:
                self._packed = np.packbits(self.alive, bitorder="little")
            packed = self._packed
            bitmap = faiss.IDSelectorBitmap(packed.size, faiss.swig_ptr(packed))
            sel: faiss.IDSelector = bitmap
            if allowed is not None:
                batch = faiss.IDSelectorBatch(allowed)
                translated = faiss.IDSelectorTranslated(self.index.id_map, batch)
                sel = faiss.IDSelectorAnd(bitmap, translated)
            dist, pos = self.inner.search(q, k, params=self._params(sel, k, effort))
        except RuntimeError:
            if allowed is None or self._selector_ok:
                raise
            self._selector_ok = False
            log.debug("%s takes no ID selector; over-fetching instead", type(self.inner).__name__)
            raise SelectorUnsupported from None
        if allowed is not None:
            self._selector_ok = True
        ids = np.where(pos >= 0, self._id_map_view()[np.maximum(pos, 0)], -1)
        return dist, ids

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        try:
            return self.index.reconstruct_batch(ids)
        except RuntimeError as exc:
            raise ReconstructUnsupported(str(exc).splitlines()[0]) from None

    # -- knobs ------------------------------------------------------------------
    @property
    def ef_search(self) -> int | None:
        return None if self._hnsw is None else int(self._hnsw.hnsw.efSearch)

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self._hnsw is not None:
            self._hnsw.hnsw.efSearch = int(value)

    nlist = 0
    nprobe = None

    @property
    def max_effort(self) -> float:
        """The ``effort`` beyond which a search cannot look any wider."""
        return 1.0 if self._hnsw is None else max(1.0, self.ntotal / self._hnsw.hnsw.efSearch)


class IvfStore:
    """An IVF index (maybe under a pre-transform) storing our ids natively."""

    exact = False
    tombstones = False
    alive = None
    ndead = 0

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.ivf = faiss.extract_index_ivf(index)
        self._selector_ok: bool | None = None
        # A hashtable direct map (id -> list, offset) enables reconstruct, but
        # fast-scan block lists cannot remove ids while one exists.
        lists = faiss.downcast_InvertedLists(self.ivf.invlists)
        self._hashtable = not isinstance(lists, faiss.BlockInvertedLists)
        if self._hashtable and self.ivf.direct_map.type != faiss.DirectMap.Hashtable:
            self.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def nlist(self) -> int:
        return int(self.ivf.nlist)

    @property
    def nprobe(self) -> int:
        return int(self.ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.ivf.nprobe = int(value)

    ef_search = None

    @property
    def max_effort(self) -> float:
        return self.nlist / self.nprobe

    def stored_ids(self) -> np.ndarray:
        lists = self.ivf.invlists
        parts = []
        for i in range(lists.nlist):
            size = lists.list_size(i)
            if size:
                ptr = lists.get_ids(i)
                parts.append(faiss.rev_swig_ptr(ptr, size).astype(np.int64))
                lists.release_ids(i, ptr)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    @property
    def on_disk(self) -> bool:
        """Whether the inverted lists are in a memory-mapped file (:mod:`._ondisk`)."""
        return _ondisk.disk_lists(self.ivf) is not None

    def add(self, ids: np.ndarray, x: np.ndarray) -> None:
        with _ondisk.changing(self.index):
            self.index.add_with_ids(x, ids)

    def remove(self, ids: np.ndarray) -> None:
        with _ondisk.changing(self.index):
            if not self._hashtable:
                self.index.remove_ids(faiss.IDSelectorBatch(ids))
                return
            sel, _keep = _id_selector_array(ids)  # the hashtable map wants an array
            self.index.remove_ids(sel)

    def merge_from(self, other: IvfStore) -> None:
        """Append ``other``'s inverted lists (same training, disjoint ids); ``other`` ends empty.

        FAISS merges no direct map, so the hashtables are dropped for the merge and rebuilt.
        """
        with _ondisk.changing(self.index), _ondisk.changing(other.index):
            for store in (self, other):
                if store._hashtable:
                    store.ivf.set_direct_map_type(faiss.DirectMap.NoMap)
            try:
                self.index.merge_from(other.index, 0)
            finally:
                for store in (self, other):
                    if store._hashtable:
                        store.ivf.set_direct_map_type(faiss.DirectMap.Hashtable)

    def empty_copy(self) -> IvfStore:
        """An empty store with this one's training and ``nprobe`` (lists in RAM; FAISS cannot clone on-disk lists)."""
        if self.on_disk:
            raise IndexInputError("an index with on-disk lists makes no shards: take them from an in-RAM copy")
        clone = IvfStore(faiss.clone_index(self.index))
        clone.remove(clone.stored_ids())
        clone.nprobe = self.nprobe
        return clone

    def compact(self) -> None:
        """Nothing to do: IVF removals are physical."""

    def search(self, q: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               effort: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` of float32 (m, d) queries, optionally within ``allowed`` ids.

        ``effort`` multiplies ``nprobe`` (capped at nlist).
        """
        if allowed is not None and self._selector_ok is False:
            raise SelectorUnsupported
        probe = min(self.nlist, math.ceil(self.nprobe * effort))
        if allowed is None:
            return self.index.search(q, k, params=faiss.SearchParametersIVF(nprobe=probe))
        batch = faiss.IDSelectorBatch(allowed)
        params = faiss.SearchParametersIVF(sel=batch, nprobe=probe)
        try:
            out = self.index.search(q, k, params=params)
        except RuntimeError:
            if self._selector_ok:
                raise
            self._selector_ok = False
            log.debug("%s takes no ID selector; over-fetching instead", type(self.ivf).__name__)
            raise SelectorUnsupported from None
        self._selector_ok = True
        return out

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        try:
            return self.index.reconstruct_batch(ids)
        except RuntimeError as exc:
            raise ReconstructUnsupported(str(exc).splitlines()[0]) from None


Store = IdMapStore | IvfStore


def make_store(index: faiss.Index, *, alive: np.ndarray | None = None) -> Store:
    """Wrap a CPU index built by the factory or read from disk.

    ``index`` must be the *owning* Python proxy (as returned by
    ``index_factory``/``read_index``, never a ``downcast_index`` view), since
    the wrappers keep exactly that object alive.
    """
    if isinstance(index, faiss.IndexIDMap2):
        return IdMapStore(index, alive=alive)
    if faiss.try_extract_index_ivf(index) is not None:
        return IvfStore(index)
    return IdMapStore(faiss.IndexIDMap2(index), alive=alive)
