"""PostgreSQL specifics of the store, against a real server (tests/pg.py): serialised
migrations, the single-writer advisory lock, read-only sessions, unreachable servers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import inspect

from frozenlens.errors import DatabaseUnavailableError, IndexLockedError, IndexReadOnlyError
from frozenlens.store import Store
from frozenlens.store.migrations import SCHEMA_VERSION

from .test_store import add


def test_concurrent_first_opens_migrate_once(pg_url):
    """Several processes creating one index at once: the advisory lock lets one
    migrate while the others wait, then find the schema current."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    stores: list[Store] = []

    def open_it() -> None:
        barrier.wait()
        try:
            stores.append(Store.open(pg_url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert len(stores) == 4
    assert {s.get_meta()["schema_version"] for s in stores} == {str(SCHEMA_VERSION)}
    with stores[0].engine.connect() as c:
        assert set(inspect(c).get_table_names()) >= {"meta", "images", "image_vectors", "captions", "caption_chunks"}
    for s in stores:
        s.close()


def test_second_writer_is_refused_until_the_first_ends(pg_url):
    first, second = Store.open(pg_url), Store.open(pg_url)
    with first.writer_lock():
        start = time.monotonic()
        with pytest.raises(IndexLockedError, match=r"another indexing run \(pid \d+\) is writing") as exc:
            with second.writer_lock():
                pass
        assert time.monotonic() - start < 10
        assert "\n" not in str(exc.value) and "searching keeps working" in str(exc.value)
        with second.batch() as w:  # the lock guards writers' runs, not the database: reads and writes still work
            add(w, "/p/a.jpg", "h1", 1)
    with second.writer_lock():  # released with the first writer's run
        pass
    first.close()
    second.close()


def test_lock_of_a_killed_writer_is_released(pg_url, tmp_path):
    """The lock lives in the writer's database session: SIGKILL ends both."""
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from frozenlens.store import Store
            store = Store.open({pg_url!r})
            with store.writer_lock():
                print("locked", flush=True)
                time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        store = Store.open(pg_url)
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
            with store.writer_lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with store.writer_lock():  # within the short wait for the killed session to end
        pass
    store.close()


def test_read_only_store_refuses_writes(pg_url):
    Store.open(pg_url).close()  # create the schema
    store = Store.open(pg_url, read_only=True)
    assert store.get_meta()["schema_version"] == str(SCHEMA_VERSION)
    with pytest.raises(IndexReadOnlyError, match="read-only"):
        store.set_meta({"x": "y"})
    store.close()


def test_unreachable_server_is_a_typed_error(pg_server):
    url = pg_server.url("t_absent")  # no such database
    with pytest.raises(DatabaseUnavailableError, match="t_absent") as exc:
        Store.open(url)
    assert "\n" not in str(exc.value)
    with pytest.raises(DatabaseUnavailableError, match="cannot use the index database"):
        Store.open("postgresql+psycopg://postgres@127.0.0.1:1/x")  # nothing listens on port 1
