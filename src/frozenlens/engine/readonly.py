"""Whether an index may be written: decided once, when it is opened.

An index on read-only media (an archive disc, a read-only mount, an index
shared by an account without write permission) is still searchable: the
engine opens it read-only (:attr:`frozenlens.engine.Engine.read_only`), its
database through SQLite's read-only URI, builds missing vector files in
memory without saving them, and caches thumbnails outside it (see
:func:`frozenlens.engine.media.thumbnail`). Writing operations call
:func:`require_writable` first and stop with one line.

Root ignores file permissions, but not a read-only file system: both the
mount flag (``statvfs`` ``ST_RDONLY``) and ``os.access`` (which reports
``EROFS`` even to root) are consulted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IndexReadOnlyError

if TYPE_CHECKING:
    from ..store import Store


def read_only_reason(index_dir: str | os.PathLike[str], database: str | os.PathLike[str] | None = None) -> str | None:
    """Why the index at ``index_dir`` (with SQLite file ``database``, if any)
    cannot be written, or ``None`` when it can.

    A directory that does not exist yet is judged by its nearest existing
    parent (where it would be created).
    """
    directory = Path(index_dir)
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    reason = _not_writable(directory)
    if reason is not None:
        return reason
    if database is not None:
        db = Path(database)
        if db.parent != Path(index_dir):
            reason = _not_writable(db.parent) if db.parent.exists() else None
            if reason is not None:
                return f"the database's folder {db.parent}: {reason}"
        if db.exists() and not os.access(db, os.W_OK):
            return "this account may not write its database file"
    return None


def _not_writable(directory: Path) -> str | None:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "it lies on a read-only file system"
    except OSError:
        pass
    if not os.access(directory, os.W_OK | os.X_OK):
        return "this account may not write to it"
    return None


def require_writable(reason: str | None, index_dir: str | os.PathLike[str], action: str) -> None:
    """Raise :class:`IndexReadOnlyError` (one line) when ``reason`` says the index is read-only."""
    if reason is not None:
        raise IndexReadOnlyError(f"the index at {os.fspath(index_dir)} is read-only ({reason}): {action} needs to write to it")


def open_store(root: Path, *, create: bool, database_url: str | None) -> tuple[Store, str | None]:
    """(the database of the index at ``root``, why the index is read-only or ``None``).

    Read-only-ness is decided here, once: a read-only index gets its database
    opened read-only and its marker left as it is; creating an index there
    raises :class:`IndexReadOnlyError`.
    """
    from ..store import Store
    from ..store.connection import sqlite_file
    from ..types import MARKER
    from .index_dir import database_url as resolve_url

    reason = read_only_reason(root)
    if reason is not None and create and not (root / MARKER).exists():
        require_writable(reason, root, "creating an index")
    url = resolve_url(root, create=create, database_url=database_url, read_only=reason is not None)
    reason = reason or read_only_reason(root, sqlite_file(url))
    return Store.open(url, read_only=reason is not None), reason
