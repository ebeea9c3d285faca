"""A full disk during a write run becomes one typed error that says what was kept.

Indexing commits batch by batch (see :mod:`frozenlens.indexer.pipeline`), so
when the disk (or a quota) runs out, everything committed before survives and
a rerun after freeing space finishes the job. Where the space runs out decides
what is raised — SQLite's "database or disk is full" (``SQLITE_FULL``) or a
"disk I/O error" on its journal, or ``OSError(ENOSPC)`` from a vector file,
thumbnail or lock file — :func:`stop_on_full_disk` turns each of them into
:class:`~frozenlens.errors.DiskFullError` with the count of photos committed.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DiskFullError

if TYPE_CHECKING:
    from ..store import Store

_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = 13  # SQLITE_FULL
_SQLITE_IOERR = 10  # SQLITE_IOERR (journal/WAL writes on a full disk report this)
#: with less free space than this, an I/O error of SQLite is taken for a full disk
_NEARLY_FULL_BYTES = 1 << 20


def is_disk_full(exc: BaseException, directory: Path | None = None) -> bool:
    """Whether ``exc`` (or an exception it wraps) means the disk is full.

    ``directory``: where the index lives; a SQLite I/O error counts as a full
    disk when that file system has (almost) no space left.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return True
        code = getattr(e, "sqlite_errorcode", None)
        text = str(e).lower()
        if (code is not None and code & 0xFF == _SQLITE_FULL) or "database or disk is full" in text:
            return True
        if "no space left on device" in text or "disk quota exceeded" in text:
            return True
        if ((code is not None and code & 0xFF == _SQLITE_IOERR) or "disk i/o error" in text) and _nearly_full(directory):
            return True
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]  # SQLAlchemy keeps the DB-API error in .orig
    return False


def _nearly_full(directory: Path | None) -> bool:
    if directory is None:
        return False
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL_BYTES


@contextmanager
def stop_on_full_disk(store: Store, index_dir: Path, command: str = "index") -> Iterator[None]:
    """Run a write job; a full disk raises :class:`DiskFullError` saying how
    many photos were committed by the job and that rerunning ``command``
    after freeing space finishes it."""
    before = _indexed(store)
    try:
        yield
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc, index_dir):
            raise
        after = _indexed(store)
        kept = "" if before is None or after is None else (
            f"{after - before} new photos were committed before it stopped ({after} in the index); ")
        raise DiskFullError(
            f"the disk holding {index_dir} is full: {kept}free some space and run `frozenlens {command}` "
            "again to finish (nothing committed is lost)"
        ) from exc


def _indexed(store: Store) -> int | None:
    """Photos in the index (indexed and duplicates), or ``None`` if the database cannot say."""
    try:
        counts = store.counts()
    except Exception:  # noqa: BLE001 - only for the message; the disk-full error is what matters
        return None
    return int(counts.get("images", 0)) + int(counts.get("duplicates", 0))
