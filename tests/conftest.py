"""Shared fixtures: real photos, the real packaged `lite` encoder, temp indexes,
and both metadata back ends (SQLite, a real PostgreSQL server: see tests/pg.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# the PostgreSQL server and the back-end fixtures (db_url: sqlite | postgresql)
from tests.pg import db_url, module_db_url, pg_server, pg_url, store_url  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


def testdata_dir() -> Path:
    return Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Real photos fetched by `scripts/fetch_test_data.py` (run by `make test`)."""
    d = testdata_dir()
    if not (d / "kphotoalbum" / "index.xml").exists() or not (d / "photos").is_dir():
        pytest.fail(f"test photos missing in {d}: run `python scripts/fetch_test_data.py` (or `make test`)")
    return d


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def lite_encoder(model_cache):
    """The real offline default encoder (EfficientNet-Lite0 + USE-m3 + ConSE), loaded once."""
    from frozenlens.models import create_encoder

    return create_encoder("lite", cache_dir=model_cache)


@pytest.fixture(scope="module")
def shared_lite(lite_encoder):
    """CLI commands and engines in this process reuse the one loaded real encoder."""
    from frozenlens.models import registry

    original = registry._NAMED["lite"]
    registry.register_encoder("lite", lambda **_: lite_encoder, replace=True)
    yield lite_encoder
    registry.register_encoder("lite", original, replace=True)


def write_noise_jpegs(folder: Path, n: int, *, seed: int = 0, size: tuple[int, int] = (320, 240)) -> list[Path]:
    """``n`` distinct small JPEGs (content irrelevant: crash/incremental tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, size=(3,), dtype=np.uint8)
        arr = np.clip(base + rng.normal(0, 40, size=(size[1], size[0], 3)), 0, 255).astype(np.uint8)
        path = folder / f"img_{i:04d}.jpg"
        Image.fromarray(arr).save(path, quality=85)
        out.append(path)
    return out


def index_kphotoalbum(root: Path, testdata: Path, database_url: str | None = None) -> tuple[Path, Path]:
    """Copy the KPhotoAlbum demo archive to ``root/photos`` and index it with its captions
    into ``root/index`` through the CLI (in-process) → (photos, index). ``database_url``:
    the metadata database (default: the index's own SQLite file)."""
    import shutil

    from frozenlens import cli

    photos, index = root / "photos", root / "index"
    shutil.copytree(testdata / "kphotoalbum", photos)
    db = ["--database-url", database_url] if database_url else []
    rc = cli.main(["index", str(photos), "--index", str(index), "--captions", str(photos / "captions.jsonl"),
                   "--no-progress", *db])
    assert rc == 0
    return photos, index
