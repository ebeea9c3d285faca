"""`frozenlens doctor` on an index whose database is a real PostgreSQL server (tests/pg.py): a sound
index is ok (with amcheck verifying its B-tree indexes once the extension is installed), rows broken
behind the index's back are reported, `doctor --repair` deletes exactly the rows the consistency
rules reject, and the next `frozenlens index` run restores the photo."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import create_engine, text

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.engine.checkup import doctor

pytestmark = pytest.mark.slow


def sql(url: str, *statements: str) -> list:
    engine = create_engine(url)
    try:
        with engine.begin() as c:
            results = [c.execute(text(s)) for s in statements]
            return [r.all() if r.returns_rows else None for r in results]
    finally:
        engine.dispose()


def test_doctor_checks_and_repairs_a_postgresql_index(tmp_path, testdata, shared_lite, pg_url, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    index = tmp_path / "index"
    with Engine.open(index, create=True, database_url=pg_url) as engine:
        engine.index([photos], captions=photos / "captions.jsonl", batch_size=8)
        before = engine.stats()
        top = [h.path for h in engine.search("un lapin", k=3)]
    # sound: ok, the URL without a password, and a note that amcheck was not available
    report = doctor(index)
    assert report.ok and report.database.problems == [] and report.vector_problems == []
    assert report.database.path.startswith("postgresql+psycopg://") and "***" not in report.database.path
    assert any("amcheck extension is not installed" in n for n in report.database.notes)
    # with amcheck installed, every B-tree index of the index's tables is verified
    sql(pg_url, "CREATE EXTENSION amcheck")
    report = doctor(index)
    assert report.ok, report.database.problems
    verified = [n for n in report.database.notes if "verified with amcheck" in n]
    assert verified and int(verified[0].split()[0]) >= 4, report.database.notes  # at least the primary keys of the four core tables

    # rows changed behind the index's back: one photo loses its vectors, one caption its chunks
    rows_before = sql(pg_url, "SELECT count(*) FROM images")[0][0][0]
    (cap_owner, cap_id), = sql(pg_url, "SELECT image_id, id FROM captions ORDER BY id LIMIT 1")[0]
    (victim, path), = sql(pg_url, f"SELECT id, path FROM images WHERE status = 'indexed' AND id != {cap_owner} "
                                  "ORDER BY id DESC LIMIT 1")[0]
    sql(pg_url, f"DELETE FROM image_vectors WHERE image_id = {victim}",
        f"DELETE FROM caption_chunks WHERE caption_id = {cap_id}")
    report = doctor(index)
    assert not report.ok
    assert "1 indexed photos without vectors" in report.database.problems
    assert "1 photos with a caption that has no chunks" in report.database.problems
    rc = cli.main(["doctor", "--index", str(index)])
    out = capsys.readouterr().out
    assert rc == cli.EXIT_DAMAGED and "DAMAGED" in out and "1 indexed photos without vectors" in out

    # repair: exactly the two photos (and what hangs on them) go, in one transaction
    rc = cli.main(["doctor", "--repair", "--index", str(index)])
    out = capsys.readouterr().out
    assert rc == 0 and "rows that broke the index's consistency rules were deleted" in out and "now ok" in out
    left = {r[0] for r in sql(pg_url, "SELECT id FROM images")[0]}
    assert victim not in left and cap_owner not in left and len(left) == rows_before - 2
    assert sql(pg_url, f"SELECT count(*) FROM captions WHERE image_id IN ({cap_owner}, {victim})")[0] == [(0,)]
    assert doctor(index).ok
    # the next run encodes the two photos again and the index is whole
    with Engine.open(index) as engine:
        report = engine.index([photos], captions=photos / "captions.jsonl", batch_size=8)
        after = engine.stats()
        assert (after.images, after.captions, after.vectors) == (before.images, before.captions, before.vectors)
        assert path in {h.path for h in engine.search("a photo", k=100)}
        assert [h.path for h in engine.search("un lapin", k=3)] == top
    final = doctor(index)
    assert final.ok and final.vector_problems == []
