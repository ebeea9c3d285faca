"""A damaged index database (truncated, pages overwritten, zero length), damaged by the
test on a real index of the KPhotoAlbum demo archive: every command stops with one line,
`frozenlens doctor` reports it, `doctor --repair` salvages the readable rows, and the next
`frozenlens index` gets back to the same searchable index as a clean one."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.engine.checkup import doctor
from frozenlens.errors import DatabaseDamagedError

from ..conftest import index_kphotoalbum

PAGE = 4096


@pytest.fixture(scope="module")
def clean(tmp_path_factory, testdata, shared_lite):
    """(photos, clean index) of the demo archive, with captions."""
    return index_kphotoalbum(tmp_path_factory.mktemp("damaged"), testdata)


def snapshot(index: Path) -> dict[str, object]:
    """What an index holds: indexed paths by status, caption texts, vector counts, a search."""
    with Engine.open(index) as engine:
        states = engine.store.file_states(["/"])
        captions = sorted((Path(engine.store.images([o])[o].path).name, t) for o, t, _ in engine.store.caption_texts())
        stats = engine.stats()
        top = [Path(h.path).name for h in engine.search("un lapin", k=3, rerank=False)]
    return {
        "paths": sorted((Path(p).name, s.status) for p, s in states.items()),
        "captions": captions,
        "vectors": stats["vectors"],
        "counts": {k: stats[k] for k in ("images", "duplicates", "failed", "captions")},
        "top": top,
    }


@pytest.fixture(scope="module")
def clean_state(clean):
    return snapshot(clean[1])


def images_leaf_pages(db: Path) -> list[int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT pageno FROM dbstat WHERE name = 'images' AND pagetype = 'leaf' ORDER BY pageno")
        return [r[0] for r in rows]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table to find the pages of a table")
    finally:
        con.close()


def damage(db: Path, how: str) -> None:
    size = db.stat().st_size
    if how == "half":
        os.truncate(db, size // 2)
    elif how == "few-pages":
        os.truncate(db, 3 * PAGE)
    elif how == "zero":
        os.truncate(db, 0)
    elif how == "overwritten-page":
        leaves = images_leaf_pages(db)
        assert len(leaves) >= 2, leaves
        page = leaves[len(leaves) // 2]  # a page in the middle of the images table
        with open(db, "r+b") as f:
            f.seek((page - 1) * PAGE)
            f.write(os.urandom(PAGE))
    else:
        raise AssertionError(how)


@pytest.fixture(params=["half", "few-pages", "overwritten-page", "zero"])
def damaged(request, clean, tmp_path):
    photos, index = clean
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    wal = copy / "frozenlens.db-wal"  # closed cleanly: every row is in the file damaged below
    assert not wal.exists() or wal.stat().st_size == 0
    damage(copy / "frozenlens.db", request.param)
    return request.param, photos, copy


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_damage_is_one_line_then_doctor_repairs_and_index_restores(damaged, clean_state, capsys):
    how, photos, index = damaged
    db = index / "frozenlens.db"
    before = db.read_bytes()

    # every reading command: one line naming the file and what to do, exit code 5, no traceback
    for argv in (["search", "un lapin"], ["info"], ["similar", "1"], ["index", str(photos), "--no-progress"]):
        rc, out, err = run(capsys, *argv, "--index", str(index))
        assert rc == cli.EXIT_DAMAGED, (argv, out, err)
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(db) in err and f"frozenlens doctor --repair --index {index}" in err, err
    # the Python API: on opening, or on the first read of a lost page
    with pytest.raises(DatabaseDamagedError) as exc, Engine.open(index) as engine:
        engine.search("un lapin", k=50, rerank=False)
    assert exc.value.path == str(db)
    assert db.read_bytes() == before  # nothing was written to the damaged file

    # doctor reports, changes nothing
    rc, out, err = run(capsys, "doctor", "--index", str(index))
    assert rc == cli.EXIT_DAMAGED and "DAMAGED" in out and "doctor --repair" in out, out + err
    assert db.read_bytes() == before
    report = doctor(index)
    assert not report.ok and report.database.problems and report.repair is None

    # repair: fresh database swapped in, damaged file kept, counts reported
    rc, out, err = run(capsys, "doctor", "--repair", "--index", str(index))
    assert rc == 0, out + err
    assert "now ok" in out and ("were unreadable" if how == "zero" else "rows salvaged") in out, out
    kept = sorted(index.glob("frozenlens.db.damaged-*"))
    assert [p.name for p in kept if not p.name.endswith("-wal")] and kept[0].read_bytes() == before
    assert not list(index.glob("*.faiss")) and not list(index.glob("*.tmp"))
    assert doctor(index).ok

    # the next index run re-encodes what was lost and nothing else
    rc, out, err = run(capsys, "index", str(photos), "--index", str(index), "--captions",
                       str(photos / "captions.jsonl"), "--no-progress")
    assert rc == 0, out + err
    assert snapshot(index) == clean_state
    rc, out, _ = run(capsys, "doctor", "--index", str(index))
    assert rc == 0 and "vectors:" not in out, out  # vector files match the database again


def test_overwritten_page_salvages_the_rest(clean, clean_state, tmp_path, capsys):
    """Random bytes over one page of the images table lose only that page's rows."""
    photos, index = clean
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    damage(copy / "frozenlens.db", "overwritten-page")
    report = doctor(copy, repair=True)
    assert report.ok and report.repair is not None and not report.repair.settings_lost
    tables = {t.name: t for t in report.repair.tables}
    images = tables["images"]
    n_images = len(clean_state["paths"])
    assert 0 < images.lost < n_images and images.salvaged + images.lost == n_images  # exact: an index was intact
    assert tables["meta"].lost == 0 and tables["image_vectors"].salvaged > 0
    lost_total = report.repair.images_to_reindex
    rc, out, err = run(capsys, "index", str(photos), "--index", str(copy), "--captions",
                       str(photos / "captions.jsonl"), "--no-progress")
    assert rc == 0, err
    assert f" {lost_total} new, 0 changed, {n_images - lost_total} unchanged" in out, (lost_total, out)
    assert snapshot(copy) == clean_state


def test_damaged_database_in_the_api_is_a_json_503(clean, tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
    from fastapi.testclient import TestClient

    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    _, index = clean
    copy = tmp_path / "index"
    shutil.copytree(index, copy)
    damage(copy / "frozenlens.db", "overwritten-page")
    with TestClient(create_app(ServerSettings(index_dir=copy), ui=False), base_url="http://127.0.0.1") as client:
        for url in ("/api/v1/search?q=dog", "/api/v1/stats", "/api/v1/images/1"):
            r = client.get(url)
            assert r.status_code == 503, (url, r.text)
            err = r.json()["error"]
            assert err["code"] == "database-damaged" and "frozenlens doctor --repair" in err["message"]
        assert client.get("/api/v1/health").status_code == 200


def test_healthy_index_doctor_is_ok_and_repair_changes_nothing(clean, capsys):
    _, index = clean
    db = index / "frozenlens.db"
    before = db.read_bytes()
    rc, out, err = run(capsys, "doctor", "--repair", "--index", str(index))
    assert rc == 0 and ": ok" in out and "repaired" not in out, out + err
    assert db.read_bytes() == before and not list(index.glob("frozenlens.db.damaged-*"))
