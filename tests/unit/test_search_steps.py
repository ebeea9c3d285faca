"""The search pipeline's pure steps, the engine's request arguments, and IndexStats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from frozenlens.engine.arguments import search_request, similar_request
from frozenlens.engine.search import Candidates, fuse, rank_and_cut, rerank
from frozenlens.errors import QueryError
from frozenlens.request import MAX_K, SearchRequest
from frozenlens.types import IndexStats, SearchFilters


def candidates() -> Candidates:
    return Candidates(
        ids=np.array([7, 3, 5, 9], dtype=np.int64),
        image=np.array([0.2, 0.5, 0.5, 0.1]),
        caption=np.array([0.6, np.nan, 0.1, np.nan]),
    )


def test_fuse_then_rank_orders_by_score_then_id_and_applies_min_score():
    fused = fuse(candidates(), "max", 0.5)
    np.testing.assert_allclose(fused.score, [0.6, 0.5, 0.5, 0.1])
    ranked = rank_and_cut(fused, k=3, min_score=None)
    assert ranked.ids.tolist() == [7, 3, 5]  # 3 and 5 tie: lower id first
    assert rank_and_cut(fused, k=10, min_score=0.5).ids.tolist() == [7, 3, 5]
    assert len(rank_and_cut(fused, k=10, min_score=0.9)) == 0
    assert ranked.first_stage is None


def test_rerank_keeps_the_first_stage_top_and_its_cosines():
    fused = fuse(candidates(), "max", 0.5)
    seen: list[list[int]] = []

    def head(ids: list[int]) -> np.ndarray:
        seen.append(ids)
        return np.array([0.1, 0.9], dtype=np.float32)

    out = rerank(fused, keep=2, head_scores=head, fusion="max", caption_weight=0.5)
    assert seen == [[7, 3]]  # the two best by first-stage score
    assert out.ids.tolist() == [7, 3] and out.first_stage.tolist() == [0.2, 0.5]
    np.testing.assert_allclose(out.image, [0.1, 0.9], rtol=1e-6)
    np.testing.assert_allclose(out.score, [0.6, 0.9], rtol=1e-6)  # caption evidence unchanged
    assert rank_and_cut(out, k=2, min_score=None).ids.tolist() == [3, 7]


def test_engine_arguments_become_one_validated_request():
    request, image = search_request("  a cat ", None, k=5, filters=None, sort="newest")
    assert image is None and request == SearchRequest(query="a cat", k=5, sort="newest")
    photo = b"jpeg bytes"
    request, image = search_request(photo, None, k=3)
    assert image is photo and request.query is None and request.k == 3
    with pytest.raises(QueryError):
        search_request("a cat", None, k=MAX_K + 1)
    ready = SearchRequest(query="a cat", k=4, filters=SearchFilters(camera="canon"))
    assert search_request(ready, None, k=10) == (ready, None)  # defaults left alone
    with pytest.raises(QueryError, match="not both"):
        search_request(ready, None, k=4, sort="oldest")
    with pytest.raises(QueryError):
        search_request(ready, photo)  # a text request with an image
    assert search_request(SearchRequest(k=2), photo) == (SearchRequest(k=2), photo)
    with pytest.raises(QueryError):
        search_request(SearchRequest(k=2), None)  # neither text nor image
    with pytest.raises(QueryError):
        search_request("a cat", photo)
    assert similar_request(SearchRequest(k=2)) == SearchRequest(k=2)
    assert similar_request(6, sort="oldest") == SearchRequest(k=6, sort="oldest")
    with pytest.raises(QueryError):
        similar_request(SearchRequest(query="a cat"))


def test_index_stats_typed_with_a_json_form():
    stats = IndexStats(
        images=3, duplicates=1, failed=0, captions=2, with_date=3,
        encoder={"name": "lite", "version": "1", "dim": 512, "visual_dim": 1280}, factory="Flat",
        vectors={"semantic": 3, "visual": 3, "caption": 2}, schema_version=6, index_dir="/i",
        database="sqlite:////i/frozenlens.db", bytes_on_disk=10, created_at=None, cameras={"Canon": 2},
    )
    data = stats.to_json()
    assert list(data)[:5] == ["images", "duplicates", "failed", "captions", "with_date"]
    assert json.loads(json.dumps(data)) == data
    assert stats.counts == {"images": 3, "duplicates": 1, "failed": 0, "captions": 2, "with_date": 3}
    assert stats["images"] == 3 and "vectors" in stats and "nope" not in stats
    data["cameras"]["Nikon"] = 1
    assert stats.cameras == {"Canon": 2}  # the JSON form is a copy
