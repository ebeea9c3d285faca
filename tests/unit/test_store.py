"""Store: real SQLite and a real PostgreSQL server through SQLAlchemy (each test runs on both)."""

from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pytest

from frozenlens.errors import SchemaVersionError
from frozenlens.store import CaptionVector, PhotoFields, Store
from frozenlens.store.migrations import SCHEMA_VERSION
from frozenlens.types import SearchFilters


def unit(seed: int, dim: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def store(store_url):
    s = Store.open(store_url)
    yield s
    s.close()


def add(w, path, h, seed, *, taken=None, make=None, model=None, width=100, height=80, captions=(), tokens=None):
    return w.add_image(
        path=path,
        size=10,
        mtime_ns=1,
        content_hash=h,
        fields=PhotoFields(width=width, height=height, taken_at=taken, camera_make=make, camera_model=model),
        semantic=unit(seed, 8),
        visual=unit(seed + 100, 4),
        labels=[("tabby", 0.6), ("tiger cat", 0.3)],
        captions=[CaptionVector(t, "en", "manifest", unit(seed + 200 + i, 8)) for i, t in enumerate(captions)],
        caption_sig="sig",
        tokens=tokens,
    )


def test_sqlite_uses_wal_and_records_schema_version(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    con = sqlite3.connect(tmp_path / "db.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert store.get_meta()["schema_version"] == str(SCHEMA_VERSION)
    store.close()


def test_newer_schema_is_refused_untouched(store_url, store):
    store.set_meta({"schema_version": str(SCHEMA_VERSION + 1)})
    store.close()
    with pytest.raises(SchemaVersionError, match="upgrade FrozenLens"):
        Store.open(store_url)


def test_rows_vectors_and_delta_commit_together(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1, captions=["a cat on a sofa"])
        b = add(w, "/p/b.jpg", "h2", 2)
    assert w.delta.image_ids == [a, b]
    assert len(w.delta.caption_ids) == 1
    got = store.vectors("semantic", [b, a], 8)
    np.testing.assert_allclose(got, np.stack([unit(2, 8), unit(1, 8)]), atol=1e-3)
    assert set(store.vector_ids("semantic")) == {a, b}
    assert store.counts()["captions"] == 1


def test_failed_transaction_leaves_nothing(store):
    with pytest.raises(RuntimeError):
        with store.batch() as w:
            add(w, "/p/a.jpg", "h1", 1)
            raise RuntimeError("crash inside the batch")
    assert store.counts()["images"] == 0
    assert store.vector_ids("semantic").size == 0


def test_ids_are_never_reused_after_delete(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1)
        b = add(w, "/p/b.jpg", "h2", 2)
    with store.batch() as w:
        w.delete([b])
    with store.batch() as w:
        c = add(w, "/p/c.jpg", "h3", 3)
    assert c > b > a


def test_rewriting_a_path_gives_new_id_and_reports_removal(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1, captions=["old caption"])
    with store.batch() as w:
        a2 = add(w, "/p/a.jpg", "h9", 9)
    assert a2 != a
    assert w.delta.removed_image_ids == [a]
    assert len(w.delta.removed_caption_ids) == 1
    assert list(store.file_states(["/p"])) == ["/p/a.jpg"]


def test_duplicate_promoted_when_primary_deleted(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1, tokens=np.stack([unit(7, 8)] * 4))
        d1 = w.add_duplicate(path="/p/copy1.jpg", size=10, mtime_ns=1, content_hash="h1", duplicate_of=a, captions=[], caption_sig=None)
        d2 = w.add_duplicate(path="/p/copy2.jpg", size=10, mtime_ns=1, content_hash="h1", duplicate_of=a, captions=[], caption_sig=None)
    assert store.images([a])[a].duplicates == ["/p/copy1.jpg", "/p/copy2.jpg"]
    with store.batch() as w:
        w.delete([a])
    assert w.delta.removed_image_ids == [a]
    assert w.delta.image_ids == [d1]
    rec = store.images([d1, d2])
    assert rec[d1].status == "indexed" and rec[d1].duplicates == ["/p/copy2.jpg"]
    assert rec[d2].duplicate_of == d1
    np.testing.assert_allclose(store.vectors("visual", [d1], 4)[0], unit(101, 4), atol=1e-3)
    np.testing.assert_allclose(store.tokens([d1], 8)[d1], np.stack([unit(7, 8)] * 4), atol=1e-3)  # heir keeps tokens


def test_move_keeps_id_and_vectors(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1)
    with store.batch() as w:
        w.move(a, path="/q/renamed.jpg", size=10, mtime_ns=5)
    assert w.delta.is_empty()
    assert store.find_path("/q/renamed.jpg").id == a
    assert store.find_path("/p/a.jpg") is None


def test_filters_in_sql(store):
    with store.batch() as w:
        a = add(w, "/p/2003/a.jpg", "h1", 1, taken=dt.datetime(2003, 5, 1, 12), make="Canon", model="Canon PowerShot G2")
        b = add(w, "/p/2005/b.jpg", "h2", 2, taken=dt.datetime(2005, 12, 31, 23, 59), make="OLYMPUS IMAGING CORP.", model="C5050Z", width=3000)
        c = add(w, "/p/2005_other/c.jpg", "h3", 3)  # no date, no camera
        w.add_failure(path="/p/bad.jpg", size=0, mtime_ns=1, content_hash=None, reason="empty", message="0 bytes")

    def ids(**kw):
        return store.matching_ids(SearchFilters(**kw)).tolist()

    assert ids() == [a, b, c]
    assert ids(after=dt.date(2004, 1, 1)) == [b]
    assert ids(before=dt.date(2005, 12, 31)) == [a, b]  # inclusive day
    assert ids(before=dt.datetime(2005, 12, 31)) == [a]
    assert ids(camera="canon") == [a]
    assert ids(camera="olympus") == [b]
    assert ids(under="/p/2005") == [b]  # not /p/2005_other
    assert ids(under="/p/2005%") == []  # LIKE wildcards are escaped
    assert ids(min_width=1000) == [b]
    assert store.matching_ids(SearchFilters(camera="canon"), among=[b, c]).tolist() == []
    assert store.count_matching(SearchFilters(after=dt.date(2000, 1, 1))) == 2
    assert store.images([a])[a].camera == "Canon PowerShot G2"
    assert store.images([b])[b].camera == "OLYMPUS IMAGING CORP. C5050Z"
    assert [f.reason for f in store.failures()] == ["empty"]


def test_captions_of_duplicates_belong_to_primary(store):
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1, captions=["primary caption"])
        d = w.add_duplicate(
            path="/p/copy.jpg", size=10, mtime_ns=1, content_hash="h1", duplicate_of=a,
            captions=[CaptionVector("copy caption", "de", "sidecar-txt", unit(7, 8))], caption_sig="s",
        )
    owners = store.caption_owners(w.delta.caption_ids)
    assert set(owners.values()) == {a}
    assert store.caption_vectors_for([a], 8)[a].shape == (2, 8)
    assert [c[0] for c in store.images([a])[a].captions] == ["primary caption", "copy caption"]
    assert d not in store.matching_ids(SearchFilters()).tolist()


def test_generation_changes_on_every_write(store):
    g0 = store.generation()
    with store.batch() as w:
        add(w, "/p/a.jpg", "h1", 1)
    assert store.generation() == g0 + 1


def test_migration_v1_to_v2_keeps_caption_space_ids(store_url):
    """A v1 database (captions only) gains chunks with the same ids and vectors."""
    from sqlalchemy import create_engine

    from frozenlens.store.migrations import MIGRATIONS, _set_version
    from frozenlens.store.schema import Base

    url = store_url
    eng = create_engine(url)
    with eng.begin() as conn:
        MIGRATIONS[0](conn)
        _set_version(conn, 1)
        conn.execute(Base.metadata.tables["images"].insert().values(
            id=7, path="/p/a.jpg", size=1, mtime_ns=1, status="indexed", updated_at=dt.datetime(2020, 1, 1)))
        conn.execute(Base.metadata.tables["captions"].insert().values(
            id=42, image_id=7, lang="en", text="a cat", source="manifest", vector=unit(1, 8).astype("<f2").tobytes()))
    eng.dispose()
    store = Store.open(url)
    assert store.get_meta()["schema_version"] == str(SCHEMA_VERSION) == "6"
    assert store.vector_ids("caption").tolist() == [42]
    np.testing.assert_allclose(store.vectors("caption", [42], 8)[0], unit(1, 8), atol=1e-3)
    assert store.caption_owners([42]) == {42: 7}
    with store.batch() as w:  # new chunks never collide with migrated ids
        w.replace_captions(7, [CaptionVector("a dog", "en", "manifest", unit(2, 8))], "sig")
    assert w.delta.removed_caption_ids == [42] and w.delta.caption_ids[0] > 42
    store.close()


def test_long_caption_chunks_are_the_searchable_unit(store):
    from frozenlens.store import ChunkVector

    chunks = (ChunkVector("first part.", 3, unit(11, 8)), ChunkVector("second part.", 3, unit(12, 8)))
    with store.batch() as w:
        a = add(w, "/p/a.jpg", "h1", 1)
        w.replace_captions(a, [CaptionVector("first part. second part.", "en", "manifest", unit(13, 8), chunks)], "s")
    assert len(w.delta.caption_ids) == 2
    assert store.counts()["captions"] == 1
    assert sorted(store.caption_owners(w.delta.caption_ids).values()) == [a, a]
    assert store.caption_vectors_for([a], 8)[a].shape == (2, 8)
    with store.batch() as w:
        w.delete([a])
    assert len(w.delta.removed_caption_ids) == 2 and store.vector_ids("caption").size == 0


def test_migration_v4_to_v5_adds_nullable_tokens(store_url):
    """A v4 database (no tokens column) gains one; old rows read as "no tokens"."""
    from sqlalchemy import create_engine, text

    from frozenlens.store.migrations import MIGRATIONS, _set_version
    from frozenlens.store.schema import Base

    url = store_url
    eng = create_engine(url)
    with eng.begin() as conn:
        for step in MIGRATIONS[:4]:
            step(conn)
        conn.execute(text("ALTER TABLE image_vectors DROP COLUMN tokens"))  # as v4 created it
        conn.execute(text("ALTER TABLE staged_image_vectors DROP COLUMN tokens"))
        _set_version(conn, 4)
        conn.execute(Base.metadata.tables["images"].insert().values(
            id=3, path="/p/a.jpg", size=1, mtime_ns=1, status="indexed", updated_at=dt.datetime(2020, 1, 1)))
        conn.execute(text("INSERT INTO image_vectors (image_id, semantic, visual) VALUES (3, :s, :v)"),
                     {"s": unit(1, 8).astype("<f2").tobytes(), "v": unit(2, 4).astype("<f2").tobytes()})
    eng.dispose()
    store = Store.open(url)
    assert store.get_meta()["schema_version"] == "6"
    assert store.tokens([3], 8) == {}
    with store.batch() as w:
        new = add(w, "/p/b.jpg", "h2", 1, tokens=np.stack([unit(5, 8), unit(6, 8)]))
    got = store.tokens([3, new], 8)
    assert list(got) == [new] and got[new].shape == (2, 8)
    np.testing.assert_allclose(got[new][1], unit(6, 8), atol=1e-3)
    store.close()


def test_ids_are_assigned_by_the_writer_without_gaps_after_a_rollback(store):
    """FAISS ids are primary keys: a rolled-back batch must not use up ids (a
    PostgreSQL sequence would), so both back ends number rows alike."""
    with store.batch() as w:
        first = [add(w, f"/p/{i}.jpg", f"h{i}", i, captions=["a caption"]) for i in range(3)]
    assert first == [1, 2, 3] and w.delta.caption_ids == [1, 2, 3]
    with pytest.raises(RuntimeError):
        with store.batch() as w:
            add(w, "/p/lost.jpg", "hx", 9, captions=["lost"])
            raise RuntimeError("crash inside the batch")
    with store.batch() as w:
        after = add(w, "/p/kept.jpg", "hy", 10, captions=["kept"])
        dup = w.add_duplicate(path="/p/kept-copy.jpg", size=10, mtime_ns=1, content_hash="hy", duplicate_of=after,
                              captions=[], caption_sig=None)
    assert (after, dup) == (4, 5) and w.delta.caption_ids == [4]
    with store.batch() as w:
        w.delete([dup, after])
    with store.batch() as w:  # deleted ids are never handed out again
        assert add(w, "/p/new.jpg", "hz", 11, captions=["new"]) == 6
    assert w.delta.caption_ids == [5]


def test_values_are_made_to_fit_every_backend(store):
    """PostgreSQL refuses strings longer than their column and U+0000 in text;
    SQLite accepts both. The store stores the same, fitted values on both."""
    nul_caption = CaptionVector("before\x00after", "x" * 40, "sidecar-txt", unit(3, 8))
    with store.batch() as w:
        a = add(w, "/p/a\x00b.jpg", "h1", 1, make="M" * 200, model="Z" * 200, captions=[])
        w.replace_captions(a, [nul_caption], "sig")
        bad = w.add_failure(path="/p/bad.jpg", size=0, mtime_ns=1, content_hash=None, reason="r" * 50,
                            message="broken\x00file")
    rec = store.images([a])[a]
    assert rec.path == "/p/a\x00b.jpg"  # paths keep their lossless text form
    assert rec.camera == ("M" * 200 + " " + "Z" * 200)[:256]
    assert rec.captions == [("before\ufffdafter", "x" * 16, "sidecar-txt")]
    failure = store.failures()[0]
    assert failure.reason == "r" * 32 and failure.message == "broken\\x00file" and bad == a + 1
