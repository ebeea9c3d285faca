"""The grouping rule of frozenlens.engine.neardup on hand-made vectors: complete link (no chaining),
the exact check for groups larger than the k-NN lists, and the best-member order."""

from __future__ import annotations

import datetime as dt

import numpy as np

from frozenlens.engine.neardup import best_first, candidate_pairs, complete_link
from frozenlens.retriever import VectorIndex
from frozenlens.store import ImageRecord


def _chain() -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors 1..4 along an arc, 12° apart: cosine 0.98 (neighbours), 0.91 (two apart), 0.81 (the ends)."""
    angles = np.radians([0, 12, 24, 36])
    x = np.zeros((4, 8), np.float32)
    x[:, 0], x[:, 1] = np.cos(angles), np.sin(angles)
    return np.arange(1, 5, dtype=np.int64), x


def test_pairs_come_from_the_index_and_complete_link_does_not_chain():
    ids, x = _chain()
    index = VectorIndex.create(8, "Flat")
    index.add(ids, x)
    a, b, s = candidate_pairs(index, ids, x, 0.9)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(1, 2), (1, 3), (2, 3), (2, 4), (3, 4)]
    groups = complete_link(a, b, s, lambda g: x[np.asarray(g) - 1], 0.9)
    # single link would make one chain 1-2-3-4 (1~4 is cos 36° = 0.81); complete link keeps every pair >= 0.9
    assert sorted(sorted(g) for g, _ in groups) in ([[1, 2, 3]], [[1, 2], [3, 4]], [[2, 3, 4]])
    for g, low in groups:
        v = x[np.asarray(g) - 1]
        assert (v @ v.T).min() >= 0.9 and abs(low - (v @ v.T).min()) < 1e-6


def test_groups_larger_than_the_knn_lists_are_checked_exactly():
    rng = np.random.default_rng(1)
    base = rng.normal(size=16).astype(np.float32)
    x = base + 0.05 * rng.normal(size=(12, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(1, 13, dtype=np.int64)
    index = VectorIndex.create(16, "Flat")
    index.add(ids, x)
    a, b, s = candidate_pairs(index, ids, x, 0.9, k=3)  # lists too short to hold all 66 pairs
    assert a.size < 66
    groups = complete_link(a, b, s, lambda g: x[np.asarray(g) - 1], 0.9, k=3)
    assert [sorted(g) for g, _ in groups] == [list(range(1, 13))]


def _record(i: int, w: int, h: int, when: dt.datetime | None) -> ImageRecord:
    return ImageRecord(id=i, path=f"/p/{i}.jpg", status="indexed", size=1, content_hash=None, width=w, height=h,
                       format="JPEG", taken_at=when, camera=None, lens=None, lat=None, lon=None, labels=[],
                       captions=[], duplicates=[], duplicate_of=None)


def test_best_member_is_largest_then_earliest_then_lowest_id():
    early, late = dt.datetime(2020, 1, 1), dt.datetime(2021, 1, 1)
    records = [_record(5, 800, 600, late), _record(4, 400, 300, early), _record(3, 800, 600, early),
               _record(2, 800, 600, None), _record(1, 800, 600, early)]
    assert [r.id for r in best_first(records)] == [1, 3, 5, 2, 4]
