"""Building an index of a chosen type from stored vectors, tuning it to a target recall, measuring recall.

Numpy in, numpy out; the vectors come as an iterator of ``(ids int64 (b,),
vectors float32 (b, d))`` chunks so the exact ground truth never needs them
all at once.

**Held-out queries: leave-one-out.** Recall is measured on ``policy.queries``
stored vectors drawn at random (seeded), each used as it is, against all the
*other* stored vectors: the truth is the exact top-k without the query's own
id (an exact top-(k+1+8) over the chunks, then dropped), and the approximate
answer is a search for k+1 without that id. With its own vector out of the
way, a stored vector is a draw from the collection's own distribution against
n-1 others -- what a fresh photo of the same kind is -- on three conditions
(:mod:`._holdout`), each measured to matter:

* it must not have trained the index. IVF centroids and PQ codebooks fit
  their training points, and below ``256 * nlist`` vectors every vector
  trains; on the unit test's 32-d clusters (78 vectors per centroid) stored
  vectors got 0.49 at nprobe 8 where fresh ones got 0.45. So one stored id in
  :data:`~._holdout.RESERVE_EVERY` (32, a hash of the id: no state, stable as
  the index grows) never enters a training sample (:func:`build` and
  :class:`VectorIndex`'s own training), and the queries are drawn from those
  (from any stored vector when fewer than ``policy.queries`` exist);
* a graph must not lead the search to it: in HNSW a stored vector is a node
  whose links *are* its nearest neighbours, so the walk reaches it and reads
  the answer off its links (32-d clusters: 0.97 on such queries, 0.81 on
  fresh ones at efSearch 16). A graph is searched on a private copy of its
  links in which no node links to any held-out node, and its truth leaves
  out all of them: the held-out vectors against the other n - q. The links
  the builder pruned in favour of the removed nodes stay out, so graph recall
  can come out a little low (0.92 vs 0.93 fresh at efSearch 32), never high;
* a re-ranked IVF must re-score the ``k * k_factor`` best candidates other
  than the query's own, as a fresh query's search does, not ``(k+1) * k_factor``.

Tuning's queries use seed 0, ``frozenlens info --recall`` (:func:`measure`)
seed 1; both cost one exact top-(k+9) pass over the vectors (the noise queries
below cost two passes).

Before this, the queries were stored vectors moved by Gaussian noise of the
median nearest-neighbour distance, with the truth over all stored vectors
(the moved query's source stays a neighbour). That overstated recall where it
mattered: at 1 M x 512 (``OPQ64,IVF4096,PQ64,Refine(SQfp16)``) 0.954 on those
queries, 0.932 on the benchmark's; HNSW32 on the unit test's 32-d clusters
efSearch 32 was kept on 0.952-0.955 and gives 0.933 on fresh queries
(docs/benchmarks.md, "Tuning that carries over to fresh queries").

**Sampling error.** With q queries the mean recall has a standard error
sd/sqrt(q) (per-query recall@10 has sd ~0.05-0.15 near 0.95, so 0.003-0.009
at q = 256), and the tuner keeps the *smallest* value that reaches the target,
i.e. one that sits at the edge: judged on the mean, a value whose estimate
lands just above the target is about as likely to fall short of it on fresh
queries as not. So the target is demanded of the
one-sided 95 % lower bound ``mean - 1.645 * sd / sqrt(q)``
(:data:`CONFIDENCE_Z`; ``tune(..., z=0)`` judges the mean): the kept value
then reaches the target on fresh queries with ~95 % confidence, at the cost
of ~0.01 more recall than the target asks (one power of two more of the knob
at worst; the QPS this costs is in docs/benchmarks.md).

**Tuning.** After a (re)build, ``nprobe`` (IVF) or ``efSearch`` (HNSW) is swept
over powers of two and the smallest value whose recall@k reaches the target
(on the lower bound) is kept; if none does, the best value is kept and :class:`Tuning` says the
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

from frozenlens.retriever._holdout import refined, reserved, unlinked
from frozenlens.retriever._stores import METRICS
from frozenlens.retriever.choice import AutoPolicy
from frozenlens.retriever.vector_index import VectorIndex

log = logging.getLogger(__name__)

#: z of the one-sided lower confidence bound the tuner demands the target on (95 %; module doc)
CONFIDENCE_Z = 1.645
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
    k_factor: the re-ranking shortlist factor kept with ``nprobe`` (None: no re-ranking);
    recall_low: the one-sided 95 % lower confidence bound of ``recall`` (what ``reached`` is judged on).
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
    recall_low: float | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class HeldOut:
    """Queries with their exact answers, on which recall is measured.

    queries: float32 (q, d); truth: int64 (q, k) exact top-k ids (-1: none); own: int64 (q,)
    the stored id each query was taken from, which answers never count (leave-one-out), or
    ``None`` for queries that are not stored vectors; truth_graph: for a graph index, the exact
    top-k without *any* of the ``own`` ids (the graph is searched with all of them unreachable,
    :mod:`._holdout`).
    """

    queries: np.ndarray
    truth: np.ndarray
    own: np.ndarray | None = None
    truth_graph: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.truth.shape[1])

    def recalls(self, index: VectorIndex) -> np.ndarray:
        """float64 (q,): recall@k of each query as ``index`` is searched now."""
        return self.meter(index)()

    def meter(self, index: VectorIndex) -> Callable[[], np.ndarray]:
        """A function giving :meth:`recalls` of ``index`` as it is searched at call time (its knobs may
        change between calls, its vectors not): what a graph needs is prepared once, here."""
        k, own = self.k, self.own
        if own is None:
            return lambda: recalls(index.search(self.queries, k)[1], self.truth)
        graph = unlinked(index, own) if self.truth_graph is not None else None
        if graph is not None:
            truth = self.truth_graph

            def on_graph() -> np.ndarray:
                found = graph(self.queries, k + 1)
                return recalls(without(found, np.isin(found, own), k), truth)

            return on_graph

        rerank = refined(index, own)
        if rerank is not None:
            return lambda: recalls(rerank(self.queries, k), self.truth)

        def plain() -> np.ndarray:
            found = index.search(self.queries, k + 1)[1]
            return recalls(without(found, found == own[:, None], k), self.truth)

        return plain


#: exact neighbours fetched beyond k + 1 so that k remain without the other held-out ids
_SPARE = 8


def leave_one_out(chunks: Chunks, n: int, count: int, k: int, dim: int, seed: int = 0,
                  metric: str = "ip") -> HeldOut:
    """``count`` random stored vectors (seeded) as queries, each against all the others (module doc):
    the truth is the exact top-``k`` without the query's own id (and, for graphs, without any query's)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.concatenate([reserved(ids) for ids, _ in chunks()] or [np.zeros(0, bool)]))
    if len(pool) < min(count, n):  # too few vectors kept out of training: any (module doc)
        pool = np.arange(n)
    own, q = pick_rows(chunks, np.sort(rng.choice(pool, size=min(count, len(pool)), replace=False)), dim)
    q = np.ascontiguousarray(q)
    ranked = exact_top_k(q, chunks, k + 1 + _SPARE, metric)
    return HeldOut(q, without(ranked, ranked == own[:, None], k), own, without(ranked, np.isin(ranked, own), k))


def without(found: np.ndarray, drop: np.ndarray, k: int) -> np.ndarray:
    """int64 (q, k): the first ``k`` ids of each row of ``found`` (q, m) where bool (q, m) ``drop`` is false
    (-1 where fewer remain)."""
    order = np.argsort(drop, axis=1, kind="stable")[:, :k]
    kept = np.take_along_axis(found, order, axis=1)
    return np.where(np.take_along_axis(drop, order, axis=1), -1, kept)


def lower_bound(per_query: np.ndarray, z: float = CONFIDENCE_Z) -> float:
    """One-sided lower confidence bound of the mean recall: mean - z * standard error (module doc)."""
    if per_query.size < 2:
        return float(per_query.mean()) if per_query.size else 1.0
    return float(per_query.mean() - z * per_query.std(ddof=1) / np.sqrt(per_query.size))


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


def recalls(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """float64 (q,): |found ∩ truth| / |truth| per row (ids int64 (q, *); -1 never counts; a row with
    no truth counts 1)."""
    if truth.size == 0:
        return np.ones(len(truth))
    valid = truth >= 0
    hit = ((found[:, :, None] == truth[:, None, :]) & valid[:, None, :] & (found[:, :, None] >= 0)).any(axis=1)
    size = valid.sum(axis=1)
    return np.where(size > 0, hit.sum(axis=1) / np.maximum(size, 1), 1.0)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / k over rows (ids int64 (q, k); -1 never counts)."""
    return float(recalls(found, truth).mean()) if truth.size else 1.0


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


def tune(index: VectorIndex, chunks: Chunks, policy: AutoPolicy, *, seed: int = 0,
         held_out: HeldOut | None = None, z: float = CONFIDENCE_Z) -> Tuning:
    """Set the smallest ``nprobe``/``efSearch`` of ``index`` whose recall reaches ``policy.target_recall``
    on the one-sided lower bound ``mean - z * standard error`` over the held-out queries.

    ``chunks()`` yields the stored ``(ids, vectors)`` (the ground truth); ``held_out``: the queries
    (default: :func:`leave_one_out` with ``seed``); ``z = 0`` demands the target on the mean.
    An exact index is only measured.
    """
    start = time.perf_counter()
    n = len(index)
    probe = held_out or leave_one_out(chunks, n, policy.queries, policy.k, index.dim, seed, index.metric)
    knob, values = _knob(index)
    best_value, best = None, (-1.0, -1.0)
    chosen = None
    refined = knob == "nprobe" and index.k_factor is not None
    best_kf = K_FACTORS[-1] if refined else None

    meter = probe.meter(index)

    def recall_with(v: int | None, kf: int | None) -> tuple[float, float]:
        if knob is not None:
            setattr(index, knob, v)
        if kf is not None:
            index.k_factor = kf
        per_query = meter()
        return lower_bound(per_query, z), float(per_query.mean())

    for v in values:
        r = recall_with(v, best_kf)
        if r > best:
            best_value, best = v, r
        if r[0] >= policy.target_recall:
            chosen = (v, r)
            if refined:
                for kf in K_FACTORS[:-1]:
                    r_kf = recall_with(v, kf)
                    if r_kf[0] >= policy.target_recall:
                        chosen, best_kf = (v, r_kf), kf
                        break
            break
    if knob is None:
        chosen = (None, recall_with(None, None))
    value, (low, recall) = chosen if chosen is not None else (best_value, best)
    if knob is not None:
        setattr(index, knob, value)
    if best_kf is not None:
        index.k_factor = best_kf
    reached = low >= policy.target_recall
    result = Tuning(index.factory, n, knob, value, round(recall, 4), policy.target_recall, policy.k,
                    len(probe.queries), reached, round(time.perf_counter() - start, 3), best_kf, round(low, 4))
    if not reached:
        log.warning("%s over %d vectors: recall@%d %.3f (lower bound %.3f) misses the target %.2f even at %s=%s "
                    "k_factor=%s", index.factory, n, policy.k, recall, low, policy.target_recall, knob, value, best_kf)
    else:
        log.info("tuned %s over %d vectors: %s=%s k_factor=%s gives recall@%d %.3f (lower bound %.3f)",
                 index.factory, n, knob, value, best_kf, policy.k, recall, low)
    return result


def measure(index: VectorIndex, chunks: Chunks, policy: AutoPolicy, *, seed: int = 1,
            z: float = CONFIDENCE_Z) -> Tuning:
    """Recall@k of ``index`` as it is searched now (no knob changes), on leave-one-out queries of
    another seed than tuning's; ``reached`` is judged on the lower bound, as :func:`tune` does."""
    start = time.perf_counter()
    probe = leave_one_out(chunks, len(index), policy.queries, policy.k, index.dim, seed, index.metric)
    per_query = probe.recalls(index)
    recall, low = float(per_query.mean()), lower_bound(per_query, z)
    knob = "nprobe" if index.nprobe is not None else "ef_search" if index.ef_search is not None else None
    value = None if knob is None else getattr(index, knob)
    return Tuning(index.factory, len(index), knob, value, round(recall, 4), policy.target_recall, policy.k,
                  len(probe.queries), low >= policy.target_recall, round(time.perf_counter() - start, 3),
                  index.k_factor, round(low, 4))


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
        pool = np.flatnonzero(np.concatenate([~reserved(ids) for ids, _ in chunks()]))  # never the held-out
        index.train(pick(chunks, np.sort(rng.choice(pool, min(len(pool), index.train_sample_size), replace=False)),
                         dim))
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
    return pick_rows(chunks, positions, dim)[1]


def pick_rows(chunks: Chunks, positions: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids int64 (m,) and vectors float32 (m, dim) at sorted ``positions`` of the chunk sequence."""
    ids_out, out, seen = [], [], 0
    for ids, x in chunks():
        local = positions[(positions >= seen) & (positions < seen + len(x))] - seen
        ids_out.append(np.asarray(ids, np.int64)[local])
        out.append(x[local])
        seen += len(x)
    if not out:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate(ids_out), np.concatenate(out).astype(np.float32)
