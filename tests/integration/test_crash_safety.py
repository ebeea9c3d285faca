"""SIGKILL a real indexing subprocess at several points, rerun, verify consistency
(the kill test on both metadata back ends: SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from frozenlens.engine import Engine
from frozenlens.retriever import VectorIndex

from ..conftest import write_noise_jpegs

pytestmark = pytest.mark.slow

N_IMAGES = 120


QUERIES = {
    "rows": "SELECT count(*) FROM images",
    "indexed_without_vectors": (
        "SELECT count(*) FROM images WHERE status='indexed' AND id NOT IN (SELECT image_id FROM image_vectors)"
    ),
    "orphan_vectors": "SELECT count(*) FROM image_vectors WHERE image_id NOT IN (SELECT id FROM images)",
    "orphan_captions": "SELECT count(*) FROM captions WHERE image_id NOT IN (SELECT id FROM images)",
    "vectors_of_non_indexed": (
        "SELECT count(*) FROM image_vectors v JOIN images i ON i.id = v.image_id WHERE i.status != 'indexed'"
    ),
}


def db_counts(db: Path) -> dict[str, int]:
    if not db.exists():
        return {"rows": 0}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return {key: con.execute(sql).fetchone()[0] for key, sql in QUERIES.items()}
    except sqlite3.OperationalError:  # schema not created yet
        return {"rows": 0}
    finally:
        con.close()


class PgCounts:
    """``db_counts`` for an index whose metadata lives in PostgreSQL (read in autocommit)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")

    def __call__(self) -> dict[str, int]:
        from sqlalchemy import text
        from sqlalchemy.exc import ProgrammingError

        with self.engine.connect() as c:
            try:
                return {key: c.execute(text(sql)).scalar() for key, sql in QUERIES.items()}
            except ProgrammingError:  # schema not created yet
                return {"rows": 0}


def start_indexer(photos: Path, index: Path, manifest: Path, database_url: str | None = None) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "frozenlens", "index", str(photos), "--index", str(index),
        "--captions", str(manifest), "--batch-size", "4", "--checkpoint-seconds", "0", "--no-progress",
        *(["--database-url", database_url] if database_url else []),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


def kill_when(proc: subprocess.Popen, counts: Callable[[], dict[str, int]], *, rows: int | None = None,
              seconds: float | None = None) -> bool:
    """SIGKILL once the database holds ``rows`` rows (or after ``seconds``); False if it finished first."""
    start = time.monotonic()
    while proc.poll() is None:
        if seconds is not None and time.monotonic() - start >= seconds:
            break
        if rows is not None and counts()["rows"] >= rows:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def test_sigkill_at_several_points_then_rerun_is_consistent(tmp_path, testdata, db_url):
    """On both back ends: SQLite in the index directory, and a PostgreSQL database."""
    photos = tmp_path / "photos"
    write_noise_jpegs(photos, N_IMAGES)
    # a few duplicates, captions and a bad file, so every kind of write is exercised
    for i in range(3):
        shutil.copy(photos / f"img_{i:04d}.jpg", photos / f"dup_{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(
        "\n".join(f'{{"path": "photos/img_{i:04d}.jpg", "text": "noise number {i}", "lang": "en"}}' for i in range(0, N_IMAGES, 7)),
        encoding="utf-8",
    )
    index = tmp_path / "index"
    counts = PgCounts(db_url) if db_url else partial(db_counts, index / "frozenlens.db")

    kills = 0
    for point in ({"seconds": 0.5}, {"rows": 6}, {"rows": 40}, {"rows": 90}):
        before = counts()["rows"]
        proc = start_indexer(photos, index, manifest, db_url)
        if kill_when(proc, counts, **point):
            kills += 1
        c = counts()
        assert c["rows"] >= before  # committed work is never lost
        for key in ("indexed_without_vectors", "orphan_vectors", "orphan_captions", "vectors_of_non_indexed"):
            assert c.get(key, 0) == 0, (point, c)
    assert kills >= 3, "the indexer finished before it could be killed: make the data set larger"

    proc = start_indexer(photos, index, manifest)  # the index's marker names its database
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()

    n_files = N_IMAGES + 3 + 1
    engine = Engine.open(index)
    stats = engine.stats()
    assert (stats["images"], stats["duplicates"], stats["failed"]) == (N_IMAGES, 3, 1)
    assert stats["captions"] == len(range(0, N_IMAGES, 7))
    # the saved FAISS files alone (no reconciliation) hold exactly the database's ids
    db_ids = np.sort(engine.store.vector_ids("semantic"))
    assert db_ids.size == N_IMAGES
    for space in ("semantic", "visual"):
        np.testing.assert_array_equal(np.sort(VectorIndex.load(index / f"{space}.faiss").ids()), db_ids)
    np.testing.assert_array_equal(
        np.sort(VectorIndex.load(index / "caption.faiss").ids()), np.sort(engine.store.vector_ids("caption"))
    )
    paths = set(engine.store.file_states([str(photos)]))
    assert len(paths) == n_files

    # vectors equal those of an uninterrupted run
    clean = tmp_path / "clean"
    proc = subprocess.run(
        [sys.executable, "-m", "frozenlens", "index", str(photos), "--index", str(clean), "--captions", str(manifest), "--no-progress"],
        capture_output=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    ref = Engine.open(clean)
    for name in ("img_0010.jpg", "img_0057.jpg", f"img_{N_IMAGES - 1:04d}.jpg"):
        a = engine.get_image(photos / name)
        b = ref.get_image(photos / name)
        va = engine.store.vectors("semantic", [a.id], 512)
        vb = ref.store.vectors("semantic", [b.id], 512)
        np.testing.assert_allclose(va, vb, atol=2e-3)
    engine.close()
    ref.close()
    if db_url:
        counts.engine.dispose()


def test_second_indexer_refused_and_search_works_during_indexing(tmp_path):
    photos = tmp_path / "photos"
    write_noise_jpegs(photos, 300, seed=3, size=(640, 480))
    index = tmp_path / "index"
    db = index / "frozenlens.db"
    first = subprocess.Popen(
        [sys.executable, "-m", "frozenlens", "index", str(photos), "--index", str(index), "--batch-size", "2", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    paused = False
    try:
        deadline = time.monotonic() + 300
        while db_counts(db)["rows"] < 8:
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Freeze the running indexer (it keeps its lock, maybe mid-transaction)
        # so the checks below happen during indexing whatever the machine's speed.
        first.send_signal(signal.SIGSTOP)
        paused = True
        assert first.poll() is None
        second = subprocess.run(
            [sys.executable, "-m", "frozenlens", "index", str(photos), "--index", str(index), "--no-progress"],
            capture_output=True, text=True, timeout=300,
        )
        search = subprocess.run(
            [sys.executable, "-m", "frozenlens", "search", "a photo", "-k", "5", "--json", "--index", str(index)],
            capture_output=True, text=True, timeout=300,
        )
    finally:
        if paused:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    assert second.returncode == 3, second.stderr
    assert "another indexing run" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert search.returncode == 0, search.stderr
    import json

    assert len(json.loads(search.stdout)) == 5
    assert first.returncode == 0, err.decode()  # the paused run then finishes normally
    with Engine.open(index) as engine:
        assert engine.stats()["images"] == 300
