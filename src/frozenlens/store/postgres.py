"""PostgreSQL specifics: the advisory locks that serialise migrations and keep one writer.

* Migrations: :meth:`Store.open` takes ``pg_advisory_xact_lock`` at the
  start of its migration transaction, so processes opening one database at
  once upgrade it one after the other (the later ones find it current).
* Single writer: :func:`writer_lock` holds ``pg_try_advisory_lock`` on a
  connection of its own for a writer's whole run. PostgreSQL drops the lock
  with that session, so a killed writer (even by SIGKILL) leaves none behind.
  A second writer gets :class:`IndexLockedError`, as on SQLite, where the
  index directory's file lock is the only lock needed (and still taken on
  PostgreSQL, for the FAISS files beside it).

Lock keys are derived from the index's database (PostgreSQL scopes advisory
locks to a database anyway) and a purpose, as signed 64-bit integers.
SQLite needs none of this: :func:`lock_migrations` and :func:`writer_lock`
do nothing there.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from ..errors import IndexLockedError

log = logging.getLogger(__name__)

#: how long a writer waits for the lock before giving up: the session of a
#: writer that was just killed needs a moment to end on the server
WRITER_LOCK_WAIT_S = 2.0


def is_postgres(dialect_name: str) -> bool:
    return dialect_name == "postgresql"


def advisory_key(url: URL, purpose: str) -> int:
    """A signed 64-bit advisory lock key for ``purpose`` in the database of ``url``."""
    digest = hashlib.blake2b(f"frozenlens:{purpose}:{url.database}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_migrations(conn: Connection) -> None:
    """Serialise schema migrations (PostgreSQL: until ``conn``'s transaction ends)."""
    if is_postgres(conn.dialect.name):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(conn.engine.url, "migrate")})


@contextmanager
def writer_lock(engine: Engine, *, wait_s: float = WRITER_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the index's writer lock (PostgreSQL) for the body; :class:`IndexLockedError` if another holds it."""
    if not is_postgres(engine.dialect.name):
        yield
        return
    key = advisory_key(engine.url, "writer")
    conn = engine.connect()
    try:
        deadline = time.monotonic() + wait_s
        while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            conn.commit()
            if time.monotonic() >= deadline:
                raise IndexLockedError(
                    f"another indexing run ({_holder(conn, key)}) is writing to the index database "
                    f"{engine.url.render_as_string(hide_password=True)}; "
                    "wait for it to finish (searching keeps working meanwhile)"
                )
            time.sleep(0.05)
        conn.commit()  # the lock belongs to the session, not to a transaction
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
            except SQLAlchemyError:  # the session is gone, and its lock with it
                log.warning("could not release the writer lock of %s", engine.url, exc_info=True)
                conn.invalidate()
    finally:
        conn.close()


def _holder(conn: Connection, key: int) -> str:
    """Who holds advisory lock ``key``: the client's application name (it carries
    its process id, see :func:`connect_args`) or the server's session pid."""
    row = conn.execute(
        text(
            "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.classid = :hi AND l.objid = :lo"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).first()
    conn.commit()
    if row is None:
        return "pid unknown"
    pid, app = row
    prefix = "frozenlens pid "
    return f"pid {app[len(prefix):]}" if app and app.startswith(prefix) else f"server session pid {pid}"
