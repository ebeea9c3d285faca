"""PostgreSQL metadata (issue 14, section 2) with a real server (tests/pg.py), the real
`lite` encoder and real photos: the same rows as SQLite, and one writer per database."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.errors import IndexLockedError
from frozenlens.progress import Progress
from frozenlens.store.schema import Base

pytestmark = pytest.mark.slow

#: tables compared row for row, and the columns that legitimately differ (the time of the write)
TABLES = ("images", "image_vectors", "captions", "caption_chunks")
VOLATILE = {"updated_at"}
#: meta keys that differ between two indexes of the same folder (identity, creation time)
VOLATILE_META = {"index_uuid", "created_at"}


def all_rows(url: str) -> dict[str, list[tuple]]:
    engine = create_engine(url)
    try:
        out = {}
        with engine.connect() as c:
            for name in TABLES:
                table = Base.metadata.tables[name]
                cols = [col for col in table.columns if col.name not in VOLATILE]
                out[name] = [tuple(r) for r in c.execute(select(*cols).order_by(*table.primary_key.columns))]
            meta = Base.metadata.tables["meta"]
            out["meta"] = [tuple(r) for r in c.execute(select(meta).order_by(meta.c.key)) if r.key not in VOLATILE_META]
        return out
    finally:
        engine.dispose()


def test_sqlite_and_postgresql_indexes_of_one_folder_are_identical_row_for_row(tmp_path, testdata, lite_encoder,
                                                                               pg_url):
    """FAISS ids are primary keys: the writer assigns them, so both back ends hold the same
    rows under the same ids (paths, EXIF fields, labels, vectors byte for byte, captions)."""
    photos = tmp_path / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    shutil.copy(photos / "pool.jpg", photos / "pool-copy.jpg")  # a duplicate
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")  # a failure
    (photos / "pool.jpg.txt").write_text("Billard im Keller", encoding="utf-8")  # a sidecar caption
    rows = {}
    for name, url in (("sqlite", None), ("postgresql", pg_url)):
        with Engine.open(tmp_path / name, encoder=lite_encoder, create=True, database_url=url) as engine:
            report = engine.index([photos], captions=photos / "captions.jsonl", batch_size=8)
            assert (report.duplicates, report.failed) == (1, 1)
        rows[name] = all_rows(url or f"sqlite:///{tmp_path / name / 'frozenlens.db'}")
    sqlite, pg = rows["sqlite"], rows["postgresql"]
    assert len(sqlite["images"]) == len(list(photos.glob("*.jpg")))
    assert len(sqlite["captions"]) > 20 and len(sqlite["caption_chunks"]) >= len(sqlite["captions"])
    for name in (*TABLES, "meta"):
        assert len(pg[name]) == len(sqlite[name]), name
        for a, b in zip(sqlite[name], pg[name]):
            assert a == b, (name, a[0])
    # ids are 1..n without gaps, as the FAISS files expect
    assert [r[0] for r in pg["images"]] == list(range(1, len(pg["images"]) + 1))


def test_second_writer_of_a_shared_database_is_refused_while_readers_search(tmp_path, testdata, shared_lite, pg_url,
                                                                             capsys):
    """Two index directories on one PostgreSQL database (two machines' worth of local FAISS
    files): the directories' file locks differ, the database's advisory lock does not."""
    photos, more = tmp_path / "photos", tmp_path / "more"
    photos.mkdir()
    more.mkdir()
    for name in ("coffee.png", "rocket.jpg", "chelsea.png"):
        shutil.copy(testdata / "photos" / name, photos / name)
    for name in ("astronaut.png", "flower.jpg"):
        shutil.copy(testdata / "photos" / name, more / name)
    a_dir, b_dir = tmp_path / "index-a", tmp_path / "index-b"
    with Engine.open(a_dir, create=True, database_url=pg_url) as a:
        a.index([photos])
    b = Engine.open(b_dir, create=True, database_url=pg_url)  # the database's index, seen from elsewhere
    assert b.stats()["images"] == 3

    inside, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold(p: Progress) -> None:  # freeze the writer mid-run, its locks held
        if p.stage == "encode" and not inside.is_set():
            inside.set()
            assert resume.wait(120)

    def write() -> None:
        try:
            with Engine.open(a_dir) as writer:
                writer.index([more], progress=hold, batch_size=1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert inside.wait(120), errors
        with pytest.raises(IndexLockedError, match="another indexing run"):
            b.index([more])
        hits = b.search("a cup of coffee", k=2)  # readers go on, and see the committed row
        assert Path(hits[0].path).name == "coffee.png"
        capsys.readouterr()
        assert cli.main(["index", str(more), "--index", str(b_dir), "--no-progress"]) == 3  # EXIT_LOCKED
        err = capsys.readouterr().err
        assert "another indexing run" in err and len(err.strip().splitlines()) == 1
    finally:
        resume.set()
        writer.join(120)
    assert not errors, errors[0]
    assert b.stats()["images"] == 5
    # b's own FAISS files take in the rows the other directory's writer committed
    assert {Path(h.path).name for h in b.search("a photo", k=10)} == {
        "coffee.png", "rocket.jpg", "chelsea.png", "astronaut.png", "flower.jpg"}
    assert cli.main(["index", str(more), "--index", str(b_dir), "--no-progress"]) == 0  # free again
    b.close()
