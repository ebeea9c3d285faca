"""Near-duplicate groups on real photos: variants group with their original, different photos of
the same subject do not, byte-identical copies join their original's group, search results collapse
to one hit per group, and the grouping runs on the index's own batched k-NN search."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.engine import Engine, SearchRequest, neardup
from frozenlens.errors import QueryError
from frozenlens.request import DUPLICATE_THRESHOLD, check_threshold
from frozenlens.retriever import VectorIndex
from frozenlens.types import SearchFilters
from tests.neardup_set import VARIANTS, _variant

#: real photos: two different photos of one subject (donna, donna_2), two of another, one sample photo
ORIGINALS = ("donna", "donna_2", "grand_canyon_1", "grand_canyon_2", "chelsea")
WHEN = 1_600_000_000


@pytest.fixture(scope="module")
def dup_index(tmp_path_factory, testdata, shared_lite):
    from PIL import Image, ImageOps

    root = tmp_path_factory.mktemp("neardup")
    photos = root / "photos"
    photos.mkdir()
    labels: dict[str, str] = {}
    when = WHEN
    for name in ORIGINALS:
        src = next(p for p in [testdata / "kphotoalbum" / f"{name}.jpg", testdata / "photos" / f"{name}.png"]
                   if p.exists())
        with Image.open(src) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        img.save(photos / f"{name}.jpg", quality=92)
        os.utime(photos / f"{name}.jpg", (when, when))  # the original is the oldest file of its group
        labels[f"{name}.jpg"] = name
        for kind in VARIANTS:
            path = photos / f"{name}__{kind}.jpg"
            _variant(img, kind).save(path, quality=25 if kind == "jpeg25" else 90)
            os.utime(path, (when + 3 * 86400, when + 3 * 86400))  # dated (mtime) three days later
            labels[path.name] = name
    shutil.copy(photos / "chelsea.jpg", photos / "chelsea_copy.jpg")  # byte-identical: a DUPLICATE row
    labels["chelsea_copy.jpg"] = "chelsea"
    index = root / "index"
    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress"]) == 0
    engine = Engine.open(index)
    yield engine, photos, index, labels
    engine.close()


def _names(engine: Engine, ids) -> list[str]:
    records = engine.store.images(list(ids))
    return [Path(records[i].path).name for i in ids]


def test_variants_group_with_their_original_and_same_subject_photos_do_not(dup_index):
    engine, _, _, labels = dup_index
    groups = engine.near_duplicates()
    assert len(groups) == len(ORIGINALS)
    for g in groups:
        names = _names(engine, [*g.members, *(c for c, _ in g.copies)])
        assert len({labels[n] for n in names}) == 1, names  # nothing from another photo, same subject or not
        label = labels[names[0]]
        assert sorted(names) == sorted(n for n, lab in labels.items() if lab == label)  # every variant found
        assert g.similarity >= DUPLICATE_THRESHOLD
        assert _names(engine, [g.id]) == [f"{label}.jpg"]  # best member: most pixels, then oldest
        assert g.id == g.members[0]
    chelsea = next(g for g in groups if _names(engine, [g.id]) == ["chelsea.jpg"])
    assert chelsea.size == 1 + len(VARIANTS) + 1
    assert _names(engine, [c for c, _ in chelsea.copies]) == ["chelsea_copy.jpg"]
    assert [o for _, o in chelsea.copies] == [chelsea.id]


def test_a_strict_threshold_splits_groups_and_every_pair_stays_above_it(dup_index):
    engine, *_ = dup_index
    strict = engine.near_duplicates(0.9)
    assert sum(g.size for g in strict) < sum(g.size for g in engine.near_duplicates())
    for g in strict:  # complete link: every pair of members is above the threshold
        v = engine.store.vectors("visual", list(g.members), engine.identity.visual_dim)
        assert (v @ v.T).min() >= 0.9 - 1e-4
    with pytest.raises(QueryError):
        engine.near_duplicates(1.5)
    with pytest.raises(QueryError):
        check_threshold(0)


def test_collapse_returns_one_hit_per_group_with_its_size(dup_index):
    engine, photos, *_ = dup_index
    plain = engine.search(SearchRequest(k=40), image=photos / "chelsea.jpg")
    assert {_label(h.path) for h in plain[:1 + len(VARIANTS)]} == {"chelsea"}  # without collapse: one photo
    hits = engine.search(SearchRequest(k=40, collapse=True), image=photos / "chelsea.jpg")
    assert len(hits) == len(ORIGINALS)  # each group once
    assert [_label(h.path) for h in hits][0] == "chelsea"
    assert Path(hits[0].path).name == "chelsea.jpg" and hits[0].group_size == 1 + len(VARIANTS) + 1
    assert all(h.group_size == 1 + len(VARIANTS) for h in hits[1:])
    assert len({h.group_id for h in hits}) == len(hits)
    assert hits[0].to_dict()["group_size"] == hits[0].group_size
    # a filter that drops the best member (the original, dated 3 days earlier): the best of the rest is shown
    after = dt.date.fromtimestamp(WHEN + 2 * 86400)
    rest = engine.search(SearchRequest(k=40, collapse=True, filters=SearchFilters(after=after)),
                         image=photos / "chelsea.jpg")
    assert len(rest) == len(ORIGINALS) and "__" in Path(rest[0].path).name
    assert (rest[0].width, rest[0].height) == (hits[0].width, hits[0].height)  # a full-size variant (flip, jpeg25)
    assert rest[0].group_size == hits[0].group_size and rest[0].group_id == hits[0].group_id
    with pytest.raises(QueryError):
        SearchRequest(collapse="yes")  # type: ignore[arg-type]


def _label(path: str) -> str:
    return Path(path).stem.split("__")[0].removesuffix("_copy")


def test_cli_duplicates_and_search_collapse(dup_index, capsys):
    _, photos, index, _ = dup_index
    assert cli.main(["duplicates", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert f"{len(ORIGINALS)} groups" in out and "byte-identical copy" in out and "chelsea_copy.jpg" in out
    assert cli.main(["duplicates", "--index", str(index), "--json", "--threshold", "0.6"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(ORIGINALS) and rows[0]["size"] == 1 + len(VARIANTS) + 1
    assert rows[0]["copies"][0]["path"].endswith("chelsea_copy.jpg")
    assert cli.main(["duplicates", "--index", str(index), "--threshold", "2"]) == 1
    assert "threshold" in capsys.readouterr().err
    assert cli.main(["search", "--image", str(photos / "chelsea.jpg"), "--index", str(index), "-k", "3",
                     "--collapse"]) == 0
    out = capsys.readouterr().out
    assert f"[group of {1 + len(VARIANTS) + 1}]" in out and out.count("[group of") == 3


class _CountingIndex(VectorIndex):
    """A real FAISS index that counts the searches made on it (a spy, not a fake)."""

    calls: list[int]

    def search(self, queries, k):
        self.calls.append(int(np.atleast_2d(queries).shape[0]))
        return super().search(queries, k)


def test_grouping_scales_through_batched_knn_not_all_pairs():
    rng = np.random.default_rng(0)
    n_groups, per, dim = 5000, 4, 64  # 20,000 photos
    centres = rng.normal(size=(n_groups, dim)).astype(np.float32)
    x = np.repeat(centres, per, axis=0) + 0.08 * rng.normal(size=(n_groups * per, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(x.shape[0], dtype=np.int64) + 1
    index = VectorIndex.create(dim, "Flat")
    index.__class__ = _CountingIndex
    index.calls = []
    index.add(ids, x)
    start = time.perf_counter()
    a, b, s = neardup.candidate_pairs(index, ids, x, 0.9)
    groups = neardup.complete_link(a, b, s, lambda group: x[np.asarray(group) - 1], 0.9)
    seconds = time.perf_counter() - start
    assert index.calls == [min(neardup.BATCH, ids.size - i) for i in range(0, ids.size, neardup.BATCH)]
    assert len(index.calls) == math.ceil(ids.size / neardup.BATCH)
    found = sorted(sorted((m - 1) // per for m in g) for g, _ in groups)
    assert found == [[c] * per for c in range(n_groups)]  # every cluster exactly, nothing chained
    assert seconds < 60


def test_rest_api_lists_groups_and_collapses_results(dup_index):
    pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
    from fastapi.testclient import TestClient

    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    engine, photos, index, _ = dup_index
    with TestClient(create_app(ServerSettings(index_dir=index), ui=False), base_url="http://127.0.0.1") as c:
        r = c.get("/api/v1/duplicates")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["threshold"] == DUPLICATE_THRESHOLD and len(body["groups"]) == len(ORIGINALS)
        first = body["groups"][0]
        assert first["size"] == 1 + len(VARIANTS) + 1 and first["members"][0]["path"].endswith("chelsea.jpg")
        assert first["copies"][0]["copy_of"] == first["id"] == first["members"][0]["id"]
        assert c.get(first["members"][1]["thumbnail_url"]).status_code == 200
        strict = c.get("/api/v1/duplicates", params={"threshold": 0.9}).json()
        assert sum(g["size"] for g in strict["groups"]) < sum(g["size"] for g in body["groups"])
        err = c.get("/api/v1/duplicates", params={"threshold": 2})
        assert err.status_code == 422 and "threshold" in err.json()["error"]["message"]  # the schema states (0, 1]
        with open(photos / "chelsea.jpg", "rb") as f:
            up = c.post("/api/v1/search/image", files={"file": ("q.jpg", f.read())},
                        data={"k": "40", "collapse": "true"}).json()["hits"]
        assert len(up) == len(ORIGINALS) and up[0]["group_size"] == first["size"] and up[0]["group_id"] == first["id"]
        more = c.get(f"/api/v1/images/{first['id']}/similar", params={"k": 40, "collapse": True}).json()["hits"]
        assert len(more) == len(ORIGINALS)  # its own group shown once (by another member), and the others
        words = c.post("/api/v1/search", json={"q": "a cat", "k": 40, "collapse": True}).json()["hits"]
        assert len({h["group_id"] for h in words}) == len(words) == len(ORIGINALS)
        assert len(c.post("/api/v1/search", json={"q": "a cat", "k": 40}).json()["hits"]) == len(photos_in(engine))
        spec = c.get("/openapi.json").json()
        assert "/api/v1/duplicates" in spec["paths"]
        assert "collapse" in spec["components"]["schemas"]["SearchBody"]["properties"]
        assert "group_size" in spec["components"]["schemas"]["HitOut"]["properties"]


def photos_in(engine: Engine) -> list[int]:
    return engine.sync()["visual"].ids().tolist()


def test_python_client_lists_groups_and_collapses(dup_index):
    pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
    import socket
    import threading

    import uvicorn

    from frozenlens.client import Client
    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    engine, photos, index, _ = dup_index
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(ServerSettings(index_dir=index), ui=False), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with Client(f"http://127.0.0.1:{sock.getsockname()[1]}") as fl:  # the same answers as the engine
            assert [g["id"] for g in fl.near_duplicates()] == [g.id for g in engine.near_duplicates()]
            assert len(fl.near_duplicates(0.9)) == len(engine.near_duplicates(0.9))
            mine = fl.search(photos / "chelsea.jpg", k=40, collapse=True)
            theirs = engine.search(SearchRequest(k=40, collapse=True), image=photos / "chelsea.jpg")
            assert [(h.id, h.group_size, h.group_id) for h in mine] == [(h.id, h.group_size, h.group_id) for h in theirs]
            assert len(fl.search("a cat", k=40, collapse=True)) == len(ORIGINALS)
            assert len(fl.similar(theirs[0].id, k=40, collapse=True)) == len(ORIGINALS)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
