"""Checking a SQLite index database, and salvaging what is readable from a damaged one.

:func:`check_database` runs SQLite's ``PRAGMA integrity_check`` (read-only).
:func:`repair_database` copies every readable row into a fresh database and
swaps it in; the damaged file is kept beside it as
``<name>.damaged-<UTC time>`` (with its ``-wal``, if any).

Salvage, table by table (the spirit of the sqlite3 shell's ``.recover``,
from Python): rows are read in rowid order; where a damaged page stops the
scan, the next readable rowid is found by probing (doubling steps, then
bisection) and the scan resumes there. The table's indexes, read on their
own, tell which rowids existed, so lost rows are counted exactly when one of
them is intact (else from ``count(*)``, else unknown). Rows that only make
sense with rows that were lost are then dropped so the index stays
consistent: an image whose vectors, a caption or a caption chunk was lost
(the next ``frozenlens index`` run sees its file as new and encodes it
again), a duplicate whose primary was lost, and orphans. Ids never go back:
``sqlite_sequence`` keeps the highest id ever handed out.

When the index's own settings (``meta``: schema version, encoder) cannot be
read, no row can be trusted: the fresh database is an empty index, which the
next ``frozenlens index`` run initialises and fills.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine

from .connection import read_only_uri
from .consistency import CORE_TABLES, drop_violations
from .migrations import migrate

#: most integrity problems listed in a report
MAX_PROBLEMS = 20
#: meta keys an index cannot be used without
ESSENTIAL_META = ("schema_version", "encoder_name", "encoder_version", "dim", "visual_dim")
_MIN_ROWID, _MAX_ROWID = -(2**63), 2**63 - 1
#: rows read per statement while salvaging
_CHUNK = 256


@dataclass
class DatabaseCheck:
    """What ``PRAGMA integrity_check`` says about one database file."""

    path: str
    ok: bool
    #: SQLite's findings (at most MAX_PROBLEMS), or why the check could not run
    problems: list[str] = field(default_factory=list)
    #: what was (not) checked, for people (e.g. PostgreSQL's amcheck)
    notes: list[str] = field(default_factory=list)


@dataclass
class TableSalvage:
    """Rows of one table: copied, unreadable, and dropped for consistency."""

    name: str
    salvaged: int = 0
    #: unreadable rows; ``None`` when it cannot be told how many there were
    lost: int | None = 0
    #: readable rows dropped because rows they depend on were lost
    dropped: int = 0


@dataclass
class RepairReport:
    """The outcome of :func:`repair_database`."""

    path: str
    damaged_copy: str
    tables: list[TableSalvage]
    #: the index's settings were unreadable: the new database is an empty index
    settings_lost: bool = False

    @property
    def images_to_reindex(self) -> int | None:
        """Images rows lost or dropped (their files are new to the next index run)."""
        for t in self.tables:
            if t.name == "images":
                return None if t.lost is None else t.lost + t.dropped
        return None


def check_database(path: Path) -> DatabaseCheck:
    """Integrity-check the SQLite file at ``path`` without writing anything."""
    if path.exists() and path.stat().st_size == 0:
        return DatabaseCheck(str(path), False, ["the file is empty"])
    try:
        con = sqlite3.connect(read_only_uri(path), uri=True, timeout=30)
    except sqlite3.Error as exc:
        return DatabaseCheck(str(path), False, [f"cannot open: {exc}"])
    try:
        rows = [str(r[0]) for r in con.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})")]
    except sqlite3.DatabaseError as exc:
        return DatabaseCheck(str(path), False, [str(exc)])
    finally:
        con.close()
    ok = rows == ["ok"]
    return DatabaseCheck(str(path), ok, [] if ok else rows)


def repair_database(path: Path) -> RepairReport:
    """Salvage the readable rows of the database at ``path`` into a fresh one,
    keep the damaged file aside and swap the fresh one in (``os.replace``).

    The caller holds the index's writer lock (nobody else writes meanwhile).
    """
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = path.with_name(f"{path.name}.repair-{stamp}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        tables, settings_lost = _salvage_into(path, tmp)
        damaged = _keep_aside(path, stamp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return RepairReport(str(path), str(damaged), tables, settings_lost)


# -- salvage --------------------------------------------------------------------
def _salvage_into(path: Path, tmp: Path) -> tuple[list[TableSalvage], bool]:
    src = None
    if path.stat().st_size > 0:
        with contextlib.suppress(sqlite3.Error):
            src = sqlite3.connect(read_only_uri(path), uri=True, timeout=30)
            # keep what loaded of a schema SQLite cannot fully read (e.g. statistics on a lost page)
            src.execute("PRAGMA writable_schema=ON")
    dst = sqlite3.connect(tmp, isolation_level=None)
    try:
        dst.execute("PRAGMA journal_mode=OFF")
        dst.execute("PRAGMA synchronous=OFF")
        schema = _schema(src) if src is not None else []
        reports: list[TableSalvage] = []
        if schema:
            dst.execute("BEGIN")
            reports = _copy_all(src, dst, schema)
            meta = dict(dst.execute("SELECT key, value FROM meta").fetchall()) if _has(dst, "meta") else {}
            settings_lost = any(k not in meta for k in ESSENTIAL_META)
            if not settings_lost:
                _drop_inconsistent(dst, src, reports)
            dst.execute("COMMIT")
        else:
            settings_lost = True
        if settings_lost:  # nothing can be trusted: an empty index of the current schema
            reports = _empty_index(dst, tmp, reports)
        dst.execute("PRAGMA journal_mode=WAL")
    finally:
        dst.close()
        if src is not None:
            src.close()
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    return reports, settings_lost


def _schema(src: sqlite3.Connection) -> list[tuple[str, str, str, str | None]]:
    """(type, name, table, sql) of every schema object, tables first; [] if unreadable."""
    rows = []
    for _ in range(2):  # with writable_schema, a failed schema load is kept partial for the next statement
        with contextlib.suppress(sqlite3.DatabaseError):
            rows = src.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
            break
    order = {"table": 0, "index": 1, "view": 2, "trigger": 3}
    return sorted(rows, key=lambda r: (order.get(r[0], 4), r[1]))


def _copy_all(src: sqlite3.Connection, dst: sqlite3.Connection, schema: list) -> list[TableSalvage]:
    reports = []
    tables = [r for r in schema if r[0] == "table" and r[3] and not r[1].startswith("sqlite_")]
    for *_, sql in tables:
        dst.execute(sql)
    for _, name, _, _ in tables:
        reports.append(_copy_table(src, dst, name, [r[1] for r in schema if r[0] == "index" and r[2] == name]))
    for kind, _, _, sql in schema:
        if kind != "table" and sql:
            with contextlib.suppress(sqlite3.DatabaseError):  # a unique index over rows that now clash
                dst.execute(sql)
    if _has(dst, "sqlite_sequence"):
        with contextlib.suppress(sqlite3.DatabaseError):
            for name, seq in src.execute("SELECT name, seq FROM sqlite_sequence").fetchall():
                dst.execute("UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name))
                if not dst.execute("SELECT 1 FROM sqlite_sequence WHERE name = ?", (name,)).fetchone():
                    dst.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", (name, seq))
    return reports


def _copy_table(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, indexes: list[str]) -> TableSalvage:
    info = src.execute(f"PRAGMA table_info({_q(table)})").fetchall()  # (cid, name, type, notnull, default, pk)
    cols = [r[1] for r in info]
    col_list = ", ".join(_q(c) for c in cols)
    select = f"SELECT rowid, {col_list} FROM {_q(table)} WHERE rowid >= ? ORDER BY rowid"
    insert = f"INSERT OR IGNORE INTO {_q(table)} ({col_list}) VALUES ({', '.join('?' * len(cols))})"
    report = TableSalvage(table)
    copied: set[int] = set()

    def take(row: tuple) -> None:
        if row[0] in copied:
            return
        copied.add(row[0])
        if dst.execute(insert, row[1:]).rowcount:
            report.salvaged += 1
        else:
            report.dropped += 1

    known, complete = _known_rowids(src, table, indexes)
    start: int | None = _MIN_ROWID
    while start is not None:
        try:  # a chunk at a time (sqlite3 steps one row ahead: a chunk ending at damage fails whole)
            rows = src.execute(select + f" LIMIT {_CHUNK}", (start,)).fetchall()
        except sqlite3.DatabaseError:
            try:  # row by row up to the damage
                rows = src.execute(select + " LIMIT 1", (start,)).fetchall()
            except sqlite3.DatabaseError:  # the first row from ``start`` on is unreadable
                nxt = _next_readable(src, select, start)
                for rowid in sorted(r for r in known if start <= r < (_MAX_ROWID + 1 if nxt is None else nxt)):
                    with contextlib.suppress(sqlite3.DatabaseError):  # a single row past the damage
                        for row in src.execute(select.replace("rowid >= ?", "rowid = ?"), (rowid,)):
                            take(row)
                start = nxt
                continue
        for row in rows:
            take(row)
        start = rows[-1][0] + 1 if rows and rows[-1][0] < _MAX_ROWID else None
    if complete:
        report.lost = len(known - copied)
    else:
        try:
            total = int(src.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0])
            report.lost = max(0, total - len(copied), len(known - copied))
        except sqlite3.DatabaseError:
            report.lost = len(known - copied) if known - copied else None
    return report


def _next_readable(src: sqlite3.Connection, select: str, failed_after: int) -> int | None:
    """The smallest rowid ``x > failed_after`` found from which reading works
    again (doubling steps, then bisection); ``None``: nothing readable after."""

    def ok(x: int) -> bool:
        try:
            src.execute(select + " LIMIT 1", (x,)).fetchall()
            return True
        except sqlite3.DatabaseError:
            return False

    bad, step = failed_after, 1
    while True:
        x = min(failed_after + step, _MAX_ROWID)
        if ok(x):
            break
        bad = x
        if x == _MAX_ROWID:
            return None
        step *= 2
    while x - bad > 1:  # bad fails, x works
        mid = (bad + x) // 2
        if ok(mid):
            x = mid
        else:
            bad = mid
    return x


def _known_rowids(src: sqlite3.Connection, table: str, indexes: Iterable[str]) -> tuple[set[int], bool]:
    """Rowids listed by the table's indexes (read without the table), and
    whether one index was read completely (then the set is exact)."""
    known: set[int] = set()
    complete = False
    for index in indexes:
        got: set[int] = set()
        try:
            for (rowid,) in src.execute(f"SELECT rowid FROM {_q(table)} INDEXED BY {_q(index)}"):
                got.add(rowid)
            complete = True
        except sqlite3.DatabaseError:
            pass
        known |= got
    return known, complete


def _column_of_lost(src: sqlite3.Connection, dst: sqlite3.Connection, table: str, column: str) -> set[int]:
    """Values of ``column`` in the rows of ``table`` that were lost, as far as
    an index on that column (read without the table) tells."""
    out: set[int] = set()
    indexes = [r[1] for r in src.execute(f"PRAGMA index_list({_q(table)})").fetchall()]
    for index in indexes:
        if [r[2] for r in src.execute(f"PRAGMA index_info({_q(index)})").fetchall()] != [column]:
            continue
        kept = {r[0] for r in dst.execute(f"SELECT rowid FROM {_q(table)}")}
        with contextlib.suppress(sqlite3.DatabaseError):
            sql = f"SELECT rowid, {_q(column)} FROM {_q(table)} INDEXED BY {_q(index)}"
            for rowid, value in src.execute(sql):
                if rowid not in kept and value is not None:
                    out.add(int(value))
    return out


def _drop_inconsistent(dst: sqlite3.Connection, src: sqlite3.Connection, reports: list[TableSalvage]) -> None:
    """Drop readable rows that lost what they depend on (see the module doc)."""
    if not all(_has(dst, t) for t in CORE_TABLES):
        return
    before = {r.name: _count(dst, r.name) for r in reports}
    lost_caption_images = _column_of_lost(src, dst, "captions", "image_id")
    lost_chunk_captions = _column_of_lost(src, dst, "caption_chunks", "caption_id")
    owners = {c: i for c, i in dst.execute("SELECT id, image_id FROM captions")}
    forget = lost_caption_images | {owners[c] for c in lost_chunk_captions if c in owners}
    dst.executemany("DELETE FROM images WHERE id = ?", [(i,) for i in sorted(forget)])
    drop_violations(dst.execute, lambda table: _count(dst, table), lambda table: _has(dst, table))
    for r in reports:
        r.dropped += before[r.name] - _count(dst, r.name)


def _empty_index(dst: sqlite3.Connection, tmp: Path, reports: list[TableSalvage]) -> list[TableSalvage]:
    """Turn ``tmp`` into an empty index database of the current schema; every salvaged row is dropped."""
    for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall():
        dst.execute(f"DROP TABLE {_q(name)}")
    engine = create_engine(f"sqlite:///{tmp}")
    try:
        with engine.begin() as conn:
            migrate(conn)
    finally:
        engine.dispose()
    for r in reports:
        r.dropped, r.salvaged = r.dropped + r.salvaged, 0
    return reports


# -- swap -----------------------------------------------------------------------
def _keep_aside(path: Path, stamp: str) -> Path:
    """Keep the damaged database (and its write-ahead log) as ``<name>.damaged-<stamp>``."""
    damaged = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        os.link(path, damaged)  # the database path keeps a file until the fresh one replaces it
    except OSError:
        shutil.copy2(path, damaged)
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if wal.exists():  # must not be applied to the fresh database
        os.replace(wal, Path(f"{damaged}-wal"))
    shm.unlink(missing_ok=True)
    return damaged


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _has(con: sqlite3.Connection, table: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def _count(con: sqlite3.Connection, table: str) -> int:
    return int(con.execute(f"SELECT count(*) FROM {_q(table)}").fetchone()[0])


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
