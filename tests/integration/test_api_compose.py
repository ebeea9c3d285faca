"""Composed queries through the REST API (POST /api/v1/search/composed) and the Python
client, over the real index of tests/integration/test_api.py: the same hits as the
engine, filters and date sort, uploads in the body, the OpenAPI schema, and 422s with
a message for bad terms."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")

from frozenlens.client import ApiError, Client
from frozenlens.engine import Engine
from frozenlens.request import MAX_TERM_WEIGHT, MAX_TERMS, QueryTerm, SearchRequest
from frozenlens.server.app import create_app
from frozenlens.server.settings import Limits, ServerSettings
from frozenlens.server.uploads import decode_upload
from tests.integration import test_api as api_tests
from tests.integration.test_api import TOKEN, assert_error

# test_api.py's fixtures (the real index, its in-process client, its live server); pytest
# registers the fixtures found in a module under the names they have there
archive, client, live_server = api_tests.archive, api_tests.client, api_tests.live_server

URL = "/api/v1/search/composed"


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def test_composed_search_matches_the_engine(client, archive):
    photos, index, _ = archive
    body = {"terms": [{"text": "people"}, {"text": "a table", "weight": -1}, {"image": b64(photos / "skagen.jpg"),
                                                                             "weight": 0.5}], "k": 6}
    r = client.post(URL, json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    limits = Limits()  # an upload is decoded as /search/image decodes it (in memory, the server's draft size)
    upload = decode_upload((photos / "skagen.jpg").read_bytes(), limits.max_upload_bytes, limits.max_upload_pixels)
    with Engine.open(index) as eng:
        expected = eng.search(SearchRequest(query="people", k=6, terms=(
            QueryTerm(text="a table", weight=-1.0), QueryTerm(image=upload, weight=0.5))))
        pool = eng.get_image(photos / "pool.jpg").id
    assert [h["id"] for h in got["hits"]] == [h.id for h in expected]
    assert [h["score"] for h in got["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)
    # "search with this photo" from a result: by id, with filters and date order
    r = client.post(URL, json={"terms": [{"image_id": pool}, {"text": "snow", "weight": -0.5}], "k": 20,
                               "camera": "olympus", "sort": "newest", "min_score": 0.0})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert hits and all("olympus" in (h["camera"] or "").lower() for h in hits)
    dates = [h["taken_at"] for h in hits if h["taken_at"]]
    assert dates == sorted(dates, reverse=True)


def test_bad_terms_are_422_with_a_message(client, archive):
    photos, _, _ = archive
    cases = [
        ({"terms": []}, "terms"),
        ({"terms": [{}]}, "one of text, image_id or image"),
        ({"terms": [{"text": "a", "image_id": 1}]}, "extra"),
        ({"terms": [{"text": "a dog", "weight": 0}]}, "must not be 0"),
        ({"terms": [{"text": "a dog", "weight": MAX_TERM_WEIGHT + 1}]}, "less than or equal"),
        ({"terms": [{"text": "   "}]}, "text"),
        ({"terms": [{"text": f"t{i}"} for i in range(MAX_TERMS + 1)]}, "at most"),
        ({"terms": [{"text": "a dog", "weight": -1}]}, "positive weight"),
        ({"terms": [{"text": "a dog"}, {"text": "a dog", "weight": -1}]}, "cancel out"),
        ({"terms": [{"text": "a dog"}, {"image_id": 99999}]}, "no indexed photo with id 99999"),
        ({"terms": [{"text": "a dog"}, {"image": "bm90IGEgcGhvdG8="}]}, "term 2"),
        ({"terms": [{"text": "a dog"}, {"image": "%%%"}]}, "image"),
        ({"terms": [{"text": "a dog"}], "rerank": 1}, "rerank"),
    ]
    for body, words in cases:
        assert_error(client.post(URL, json=body), 422, words)


def test_uploads_in_the_body_share_the_upload_limit(archive):
    photos, index, _ = archive
    from fastapi.testclient import TestClient

    small = photos / "grand_canyon_3.jpg"
    size = small.stat().st_size
    tight = ServerSettings(index_dir=index, limits=Limits(max_upload_bytes=size + 1000, max_upload_pixels=50_000_000))
    with TestClient(create_app(tight, ui=False), base_url="http://127.0.0.1") as c:
        one = {"terms": [{"image": b64(small)}]}
        assert c.post(URL, json=one).status_code == 200
        two = {"terms": [{"image": b64(small)}, {"image": b64(small), "weight": 0.5}]}
        assert_error(c.post(URL, json=two), 413, "larger than")


def test_openapi_states_the_composed_body(client):
    spec = client.get("/openapi.json").json()
    assert "post" in spec["paths"][URL]
    schemas = spec["components"]["schemas"]
    body = schemas["ComposedBody"]["properties"]["terms"]
    assert body["maxItems"] == MAX_TERMS and body["minItems"] == 1
    weight = schemas["TextTermIn"]["properties"]["weight"]
    assert weight["maximum"] == MAX_TERM_WEIGHT and weight["minimum"] == -MAX_TERM_WEIGHT
    assert {"TextTermIn", "IdTermIn", "PhotoTermIn"} <= set(schemas)


def test_python_client_composed(live_server, archive):
    photos, index, _ = archive
    with Client(live_server, token=TOKEN) as fl:
        terms = (QueryTerm(text="a table", weight=-1.0), QueryTerm(image=photos / "skagen.jpg", weight=0.5))
        got = fl.search("people", k=5, terms=terms)
        # the client uploads the photo's bytes: the engine gets the photo as the server decodes an upload
        limits = Limits()
        upload = decode_upload((photos / "skagen.jpg").read_bytes(), limits.max_upload_bytes, limits.max_upload_pixels)
        as_uploaded = (terms[0], QueryTerm(image=upload, weight=0.5))
        with Engine.open(index) as eng:
            expected = eng.search(SearchRequest(query="people", k=5, terms=as_uploaded))
            skagen = eng.get_image(photos / "skagen.jpg").id
        assert [h.id for h in got] == [h.id for h in expected]
        by_id = fl.search(None, k=3, terms=(QueryTerm(image=skagen),))
        assert by_id[0].id == skagen
        with pytest.raises(ApiError) as err:
            fl.search("people", terms=(QueryTerm(image=99999),))
        assert err.value.status == 422 and "99999" in err.value.message
