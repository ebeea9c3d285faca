"""The index directory's bookkeeping: marker file, database location, identity, leftovers.

An index directory is self-contained and relocatable: it can be moved,
renamed or copied (a backup, an archive handed to a colleague) and keeps
working, and a copy never touches the original.

Marker file ``.frozenlens-index`` (one line, UTF-8)
---------------------------------------------------
* empty: the database is the SQLite file ``frozenlens.db`` next to the marker
  (the default; older FrozenLens versions read an empty marker the same way);
* ``sqlite:///<relative path>``: a SQLite file inside the directory, relative
  to it (never to the current directory);
* anything else: an external database URL (PostgreSQL, a SQLite file outside
  the directory), used as given.

Markers written before indexes were relocatable hold the absolute URL of the
database, ``sqlite:////old/place/<name>/frozenlens.db``. Such a URL is read as
the directory's *own* database ``<dir>/frozenlens.db`` when it lies inside
the directory, when it points into another index directory (the marker was
copied with the index: the database there is the original's, never ours), or
when it no longer exists but ``<dir>/<its name>`` does (the index was moved).
The marker is then rewritten in the relative form when the directory is
writable; on read-only media it is only interpreted.

Identity
--------
Every index gets a random identity (meta key ``index_uuid``) on its first
writable open; its vector files record it (see :mod:`frozenlens.retriever.spaces`), so
a vector file of another index is recognised and rebuilt. A copy shares the
identity of its original, which is right: same contents.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DiskFullError, IndexNotFoundError
from ..types import (
    MARKER,  # the marker file's name: one owner, frozenlens.types (the indexer reads it too)
)

if TYPE_CHECKING:
    from ..store import Store

log = logging.getLogger(__name__)

DB_NAME = "frozenlens.db"
IDENTITY_KEY = "index_uuid"
#: meta key of the folders ever indexed (JSON list): files are only served from inside them
ROOTS_KEY = "roots"
#: temporary files of interrupted writes that are not protected by the
#: writer lock are removed only once they are this old (a running training
#: or a concurrent open may be writing one right now)
LEFTOVER_MIN_AGE_S = 600.0
#: temporary files that interrupted writers leave in an index directory
_LEFTOVER_PATTERNS = (f"{MARKER}.tmp", f"{MARKER}.*.tmp", ".reranker*.tmp", "reranker.train.pt.tmp")

_SQLITE_URL = re.compile(r"^(sqlite(?:\+\w+)?:///)([^?]*)(\?.*)?$")


def database_url(
    root: Path, *, create: bool = False, database_url: str | None = None, read_only: bool = False
) -> str:
    """The SQLAlchemy URL of the database of the index at ``root`` (absolute path).

    ``create`` writes a marker for a new index (``database_url`` or the
    default SQLite file) when there is none; without it a missing marker
    raises :class:`IndexNotFoundError`. A ``database_url`` that differs from
    the one the existing index uses raises :class:`IndexNotFoundError`. An
    old absolute marker is migrated unless ``read_only`` (see module doc).
    """
    marker = root / MARKER
    if not marker.exists():
        if not create:
            raise IndexNotFoundError(f"no FrozenLens index at {root} (run `frozenlens index` first)")
        root.mkdir(parents=True, exist_ok=True)
        _write_marker(root, marker_text(root, _absolute(database_url) if database_url else ""))
    try:
        text = marker.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexNotFoundError(f"cannot read the index marker {marker}: {exc}") from exc
    url, own = resolve(root, text)
    if database_url and _absolute(database_url) not in (url, text):
        raise IndexNotFoundError(f"index at {root} uses database {url!r}, not {database_url!r}")
    if own is not None:
        wanted = marker_text(root, url)
        if wanted != text and not read_only:
            try:
                _write_marker(root, wanted)
                log.info("index marker %s now locates the database relative to the directory", marker)
            except (OSError, DiskFullError) as exc:  # read-only media: interpreting it is enough
                log.info("cannot update the index marker %s (%s); using %s", marker, exc, own)
    return url


def resolve(root: Path, text: str) -> tuple[str, Path | None]:
    """(database URL, own SQLite file or ``None`` for an external database)
    for a marker's ``text`` in the index directory ``root``."""
    if not text:
        own = root / DB_NAME
        return f"sqlite:///{own}", own
    m = _SQLITE_URL.match(text)
    if m is None or m.group(2) in ("", ":memory:"):
        return text, None  # external (PostgreSQL ...) or in-memory
    prefix, raw, query = m.group(1), m.group(2), m.group(3) or ""
    recorded = Path(raw)
    if not recorded.is_absolute():
        own = root / recorded  # relative to the index directory, by definition
    elif _inside(recorded, root):
        own = recorded
    elif (recorded.parent / MARKER).exists() or (not recorded.exists() and (root / recorded.name).exists()):
        # copied (the recorded file belongs to the original index) or moved
        own = root / recorded.name
    else:
        return text, None  # an external SQLite file, as given
    return f"{prefix}{own}{query}", own


def marker_text(root: Path, url: str) -> str:
    """The marker line for ``url``: empty for the default database, a path
    relative to ``root`` for another SQLite file inside it, else ``url``."""
    m = _SQLITE_URL.match(url)
    if m is None or m.group(2) in ("", ":memory:"):
        return url
    path = Path(m.group(2))
    if not path.is_absolute() or not _inside(path, root):
        return url
    rel = path.relative_to(root)
    if str(rel) == DB_NAME and not m.group(3):
        return ""
    return f"{m.group(1)}{rel}{m.group(3) or ''}"


def ensure_identity(store: Store, meta: dict[str, str], *, read_only: bool = False) -> dict[str, str]:
    """``meta`` with the index's identity, creating one if the index has none
    (an index made before identities existed); nothing is written when
    ``read_only`` (the identity then stays absent)."""
    if IDENTITY_KEY in meta or read_only:
        return meta
    store.set_meta({IDENTITY_KEY: uuid.uuid4().hex})
    return store.get_meta()  # another process may have won the race: use what is stored


def indexed_roots(store: Store) -> list[str] | None:
    """The folders (or files) ever indexed into this index, absolute (meta key
    ``roots``); ``None`` for an index made before roots were recorded."""
    raw = store.get_meta().get(ROOTS_KEY)
    return None if raw is None else list(json.loads(raw))


def record_roots(store: Store, paths: Sequence[str | os.PathLike[str]]) -> None:
    """Add ``paths`` (made absolute) to the index's recorded roots."""
    known = set(indexed_roots(store) or [])
    new = {os.path.abspath(os.fspath(p)) for p in paths} - known
    if new:
        store.set_meta({ROOTS_KEY: json.dumps(sorted(known | new))})


def remove_leftovers(root: Path, *, min_age_s: float = LEFTOVER_MIN_AGE_S) -> list[str]:
    """Delete temporary files of interrupted writes (marker, reranker head,
    reranker training checkpoint) older than ``min_age_s``; returns their names.

    FAISS files are cleaned by :meth:`frozenlens.retriever.spaces.VectorSpaces.remove_stale_files`.
    """
    removed = []
    now = time.time()
    for pattern in _LEFTOVER_PATTERNS:
        for path in root.glob(pattern):
            try:
                if now - path.stat().st_mtime >= min_age_s:
                    path.unlink()
                    removed.append(path.name)
            except OSError:
                continue
    if removed:
        log.info("removed files left by interrupted runs from %s: %s", root, ", ".join(sorted(removed)))
    return removed


def _write_marker(root: Path, text: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{MARKER}.", suffix=".tmp", dir=root)
    except OSError as exc:
        _raise_if_full(exc, root)
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, root / MARKER)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            _raise_if_full(exc, root)
        raise


def _raise_if_full(exc: OSError, root: Path) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(f"the disk holding {root} is full; free some space and try again") from exc


def _absolute(url: str) -> str:
    """A SQLite URL with a relative path made absolute (relative to the current directory, as given)."""
    m = _SQLITE_URL.match(url)
    if m is None or m.group(2) in ("", ":memory:") or Path(m.group(2)).is_absolute():
        return url
    return f"{m.group(1)}{Path(m.group(2)).absolute()}{m.group(3) or ''}"


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
