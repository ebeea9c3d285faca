"""``--index-type auto`` on a real folder: with tier sizes forced small, an indexing run crosses
from exact into HNSW, rebuilds from the stored vectors, tunes efSearch to the target recall,
records it, and ``frozenlens info --recall`` reports it; a reopened index searches with it."""

from __future__ import annotations

import json
import shutil

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.engine.index_type import tunings_of
from frozenlens.retriever import AutoPolicy


def test_auto_index_crosses_a_tier_and_reports_recall(tmp_path, testdata, capsys):
    photos, index = tmp_path / "photos", tmp_path / "index"
    shutil.copytree(testdata / "kphotoalbum", photos)
    jpegs = sorted(photos.glob("*.jpg"))
    first = tmp_path / "first"
    first.mkdir()
    for p in jpegs[:8]:
        shutil.copy(p, first / p.name)
    policy = AutoPolicy(1 << 30, target_recall=0.95, exact_max=10, hnsw_max=10_000, queries=16)
    Engine.open(index, create=True, factory="auto", index_policy=policy).close()

    assert cli.main(["index", str(first), "--index", str(index), "--no-progress"]) == 0
    with Engine.open(index) as engine:
        assert engine.spaces["semantic"].factory == "SQfp16"  # 8 <= exact_max: exact, nothing tuned
        assert tunings_of(engine.store.get_meta()) == {}

    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress"]) == 0
    with Engine.open(index) as engine:
        n = len(engine.spaces["semantic"])
        assert n > 10
        tuned = tunings_of(engine.store.get_meta())
        for space in ("semantic", "visual"):
            vi = engine.spaces[space]
            assert vi.factory == "HNSW32" and len(vi) == n
            assert tuned[space]["factory"] == "HNSW32" and tuned[space]["knob"] == "ef_search"
            assert tuned[space]["reached"] and vi.ef_search == tuned[space]["value"]  # reopened with it
        hits = engine.search("a dog", k=5)
        assert len(hits) == 5

    capsys.readouterr()
    assert cli.main(["info", "--recall", "--json", "--index", str(index)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["factory"] == "auto"
    for space in ("semantic", "visual"):
        r = out["recall"][space]
        assert r["factory"] == "HNSW32" and r["knob"] == "ef_search" and r["n"] == n
        assert 0.95 <= r["recall"] <= 1.0 and r["queries"] == 16 and r["recall_low"] <= r["recall"]
    assert cli.main(["info", "--recall", "--index", str(index)]) == 0
    text = capsys.readouterr().out
    assert "recall:     semantic: recall@10" in text and "HNSW32, ef_search=" in text and "leave-one-out" in text


def test_info_recall_on_an_exact_index_is_one(tmp_path, testdata, capsys):
    photos, index = tmp_path / "photos", tmp_path / "index"
    shutil.copytree(testdata / "kphotoalbum", photos)
    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress", "--index-type", "flat"]) == 0
    capsys.readouterr()
    assert cli.main(["info", "--recall", "--json", "--index", str(index)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recall"]["semantic"]["recall"] == 1.0 and out["recall"]["semantic"]["knob"] is None
