"""Index directories that are copied, moved and renamed; vector files that are
damaged, foreign or left behind — on real indexes of the KPhotoAlbum demo built
with the real `lite` encoder, through the real CLI (in-process) and Engine."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.engine.index_dir import DB_NAME, IDENTITY_KEY, MARKER, database_url, resolve
from frozenlens.errors import IndexNotFoundError
from frozenlens.retriever import VectorIndex
from frozenlens.retriever.spaces import SPACES

from ..conftest import index_kphotoalbum, write_noise_jpegs

QUERIES = ["a dog", "people at the beach", "Kirche"]
NEW_PHOTOS = ["chelsea.png", "rocket.jpg"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, testdata, shared_lite) -> tuple[Path, Path]:
    """(photos, index): the KPhotoAlbum demo indexed once; tests work on copies of the index."""
    return index_kphotoalbum(tmp_path_factory.mktemp("built"), testdata)


@pytest.fixture
def original(built, tmp_path) -> Path:
    """A fresh copy of the built index that plays 'the original' in one test."""
    dst = tmp_path / "archive" / "index"
    shutil.copytree(built[1], dst)
    return dst


def results(index: Path) -> list[list[tuple[str, float]]]:
    """Text queries (the semantic and caption spaces), then image→image from the first hit (the visual space)."""
    with Engine.open(index) as engine:
        out = [[(h.path, round(h.score, 5)) for h in engine.search(q, k=10)] for q in QUERIES]
        first = engine.search(QUERIES[0], k=1)[0].id
        return out + [[(h.path, round(h.score, 5)) for h in engine.similar(first, k=10)]]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` → (sha256, mtime_ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


def write_old_marker(index: Path) -> None:
    """The marker the previous release wrote: the database's absolute URL."""
    (index / MARKER).write_text(f"sqlite:///{index / DB_NAME}\n", encoding="utf-8")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def db_meta(index: Path) -> dict[str, str]:
    con = sqlite3.connect(f"file:{index / DB_NAME}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT key, value FROM meta").fetchall())
    finally:
        con.close()


def assert_vectors_match_database(index: Path) -> None:
    """Each space's file loads, is bound to this index and holds exactly the database's ids."""
    with Engine.open(index) as engine:
        owner = engine.store.get_meta()[IDENTITY_KEY]
        for space in SPACES:
            vi = VectorIndex.load(index / f"{space}.faiss", owner=owner)
            np.testing.assert_array_equal(vi.ids(), np.sort(engine.store.vector_ids(space)))


# -- relocation ------------------------------------------------------------------------
def test_copied_moved_and_renamed_indexes_work_and_leave_the_original_untouched(
    original, tmp_path, testdata, capsys
):
    baseline = results(original)
    assert all(baseline), "every query finds photos"
    write_old_marker(original)  # as made by the previous release
    before = snapshot(original)

    copy = tmp_path / "backup" / "index-copy"
    shutil.copytree(original, copy)
    moved_from = tmp_path / "staging" / "index"
    shutil.copytree(original, moved_from)
    moved = tmp_path / "new" / "place" / "renamed-index"
    moved.parent.mkdir(parents=True)
    os.rename(moved_from, moved)  # a real move + rename: the recorded path no longer exists

    new_photos = tmp_path / "new-photos"
    new_photos.mkdir()
    for name in NEW_PHOTOS:
        shutil.copy(testdata / "photos" / name, new_photos / name)

    for index in (copy, moved):
        assert results(index) == baseline
        # the old absolute marker was migrated to the relative (empty) form
        assert (index / MARKER).read_text(encoding="utf-8").strip() == ""
        with Engine.open(index) as engine:
            assert engine.stats()["database"] == f"sqlite:///{index / DB_NAME}"
            n_before = engine.store.counts()["images"]
        rc, out, err = run_cli(capsys, "index", str(new_photos), "--index", str(index), "--no-progress")
        assert rc == 0, err
        assert "2 new" in out
        with Engine.open(index) as engine:
            assert engine.store.counts()["images"] == n_before + 2
            hit = engine.search(new_photos / "rocket.jpg", k=1)[0]
            assert Path(hit.path) == new_photos / "rocket.jpg"
        assert_vectors_match_database(index)
        rc, out, _ = run_cli(capsys, "search", "a rocket", "--index", str(index), "-k", "3")
        assert rc == 0 and out.strip()

    # the original: not one byte or mtime changed, same answers, none of the new photos
    assert snapshot(original) == before
    assert results(original) == baseline
    with Engine.open(original) as engine:
        assert not any(str(new_photos) in h.path for h in engine.search(new_photos / "rocket.jpg", k=20))


def test_marker_of_a_copy_never_points_at_the_original_even_without_its_database(original, tmp_path):
    write_old_marker(original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    (copy / DB_NAME).unlink()  # an incomplete copy: the database did not come along
    url, own = resolve(copy, (copy / MARKER).read_text(encoding="utf-8").strip())
    assert own == copy / DB_NAME and url == f"sqlite:///{copy / DB_NAME}"
    before = snapshot(original)
    with pytest.raises(IndexNotFoundError, match="never initialised"):
        Engine.open(copy)  # an empty database of its own, never the original's
    assert snapshot(original) == before


def test_old_marker_is_interpreted_but_not_rewritten_on_read_only_media(original, tmp_path):
    moved = tmp_path / "moved"
    write_old_marker(original)
    old_text = (original / MARKER).read_text(encoding="utf-8")
    os.rename(original, moved)

    # read_only: interpreted, never written
    assert database_url(moved, read_only=True) == f"sqlite:///{moved / DB_NAME}"
    assert (moved / MARKER).read_text(encoding="utf-8") == old_text

    # a real read-only mount: the failed rewrite is not an error
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["mount", "--bind", str(moved), str(ro)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root / CAP_SYS_ADMIN)")
    try:
        assert subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode == 0
        assert database_url(ro) == f"sqlite:///{ro / DB_NAME}"
        assert (ro / MARKER).read_text(encoding="utf-8") == old_text
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    # writable again: migrated
    assert database_url(moved) == f"sqlite:///{moved / DB_NAME}"
    assert (moved / MARKER).read_text(encoding="utf-8").strip() == ""


def test_external_database_stays_as_given(tmp_path, testdata, shared_lite):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in NEW_PHOTOS:
        shutil.copy(testdata / "photos" / name, photos / name)
    external = tmp_path / "databases" / DB_NAME  # same file name as the default, outside the directory
    external.parent.mkdir()
    url = f"sqlite:///{external}"
    index = tmp_path / "index"
    with Engine.open(index, create=True, database_url=url) as engine:
        assert engine.index([photos]).new == 2
    assert (index / MARKER).read_text(encoding="utf-8").strip() == url
    assert not (index / DB_NAME).exists()

    moved = tmp_path / "elsewhere"
    os.rename(index, moved)
    with Engine.open(moved) as engine:
        assert engine.stats()["database"] == url
        assert engine.store.counts()["images"] == 2
        assert Path(engine.search(photos / "chelsea.png", k=1)[0].path).name == "chelsea.png"
    assert (moved / MARKER).read_text(encoding="utf-8").strip() == url  # unchanged
    with pytest.raises(IndexNotFoundError, match="uses database"):
        Engine.open(moved, database_url=f"sqlite:///{tmp_path / 'other.db'}")


# -- damaged, foreign and legacy vector files -------------------------------------------
def test_corrupt_vector_files_are_set_aside_and_rebuilt(built, original, capsys, caplog):
    baseline = results(original)
    sizes = {s: (original / f"{s}.faiss").stat().st_size for s in SPACES}
    with open(original / "semantic.faiss", "r+b") as f:  # truncated
        f.truncate(sizes["semantic"] // 2)
    (original / "visual.faiss").write_bytes(np.random.default_rng(1).bytes(sizes["visual"]))  # garbage
    data = bytearray((original / "caption.faiss").read_bytes())  # partly overwritten
    data[100:164] = b"\xff" * 64
    (original / "caption.faiss").write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="frozenlens.spaces"):
        rc, out, err = run_cli(capsys, "search", "a dog", "--index", str(original), "-k", "5")
    assert rc == 0, err
    assert "Traceback" not in err
    warned = [r.getMessage() for r in caplog.records if "rebuilding it from the database" in r.getMessage()]
    assert len(warned) == 2 and not any("visual" in w for w in warned), warned  # a text search reads no visual file
    assert not list(original.glob("visual.faiss.corrupt-*"))
    with caplog.at_level(logging.WARNING, logger="frozenlens.spaces"):  # an image→image query does
        assert results(original) == baseline
    warned = [r.getMessage() for r in caplog.records if "rebuilding it from the database" in r.getMessage()]
    assert len(warned) == 3 and "visual" in warned[-1], warned
    aside = {s: sorted(original.glob(f"{s}.faiss.corrupt-*")) for s in SPACES}
    assert all(len(v) == 1 for v in aside.values()), aside
    assert aside["semantic"][0].stat().st_size == sizes["semantic"] // 2  # kept as it was
    assert results(original) == baseline

    rc, out, err = run_cli(capsys, "index", str(built[0]), "--index", str(original), "--no-progress")
    assert rc == 0, err  # the obvious repair command works (it used to stop: "... is corrupt")
    assert_vectors_match_database(original)
    assert results(original) == baseline
    assert all(p.exists() for v in aside.values() for p in v)  # still kept for inspection


def test_vector_file_of_another_index_is_rebuilt_even_after_reindexing(built, original, tmp_path, capsys, caplog):
    baseline = results(original)
    other_photos = tmp_path / "other-photos"
    write_noise_jpegs(other_photos, 4)
    other = tmp_path / "other-index"
    rc, _, err = run_cli(capsys, "index", str(other_photos), "--index", str(other), "--no-progress")
    assert rc == 0, err
    assert db_meta(other)[IDENTITY_KEY] != db_meta(original)[IDENTITY_KEY]
    for space in ("semantic", "visual"):  # valid files, same dimensions, ids 1..4 also exist here
        shutil.copy(other / f"{space}.faiss", original / f"{space}.faiss")

    with caplog.at_level(logging.WARNING, logger="frozenlens.spaces"):
        assert results(original) == baseline
    assert sum("belongs to another index" in r.getMessage() for r in caplog.records) == 2
    assert len(list(original.glob("semantic.faiss.foreign-*"))) == 1

    for space in ("semantic", "visual"):  # again, then the repair run
        shutil.copy(other / f"{space}.faiss", original / f"{space}.faiss")
    rc, _, err = run_cli(capsys, "index", str(built[0]), "--index", str(original), "--no-progress")
    assert rc == 0, err
    assert_vectors_match_database(original)
    assert results(original) == baseline
    # a copy shares the identity of its original (same contents): its files are accepted
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="frozenlens.spaces"):
        assert results(copy) == baseline
    assert not [r for r in caplog.records if "rebuilding" in r.getMessage()]


def test_index_without_identity_gets_one_and_keeps_its_vector_files(built, original, capsys, caplog):
    baseline = results(original)
    # as made by the previous release: no identity in the database, none in the files
    for space in SPACES:
        VectorIndex.load(original / f"{space}.faiss").save(original / f"{space}.faiss")
    con = sqlite3.connect(original / DB_NAME)
    with con:
        con.execute("DELETE FROM meta WHERE key = ?", (IDENTITY_KEY,))
    con.close()
    assert IDENTITY_KEY not in db_meta(original)

    with caplog.at_level(logging.INFO, logger="frozenlens.spaces"):
        assert results(original) == baseline
    assert not [r for r in caplog.records if "rebuilding" in r.getMessage() or "added" in r.getMessage()]
    identity = db_meta(original)[IDENTITY_KEY]
    assert len(identity) == 32
    rc, _, err = run_cli(capsys, "index", str(built[0]), "--index", str(original), "--no-progress")
    assert rc == 0, err
    assert db_meta(original)[IDENTITY_KEY] == identity
    assert_vectors_match_database(original)  # now bound to it


# -- leftovers of interrupted runs ------------------------------------------------------
def test_next_successful_run_removes_what_interrupted_runs_left(built, original, capsys):
    baseline = results(original)
    # a reindex killed after its swap: the database moved to vector epoch 1, the
    # previous encoder's files (epoch 0) were never deleted
    con = sqlite3.connect(original / DB_NAME)
    with con:
        con.execute("UPDATE meta SET value = '1' WHERE key = 'vectors_epoch'")
        if con.total_changes == 0:
            con.execute("INSERT INTO meta (key, value) VALUES ('vectors_epoch', '1')")
    con.close()
    old = [original / f"{s}.faiss" for s in SPACES]
    old_age = time.time() - 3600
    temps = [
        original / ".semantic.e1.faiss.k2j3h4.tmp",  # an atomic save killed midway
        original / f"{MARKER}.a1b2c3.tmp",
        original / ".reranker.json.x9y8z7.tmp",
        original / "reranker.train.pt.tmp",
    ]
    for t in temps:
        t.write_bytes(b"half-written")
        os.utime(t, (old_age, old_age))
    fresh = original / ".reranker.safetensors.now123.tmp"  # a training run writing right now
    fresh.write_bytes(b"being written")
    kept = original / "semantic.faiss.corrupt-20240101T000000"  # set aside for inspection
    kept.write_bytes(b"damaged")

    assert results(original) == baseline  # searching removes nothing
    assert all(p.exists() for p in old + temps)
    rc, _, err = run_cli(capsys, "index", str(built[0]), "--index", str(original), "--no-progress")
    assert rc == 0, err
    assert not [p.name for p in old + temps if p.exists()]
    assert fresh.exists() and kept.exists()
    assert sorted(p.name for p in original.glob("*.faiss")) == sorted(f"{s}.e1.faiss" for s in SPACES)
    assert results(original) == baseline


def test_failed_reranker_checkpoint_save_leaves_no_temp_file(tmp_path):
    from frozenlens.reranker.train import _save_checkpoint

    ckpt = tmp_path / "reranker.train.pt"
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        _save_checkpoint(ckpt, {"not picklable": lambda: 0})
    assert list(tmp_path.iterdir()) == []
