"""``frozenlens serve`` warms up before it says it is ready: the first query builds nothing lazily.

Real index (real photos, the real ``lite`` encoder), a real FastAPI app; a
fresh encoder is created by the server (the registry is not patched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from frozenlens.engine import Engine
from frozenlens.server.app import create_app
from frozenlens.server.settings import ServerSettings
from frozenlens.server.state import ServerState


@pytest.fixture(scope="module")
def index(tmp_path_factory, testdata: Path, lite_encoder) -> Path:
    root = tmp_path_factory.mktemp("warm")
    shutil.copytree(testdata / "photos", root / "photos")
    with Engine.open(root / "index", create=True, encoder=lite_encoder) as engine:
        engine.index([root / "photos"])
    return root / "index"


def _loaded(state: ServerState) -> dict[str, object]:
    """What is in memory now: identities of the lazily built parts, and the build counter."""
    with state.engine() as engine:
        enc = engine.encoder
        return {"encoder": id(enc), "spaces": id(engine._spaces), "text": id(enc._text_model),
                "image_builds": enc.image_tower_builds, "text_loaded": enc.text_tower_loaded,
                "filter_columns": id(engine.store._columns._columns)}


def test_first_queries_after_warm_build_nothing(index: Path, model_cache: Path, testdata: Path, monkeypatch) -> None:
    monkeypatch.setenv("FROZENLENS_CACHE", str(model_cache))  # the class-embedding cache the fixture filled
    state = ServerState(ServerSettings(index_dir=index))
    app = create_app(state.settings, ui=False, state=state)
    state.warm()
    warm = _loaded(state)
    assert warm["text_loaded"] is True and warm["image_builds"] == 1
    with state.engine() as engine:
        assert engine.store._columns._columns is not None  # filtered searches are answered from memory
    with TestClient(app, base_url="http://127.0.0.1") as c:
        r = c.get("/api/v1/search", params={"q": "a cat", "k": 3})
        assert r.status_code == 200, r.text
        assert Path(r.json()["hits"][0]["path"]).name == "chelsea.png"
        with (testdata / "photos" / "coffee.png").open("rb") as f:
            r = c.post("/api/v1/search/image", files={"file": ("coffee.png", f, "image/png")}, data={"k": "1"})
        assert r.status_code == 200, r.text
        assert Path(r.json()["hits"][0]["path"]).name == "coffee.png"
        r = c.get("/api/v1/search", params={"q": "a cat", "k": 3, "camera": "canon"})
        assert r.status_code == 200, r.text
        assert _loaded(state) == warm  # the same objects: nothing was built or reloaded by the first queries


def test_without_warm_the_first_query_builds_the_text_side(index: Path, model_cache: Path, monkeypatch) -> None:
    """The control: the flags above do move when a query has to load things itself."""
    monkeypatch.setenv("FROZENLENS_CACHE", str(model_cache))
    state = ServerState(ServerSettings(index_dir=index))
    app = create_app(state.settings, ui=False, state=state)
    assert _loaded(state)["text_loaded"] is False
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/v1/search", params={"q": "a cat", "k": 1}).status_code == 200
        after = _loaded(state)
    assert after["text_loaded"] is True and after["image_builds"] == 0  # a text query builds no image side


def test_warm_without_an_index_is_a_no_op(tmp_path: Path) -> None:
    state = ServerState(ServerSettings(index_dir=tmp_path / "none"))
    state.warm()
    assert not state.has_index()
