"""A full disk during indexing, on a real small file system (a tmpfs mounted by
the test): one clear line, what was committed survives, and a rerun after
freeing space finishes consistently."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.engine.index_dir import DB_NAME
from frozenlens.retriever.spaces import SPACES

from ..conftest import write_noise_jpegs

N_PHOTOS = 48


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few MB; ``resize(kb)`` changes its size (frees space)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()

    def mount(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mount", *args], capture_output=True, text=True)

    if mount("-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")

    def resize(kb: int) -> None:
        r = mount("-o", f"remount,size={kb}k", str(mnt))
        assert r.returncode == 0, r.stderr

    try:
        yield mnt, resize
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    write_noise_jpegs(folder, N_PHOTOS)
    return folder


def run_index(capsys, photos: Path, index: Path, *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(["index", str(photos), "--index", str(index), "--no-progress", "--batch-size", "4", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def db_state(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
        return {
            "indexed": q("SELECT count(*) FROM images WHERE status = 'indexed'"),
            "integrity_ok": int(q("PRAGMA integrity_check") == "ok"),
            "indexed_without_vectors": q("SELECT count(*) FROM images WHERE status='indexed' "
                                         "AND id NOT IN (SELECT image_id FROM image_vectors)"),
            "orphan_vectors": q("SELECT count(*) FROM image_vectors WHERE image_id NOT IN (SELECT id FROM images)"),
        }
    finally:
        con.close()


def assert_one_line_stop(rc: int, err: str) -> int:
    """The stop is one line with exit code 4 that says how much was committed → that count."""
    assert rc == cli.EXIT_DISK_FULL, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "is full" in lines[0] and "run `frozenlens index` again" in lines[0]
    words = lines[0].split(" new photos were committed")[0].split()
    return int(words[-1])


def assert_complete(index: Path, db: Path, photos: Path) -> None:
    state = db_state(db)
    assert state == {"indexed": N_PHOTOS, "integrity_ok": 1, "indexed_without_vectors": 0, "orphan_vectors": 0}
    with Engine.open(index) as engine:
        for space in SPACES:
            np.testing.assert_array_equal(engine.spaces[space].ids(), np.sort(engine.store.vector_ids(space)))
        hit = engine.search(photos / "img_0007.jpg", k=1)[0]
        assert Path(hit.path).name == "img_0007.jpg"


def test_database_on_a_full_disk(small_disk, photos, capsys, shared_lite):
    """SQLite stops with "database or disk is full" (vector files are only saved at the end)."""
    mnt, resize = small_disk
    resize(640)  # room for the schema and some batches, not for 48 photos
    index = mnt / "index"
    rc, out, err = run_index(capsys, photos, index)
    committed = assert_one_line_stop(rc, err)
    state = db_state(index / DB_NAME)
    assert state["integrity_ok"] == 1 and state["indexed_without_vectors"] == 0 and state["orphan_vectors"] == 0
    assert 0 < committed == state["indexed"] < N_PHOTOS  # what was committed survives, and the line says so

    resize(64 * 1024)  # space freed
    rc, out, err = run_index(capsys, photos, index)
    assert rc == 0, err
    assert f"{N_PHOTOS - committed} new" in out
    assert_complete(index, index / DB_NAME, photos)


def test_vector_files_on_a_full_disk(small_disk, photos, tmp_path, capsys, shared_lite):
    """The database lives elsewhere; the vector files cannot be written (OSError ENOSPC)."""
    mnt, resize = small_disk
    db = tmp_path / "db" / DB_NAME
    db.parent.mkdir()
    index = mnt / "index"
    rc, out, err = run_index(capsys, photos, index, "--database-url", f"sqlite:///{db}", "--checkpoint-seconds", "0")
    committed = assert_one_line_stop(rc, err)
    assert committed == db_state(db)["indexed"] > 0
    assert not list(index.glob("*.tmp")) and not list(index.glob(".*.tmp"))  # no half-written file left

    resize(64 * 1024)
    rc, out, err = run_index(capsys, photos, index)
    assert rc == 0, err
    assert_complete(index, db, photos)
