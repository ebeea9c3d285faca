"""Composed queries through the engine and the CLI on the real KPhotoAlbum archive
with the real `lite` encoder: text-only, photo-only and mixed queries with filters,
date sort and the reranker; the documented combination checked against the stored
vectors; typed errors for bad terms."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.engine import Engine, fuse_scores
from frozenlens.errors import QueryTermError, RerankerError
from frozenlens.request import MAX_TERMS, QueryTerm, SearchRequest
from frozenlens.types import SearchFilters
from tests.conftest import index_kphotoalbum
from tests.integration.test_rerank_search import random_head


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    return index_kphotoalbum(tmp_path_factory.mktemp("compose"), testdata)


@pytest.fixture(scope="module")
def engine(archive):
    _, index = archive
    with Engine.open(index) as eng:
        yield eng


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_text_terms_score_with_the_normalised_weighted_sum(engine):
    req = SearchRequest(query="a dog", k=8, terms=(QueryTerm(text="snow", weight=0.5),
                                                   QueryTerm(text="un lapin", weight=-1.0)))
    hits = engine.search(req)
    assert len(hits) == 8 and not any(h.reranked for h in hits)
    enc = engine.encoder
    q = unit(enc.encode_texts(["a dog"])[0] + 0.5 * enc.encode_texts(["snow"])[0] - enc.encode_texts(["un lapin"])[0])
    sem = engine.store.vectors("semantic", [h.id for h in hits], 512)
    np.testing.assert_allclose([h.image_score for h in hits], sem @ q, atol=1e-4)
    s_cap = np.array([np.nan if h.caption_score is None else h.caption_score for h in hits])
    np.testing.assert_allclose([h.score for h in hits], fuse_scores(sem @ q, s_cap, "max"), atol=1e-4)
    # one extra term equal to the query changes nothing: normalise(2q) = q
    same = engine.search(SearchRequest(query="a dog", k=8, terms=(QueryTerm(text="a dog"),)))
    plain = engine.search("a dog", k=8)
    assert [h.id for h in same] == [h.id for h in plain]
    np.testing.assert_allclose([h.score for h in same], [h.score for h in plain], atol=1e-5)


def test_mixed_terms_interpolate_text_and_visual_parts(engine, archive):
    photos, _ = archive
    pool = engine.get_image(photos / "pool.jpg")
    req = SearchRequest(query="snow", k=10, terms=(QueryTerm(image=pool.id, weight=0.5),))
    hits = engine.search(req)
    ids = [h.id for h in hits]
    sem = engine.store.vectors("semantic", ids, 512)
    vis = engine.store.vectors("visual", ids, 1280)
    s_pool, v_pool = engine.store.vectors("semantic", [pool.id], 512)[0], engine.store.vectors("visual", [pool.id], 1280)[0]
    q_s = unit(engine.encoder.encode_texts(["snow"])[0] + 0.5 * s_pool)
    q_v = unit(v_pool)
    beta = 0.5 / 1.5
    s_cap = np.array([np.nan if h.caption_score is None else h.caption_score for h in hits])
    expected = (1 - beta) * fuse_scores((sem @ q_s).astype(np.float64), s_cap, "max") + beta * (vis @ q_v)
    np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-4)
    assert hits[0].id == pool.id
    # the same photo as a file or as uploaded bytes gives the same ranking
    by_file = engine.search(SearchRequest(query="snow", k=10, terms=(QueryTerm(image=photos / "pool.jpg", weight=0.5),)))
    by_bytes = engine.search(SearchRequest(query="snow", k=10, terms=(
        QueryTerm(image=(photos / "pool.jpg").read_bytes(), weight=0.5),)))
    assert [(h.id, h.score) for h in by_file] == [(h.id, h.score) for h in by_bytes]  # one decode, one vector
    # the indexed photo's vectors are stored as float16: the same hits, scores within that rounding
    # (near-ties may swap places)
    stored = {h.id: h.score for h in hits}
    assert {h.id for h in by_file} == set(stored)
    np.testing.assert_allclose([h.score for h in by_file], [stored[h.id] for h in by_file], atol=2e-3)


def test_one_photo_term_is_a_search_by_example(engine, archive):
    photos, _ = archive
    example = engine.search(photos / "grand_canyon_3.jpg", k=6)
    composed = engine.search(SearchRequest(k=6, terms=(QueryTerm(image=photos / "grand_canyon_3.jpg"),)))
    assert [h.id for h in composed] == [h.id for h in example]
    np.testing.assert_allclose([h.score for h in composed], [h.score for h in example], atol=1e-5)
    # a request with terms also takes the example image as a term of weight 1
    with_image = engine.search(SearchRequest(k=6, terms=(QueryTerm(text="snow", weight=-0.5),)),
                               image=photos / "grand_canyon_3.jpg")
    assert with_image[0].id == example[0].id and [h.id for h in with_image] != [h.id for h in example]


@pytest.mark.parametrize("kind", ["text", "photo", "mixed"])
def test_filters_and_date_sort_apply_to_every_kind(engine, archive, kind):
    photos, _ = archive
    terms = {"text": (QueryTerm(text="a table", weight=-0.5),),
             "photo": (QueryTerm(image=photos / "pool.jpg"), QueryTerm(image=photos / "snow.jpg", weight=-0.5)),
             "mixed": (QueryTerm(image=photos / "pool.jpg", weight=0.5),)}[kind]
    query = None if kind == "photo" else "people"
    everything = engine.search(SearchRequest(query=query, k=30, terms=terms))
    olympus = engine.search(SearchRequest(query=query, k=30, terms=terms, filters=SearchFilters(camera="olympus")))
    assert olympus and all("olympus" in (h.camera or "").lower() for h in olympus)
    assert len(olympus) < len(everything)
    newest = engine.search(SearchRequest(query=query, k=30, terms=terms, sort="newest", min_score=-1.0))
    dates = [h.taken_at for h in newest if h.taken_at is not None]
    assert len(dates) >= 5 and dates == sorted(dates, reverse=True)
    cut = engine.search(SearchRequest(query=query, k=30, terms=terms, min_score=everything[3].score))
    assert [h.id for h in cut] == [h.id for h in everything[:len(cut)]] and len(cut) >= 4


def test_the_reranker_reads_the_positive_text_terms(archive, shared_lite, tmp_path):
    photos, index = archive
    work = tmp_path / "index"
    shutil.copytree(index, work)
    with Engine.open(work) as eng:
        photo_only = SearchRequest(k=5, terms=(QueryTerm(image=photos / "pool.jpg"),), rerank=True)
        mixed = SearchRequest(query="a dog", k=8, terms=(QueryTerm(text="snow", weight=-1.0),
                                                         QueryTerm(image=photos / "pool.jpg", weight=0.25)))
        with pytest.raises(RerankerError, match="no reranker head"):
            eng.search(SearchRequest(query="a dog", k=5, terms=(QueryTerm(text="snow", weight=-1.0),), rerank=True))
        first_stage = eng.search(mixed)
        random_head(eng.identity).save(work)
        # one text term of weight 1 twice: exactly the head's score of a plain text search
        doubled = eng.search(SearchRequest(query="a dog", k=8, terms=(QueryTerm(text="a dog"),)))
        plain = eng.search("a dog", k=8)
        assert all(h.reranked for h in plain) and all(h.reranked for h in doubled)
        assert [h.id for h in doubled] == [h.id for h in plain]
        np.testing.assert_allclose([h.image_score for h in doubled], [h.image_score for h in plain], atol=1e-4)
        # photos only: never reranked, even with rerank=True
        assert not any(h.reranked for h in eng.search(photo_only))
        # mixed: the head's correction of "a dog" is added to the composed cosine; the subtraction stays
        reranked = eng.search(mixed)
        assert all(h.reranked for h in reranked)
        ids = [h.id for h in reranked]
        sem = eng.store.vectors("semantic", ids, 512).astype(np.float64)
        q_dog = eng.encoder.encode_texts(["a dog"])[0].astype(np.float64)
        head_dog = {h.id: h.image_score for h in eng.search("a dog", k=1000)}  # reranked: the head's score
        first = np.array([h.first_stage_image_score for h in reranked])
        by_id = {h.id: h for h in first_stage}
        checked = 0
        for h, f, s in zip(reranked, first, sem):
            if h.id in by_id:
                assert f == pytest.approx(by_id[h.id].image_score, abs=1e-4)
            assert h.image_score == pytest.approx(f + head_dog[h.id] - s @ q_dog, abs=1e-3)
            checked += h.id in by_id
        assert checked >= 4
        assert eng.search(SearchRequest(query="a dog", k=5, terms=mixed.terms, rerank=False))[0].reranked is False


def test_bad_terms_are_typed_errors(engine, archive):
    photos, _ = archive
    for bad in ({"text": "x", "weight": 0}, {"text": "x", "weight": 10.5}, {"text": "x", "weight": float("nan")},
                {"text": "x", "weight": True}, {"text": "   "}, {"text": "x", "image": 3}, {},
                {"image": -1}, {"image": "photo.jpg"}, {"image": b""}):
        with pytest.raises(QueryTermError):
            QueryTerm(**bad)
    with pytest.raises(QueryTermError, match=f"at most {MAX_TERMS} terms"):
        SearchRequest(query="a dog", terms=tuple(QueryTerm(text=f"t{i}") for i in range(MAX_TERMS)))
    with pytest.raises(QueryTermError, match="positive weight"):
        engine.search(SearchRequest(terms=(QueryTerm(text="a dog", weight=-1),)))
    with pytest.raises(QueryTermError, match="no indexed photo with id 99999"):
        engine.search(SearchRequest(query="a dog", terms=(QueryTerm(image=99999),)))
    with pytest.raises(QueryTermError, match="query image not found"):
        engine.search(SearchRequest(query="a dog", terms=(QueryTerm(image=photos / "nope.jpg"),)))
    with pytest.raises(QueryTermError, match="term 2"):
        engine.search(SearchRequest(query="a dog", terms=(QueryTerm(image=photos / "captions.jsonl"),)))
    with pytest.raises(QueryTermError, match="cancel out"):
        engine.search(SearchRequest(query="a dog", terms=(QueryTerm(text="a dog", weight=-1),)))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_composed_search(archive, capsys):
    photos, index = archive
    rc, out, err = run(capsys, "search", "people", "--add", "the sea", "--subtract", "a table",
                       "--add-image", f"{photos / 'skagen.jpg'}:0.5", "--index", str(index), "--json", "-k", "5")
    assert rc == 0, err
    hits = json.loads(out)
    with Engine.open(index) as eng:
        expected = eng.search(SearchRequest(query="people", k=5, terms=(
            QueryTerm(text="the sea"), QueryTerm(text="a table", weight=-1.0),
            QueryTerm(image=photos / "skagen.jpg", weight=0.5))))
        skagen = eng.get_image(photos / "skagen.jpg").id
    assert [h["id"] for h in hits] == [h.id for h in expected]
    # a photo by id, subtracted, and --image as a term of weight 1
    rc, out, err = run(capsys, "search", "--image", str(photos / "pool.jpg"), "--subtract-image", f"{skagen}:0.5",
                       "--index", str(index), "-k", "3", "--sort", "newest", "--camera", "olympus")
    assert rc == 0, err
    assert out.count("\n") >= 1 and "pool" in out
    rc, out, err = run(capsys, "search", "people", "--subtract", "a table", "--index", str(index), "-k", "2",
                       "--explain")
    assert rc == 0 and out.count("text part = max(image ") == 2 and "score = max" not in out, out
    for argv, message in ((["--add-image", str(photos / "nope.jpg")], "query image not found"),
                          (["--add-image", f"{photos / 'pool.jpg'}:0"], "non-zero"),
                          (["--add-image", "99999"], "no indexed photo with id 99999"),
                          (["--add", " "], "empty query")):
        rc, out, err = run(capsys, "search", "people", *argv, "--index", str(index))
        assert rc == 1 and message in err and "Traceback" not in err, (argv, err)
    rc, _, err = run(capsys, "search", "--subtract", "people", "--index", str(index))
    assert rc == 1 and "positive weight" in err
