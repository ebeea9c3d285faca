"""Every file name the OS allows: real photos copied under hostile names (bytes), indexed,
re-indexed, searched, served, printed, renamed and deleted (issue 11, section 1).

Names are bytes (os APIs take bytes paths); Python code sees them as ``os.fsdecode`` str,
everything shown or sent as JSON is ``frozenlens.paths.to_text`` of them."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.paths import from_text, to_text
from frozenlens.types import SearchFilters

fastapi = pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
from fastapi.testclient import TestClient  # noqa: E402

from frozenlens.server.app import create_app  # noqa: E402
from frozenlens.server.settings import ServerSettings  # noqa: E402

CAFE = "café-n.jpg"
LONG = ("é" * 125).encode() + b"x.jpg"
#: relative hostile names (bytes) → what they exercise
NAMES: dict[bytes, str] = {
    b"caf\xe9.jpg": "not UTF-8 (Latin-1 é)",
    b"new\nline.jpg": "a newline",
    b"tab\there.jpg": "a tab",
    LONG: "255 bytes, the longest name Linux allows",
    b"100%.jpg": "percent",
    b"what?.jpg": "question mark",
    b"#1.jpg": "hash",
    b"-rf.jpg": "a leading dash",
    unicodedata.normalize("NFC", CAFE).encode(): "NFC",
    unicodedata.normalize("NFD", CAFE).encode(): "NFD: looks the same as NFC",
    b"Case.jpg": "case 1",
    b"case.jpg": "case 2",
    b"dir\xff\xfe/inside.jpg": "a directory whose name is not UTF-8",
    b"back\\slash.jpg": "a backslash",
    b"ctl\x01\x1b[31m.jpg": "control characters (a terminal colour escape)",
    "rlo\u202egpj.jpg".encode(): "a right-to-left override",
    b"Photos/upper.jpg": "folders that differ only in case 1",
    b"photos/lower.jpg": "folders that differ only in case 2",
    b"50%_off/a.jpg": "LIKE wildcards in a folder name",
    b"50%Xoff/b.jpg": "... and a folder they would match",
}
BROKEN = b"broken\xff\n.jpg"  # a hostile name on a file that is not an image
COPY = b"copy of caf\xe9\t.jpg"  # a byte-identical copy of caf\xe9.jpg: listed among its duplicates


def make_corpus(root: Path, testdata: Path) -> dict[str, Path]:
    """Copy a distinct real photo under every hostile name → {os path (str): source photo}."""
    assert len(LONG) == 255
    photos = sorted((testdata / "kphotoalbum").glob("*.jpg"))
    assert len(photos) >= len(NAMES)
    base = os.fsencode(str(root))
    out = {}
    for name, source in zip(NAMES, photos):
        target = base + b"/" + name
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(source, "rb") as src, open(target, "wb") as dst:
            dst.write(src.read())
        out[os.fsdecode(target)] = source
    with open(base + b"/" + BROKEN, "wb") as f:
        f.write(b"this is not a photo\n" * 20)
    shutil.copy(base + b"/caf\xe9.jpg", base + b"/" + COPY)
    return out


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, testdata, shared_lite):
    """The corpus indexed through the CLI (in-process) → (root, index dir, {os path: source}).
    The indexed folder's own name is not UTF-8 either (it is recorded among the index's roots)."""
    root = Path(os.fsdecode(os.fsencode(str(tmp_path_factory.mktemp("names"))) + b"/arch\xefve"))
    root.mkdir()
    files = make_corpus(root, testdata)
    index = root.parent / "index"
    rc = cli.main(["index", str(root), "--index", str(index), "--no-progress"])
    assert rc == 0
    with Engine.open(index) as engine:
        assert engine.roots() == [str(root)]
    return str(root), str(index), files


@pytest.fixture(scope="module")
def engine(corpus):
    _, index, _ = corpus
    with Engine.open(index) as e:
        yield e


@pytest.fixture(scope="module")
def client(corpus):
    _, index, _ = corpus
    with TestClient(create_app(ServerSettings(index_dir=Path(index)), ui=False), base_url="http://127.0.0.1") as c:
        yield c


# -- index, re-index, failures ----------------------------------------------------------
def test_every_name_is_indexed_and_the_broken_file_recorded(corpus, engine):
    root, _, files = corpus
    stats = engine.stats()
    assert (stats["images"], stats["duplicates"], stats["failed"]) == (len(NAMES), 1, 1)
    cafe, copy = (os.fsdecode(os.fsencode(root) + b"/" + n) for n in (b"caf\xe9.jpg", COPY))
    assert engine.get_image(cafe).duplicates == [copy]
    assert engine.get_image(copy).duplicate_of == engine.get_image(cafe).id
    for path in files:
        record = engine.get_image(path)
        assert record.path == path and record.status == "indexed"
        assert os.fsencode(record.path).startswith(os.fsencode(root))
    (failure,) = engine.errors()
    broken = os.path.join(root, os.fsdecode(BROKEN))
    assert failure.path == broken and failure.reason in ("not-an-image", "corrupt")
    assert to_text(os.fsdecode(BROKEN)) in failure.message  # the message quotes the name in its text form
    failure.message.encode("utf-8")


def test_reindex_skips_every_unchanged_name(corpus, capsys):
    root, index, _ = corpus
    rc, out, _ = run(capsys, "index", root, "--index", index, "--no-progress")
    assert rc == 0
    assert f"{len(NAMES) + 2} unchanged" in out and " 0 new" in out and "0 deleted" in out and " 0 failed" in out


# -- search, similar ---------------------------------------------------------------------------
def test_search_returns_every_name_and_each_photo_finds_itself(corpus, engine):
    _, _, files = corpus
    assert {h.path for h in engine.search("photo", k=100)} == set(files)
    for path in files:
        (hit,) = engine.search(Path(path), k=1)  # the file itself as the query (decoded by its name)
        assert hit.path == path
        like = engine.similar(path, k=3)
        assert len(like) == 3 and path not in {h.path for h in like}
        assert [h.id for h in engine.similar(hit.id, k=3)] == [h.id for h in like]


def test_the_folder_filter_is_exact(corpus, engine):
    root, _, _ = corpus

    def under(folder: bytes) -> set[str]:
        f = SearchFilters(under=os.fsdecode(os.fsencode(root) + b"/" + folder))
        return {os.path.basename(h.path) for h in engine.search("photo", k=100, filters=f)}

    assert under(b"dir\xff\xfe") == {"inside.jpg"}
    assert under(b"Photos") == {"upper.jpg"}
    assert under(b"photos") == {"lower.jpg"}
    assert under(b"50%_off") == {"a.jpg"}


# -- the CLI ---------------------------------------------------------------------------------
def test_cli_prints_one_escaped_line_per_hit(corpus, capsys):
    _, index, files = corpus
    rc, out, _ = run(capsys, "search", "photo", "-k", "100", "--index", index)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == len(files)  # a newline in a name does not split its line
    printed = {line[line.index(" /") + 1 :] for line in lines}  # rank, score, date, then the path
    assert printed == {to_text(p) for p in files}
    assert "\x1b" not in out and "\u202e" not in out and "\t" not in out
    rc, out, _ = run(capsys, "search", "photo", "-k", "100", "--json", "--index", index)
    assert rc == 0
    rows = json.loads(out)
    assert {from_text(h["path"]) for h in rows} == set(files)
    copies = {h["path"]: h["duplicates"] for h in rows if h["duplicates"]}
    root = corpus[0]
    assert copies == {to_text(root) + "/caf\\xe9.jpg": [to_text(root) + "/copy of caf\\xe9\\t.jpg"]}


def test_cli_accepts_the_printed_form_and_the_real_path(corpus, capsys):
    root, index, _ = corpus
    cafe = os.fsdecode(os.fsencode(root) + b"/caf\xe9.jpg")
    for arg in (to_text(cafe), cafe):
        rc, out, err = run(capsys, "similar", arg, "-k", "2", "--index", index)
        assert rc == 0, err
        assert len(out.splitlines()) == 2 and to_text(cafe) not in out
    folder = os.fsdecode(os.fsencode(root) + b"/dir\xff\xfe")
    for arg in (to_text(folder), folder):
        rc, out, err = run(capsys, "search", "photo", "--under", arg, "--index", index)
        assert rc == 0, err
        (line,) = out.splitlines()
        assert line.endswith(to_text(folder) + "/inside.jpg")


def test_cli_lists_the_failure_on_one_line(corpus, capsys):
    root, index, _ = corpus
    broken = to_text(os.path.join(root, os.fsdecode(BROKEN)))
    rc, out, _ = run(capsys, "info", "--errors", "--index", index)
    assert rc == 0
    (line,) = out.splitlines()
    assert f" {broken}: " in line
    rc, out, _ = run(capsys, "info", "--errors", "--json", "--index", index)
    assert [f["path"] for f in json.loads(out)] == [broken]


# -- the REST API ---------------------------------------------------------------------------
def test_api_search_image_thumbnail_file_and_similar_for_every_name(corpus, client):
    root, index, files = corpus
    r = client.get("/api/v1/search", params={"q": "photo", "k": 100})
    assert r.status_code == 200
    body = json.loads(r.content.decode("utf-8"))  # strict UTF-8
    hits = {from_text(h["path"]): h for h in body["hits"]}
    assert set(hits) == set(files)
    for path, hit in hits.items():
        assert hit["path"] == to_text(path)
        meta = client.get(f"/api/v1/images/{hit['id']}")
        assert meta.status_code == 200 and meta.json()["path"] == to_text(path)
        thumb = client.get(hit["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        original = client.get(hit["file_url"])
        assert original.status_code == 200 and original.content == files[path].read_bytes()
        assert "content-disposition" not in original.headers  # no file name in a header
        copies = [to_text(os.fsdecode(os.fsencode(root) + b"/" + COPY))] if path.endswith("/caf\udce9.jpg") else []
        assert hit["duplicates"] == meta.json()["duplicates"] == copies
        like = client.get(f"/api/v1/images/{hit['id']}/similar", params={"k": 2})
        assert like.status_code == 200 and hit["path"] not in {h["path"] for h in like.json()["hits"]}
    # thumbnail cache files are named by id and content hash, never by the photo's name
    names = [p.name for p in (Path(index) / "thumbnails").rglob("*.webp")]
    assert len(names) == len(files) and all(re.fullmatch(r"\d+-[0-9a-f]{16}-\d+\.webp", n) for n in names)


def test_api_paths_in_and_out_use_the_text_form(corpus, client):
    root, _, _ = corpus
    folder = to_text(os.fsdecode(os.fsencode(root) + b"/dir\xff\xfe"))
    r = client.get("/api/v1/search", params={"q": "photo", "under": folder})
    assert r.status_code == 200
    assert [h["path"] for h in r.json()["hits"]] == [folder + "/inside.jpg"]
    r = client.post("/api/v1/search", json={"q": "photo", "under": folder})
    assert r.status_code == 200 and len(r.json()["hits"]) == 1
    for bad in (to_text(root) + "/bad\\escape", to_text(root) + "/raw\ttab", "/x/\\x41"):  # not a text form
        r = client.get("/api/v1/search", params={"q": "photo", "under": bad})
        assert r.status_code == 422 and "under" in r.json()["error"]["message"], bad
        r = client.post("/api/v1/index", json={"path": bad})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid", bad
    stats = client.get("/api/v1/stats")
    assert stats.status_code == 200
    assert [f["path"] for f in stats.json()["failed"]] == [to_text(os.path.join(root, os.fsdecode(BROKEN)))]


# -- rename, delete ----------------------------------------------------------------------------
def test_rename_and_delete_every_name(tmp_path, testdata, lite_encoder):
    root = tmp_path / "archive"
    root.mkdir()
    files = make_corpus(root, testdata)
    os.unlink(os.fsencode(str(root)) + b"/" + COPY)
    broken = os.path.join(str(root), os.fsdecode(BROKEN))
    with Engine.open(tmp_path / "index", encoder=lite_encoder, create=True) as engine:
        report = engine.index([str(root)])
        assert (report.new, report.failed) == (len(NAMES), 1)
        (problem,) = report.problems  # the run's summary names it in the text form
        assert problem.startswith(to_text(broken) + ": ") and "\n" not in problem
        problem.encode("utf-8")
        ids = {p: engine.get_image(p).id for p in files}
        # rename: every file moves into a folder whose name is not UTF-8 either (names kept: one is 255 bytes)
        base = os.fsencode(str(root))
        moved = {}
        for path in files:
            old = os.fsencode(path)
            new = base + b"/moved\xe9\n" + old[len(base):]
            os.makedirs(os.path.dirname(new), exist_ok=True)
            os.rename(old, new)
            moved[path] = os.fsdecode(new)
        report = engine.index([str(root)])
        assert (report.moved, report.new, report.deleted, report.failed) == (len(NAMES), 0, 0, 0)
        for old, new in moved.items():
            assert engine.get_image(new).id == ids[old]
            assert engine.search(Path(new), k=1)[0].path == new
        # delete
        for new in moved.values():
            os.unlink(os.fsencode(new))
        report = engine.index([str(root)])
        assert report.deleted == len(NAMES)
        assert engine.stats()["images"] == 0 and engine.search("photo", k=10) == []


# -- an index made before schema v6 ---------------------------------------------------------------
def test_an_index_made_before_v6_is_migrated(tmp_path, testdata, lite_encoder):
    """Build an index, then put its database back exactly as schema v5 wrote it (paths
    stored as they are, version 5): names with a backslash, a newline and a tab were
    indexable then. Opening it with this code migrates; nothing is re-encoded or lost."""
    root = tmp_path / "archive"
    root.mkdir()
    sources = sorted((testdata / "kphotoalbum").glob("*.jpg"))
    names = ["back\\slash.jpg", "new\nline.jpg", "tab\t.jpg", "new\\nline.jpg", "plain.jpg"]
    for name, source in zip(names, sources):
        shutil.copy(source, root / name)
    index = tmp_path / "index"
    with Engine.open(index, encoder=lite_encoder, create=True) as engine:
        engine.index([str(root)])
        ids = {h.path: h.id for h in engine.search("photo", k=10)}
    db = sqlite3.connect(index / "frozenlens.db")
    with db:
        rows = db.execute("SELECT id, path FROM images").fetchall()
        for image_id, text in sorted(rows, key=lambda r: len(r[1])):  # shortest first: UNIQUE holds
            db.execute("UPDATE images SET path = ? WHERE id = ?", (from_text(text), image_id))
        db.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
    assert sorted(p for (p,) in db.execute("SELECT path FROM images")) == sorted(str(root / n) for n in names)
    db.close()

    with Engine.open(index, encoder=lite_encoder) as engine:
        assert engine.stats()["schema_version"] == 6
        assert {h.path: h.id for h in engine.search("photo", k=10)} == ids
        report = engine.index([str(root)])
        assert (report.skipped, report.new, report.changed, report.deleted) == (len(names), 0, 0, 0)
        for name in names:
            assert engine.get_image(str(root / name)).id == ids[str(root / name)]


# -- the page ------------------------------------------------------------------------------------
def test_the_page_shows_every_name_in_the_text_form(corpus):
    import html

    from frozenlens.server.state import ServerState
    from frozenlens.server.ui import actions

    root, index, files = corpus
    state = ServerState(ServerSettings(index_dir=Path(index)))
    try:
        view = actions.search_text(state, "photo", actions.Form(k=100))
        assert {h["path"] for h in view.hits} == {to_text(p) for p in files}
        json.dumps(view.hits, ensure_ascii=False).encode("utf-8")  # what Gradio keeps in the session
        cards = html.unescape(view.cards)
        cards.encode("utf-8")
        assert all(to_text(p) in cards for p in files)
        assert "\x1b" not in cards and "\u202e" not in cards
        folder = to_text(os.fsdecode(os.fsencode(root) + b"/dir\xff\xfe"))
        view = actions.search_text(state, "photo", actions.Form(k=100, folder=folder))
        assert [h["path"] for h in view.hits] == [folder + "/inside.jpg"]
        view = actions.search_text(state, "photo", actions.Form(k=100, folder=to_text(root) + "/bad\\escape"))
        assert not view.hits and "not a path" in view.status
        cafe = next(h for h in actions.search_text(state, "photo", actions.Form(k=100)).hits
                    if h["path"].endswith("/caf\\xe9.jpg"))
        view = actions.more_like(state, cafe["id"], actions.Form(k=3))
        assert len(view.hits) == 3 and "caf\\xe9.jpg" in html.unescape(view.status)
        _, rows, n = actions.overview(state)
        assert n == 1 and rows[0][0] == to_text(os.path.join(root, os.fsdecode(BROKEN)))
    finally:
        state.close()
