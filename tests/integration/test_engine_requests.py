"""Engine.search / similar take a SearchRequest as well as keyword arguments, with the same results;
stats() is a typed IndexStats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from frozenlens.engine import Engine
from frozenlens.errors import QueryError
from frozenlens.request import SearchRequest
from frozenlens.types import IndexStats, SearchFilters


@pytest.fixture(scope="module")
def engine(tmp_path_factory, testdata, lite_encoder):
    root = tmp_path_factory.mktemp("requests")
    shutil.copytree(testdata / "kphotoalbum", root / "photos")
    eng = Engine.open(root / "index", encoder=lite_encoder, create=True)
    eng.index([root / "photos"], captions=root / "photos" / "captions.jsonl")
    yield eng
    eng.close()


def ids(hits) -> list[int]:
    return [h.id for h in hits]


def test_a_request_searches_like_its_arguments(engine):
    filters = SearchFilters(camera="olympus")
    for options in ({"k": 5}, {"k": 7, "filters": filters, "fusion": "rrf"}, {"k": 4, "sort": "newest"}):
        request = SearchRequest(query="people at the sea", **options)
        assert ids(engine.search(request)) == ids(engine.search("people at the sea", **options))
    photo = engine.get_image(engine.search("a rabbit", k=1)[0].id).path
    by_image = SearchRequest(k=3, filters=filters)
    assert ids(engine.search(by_image, image=Path(photo))) == ids(engine.search(Path(photo), k=3, filters=filters))
    first = engine.search("a rabbit", k=1)[0].id
    assert ids(engine.similar(first, SearchRequest(k=4, sort="oldest"))) == ids(engine.similar(first, 4, sort="oldest"))
    with pytest.raises(QueryError, match="not both"):
        engine.search(SearchRequest(query="a rabbit"), min_score=0.3)
    with pytest.raises(QueryError):
        engine.search(SearchRequest(query="a rabbit"), image=Path(photo))


def test_stats_is_typed_and_its_json_form_is_what_clients_show(engine):
    stats = engine.stats()
    assert isinstance(stats, IndexStats)
    assert stats.images == stats["images"] > 0 and stats.encoder["name"] == "lite"
    # the default setting is auto, and what it built for these few photos is exact (SQfp16; captions Flat)
    assert stats.factory == "auto" and stats.index_types == {"semantic": "SQfp16", "visual": "SQfp16", "caption": "Flat"}
    assert stats.index_type_text == "auto (semantic SQfp16, visual SQfp16, caption Flat)"
    assert stats.to_json()["index_types"] == stats.index_types
    assert stats.vectors["semantic"] == stats.images
    assert json.loads(json.dumps(stats.to_json()))["vectors"] == stats.vectors
