"""Ids of new rows, assigned by the single writer (never by the database).

``images.id`` is the FAISS id of an image and ``caption_chunks.id`` that of a
caption chunk, so ids must be the same whatever the back end: a PostgreSQL
sequence hands out numbers outside the transaction (a rolled-back batch
leaves a gap that SQLite's ``AUTOINCREMENT`` would not), so the writer
assigns every id itself. An id is never reused, even after its row is
deleted: the highest id ever handed out per table (its *high-water mark*) is
kept in ``meta['last_id:<table>']`` and written in the same transaction as
the rows, so a rollback takes back both together.

Indexes written before this rule (ids from ``AUTOINCREMENT`` or a sequence)
have no high-water mark in ``meta``; it is then read from
``sqlite_sequence`` (SQLite) or the column's sequence (PostgreSQL), whichever
is larger than the largest id present.

Only the one writer of an index allocates (see :meth:`Store.writer_lock`),
so reading the mark once per transaction is race-free.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select, text

from .migrations import upsert_meta
from .schema import CaptionChunkRow, CaptionRow, ImageRow, Meta

#: tables whose ids the writer assigns
TABLES = {t.__tablename__: t for t in (ImageRow, CaptionRow, CaptionChunkRow)}
META_PREFIX = "last_id:"


class IdAllocator:
    """Hands out new ids inside one transaction; :meth:`save` records the marks in it."""

    def __init__(self, conn: Connection) -> None:
        self._c = conn
        self._last: dict[str, int] = {}  # table → highest id handed out (loaded on first use)
        self._dirty: set[str] = set()

    def take(self, table: str, n: int = 1) -> list[int]:
        """``n`` new ids for ``table`` ("images", "captions", "caption_chunks"), ascending."""
        if not self._last:
            self._last = high_water_marks(self._c)
        last = self._last[table]
        self._last[table] = last + n
        self._dirty.add(table)
        return list(range(last + 1, last + n + 1))

    def save(self) -> None:
        """Write the high-water marks of the tables that got new ids (same transaction)."""
        if self._dirty:
            upsert_meta(self._c, {META_PREFIX + t: str(self._last[t]) for t in sorted(self._dirty)})
            self._dirty.clear()


def high_water_marks(conn: Connection) -> dict[str, int]:
    """The highest id each table ever handed out (0 for a new index), in one query."""
    recorded = {
        name: select(Meta.value).where(Meta.key == META_PREFIX + name).scalar_subquery() for name in TABLES
    }
    present = {name: select(func.max(row.id)).scalar_subquery() for name, row in TABLES.items()}
    values = conn.execute(select(*recorded.values(), *present.values())).one()
    out = {}
    for i, name in enumerate(TABLES):
        mark, biggest = values[i], int(values[len(TABLES) + i] or 0)
        out[name] = max(int(mark), biggest) if mark is not None else max(biggest, _legacy_high_water(conn, name))
    return out


def _legacy_high_water(conn: Connection, table: str) -> int:
    """What the database's own id generator handed out before ids were assigned here."""
    if conn.dialect.name == "sqlite":
        value = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = :t"), {"t": table}).scalar()
        return int(value or 0)
    if conn.dialect.name == "postgresql":
        seq = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar()
        if seq is None:
            return 0
        value = conn.execute(text(f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {seq}")).scalar()
        return int(value or 0)
    return 0
