"""Near-duplicate groups: photos that are the same picture, resized, re-encoded, cropped a little,
mirrored, or the next frame of a burst — found by the similarity of their *visual* vectors.

The rule (the one owner of it; the default threshold lives in :mod:`frozenlens.request`):

1. **Candidate pairs from the index's own k-NN search.** Every photo's visual vector (the
   image→image space) is a query: the ``NEIGHBOURS`` nearest photos are asked of the FAISS
   visual space in batches of ``BATCH`` queries, and a pair is kept when its cosine is at least
   the threshold. There is no all-pairs loop: the work is n k-NN queries (exact for a Flat or
   SQfp16 space, approximate for HNSW / IVF at their tuned recall).
2. **Complete link, so groups do not chain.** The candidate pairs are taken from the most to
   the least similar; a pair joins its two groups only if *every* photo of one group is at
   least ``threshold`` similar to every photo of the other: all the cross pairs are candidate
   pairs (counted, no vector arithmetic), or — for a group too large for the k-NN lists to hold
   all its pairs (over ``NEIGHBOURS + 1`` photos) — the cross similarities computed exactly from
   the stored vectors. So A~B and B~C never puts A with C unless A~C too: every pair inside a
   group is above the threshold (:attr:`DuplicateGroup.similarity` is the lowest). With an
   approximate index (HNSW, IVF) a pair the search missed can keep two small groups apart.
3. **Byte-identical copies** (the index's ``duplicate`` rows, which share their original's
   vectors) belong to their original's group; a photo with only byte-identical copies is a
   group too, so ``frozenlens duplicates`` lists those as before.
4. **The best member** of a group, shown first and kept by ``collapse``: most pixels
   (width × height), then the earliest date taken (undated last), then the lowest id — the
   original is the oldest, largest file; resized or cropped copies lose.

Collapsing search results (``SearchRequest(collapse=True)``): the top ``COLLAPSE_POOL · k`` results
(all ``MAX_K`` for a date sort) are ranked, then collapsed and cut to ``k``; they keep their order;
the first result of each group takes the place of the whole group, showing the best member
*among that group's results* (the best member overall may have been filtered out), with
``group_size`` set to the size of the whole group and ``group_id`` to the group's id (its best
member's id).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..request import DUPLICATE_THRESHOLD, MAX_K, check_threshold
from ..retriever.vector_index import VectorIndex
from ..store import ImageRecord, Store
from ..types import Hit

#: neighbours asked per photo; a group larger than this is still found through its members' lists
NEIGHBOURS = 32
#: photos queried per FAISS call
BATCH = 1024
#: a collapsed search ranks this many times ``k`` results before collapsing them (at most MAX_K)
COLLAPSE_POOL = 10
#: the stored vectors of some image ids: float32 (len(ids), d)
VectorsOf = Callable[[list[int]], np.ndarray]


@dataclass(frozen=True)
class DuplicateGroup:
    """One group of near-identical photos (at least two files).

    id: the best member's image id (also the group's id).
    members: ids of the indexed photos of the group, best first (see the module doc).
    copies: (id, id of the photo it is a byte-identical copy of) of the group's copies.
    similarity: the lowest cosine between two members (1.0 when all are byte-identical).
    """

    id: int
    members: tuple[int, ...]
    copies: tuple[tuple[int, int], ...] = ()
    similarity: float = 1.0

    @property
    def size(self) -> int:
        """How many files the group holds (photos and byte-identical copies)."""
        return len(self.members) + len(self.copies)


@dataclass(frozen=True)
class Grouping:
    """Every group of an index at one threshold, and the group of each photo (by id)."""

    threshold: float
    groups: tuple[DuplicateGroup, ...]
    by_id: dict[int, DuplicateGroup]


def candidate_pairs(
    index: VectorIndex, ids: np.ndarray, vectors: np.ndarray, threshold: float, k: int = NEIGHBOURS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (a, b, cosine) with ``a < b`` and cosine >= ``threshold``, from the k-NN of each of
    int64 (n,) ``ids`` with float32 (n, d) ``vectors`` in ``index`` (batched queries)."""
    a_parts, b_parts, s_parts = [], [], []
    for start in range(0, ids.size, BATCH):
        q_ids, q = ids[start:start + BATCH], vectors[start:start + BATCH]
        scores, found = index.search(q, min(k + 1, max(len(index), 1)))
        keep = (found >= 0) & (scores >= threshold) & (found != q_ids[:, None])
        rows, cols = np.nonzero(keep)
        a, b = q_ids[rows], found[rows, cols]
        a_parts.append(np.minimum(a, b))
        b_parts.append(np.maximum(a, b))
        s_parts.append(scores[rows, cols].astype(np.float64))
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    a, b, s = np.concatenate(a_parts), np.concatenate(b_parts), np.concatenate(s_parts)
    pairs, first = np.unique(np.stack([a, b], axis=1), axis=0, return_index=True)
    return pairs[:, 0], pairs[:, 1], s[first]


def complete_link(
    a: np.ndarray, b: np.ndarray, s: np.ndarray, vectors_of: VectorsOf, threshold: float, k: int = NEIGHBOURS,
) -> list[tuple[list[int], float]]:
    """Groups (ids, lowest pairwise cosine) of at least two photos from candidate pairs (a, b, cosine),
    merged most similar first and only when every cross pair is >= ``threshold`` (no chaining).

    The check counts the candidate pairs between the two groups: all ``|A|·|B|`` present means every
    cross pair is above the threshold, with no vector arithmetic. A merged group larger than
    ``k + 1`` cannot have all its pairs among k-NN lists, so for those the cross similarities are
    computed exactly from ``vectors_of(ids) -> float32 (len(ids), d)``.
    """
    group_of: dict[int, int] = {}
    members: dict[int, list[int]] = {}
    lowest: dict[int, float] = {}
    links: dict[int, dict[int, list[float]]] = {}  # group -> {other group: [pairs between them, lowest cosine]}
    for x, y, sim in zip(a.tolist(), b.tolist(), s.tolist(), strict=True):
        for p, q in ((x, y), (y, x)):
            link = links.setdefault(p, {}).setdefault(q, [0, 1.0])
            link[0], link[1] = link[0] + 1, min(link[1], sim)
    for i in np.argsort(-s, kind="stable"):
        x, y = int(a[i]), int(b[i])
        gx, gy = group_of.get(x, x), group_of.get(y, y)
        if gx == gy:
            continue
        mx, my = members.get(gx, [x]), members.get(gy, [y])
        n_pairs, low = links[gx].get(gy, (0, 1.0))
        if n_pairs == len(mx) * len(my):  # every cross pair is a candidate pair, so above the threshold
            worst = min(low, lowest.get(gx, 1.0), lowest.get(gy, 1.0))
        elif len(mx) + len(my) > k + 1:
            cross = vectors_of(mx) @ vectors_of(my).T  # (|mx|, |my|)
            if float(cross.min()) < threshold:
                continue
            worst = min(float(cross.min()), lowest.get(gx, 1.0), lowest.get(gy, 1.0))
        else:
            continue
        if len(mx) < len(my):
            gx, gy, mx, my = gy, gx, my, mx
        members[gx] = mx + my
        lowest[gx] = worst
        for m in my:
            group_of[m] = gx
        for h, (n, lo) in links.pop(gy, {}).items():  # the pairs of the absorbed group now belong to gx
            if h == gx:
                continue
            link = links.setdefault(gx, {}).setdefault(h, [0, 1.0])
            link[0], link[1] = link[0] + n, min(link[1], lo)
            links[h][gx] = list(link)
            links[h].pop(gy, None)
        links.setdefault(gx, {}).pop(gy, None)
        members.pop(gy, None)
        lowest.pop(gy, None)
    return [(m, lowest[g]) for g, m in members.items()]


def best_first(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """``records`` ordered best member first: most pixels, then earliest date taken, then lowest id."""
    def key(r: ImageRecord) -> tuple[int, int, dt.datetime, int]:
        when = r.taken_at.replace(tzinfo=None) if r.taken_at is not None else dt.datetime.max
        return (-(r.width or 0) * (r.height or 0), int(r.taken_at is None), when, r.id)

    return sorted(records, key=key)


def find_groups(store: Store, index: VectorIndex, dim: int, threshold: float | None = None) -> Grouping:
    """The near-duplicate groups of the photos in ``index`` (an index's visual space, in sync with
    ``store``; ``dim`` its dimension) at ``threshold`` (default :data:`DUPLICATE_THRESHOLD`)."""
    t = check_threshold(DUPLICATE_THRESHOLD if threshold is None else threshold)
    ids = index.ids()
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, ids.size, 16 * BATCH):  # read stored vectors in chunks, query in batches
        chunk = ids[start:start + 16 * BATCH]
        parts.append(candidate_pairs(index, chunk, store.vectors("visual", chunk.tolist(), dim), t))
    a = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    b = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    s = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
    clusters = complete_link(a, b, s, lambda group: store.vectors("visual", group, dim), t)
    copies = store.duplicate_pairs()
    copies_of: dict[int, list[int]] = {}
    for copy, original in copies:
        copies_of.setdefault(original, []).append(copy)
    in_cluster = {m for members, _ in clusters for m in members}
    clusters += [([original], 1.0) for original in copies_of if original not in in_cluster]
    records = store.images([m for members, _ in clusters for m in members])
    groups = []
    for members, similarity in clusters:
        ordered = best_first([records[m] for m in members if m in records])
        if not ordered:
            continue
        group_copies = tuple((c, m.id) for m in ordered for c in sorted(copies_of.get(m.id, ())))
        groups.append(DuplicateGroup(id=ordered[0].id, members=tuple(r.id for r in ordered), copies=group_copies,
                                     similarity=round(similarity, 6)))
    groups.sort(key=lambda g: (-g.size, g.id))
    by_id = {m: g for g in groups for m in g.members}
    by_id.update({c: g for g in groups for c, _ in g.copies})
    return Grouping(threshold=t, groups=tuple(groups), by_id=by_id)


def collapse(hits: list[Hit], grouping: Grouping) -> list[Hit]:
    """One hit per group, in the order of each group's first hit: the best member among the
    group's hits, with ``group_size`` (the whole group's) and ``group_id`` set; photos in no
    group pass unchanged (``group_size`` 1)."""
    present: dict[int, list[Hit]] = {}
    for h in hits:
        g = grouping.by_id.get(h.id)
        if g is not None:
            present.setdefault(g.id, []).append(h)
    out: list[Hit] = []
    for h in hits:
        g = grouping.by_id.get(h.id)
        if g is None:
            out.append(h)
            continue
        if g.id not in present:
            continue  # the group was shown already
        rank = {m: r for r, m in enumerate(g.members)}
        best = min(present.pop(g.id), key=lambda x: rank.get(x.id, len(rank)))
        out.append(replace(best, group_size=g.size, group_id=g.id))
    return out


def collapse_pool(k: int) -> int:
    """How many results a collapsed search of ``k`` ranks before collapsing (date sorts rank MAX_K anyway)."""
    return min(MAX_K, COLLAPSE_POOL * k)


#: groupings a cache keeps (of different thresholds; the latest asked stay)
CACHED = 4


class GroupCache:
    """The grouping of one open index, computed on first use and again once the index changed
    (``key``: its generation and vector epoch) or another threshold is asked (the last
    :data:`CACHED` thresholds are kept); safe across threads
    (one computation at a time; a finished grouping is never modified)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Hashable, float], Grouping] = {}

    def get(self, store: Store, index: VectorIndex, dim: int, key: Hashable, threshold: float | None) -> Grouping:
        t = check_threshold(DUPLICATE_THRESHOLD if threshold is None else threshold)
        with self._lock:
            found = self._entries.get((key, t))
            if found is None:
                found = find_groups(store, index, dim, t)
                kept = [(k, v) for k, v in self._entries.items() if k[0] == key][-(CACHED - 1):]
                self._entries = {**dict(kept), (key, t): found}
            return found
