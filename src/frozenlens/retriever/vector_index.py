"""VectorIndex: the only FAISS code in FrozenLens.

Vectors are L2-normalised float32, so the default inner-product metric is the
cosine similarity. Ids are the database primary keys of the images (int64,
non-negative; -1 marks an empty result slot). Arrays in, arrays out.

Choosing a factory string by collection size N: :func:`recommend_factory`
(module :mod:`.choice`, the one owner of that rule and of the ``--index-type``
names): exact (``"SQfp16"``, lossless for the float16 vectors the product
stores, half Flat's bytes and faster per query) while one query costs
~10 ms on a core (100k vectors at 512-d), ``"HNSW32"`` up to 10M, ``"OPQ{m},IVF{nlist},PQ{m}"`` beyond, each within a
memory budget. HNSW cannot delete: removals are tombstones filtered at search
time and the graph is rebuilt once half of it is dead; ``ef_search`` (default
128) and IVF ``nprobe`` (default ``min(nlist, max(8, 2*sqrt(nlist)))``) trade
speed for recall and are tuned to a target recall by :mod:`.tuning`.

Trainable factories (IVF, PQ, OPQ, SQ ...) cannot search before they are
trained. Until :attr:`VectorIndex.train_threshold` vectors are present they
live in an exact Flat ``IndexIDMap2`` fallback; the ``add`` that reaches the
threshold trains the real index on them (a random sample of at most ``256 * K`` of them, never the first ones)
and moves them across. The threshold is ``max(39 * K, 1024)`` with K the
largest codebook to fit (``nlist``, ``2**nbits`` of a PQ, 256 for OPQ):
39 points per centroid is the minimum FAISS k-means accepts without warning.
A PCA in the chain also needs at least ``2 * d_in`` points (a covariance of
full rank, so any output dimension can train).

Threads: FAISS's OpenMP thread count is left alone unless :func:`set_threads`
or :func:`threads` is called, and both act on the *calling thread* only:
``omp_set_num_threads`` sets the nthreads-var ICV of the calling thread's
task (OpenMP spec; measured with the libgomp faiss ships: a count set in one
thread is not seen by the main thread, another thread, or threads started
later). So concurrent searches that each enter ``threads(1)`` cannot leave
any other thread, or the process, at one thread. A ``VectorIndex``
serialises its own methods with a lock.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from frozenlens.errors import ImageNotFoundError, IndexInputError, QueryError
from frozenlens.retriever import _filtered, _ondisk, _persist
from frozenlens.retriever._checks import as_ids, as_matrix, as_top_k, isin_sorted
from frozenlens.retriever._holdout import reserved
from frozenlens.retriever._refine import AnyStore as Store
from frozenlens.retriever._refine import RefinedStore, make_any_store
from frozenlens.retriever._stores import (
    METRICS,
    IdMapStore,
    ReconstructUnsupported,
    disable_polysemous_training,
    make_store,
    max_training_points,
    training_threshold,
    want_gpu,
)

log = logging.getLogger(__name__)

DEFAULT_EF_SEARCH = 128
#: the largest k FAISS GPU indexes accept
GPU_MAX_K = 2048
Accept = Callable[[np.ndarray], np.ndarray]


def default_nprobe(nlist: int) -> int:
    """``min(nlist, max(8, 2*sqrt(nlist)))`` inverted lists per query."""
    return min(nlist, max(8, 2 * math.isqrt(nlist)))


def set_threads(n: int) -> None:
    """Set FAISS's OpenMP thread count for searches made by the calling thread (``n >= 1``).

    Other threads keep theirs (OpenMP's per-thread ICV, see the module doc); for a
    process-wide default set ``OMP_NUM_THREADS`` before FAISS is loaded.
    """
    if n < 1:
        raise IndexInputError(f"thread count must be >= 1, got {n}")
    faiss.omp_set_num_threads(int(n))


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run FAISS with ``n`` OpenMP threads in the calling thread inside the block, then restore.

    One query at a time is latency-bound: on small machines a single thread
    beats the OpenMP fan-out (measured here: 8.6 ms vs 28.6 ms for 100k×512).
    Safe to enter from many threads at once: the count saved and restored is
    the calling thread's own, which no other thread changes (module doc).
    """
    previous = faiss.omp_get_max_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(previous)


class VectorIndex:
    """An id-addressed FAISS index; build with :meth:`create` or :meth:`load`.

    Exactly one store is searchable at a time: the exact Flat fallback while
    a trainable factory is untrained, the real index afterwards.
    """

    def __init__(self, dim: int, factory: str, metric: str, *, train_threshold: int | None,
                 use_gpu: bool, main: Store | None = None,
                 fallback: IdMapStore | None = None) -> None:
        self.dim, self.factory, self.metric = dim, factory, metric
        self._lock = threading.RLock()
        self._main = main if main is not None else self._new_main()
        if fallback is None and main is None and not self._main.index.is_trained:
            fallback = make_store(faiss.IndexFlat(dim, METRICS[metric]))
        self._fallback = fallback
        #: vectors needed before a trainable factory trains (see module doc)
        self.train_threshold = train_threshold or training_threshold(self._main.index)
        self._ids = np.sort(self._active.stored_ids())  # sorted int64 (n,), live ids
        self._use_gpu = use_gpu
        self._gpu_index: faiss.Index | None = None  # replica of the active store, lazily made

    def _new_main(self) -> Store:
        try:
            index = faiss.index_factory(self.dim, self.factory, METRICS[self.metric])
        except RuntimeError as exc:
            reason = str(exc).strip().splitlines()[-1]
            raise IndexInputError(f"invalid FAISS factory string {self.factory!r}: {reason}") from None
        disable_polysemous_training(index)
        store = make_any_store(index)
        if store.nlist:
            store.nprobe = default_nprobe(store.nlist)
        if store.ef_search is not None:
            store.ef_search = DEFAULT_EF_SEARCH
        return store

    @classmethod
    def create(cls, dim: int, factory: str = "Flat", *, metric: str = "ip",
               use_gpu: bool | None = None, train_threshold: int | None = None) -> VectorIndex:
        """A new, empty index of ``dim``-dimensional vectors.

        ``factory`` is a FAISS index_factory string without ``IDMap``;
        ``metric`` is ``"ip"`` (scores: higher is better) or ``"l2"`` (squared
        distances: lower is better). ``use_gpu``: None = use GPUs if FAISS sees
        any, False = never, True = required. ``train_threshold`` overrides the
        training threshold of trainable factories (see module doc).
        """
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise IndexInputError(f"dim must be a positive int, got {dim!r}")
        if metric not in METRICS:
            raise IndexInputError(f"metric must be one of {sorted(METRICS)}, got {metric!r}")
        if not isinstance(factory, str) or not factory.strip() or "idmap" in factory.lower():
            raise IndexInputError(f"invalid factory string {factory!r} (and leave out IDMap)")
        if train_threshold is not None and train_threshold < 1:
            raise IndexInputError(f"train_threshold must be >= 1, got {train_threshold}")
        return cls(int(dim), factory.strip(), metric, train_threshold=train_threshold,
                   use_gpu=want_gpu(use_gpu))

    # -- state ---------------------------------------------------------------
    @property
    def _active(self) -> Store:
        return self._fallback if self._fallback is not None else self._main

    @property
    def is_trained(self) -> bool:
        """False while vectors live in the exact fallback of a trainable factory."""
        return self._fallback is None

    @property
    def on_gpu(self) -> bool:
        return self._gpu_index is not None

    @property
    def ef_search(self) -> int | None:
        """HNSW search breadth (None when the factory has no HNSW)."""
        return self._main.ef_search

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        if self._main.ef_search is None or value < 1:
            raise IndexInputError(f"cannot set ef_search={value} on a {self.factory!r} index")
        with self._lock:
            self._main.ef_search = value
            self._gpu_index = None

    @property
    def k_factor(self) -> int | None:
        """Candidates per wanted result re-scored exactly (None when the factory has no refine suffix)."""
        return self._main.k_factor if isinstance(self._main, RefinedStore) else None

    @k_factor.setter
    def k_factor(self, value: int) -> None:
        if not isinstance(self._main, RefinedStore) or value < 1:
            raise IndexInputError(f"cannot set k_factor={value} on a {self.factory!r} index")
        with self._lock:
            self._main.k_factor = int(value)

    @property
    def nlist(self) -> int:
        """IVF inverted lists (0 when the factory has no IVF)."""
        return self._main.nlist

    @property
    def nprobe(self) -> int | None:
        """IVF lists visited per query (None when the factory has no IVF)."""
        return self._main.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if not self._main.nlist or value < 1:
            raise IndexInputError(f"cannot set nprobe={value} on a {self.factory!r} index")
        with self._lock:
            self._main.nprobe = min(int(value), self._main.nlist)
            self._gpu_index = None

    @property
    def lists_on_disk(self) -> bool:
        """Whether the IVF inverted lists are in a memory-mapped file (:mod:`._ondisk`)."""
        return _ondisk.disk_lists(_ondisk.ivf_of(self._main.index)) is not None and self.is_trained

    def move_lists_to_disk(self, directory: str | os.PathLike[str]) -> None:
        """Keep the inverted lists of this trained IVF index in a file in ``directory`` from now on
        (:meth:`save` writes them next to the index file; :meth:`load` maps them again)."""
        with self._lock:
            if not self.is_trained or not self._main.nlist:
                raise IndexInputError(f"only a trained IVF index keeps lists on disk, not {self!r}")
            _ondisk.move_to_disk(_ondisk.ivf_of(self._main.index), Path(directory))
            self._gpu_index = None

    def __len__(self) -> int:
        return int(self._ids.size)

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else f"untrained {len(self)}/{self.train_threshold}"
        return f"VectorIndex({self.factory!r}, dim={self.dim}, metric={self.metric!r}, n={len(self)}, {state})"

    def ids(self) -> np.ndarray:
        """int64 (n,) every id present, ascending."""
        return self._ids.copy()

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """bool (n,): whether each of int64 (n,) ``ids`` is present."""
        return isin_sorted(self._ids, as_ids(ids, IndexInputError))

    # -- mutation -------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add int64 (n,) new ``ids`` with float (n, dim) ``vectors``.

        Floats are converted to contiguous float32. Ids already present (or
        repeated within the call) raise :class:`IndexInputError` and nothing
        is added: to replace a vector, :meth:`remove` its id first. If the add
        that reaches the training threshold fails to train, the error
        propagates, the vectors stay searchable in the exact fallback and the
        next add retries.
        """
        ids = as_ids(ids, IndexInputError)
        x = as_matrix(vectors, self.dim, "vectors", IndexInputError)
        if x.shape[0] != ids.size:
            raise IndexInputError(f"{ids.size} ids but {x.shape[0]} vectors")
        if ids.size == 0:
            return
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            raise IndexInputError(f"ids repeated within one add: {uniq[counts > 1][:5].tolist()}")
        with self._lock:
            present = uniq[isin_sorted(self._ids, uniq)]
            if present.size:
                raise IndexInputError(
                    f"{present.size} ids already in the index, e.g. {present[:5].tolist()}; "
                    "remove them first to replace their vectors")
            self._active.add(ids, x)
            self._ids = np.sort(np.concatenate([self._ids, uniq]), kind="stable")
            self._gpu_index = None
            if self._fallback is not None and len(self) >= self.train_threshold:
                self._train()

    def _train(self) -> None:
        assert self._fallback is not None
        ids, x = self._fallback.vectors()
        limit = max_training_points(self._main.index)
        sample = x[~reserved(ids)]  # the tuner's held-out vectors never train (retriever/_holdout.py)
        if len(sample) > limit:
            sample = sample[np.sort(np.random.default_rng(0).choice(len(sample), limit, replace=False))]
        start = time.perf_counter()
        try:
            self._main.index.train(sample)
            self._main.add(ids, x)
        except BaseException:
            self._main = self._new_main_like(self._main)  # back to untrained; fallback intact
            raise
        self._fallback = None
        log.info("trained %r on %d of %d vectors in %.1f s", self.factory, len(sample), len(x),
                 time.perf_counter() - start)

    @property
    def train_sample_size(self) -> int:
        """How many vectors training uses at most (``256 * K``, see module doc)."""
        return max_training_points(self._main.index)

    def train(self, sample: np.ndarray) -> None:
        """Train an empty trainable index on float (m, dim) ``sample`` now (the caller draws it at
        random from the whole collection), so adds go straight to the real index."""
        x = as_matrix(sample, self.dim, "sample", IndexInputError)
        with self._lock:
            if self._fallback is None or len(self):
                raise IndexInputError("train() wants an empty, untrained index")
            self._main.index.train(x)
            self._fallback = None

    def empty_like(self) -> VectorIndex:
        """An empty index sharing this trained index's training (a shard to fill and :meth:`merge`)."""
        with self._lock:
            if not self.is_trained or not self._main.nlist:
                raise IndexInputError(f"shards need a trained IVF index, not {self!r}")
            clone = self._main.empty_copy()  # type: ignore[union-attr]
        return VectorIndex(self.dim, self.factory, self.metric, train_threshold=self.train_threshold,
                           use_gpu=self._use_gpu, main=clone)

    def merge(self, shard: VectorIndex) -> None:
        """Move every vector of ``shard`` (from :meth:`empty_like`, disjoint ids) into this index
        with FAISS ``merge_from`` (inverted lists appended, nothing re-encoded); ``shard`` ends empty."""
        with self._lock, shard._lock:
            if not self._main.nlist or type(self._main) is not type(shard._main) or not shard.is_trained:
                raise IndexInputError("merge needs two trained IVF indexes")
            if np.any(isin_sorted(self._ids, shard._ids)):
                raise IndexInputError("the shard holds ids already in the index")
            self._main.merge_from(shard._main)
            self._ids = np.sort(np.concatenate([self._ids, shard._ids]), kind="stable")
            shard._ids = np.zeros(0, np.int64)
            self._gpu_index = None

    def _new_main_like(self, old: Store) -> Store:
        new = self._new_main()
        if new.nlist:
            new.nprobe = old.nprobe
        if new.ef_search is not None:
            new.ef_search = old.ef_search
        if isinstance(new, RefinedStore) and isinstance(old, RefinedStore):
            new.k_factor = old.k_factor
        return new

    def remove(self, ids: np.ndarray) -> int:
        """Remove int64 (n,) ``ids``; absent ids are ignored. Returns how many went."""
        ids = np.unique(as_ids(ids, IndexInputError))
        with self._lock:
            gone = ids[isin_sorted(self._ids, ids)]
            if gone.size == 0:
                return 0
            store = self._active
            store.remove(gone)
            self._ids = self._ids[~isin_sorted(gone, self._ids)]
            self._gpu_index = None
            if store.ndead * 2 > store.ntotal:
                store.compact()
            return int(gone.size)

    def compact(self) -> None:
        """Drop tombstoned vectors now (HNSW; a no-op elsewhere)."""
        with self._lock:
            self._active.compact()
            self._gpu_index = None

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """float32 (n, dim) stored vectors of int64 (n,) ``ids`` (lossy for PQ/SQ)."""
        ids = as_ids(ids, IndexInputError)
        with self._lock:
            missing = ids[~isin_sorted(self._ids, ids)]
            if missing.size:
                raise ImageNotFoundError(f"ids not in the vector index: {missing[:5].tolist()}")
            if ids.size == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            try:
                return self._active.reconstruct(ids)
            except ReconstructUnsupported as exc:
                raise IndexInputError(f"a {self.factory!r} index cannot reconstruct: {exc}") from None

    # -- search ------------------------------------------------------------------
    def _worst(self) -> float:
        return -np.inf if self.metric == "ip" else np.inf

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of float (m, dim) or (dim,) ``queries``.

        Returns scores float32 (m, k) and ids int64 (m, k), best first; slots
        beyond the available vectors hold id -1 and score -inf (+inf for l2).
        """
        q = as_matrix(queries, self.dim, "queries", QueryError, allow_1d=True)
        k = as_top_k(k)
        scores = np.full((q.shape[0], k), self._worst(), dtype=np.float32)
        ids = np.full((q.shape[0], k), -1, dtype=np.int64)
        with self._lock:
            store = self._active
            kk = min(k, store.ntotal)
            if kk == 0 or q.shape[0] == 0:
                return scores, ids
            gpu = self._gpu_searcher() if kk <= GPU_MAX_K else None
            d, i = gpu.search(q, kk) if gpu is not None else store.search(q, kk)
        valid = i >= 0
        scores[:, :kk] = np.where(valid, d, self._worst())
        ids[:, :kk] = np.where(valid, i, -1)
        return scores, ids

    def _gpu_searcher(self) -> faiss.Index | None:
        if not self._use_gpu or self._active.alive is not None or isinstance(self._active, RefinedStore) \
                or self.lists_on_disk:  # lists larger than RAM are not copied to a GPU
            return None
        if self._gpu_index is None:
            try:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._active.index)
            except (RuntimeError, AttributeError) as exc:
                log.warning("cannot search %r on GPU (%s); staying on CPU", self.factory, exc)
                self._use_gpu = False
        return self._gpu_index

    def search_filtered(self, query: np.ndarray, k: int, accept: Accept | None = None, *,
                        allowed_ids: np.ndarray | None = None, fetch_factor: int = 4,
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of one float (dim,) ``query`` that pass a filter.

        With ``allowed_ids`` (int64, the full matching set, e.g. from SQL) the
        search is restricted by a FAISS ID selector (exact rescoring for small
        sets on approximate indexes; over-fetch where the index takes no
        selector) and ``accept`` is not called. Otherwise ``accept(ids int64
        (n,)) -> bool (n,)`` decides, and the fetch grows by ``fetch_factor``
        (and IVF ``nprobe`` with it) until k are accepted or nothing is left.
        Returns scores float32 (r,) and ids int64 (r,), best first, r <= k.
        """
        q = as_matrix(query, self.dim, "query", QueryError, allow_1d=True)
        if q.shape[0] != 1:
            raise QueryError(f"search_filtered takes one query, got {q.shape[0]}")
        k = as_top_k(k)
        if fetch_factor < 2:
            raise QueryError(f"fetch_factor must be >= 2, got {fetch_factor}")
        with self._lock:
            if allowed_ids is not None:
                allowed = np.unique(as_ids(allowed_ids, QueryError))
                allowed = allowed[isin_sorted(self._ids, allowed)]
                return _filtered.search_allowed(self._active, q, k, allowed,
                                                metric=self.metric, n_live=len(self))
            if accept is None:
                raise QueryError("search_filtered needs accept or allowed_ids")
            return _filtered.over_fetch(self._active, q, k, accept, fetch_factor,
                                        n_live=len(self))

    # -- persistence -------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], *, owner: str | None = None) -> None:
        """Write the index to ``path`` atomically (temp file, fsync, ``os.replace``).

        The CPU copy is always authoritative, so a GPU replica needs no
        copying back. Write errors (:class:`OSError`) propagate and leave any
        previous file at ``path`` intact. ``owner`` is recorded in the file
        (see :meth:`load`).
        """
        with self._lock:
            snapshot = _persist.IndexSnapshot(
                dim=self.dim, factory=self.factory, metric=self.metric, trained=self.is_trained,
                train_threshold=self.train_threshold, ef_search=self.ef_search, nprobe=self.nprobe, k_factor=self.k_factor,
                count=len(self), store=self._active,
            )  # fmt: skip
            _persist.save_index(snapshot, path, owner=owner)
        log.debug("saved %r to %s", self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, use_gpu: bool | None = None,
             owner: str | None = None) -> VectorIndex:
        """Read an index written by :meth:`save`.

        A missing, truncated or damaged file raises :class:`IndexCorruptError`;
        with ``owner``, a file saved with another owner raises its subclass
        :class:`VectorFileMismatchError`.
        """
        gpu = want_gpu(use_gpu)
        snap = _persist.load_index(path, owner=owner)
        try:
            vi = cls(snap.dim, snap.factory, snap.metric, train_threshold=snap.train_threshold, use_gpu=gpu,
                     main=snap.store if snap.trained else None,
                     fallback=None if snap.trained else snap.store)  # type: ignore[arg-type]
        except (IndexInputError, ValueError) as exc:
            raise _persist.corrupt(path, str(exc)) from exc
        ids = vi._ids
        if ids.size != snap.count or np.any(ids[1:] == ids[:-1]):
            raise _persist.corrupt(path, f"holds {ids.size} ids (or duplicates), recorded {snap.count}")
        if snap.ef_search is not None and vi.ef_search is not None:
            vi.ef_search = snap.ef_search
        if snap.nprobe is not None and vi.nprobe is not None:
            vi.nprobe = snap.nprobe
        if snap.k_factor is not None and vi.k_factor is not None:
            vi.k_factor = snap.k_factor
        return vi
