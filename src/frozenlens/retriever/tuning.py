"""Building an index of a chosen type from stored vectors, tuning it to a target recall, measuring recall.

Numpy in, numpy out; the vectors come as an iterator of ``(ids int64 (b,),
vectors float32 (b, d))`` chunks so the exact ground truth never needs them
all at once.

**Held-out queries.** Recall is measured on ``policy.queries`` stored vectors
drawn at random (seeded), each moved off its stored point by Gaussian noise
whose norm is the collection's median nearest-neighbour distance (measured on
those vectors), then L2-normalised again. A stored vector used as is lies in
its own IVF cell and graph neighbourhood, so approximate search finds it and
its neighbours unusually easily: measured on clustered data, tuning on
queries moved by a fixed 0.25 gave 0.95 on them but 0.82 on fresh vectors of
the same distribution. Moved by the neighbour distance, a query is as far
from the data as a new photo of the same kind would be. The exact top-k comes
from a flat search over all stored vectors (the source vector stays a
legitimate neighbour). Text queries lie farther from the images than that;
``frozenlens info --recall`` reports on the same kind of queries.

**Tuning.** After a (re)build, ``nprobe`` (IVF) or ``efSearch`` (HNSW) is swept
over powers of two and the smallest value whose recall@k reaches the target
is kept; if none does, the best value is kept and :class:`Tuning` says the
target was missed (and a warning is logged). An IVF index with exact
re-ranking (a ``Refine(...)`` factory, :mod:`._refine`) has a second knob,
``k_factor`` (candidates re-scored per wanted result): for each ``nprobe`` in
turn the largest ``k_factor`` of :data:`K_FACTORS` is tried, and at the first
``nprobe`` that reaches the target the smallest ``k_factor`` that still does
is kept. Recall cannot fall as ``k_factor`` grows (a longer shortlist,
re-scored exactly), and the lists scanned (``nprobe``) cost more than the
vectors re-scored at these sizes, so ``nprobe`` is kept small first.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import faiss
import numpy as np

from frozenlens.retriever._stores import METRICS
from frozenlens.retriever.choice import AutoPolicy
from frozenlens.retriever.vector_index import VectorIndex

log = logging.getLogger(__name__)

#: noise norm for held-out queries when the neighbour distance cannot be measured
QUERY_NOISE = 0.25
#: efSearch values tried for HNSW (capped by the collection size)
EF_CANDIDATES = (16, 32, 64, 128, 256, 512, 1024, 2048)
#: k_factor values tried for an IVF index with exact re-ranking
K_FACTORS = (1, 2, 4, 8, 16, 32, 64)
Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass(frozen=True)
class Tuning:
    """What a tuning or a recall measurement found (JSON-ready with :meth:`to_json`).

    knob: ``"nprobe"``, ``"ef_search"`` or ``None`` (exact index, nothing to tune);
    value: the value kept; recall: recall@k at that value; reached: recall >= target;
    k_factor: the re-ranking shortlist factor kept with ``nprobe`` (None: no re-ranking).
    """

    factory: str
    n: int
    knob: str | None
    value: int | None
    recall: float
    target: float
    k: int
    queries: int
    reached: bool
    seconds: float
    k_factor: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def held_out_queries(chunks: Chunks, n: int, count: int, dim: int, seed: int = 0,
                     metric: str = "ip") -> np.ndarray:
    """float32 (q, dim): ``count`` random stored vectors, each moved by about the typical
    nearest-neighbour distance of the collection (see module doc)."""
    rng = np.random.default_rng(seed)
    q = pick(chunks, np.sort(rng.choice(n, size=min(count, n), replace=False)), dim)
    if len(q) == 0 or n < 2:
        return np.ascontiguousarray(q)
    d, _ = exact_top_k(np.ascontiguousarray(q), chunks, 2, metric, with_scores=True)
    second = d[:, 1][np.isfinite(d[:, 1])]
    gap = np.sqrt(np.maximum(2 - 2 * second, 0)) if metric == "ip" else np.sqrt(np.maximum(second, 0))
    radius = float(np.median(gap)) if gap.size else QUERY_NOISE
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (max(radius, 1e-3) / np.sqrt(dim))
    if metric == "ip":
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(q, dtype=np.float32)


def exact_top_k(queries: np.ndarray, chunks: Chunks, k: int, metric: str = "ip", *,
                with_scores: bool = False) -> Any:
    """int64 (q, k) ids of the exact top-``k`` of float32 (q, d) ``queries`` over all chunks
    (``with_scores``: also their float32 (q, k) scores, as ``(scores, ids)``)."""
    keep_max = metric == "ip"
    heap = faiss.ResultHeap(len(queries), k, keep_max=keep_max)
    for ids, x in chunks():
        kk = min(k, len(x))
        d, pos = faiss.knn(queries, np.ascontiguousarray(x, np.float32), kk, metric=METRICS[metric])
        if kk < k:
            fill = -np.inf if keep_max else np.inf
            d = np.hstack([d, np.full((len(d), k - kk), fill, np.float32)])
            pos = np.hstack([pos, np.full((len(pos), k - kk), -1, np.int64)])
        heap.add_result(d, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1))
    heap.finalize()
    return (heap.D, heap.I) if with_scores else heap.I


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / k over rows (ids int64 (q, k); -1 never counts)."""
    if truth.size == 0:
        return 1.0
    hits = [np.intersect1d(f[f >= 0], t[t >= 0]).size / max(1, (t >= 0).sum()) for f, t in zip(found, truth)]
    return float(np.mean(hits))


def _knob(index: VectorIndex) -> tuple[str | None, list[int]]:
    if not index.is_trained:
        return None, []
    if index.nprobe is not None:
        nlist = index.nlist
        values = [1 << i for i in range(nlist.bit_length()) if (1 << i) < nlist] + [nlist]
        return "nprobe", values
    if index.ef_search is not None:
        return "ef_search", [e for e in EF_CANDIDATES if e < len(index)] + [max(16, min(len(index), 4096))]
    return None, []


def tune(index: VectorIndex, chunks: Chunks, policy: AutoPolicy, *, seed: int = 0) -> Tuning:
    """Set the smallest ``nprobe``/``efSearch`` of ``index`` reaching ``policy.target_recall``.

    ``chunks()`` yields the stored ``(ids, vectors)`` (the ground truth).
    An exact index is only measured.
    """
    start = time.perf_counter()
    n = len(index)
    q = held_out_queries(chunks, n, policy.queries, index.dim, seed, index.metric)
    truth = exact_top_k(q, chunks, policy.k, index.metric)
    knob, values = _knob(index)
    best_value, best = None, -1.0
    chosen = None
    refined = knob == "nprobe" and index.k_factor is not None
    best_kf = K_FACTORS[-1] if refined else None

    def recall_with(v: int, kf: int | None) -> float:
        setattr(index, knob, v)  # type: ignore[arg-type]
        if kf is not None:
            index.k_factor = kf
        return recall_at_k(index.search(q, policy.k)[1], truth)

    for v in values:
        r = recall_with(v, best_kf)
        if r > best + 1e-9:
            best_value, best = v, r
        if r >= policy.target_recall:
            chosen = (v, r)
            if refined:
                for kf in K_FACTORS[:-1]:
                    r_kf = recall_with(v, kf)
                    if r_kf >= policy.target_recall:
                        chosen, best_kf = (v, r_kf), kf
                        break
            break
    if knob is None:
        best = recall_at_k(index.search(q, policy.k)[1], truth)
        chosen = (None, best)
    value, recall = chosen if chosen is not None else (best_value, best)
    if knob is not None:
        setattr(index, knob, value)
    if best_kf is not None:
        index.k_factor = best_kf
    reached = recall >= policy.target_recall
    result = Tuning(index.factory, n, knob, value, round(recall, 4), policy.target_recall, policy.k,
                    len(q), reached, round(time.perf_counter() - start, 3), best_kf)
    if not reached:
        log.warning("%s over %d vectors: recall@%d %.3f misses the target %.2f even at %s=%s k_factor=%s",
                    index.factory, n, policy.k, recall, policy.target_recall, knob, value, best_kf)
    else:
        log.info("tuned %s over %d vectors: %s=%s k_factor=%s gives recall@%d %.3f", index.factory, n, knob,
                 value, best_kf, policy.k, recall)
    return result


def measure(index: VectorIndex, chunks: Chunks, policy: AutoPolicy, *, seed: int = 1) -> Tuning:
    """Recall@k of ``index`` as it is searched now (no knob changes); another seed than tuning's."""
    start = time.perf_counter()
    q = held_out_queries(chunks, len(index), policy.queries, index.dim, seed, index.metric)
    truth = exact_top_k(q, chunks, policy.k, index.metric)
    recall = recall_at_k(index.search(q, policy.k)[1], truth)
    knob = "nprobe" if index.nprobe is not None else "ef_search" if index.ef_search is not None else None
    value = None if knob is None else getattr(index, knob)
    return Tuning(index.factory, len(index), knob, value, round(recall, 4), policy.target_recall, policy.k,
                  len(q), recall >= policy.target_recall, round(time.perf_counter() - start, 3), index.k_factor)


#: vectors per in-RAM shard merged into inverted lists on disk (``build(..., lists_dir=)``)
DISK_SHARD = 65_536


def build(factory: str, dim: int, chunks: Chunks, *, metric: str = "ip", shard: int | None = None,
          seed: int = 0, lists_dir: os.PathLike[str] | str | None = None) -> VectorIndex:
    """A new index of ``factory`` holding every stored vector (``chunks()`` may be called several times).

    A trainable factory is trained on a random sample of *all* the vectors (never the first
    ones), then the vectors are added chunk by chunk; with ``shard`` (IVF only), each ``shard``
    vectors fill a shard (:meth:`VectorIndex.empty_like`) that is merged into the index with
    FAISS ``merge_from`` -- the way shards built elsewhere are combined. Below the training
    threshold the vectors stay in the exact fallback.

    With ``lists_dir`` (IVF), the inverted lists of the trained index go to a file there
    (:meth:`VectorIndex.move_lists_to_disk`) and shards of ``shard`` (default
    :data:`DISK_SHARD`) vectors built in RAM are merged into them, as ``faiss.contrib.ondisk``
    does, so the build needs RAM for one shard, not for the index.
    """
    index = VectorIndex.create(dim, factory, metric=metric)
    n = sum(len(ids) for ids, _ in chunks())
    if not index.is_trained and n >= index.train_threshold:
        rng = np.random.default_rng(seed)
        index.train(pick(chunks, np.sort(rng.choice(n, min(n, index.train_sample_size), replace=False)), dim))
    template = index
    if lists_dir is not None and index.nprobe is not None and index.is_trained:
        template, shard = index.empty_like(), shard or DISK_SHARD
        index.move_lists_to_disk(lists_dir)
    if shard is None or index.nprobe is None or not index.is_trained:
        for ids, x in chunks():
            index.add(ids, x)
        return index
    part, filled = template.empty_like(), 0
    for ids, x in chunks():
        part.add(ids, x)
        filled += len(ids)
        if filled >= shard:
            index.merge(part)
            part, filled = template.empty_like(), 0
    if filled:
        index.merge(part)
    return index


def pick(chunks: Chunks, positions: np.ndarray, dim: int) -> np.ndarray:
    """float32 (len(positions), dim): the vectors at sorted ``positions`` of the chunk sequence."""
    out, seen = [], 0
    for _, x in chunks():
        local = positions[(positions >= seen) & (positions < seen + len(x))] - seen
        out.append(x[local])
        seen += len(x)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
