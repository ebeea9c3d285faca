"""An index on a REAL read-only bind mount (as root: root ignores file permissions but not
a read-only mount): the CLI's reading commands, the Python Engine and every reading API
route work and match the writable original; writing commands and routes say in one line
that the index is read-only; missing vector files are built in memory; thumbnails go to a
private cache; an old schema asks for an upgrade on writable media."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.errors import IndexReadOnlyError

from ..conftest import index_kphotoalbum

QUERIES = ("un lapin", "a dog", "grand canyon")


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: (size, mtime_ns)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _mount_read_only(src: Path, dst: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    for cmd in (["mount", "--bind", str(src), str(dst)], ["mount", "-o", "remount,bind,ro", str(dst)]):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if cmd[1] != "--bind":
                subprocess.run(["umount", str(dst)], capture_output=True, check=False)
            pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    """Indexes of the demo archive on a read-only mount, and what the writable original answers."""
    root = tmp_path_factory.mktemp("read-only")
    photos, original = index_kphotoalbum(root, testdata)
    expected: dict[str, object] = {}
    with Engine.open(original) as engine:
        for q in QUERIES:
            expected[q] = [(h.id, h.path) for h in engine.search(q, k=5)]
        first = engine.search("un lapin", k=1)[0]
        expected["similar"] = [(h.id, h.path) for h in engine.similar(first.id, k=5)]
        expected["first"] = (first.id, first.path)
        expected["stats"] = {k: engine.stats()[k] for k in ("images", "captions", "vectors")}
    media = root / "media"
    media.mkdir()
    shutil.copytree(original, media / "index")
    shutil.copytree(original, media / "nofaiss")
    for f in (media / "nofaiss").glob("*.faiss"):
        f.unlink()
    shutil.copytree(original, media / "old")
    con = sqlite3.connect(media / "old" / "frozenlens.db")
    with con:
        con.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    con.close()
    shutil.copytree(original, media / "damaged")
    with open(media / "damaged" / "frozenlens.db", "r+b") as f:
        f.seek(4096 * 3)
        f.write(os.urandom(4096 * 4))
    before = tree(media)
    mnt = root / "mnt"
    mnt.mkdir()
    _mount_read_only(media, mnt)
    try:
        yield photos, mnt, expected
        assert tree(media) == before  # nothing under the read-only mount was written, or could have been
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name", ["index", "nofaiss"])
def test_cli_reading_commands_work(archive, capsys, name):
    _, mnt, expected = archive
    index = mnt / name
    for q in QUERIES:
        rc, out, err = run(capsys, "search", q, "-k", "5", "--json", "--index", str(index))
        assert rc == 0, err
        assert [(h["id"], h["path"]) for h in json.loads(out)] == expected[q]
    rc, out, err = run(capsys, "similar", str(expected["first"][0]), "-k", "5", "--json", "--index", str(index))
    assert rc == 0, err
    assert [(h["id"], h["path"]) for h in json.loads(out)] == expected["similar"]
    rc, out, err = run(capsys, "info", "--json", "--index", str(index))
    assert rc == 0, err
    stats = json.loads(out)
    assert {k: stats[k] for k in ("images", "captions", "vectors")} == expected["stats"]  # built in memory
    assert not list(index.glob("*.faiss")) if name == "nofaiss" else len(list(index.glob("*.faiss"))) == 3
    rc, out, err = run(capsys, "doctor", "--index", str(index))
    assert rc == 0 and ": ok" in out and "read-only file system" in out, out + err


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "{photos}", "--no-progress"],
        ["reindex", "--encoder", "lite", "--no-progress"],
        ["train-reranker", "--no-progress"],
    ],
)
def test_cli_writing_commands_say_read_only_in_one_line(archive, capsys, argv):
    photos, mnt, _ = archive
    rc, out, err = run(capsys, *[a.format(photos=photos) for a in argv], "--index", str(mnt / "index"))
    assert rc == cli.EXIT_READ_ONLY, out + err
    assert err.count("\n") == 1 and "read-only" in err and str(mnt / "index") in err and "Traceback" not in err, err


def test_damaged_and_old_indexes_on_read_only_media(archive, capsys):
    _, mnt, _ = archive
    rc, out, err = run(capsys, "doctor", "--index", str(mnt / "damaged"))
    assert rc == cli.EXIT_DAMAGED and "DAMAGED" in out, out + err
    rc, out, err = run(capsys, "doctor", "--repair", "--index", str(mnt / "damaged"))
    assert rc == cli.EXIT_READ_ONLY and err.count("\n") == 1 and "read-only" in err, out + err
    rc, out, err = run(capsys, "search", "un lapin", "--index", str(mnt / "damaged"))
    assert rc == cli.EXIT_DAMAGED and err.count("\n") == 1, err
    for argv in (["search", "un lapin"], ["info"]):
        rc, out, err = run(capsys, *argv, "--index", str(mnt / "old"))
        assert rc == cli.EXIT_READ_ONLY, out + err
        assert err.count("\n") == 1 and "schema version 5" in err and "writable media" in err, err


def test_engine_on_read_only_media(archive, private_cache):
    photos, mnt, expected = archive
    with Engine.open(mnt / "nofaiss") as engine:
        assert engine.read_only and "read-only file system" in (engine.read_only_reason or "")
        assert [(h.id, h.path) for h in engine.search("un lapin", k=5)] == expected["un lapin"]
        thumb = engine.thumbnail(expected["first"][0])
        assert private_cache in thumb.parents and Image.open(thumb).format == "WEBP"
        assert engine.thumbnail(expected["first"][0]) == thumb  # cached there
        assert engine.thumbnails([expected["first"][0]]) == {expected["first"][0]: thumb}
        with pytest.raises(IndexReadOnlyError, match="read-only"):
            engine.index([photos])
        with pytest.raises(IndexReadOnlyError, match="read-only"):
            engine.reindex("lite")
        with pytest.raises(IndexReadOnlyError, match="read-only"):  # the store refuses too (SQLite's mode=ro)
            engine.store.set_meta({"x": "y"})
    with pytest.raises(IndexReadOnlyError, match="creating an index"):
        Engine.open(mnt / "new-index", create=True)


def test_api_on_read_only_media(archive):
    pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
    from fastapi.testclient import TestClient

    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    photos, mnt, expected = archive
    image_id = expected["first"][0]
    settings = ServerSettings(index_dir=mnt / "index", index_roots=(photos,))
    with TestClient(create_app(settings, ui=False), base_url="http://127.0.0.1") as client:
        ok = {
            "search": client.get("/api/v1/search", params={"q": "un lapin", "k": 5}),
            "search-post": client.post("/api/v1/search", json={"q": "un lapin", "k": 5}),
            "image": client.get(f"/api/v1/images/{image_id}"),
            "similar": client.get(f"/api/v1/images/{image_id}/similar", params={"k": 5}),
            "thumbnail": client.get(f"/api/v1/images/{image_id}/thumbnail"),
            "file": client.get(f"/api/v1/images/{image_id}/file"),
            "stats": client.get("/api/v1/stats"),
            "health": client.get("/api/v1/health"),
        }
        buf = io.BytesIO()
        Image.open(expected["first"][1]).save(buf, "JPEG")
        ok["search-image"] = client.post("/api/v1/search/image", files={"file": ("q.jpg", buf.getvalue(), "image/jpeg")},
                                         data={"k": "3"})
        for name, r in ok.items():
            assert r.status_code == 200, (name, r.text)
        assert [(h["id"], h["path"]) for h in ok["search"].json()["hits"]] == expected["un lapin"]
        assert [(h["id"], h["path"]) for h in ok["similar"].json()["hits"]] == expected["similar"]
        assert ok["search-image"].json()["hits"][0]["id"] == image_id
        assert Image.open(io.BytesIO(ok["thumbnail"].content)).format == "WEBP"
        r = client.post("/api/v1/index", json={"path": str(photos)})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "read-only" and "read-only" in r.json()["error"]["message"]


def test_api_on_damaged_read_only_index_is_503(archive):
    pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
    from fastapi.testclient import TestClient

    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    _, mnt, _ = archive
    with TestClient(create_app(ServerSettings(index_dir=mnt / "damaged"), ui=False), base_url="http://127.0.0.1") as c:
        r = c.get("/api/v1/search", params={"q": "un lapin"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "database-damaged", r.text

