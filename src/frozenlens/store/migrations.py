"""Schema versions and the migrations between them.

The schema version lives in ``meta['schema_version']``. Each migration is a
function taking a connection inside a transaction; ``MIGRATIONS[i]`` upgrades
version ``i`` to ``i + 1`` (version 0 = empty database). A database newer than
this code knows is refused with :class:`SchemaVersionError`, never modified.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, inspect, select

from ..errors import SchemaVersionError
from .schema import Base, Meta


def _v1_initial(conn: Connection) -> None:
    Base.metadata.create_all(conn)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_initial]
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


def _set_version(conn: Connection, version: int) -> None:
    table = Meta.__table__
    updated = conn.execute(
        table.update().where(table.c.key == "schema_version").values(value=str(version))
    ).rowcount
    if not updated:
        conn.execute(table.insert().values(key="schema_version", value=str(version)))
