"""Schema versions and the migrations between them.

The schema version lives in ``meta['schema_version']``. Each migration is a
function taking a connection inside a transaction; ``MIGRATIONS[i]`` upgrades
version ``i`` to ``i + 1`` (version 0 = empty database). A database newer than
this code knows is refused with :class:`SchemaVersionError`, never modified.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import BigInteger, Connection, Text, cast, inspect, select, text
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import SchemaVersionError
from ..paths import to_text
from .schema import Base, Meta

_V1_TABLES = ("meta", "images", "image_vectors", "captions")


def _v1_initial(conn: Connection) -> None:
    Base.metadata.create_all(conn, tables=[Base.metadata.tables[t] for t in _V1_TABLES])


def _v2_caption_chunks(conn: Connection) -> None:
    """Long captions are stored as chunks; the caption space indexes chunks.

    Existing captions become one chunk each with the SAME id and vector, so
    FAISS files written under v1 stay valid without a rebuild.
    """
    chunks = Base.metadata.tables["caption_chunks"]
    chunks.create(conn)
    captions = Base.metadata.tables["captions"]
    rows = conn.execute(select(captions.c.id, captions.c.text, captions.c.vector)).all()
    if rows:
        conn.execute(
            chunks.insert(),
            [{"id": i, "caption_id": i, "position": 0, "text": t, "n_tokens": None, "vector": v} for i, t, v in rows],
        )
        if conn.dialect.name == "postgresql":
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence('caption_chunks', 'id'), (SELECT max(id) FROM caption_chunks))")
            )


def _v3_reindex_staging(conn: Connection) -> None:
    """Staging tables for resumable re-indexing with another encoder."""
    for name in ("staged_image_vectors", "staged_failures", "staged_captions"):
        Base.metadata.tables[name].create(conn)


def _v4_camera_index(conn: Connection) -> None:
    """Index on the camera label (camera filters look labels up, then use it)."""
    for index in Base.metadata.tables["images"].indexes:
        if index.name == "ix_images_camera":
            index.create(conn, checkfirst=True)


def _v5_image_tokens(conn: Connection) -> None:
    """Nullable ``tokens`` blobs (the reranker's image tokens) beside the vectors.

    Tables created by earlier steps of this same upgrade already have the
    column (they are built from the current models), so each is checked.
    """
    for table in ("image_vectors", "staged_image_vectors"):
        columns = {c["name"] for c in inspect(conn).get_columns(table)}
        if "tokens" not in columns:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN tokens {_blob_type(conn)}"))


def _v6_path_text(conn: Connection) -> None:
    """``images.path`` in the lossless text form of :mod:`frozenlens.paths`.

    Before v6 the column held the path itself, so only paths with a
    backslash or a control character change (a path that was not valid
    UTF-8 could not be stored at all). Read and written as plain text here
    (no :class:`~.schema.FsPathText` conversion). Longest first: a new text
    can equal another row's old path only if that path is longer (escaping
    lengthens), so it has been rewritten already and UNIQUE holds throughout.
    """
    rows = conn.execute(text("SELECT id, path FROM images")).all()
    changed = [(i, p, to_text(p)) for i, p in rows if p is not None and to_text(p) != p]
    changed.sort(key=lambda row: -len(row[1]))
    for image_id, _old, new in changed:
        conn.execute(text("UPDATE images SET path = :path WHERE id = :id"), {"path": new, "id": image_id})


def _blob_type(conn: Connection) -> str:
    return "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"


MIGRATIONS: list[Callable[[Connection], None]] = [
    _v1_initial,
    _v2_caption_chunks,
    _v3_reindex_staging,
    _v4_camera_index,
    _v5_image_tokens,
    _v6_path_text,
]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not inspect(conn).has_table(Meta.__tablename__):
        return 0
    value = conn.execute(select(Meta.value).where(Meta.key == "schema_version")).scalar()
    return int(value) if value is not None else 0


def migrate(conn: Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found."""
    found = current_version(conn)
    if found > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"index database has schema version {found}, this FrozenLens understands "
            f"up to {SCHEMA_VERSION}; upgrade FrozenLens"
        )
    for version in range(found, SCHEMA_VERSION):
        MIGRATIONS[version](conn)
        _set_version(conn, version + 1)
    return found


def upsert_meta(conn: Connection, values: dict[str, str]) -> None:
    """Set ``meta`` keys inside the caller's transaction (one ``INSERT ... ON
    CONFLICT`` on SQLite and PostgreSQL: race-free between sessions)."""
    table = Meta.__table__
    if not values:
        return
    if conn.dialect.name in ("sqlite", "postgresql"):
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(table).values([{"key": k, "value": v} for k, v in values.items()])
        conn.execute(stmt.on_conflict_do_update(index_elements=[table.c.key], set_={"value": stmt.excluded.value}))
        return
    for key, value in values.items():
        if not conn.execute(table.update().where(table.c.key == key).values(value=value)).rowcount:
            conn.execute(table.insert().values(key=key, value=value))


def increment_meta(conn: Connection, key: str) -> None:
    """Add one to the integer in ``meta[key]`` (1 when absent), in the caller's
    transaction; one statement on SQLite and PostgreSQL."""
    table = Meta.__table__
    if conn.dialect.name in ("sqlite", "postgresql"):
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(table).values(key=key, value="1")
        bumped = cast(cast(table.c.value, BigInteger) + 1, Text)
        conn.execute(stmt.on_conflict_do_update(index_elements=[table.c.key], set_={"value": bumped}))
        return
    current = conn.execute(select(table.c.value).where(table.c.key == key)).scalar()
    upsert_meta(conn, {key: str(int(current or 0) + 1)})


def _set_version(conn: Connection, version: int) -> None:
    upsert_meta(conn, {"schema_version": str(version)})
