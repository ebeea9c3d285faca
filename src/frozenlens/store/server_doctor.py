"""Checking an index database on a database server (PostgreSQL), and dropping the rows it cannot keep.

SQLite's file-level checks and salvage (:mod:`.doctor`) have no meaning on a
server that guarantees its own storage; what can still go wrong there is
what a person or another program does to the rows. :func:`check_server_database`
therefore checks, in one read-only transaction:

* that the server answers (else the check fails with the reason);
* the index's settings (the meta keys an index cannot be used without);
* the consistency rules of :mod:`.consistency` (the same ones the SQLite
  salvage applies), each as a count of the rows that break it;
* PostgreSQL's own B-tree index check, ``bt_index_check`` of the ``amcheck``
  extension, on every index of the index's tables -- when the extension is
  installed in the database (creating it is the DBA's decision; a note says
  it was skipped).

:func:`repair_server_database` deletes the rows the rules reject, in one
transaction, holding the index's writer lock (an advisory lock).
"""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from .consistency import CORE_TABLES, DEPENDENT, ORPHANS, drop_violations, violations
from .doctor import ESSENTIAL_META, DatabaseCheck, RepairReport, TableSalvage
from .postgres import writer_lock

_BTREE_INDEXES = text(
    "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_am am ON am.oid = c.relam "
    "JOIN pg_namespace n ON n.oid = t.relnamespace "
    "WHERE am.amname = 'btree' AND n.nspname = current_schema() AND t.relname = ANY(:tables) ORDER BY c.relname"
)


def shown_url(url: str) -> str:
    """The URL without its password, as reports show it."""
    return make_url(url).render_as_string(hide_password=True)


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def check_server_database(url: str) -> DatabaseCheck:
    """Check the index database at ``url`` (see the module doc) without writing anything."""
    shown = shown_url(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SET TRANSACTION READ ONLY"))
            return _check(conn, shown)
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        return DatabaseCheck(shown, False, [f"cannot check the database: {reason}"])
    finally:
        engine.dispose()


def _check(conn: Connection, shown: str) -> DatabaseCheck:
    tables = _tables(conn)
    if "meta" not in tables or not set(CORE_TABLES) <= tables:
        missing = sorted({"meta", *CORE_TABLES} - tables)
        return DatabaseCheck(shown, False, [f"not an index database: tables missing: {', '.join(missing)}"])
    meta = dict(conn.execute(text("SELECT key, value FROM meta")).all())
    problems = [f"the index's setting {key!r} is missing" for key in ESSENTIAL_META if key not in meta]
    problems += violations(lambda sql: int(conn.execute(text(sql)).scalar_one()), tables.__contains__)
    notes: list[str] = []
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'")).first() is None:
        notes.append("B-tree indexes not verified: the amcheck extension is not installed in this database")
    else:
        names = conn.execute(_BTREE_INDEXES, {"tables": sorted(tables)}).scalars().all()
        for name in names:
            try:
                with conn.begin_nested():
                    conn.execute(text("SELECT bt_index_check(CAST(:name AS regclass))"), {"name": name})
            except DBAPIError as exc:
                problems.append(f"index {name}: {' '.join(str(exc.orig).split())}")
        notes.append(f"{len(names)} B-tree indexes verified with amcheck")
    return DatabaseCheck(shown, not problems, problems, notes)


def repair_server_database(url: str) -> RepairReport:
    """Delete the rows the consistency rules reject (one transaction, under the writer lock)."""
    engine = create_engine(url)
    try:
        with writer_lock(engine), engine.begin() as conn:
            tables = _tables(conn)
            names = sorted({table for _, table, _ in (*DEPENDENT, *ORPHANS)} & tables)

            def count_rows(table: str) -> int:
                return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

            before = {name: count_rows(name) for name in names}
            drop_violations(lambda sql: conn.execute(text(sql)), count_rows, tables.__contains__)
            reports = [TableSalvage(name, salvaged=count_rows(name), dropped=before[name] - count_rows(name))
                       for name in names]
    finally:
        engine.dispose()
    return RepairReport(shown_url(url), "", reports)
