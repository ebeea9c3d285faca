"""Engine API: encoder identity checks, filters via both FAISS paths, query validation
(those answered from SQL on both metadata back ends: SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from frozenlens.engine import Engine
from frozenlens.engine import search as engine_mod
from frozenlens.errors import EncoderMismatchError, IndexNotFoundError, QueryError, UnknownEncoderError
from frozenlens.models.lite import LiteEncoder
from frozenlens.types import SearchFilters


def build_kpa_index(root, testdata, encoder, database_url=None):
    shutil.copytree(testdata / "kphotoalbum", root / "photos")
    eng = Engine.open(root / "index", encoder=encoder, create=True, database_url=database_url)
    eng.index([root / "photos"], captions=root / "photos" / "captions.jsonl")
    eng.close()
    return root


@pytest.fixture(scope="module")
def kpa_index(tmp_path_factory, testdata, lite_encoder):
    return build_kpa_index(tmp_path_factory.mktemp("api"), testdata, lite_encoder)


@pytest.fixture(scope="module")
def db_index(request, module_db_url, tmp_path_factory, testdata, lite_encoder):
    """The same index with its metadata in SQLite (``kpa_index`` itself) and in PostgreSQL:
    for the tests whose answers come from SQL (filters, counts)."""
    if module_db_url is None:
        return request.getfixturevalue("kpa_index")
    return build_kpa_index(tmp_path_factory.mktemp("api-pg"), testdata, lite_encoder, module_db_url)


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no FrozenLens index"):
        Engine.open(tmp_path / "nothing")


def test_other_encoder_is_refused_naming_both(kpa_index, model_cache):
    with pytest.raises(EncoderMismatchError) as exc:
        Engine.open(kpa_index / "index", encoder="openclip:ViT-B-32")
    assert "lite v3" in str(exc.value) and "openclip:ViT-B-32" in str(exc.value)
    other = LiteEncoder(cache_dir=model_cache, top_t=5)  # different ConSE settings → different vectors
    with pytest.raises(EncoderMismatchError) as exc:
        Engine.open(kpa_index / "index", encoder=other)
    assert "lite v3 " in str(exc.value) and other.identity.version in str(exc.value)


def test_unknown_encoder_for_new_index(tmp_path):
    with pytest.raises(UnknownEncoderError, match=r"known encoders: flame:, lite, openclip:"):
        Engine.open(tmp_path / "new", encoder="no-such-model", create=True)


def test_filters_give_same_results_with_selector_and_over_fetch(db_index, lite_encoder, monkeypatch):
    eng = Engine.open(db_index / "index", encoder=lite_encoder)
    cases = [
        SearchFilters(camera="olympus"),
        SearchFilters(after=dt.date(2005, 1, 1), before=dt.date(2005, 12, 31)),
        SearchFilters(under=str(db_index / "photos"), min_width=700),
    ]
    selector = [[h.id for h in eng.search("people at the sea", k=5, filters=f)] for f in cases]
    visual_sel = [[h.id for h in eng.similar(db_index / "photos" / "pool.jpg", k=4, filters=f)] for f in cases]
    monkeypatch.setattr(engine_mod, "SELECTOR_LIMIT", 0)  # force the over-fetch path
    overfetch = [[h.id for h in eng.search("people at the sea", k=5, filters=f)] for f in cases]
    visual_of = [[h.id for h in eng.similar(db_index / "photos" / "pool.jpg", k=4, filters=f)] for f in cases]
    assert selector == overfetch and visual_sel == visual_of
    # and every hit satisfies its filter, with k results whenever k matches exist
    olympus = eng.search("people", k=20, filters=cases[0])
    assert len(olympus) == 8 and all("OLYMPUS" in h.camera for h in olympus)
    eng.close()


def test_min_score_and_k_validation(db_index, lite_encoder):
    eng = Engine.open(db_index / "index", encoder=lite_encoder)
    hits = eng.search("a rabbit", k=24)
    assert len(hits) == 24 and all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    cut = hits[5].score
    assert [h.id for h in eng.search("a rabbit", k=24, min_score=cut)] == [h.id for h in hits if h.score >= cut]
    for bad in (0, -1, 100_000, 2.5, True):
        with pytest.raises(QueryError):
            eng.search("a rabbit", k=bad)
    with pytest.raises(QueryError, match="empty"):
        eng.search("   ")
    with pytest.raises(QueryError, match="query image"):
        eng.search(b"definitely not an image")
    eng.close()


def test_stats_and_explain(db_index, lite_encoder):
    eng = Engine.open(db_index / "index", encoder=lite_encoder)
    stats = eng.stats()
    for key in ("images", "captions", "failed", "duplicates", "encoder", "factory", "vectors", "schema_version"):
        assert key in stats
    assert stats["encoder"]["name"] == "lite" and stats["factory"] == "auto"
    assert stats["index_types"] == {"semantic": "SQfp16", "visual": "SQfp16", "caption": "Flat"}
    labels = eng.explain(db_index / "photos" / "pool.jpg")
    assert labels[0][0] == "pool table" and 0 < labels[0][1] <= 1
    assert all(a[1] >= b[1] for a, b in zip(labels, labels[1:]))
    eng.close()


def test_hnsw_and_default_auto_indexes_answer_like_flat(tmp_path, kpa_index, lite_encoder):
    engines = {}
    for factory in ("Flat", "HNSW32", None):
        engines[factory] = Engine.open(tmp_path / str(factory), encoder=lite_encoder, create=True, factory=factory)
        engines[factory].index([kpa_index / "photos"])
        assert engines[factory].stats()["factory"] == (factory or "auto")
    # the default (auto) built the exact tier: SQfp16 is lossless for the float16 vectors the index stores
    assert engines[None].stats().index_types["semantic"] == "SQfp16"
    for q in ("a dog", "une table de billard", "ein Flugzeug", "море"):
        flat = [(h.path, round(h.score, 4)) for h in engines["Flat"].search(q, k=5)]
        hnsw = [(h.path, round(h.score, 4)) for h in engines["HNSW32"].search(q, k=5)]
        auto = [(h.path, round(h.score, 4)) for h in engines[None].search(q, k=5)]
        assert flat == hnsw == auto  # 24 vectors: the graph search is exhaustive
    for eng in engines.values():
        eng.close()


def test_weights_option_is_recorded_and_reused(tmp_path, testdata, capsys):
    from frozenlens import cli
    from frozenlens.models.efficientnet_lite import default_weights_path

    weights = tmp_path / "my-lite.pth"
    shutil.copyfile(default_weights_path(), weights)
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(testdata / "photos" / "coffee.png", lib / "coffee.png")
    index = str(tmp_path / "index")
    assert cli.main(["index", str(lib), "--index", index, "--weights", str(weights), "--no-progress"]) == 0
    with Engine.open(index) as eng:
        assert json.loads(eng.store.get_meta()["encoder_options"]) == {"weights": str(weights)}
    capsys.readouterr()
    assert cli.main(["search", "une tasse de café", "-k", "1", "--index", index]) == 0
    assert "coffee.png" in capsys.readouterr().out
    weights.unlink()  # the recorded file is what later commands load
    assert cli.main(["search", "une tasse de café", "-k", "1", "--index", index]) == 1
    err = capsys.readouterr().err
    assert str(weights) in err and len(err.strip().splitlines()) == 1
