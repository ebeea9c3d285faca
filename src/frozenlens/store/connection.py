"""How the store connects to its database: read-only opening, and the
database's errors as FrozenLens's typed exceptions.

PostgreSQL sessions are named ``frozenlens pid <process id>`` (so a refused
second writer can say who holds the lock) and, read-only, start every
transaction read-only; a write then raises :class:`IndexReadOnlyError`.

Read-only databases (``Store.open(url, read_only=True)``) are opened through a
SQLite URI with ``mode=ro``, so SQLite itself refuses every write. A WAL
database needs its ``-shm`` file to be writable or creatable; when the
directory holding the database cannot be written (a read-only mount, an
archive disc) the URI adds ``immutable=1`` instead, unless a write-ahead log
with content is present *and* its ``-shm`` exists (left by a writer that did
not close cleanly): then ``mode=ro`` alone reads it, while ``immutable`` would
silently ignore the log's transactions.

Errors: SQLite reporting a damaged file (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``,
for example "database disk image is malformed" or "file is not a database"),
on opening or on any later statement, raises :class:`DatabaseDamagedError`
naming the file; a write refused because the database is read-only raises
:class:`IndexReadOnlyError`. Both are translated in one place, a
``handle_error`` hook on the SQLAlchemy engine.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, event
from sqlalchemy.engine import ExceptionContext, make_url

from ..errors import DatabaseDamagedError, IndexNotFoundError, IndexReadOnlyError

log = logging.getLogger(__name__)

#: PostgreSQL's SQLSTATE for a write in a read-only transaction
PG_READ_ONLY_SQLSTATE = "25006"
#: SQLite result codes (and extended codes starting so) meaning the file is damaged
DAMAGED_CODES = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
#: the same, by message (for errors raised without a code)
DAMAGED_TEXTS = ("database disk image is malformed", "file is not a database")
#: write refused because the database (or its directory) is read-only; not
#: SQLITE_READONLY_DBMOVED, which means the file was replaced while open
READ_ONLY_CODES = (
    "SQLITE_READONLY",
    "SQLITE_READONLY_DIRECTORY",
    "SQLITE_READONLY_CANTINIT",
    "SQLITE_READONLY_CANTLOCK",
    "SQLITE_READONLY_RECOVERY",
)


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; ``None`` for another backend or an in-memory database."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return None
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def connect_args(url: str, read_only: bool) -> dict[str, object]:
    """Keyword arguments for ``create_engine(url, ...)``: a read-only SQLite
    file gets a connection ``creator`` that opens it through its read-only URI."""
    path = sqlite_file(url)
    backend = make_url(url).get_backend_name()
    if backend == "postgresql":
        args: dict[str, object] = {"application_name": f"frozenlens pid {os.getpid()}"}
        if read_only:
            args["options"] = "-c default_transaction_read_only=on"
        return {"connect_args": args}
    if path is None:  # another backend (its own defaults), or SQLite in memory
        return {"connect_args": {"timeout": 30}} if backend == "sqlite" else {}
    if not read_only:
        check_not_empty(path)
        return {"connect_args": {"timeout": 30}}
    if not path.exists():
        raise IndexNotFoundError(f"the index database {path} does not exist")
    check_not_empty(path)
    uri = read_only_uri(path)

    def creator() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)

    return {"creator": creator}


def read_only_uri(path: Path) -> str:
    """``file:`` URI opening ``path`` read-only (``immutable=1`` where its directory cannot be written)."""
    # percent-encode the file name's bytes: SQLite decodes them back exactly
    uri = "file:" + quote(os.fsencode(os.path.abspath(path)), safe="/") + "?mode=ro"
    if _directory_writable(path.parent):
        return uri
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if wal_size and shm.exists():
        return uri  # SQLite reads the log through the existing -shm file
    if wal_size:
        log.warning(
            "%s has a write-ahead log but no -shm file on read-only media: its last %d bytes of changes are not visible",
            path, wal_size,
        )
    return uri + "&immutable=1"


def _directory_writable(directory: Path) -> bool:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return False
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def check_not_empty(path: Path) -> None:
    """An existing zero-length database file is damage (SQLite would take it for a new, empty database)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        raise DatabaseDamagedError(str(path), "the file is empty")


def damage_of(exc: BaseException) -> str | None:
    """SQLite's message when ``exc`` says the database file is damaged, else ``None``."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = str(exc)
    if name.startswith(DAMAGED_CODES) or any(t in text for t in DAMAGED_TEXTS):
        return text
    return None


def translate_errors(engine: Engine, label: str) -> None:
    """Raise typed errors for damaged and read-only databases from every
    statement and connection of ``engine`` (``label`` names the database)."""

    @event.listens_for(engine, "handle_error")
    def _translate(ctx: ExceptionContext) -> None:
        exc = ctx.original_exception
        detail = damage_of(exc)
        if detail is not None:
            raise DatabaseDamagedError(label, detail) from exc
        if isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorname", None) in READ_ONLY_CODES:
            raise IndexReadOnlyError(f"the index database {label} is read-only ({exc})") from exc
        if getattr(exc, "sqlstate", None) == PG_READ_ONLY_SQLSTATE:
            raise IndexReadOnlyError(f"the index {label} is opened read-only ({' '.join(str(exc).split())})") from exc
