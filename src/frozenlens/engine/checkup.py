"""``frozenlens doctor``: check an index, and repair a damaged database.

The database check and the salvage are :mod:`frozenlens.store.doctor`'s; this
module locates the index's database, adds the vector files' consistency with
the database (cheap: id sets) and, after a repair, removes the vector files
(a cache of the database's vectors: the next open rebuilds them, so ids of
lost rows can never bring back stale vectors).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from ..errors import FrozenLensError, IndexNotFoundError, QueryError
from ..indexer.lock import IndexLock
from ..store.connection import sqlite_file
from ..store.doctor import DatabaseCheck, RepairReport, check_database, repair_database
from ..store.server_doctor import check_server_database, repair_server_database
from ..types import MARKER
from .index_dir import IDENTITY_KEY
from .index_dir import database_url as resolve_url
from .readonly import read_only_reason, require_writable

log = logging.getLogger(__name__)


@dataclass
class DoctorReport:
    """What ``frozenlens doctor`` found (and did)."""

    index_dir: str
    database: DatabaseCheck
    #: why the index cannot be written, or None
    read_only: str | None = None
    #: vector files that do not match the database (each heals on the next open)
    vector_problems: list[str] = field(default_factory=list)
    #: the repair done, if one was asked for and needed
    repair: RepairReport | None = None
    #: vector files removed after a repair
    removed_vector_files: list[str] = field(default_factory=list)
    #: the database after the repair
    after: DatabaseCheck | None = None

    @property
    def ok(self) -> bool:
        """The database is sound now (vector files heal by themselves)."""
        return (self.after or self.database).ok


def doctor(index_dir: str | os.PathLike[str], *, repair: bool = False) -> DoctorReport:
    """Check the index at ``index_dir``; with ``repair``, salvage a damaged database.

    A PostgreSQL database is checked by :mod:`frozenlens.store.server_doctor`
    (settings, consistency rules, amcheck), and a repair deletes the rows the
    consistency rules reject.

    Raises :class:`IndexNotFoundError` (no index there), :class:`QueryError`
    (the database is neither a SQLite file nor PostgreSQL: use the database's
    own tools) and, for a repair, :class:`IndexReadOnlyError` and
    :class:`IndexLockedError`.
    """
    root = Path(index_dir).expanduser().absolute()
    if not (root / MARKER).exists():
        raise IndexNotFoundError(f"no FrozenLens index at {root}")
    reason = read_only_reason(root)
    url = resolve_url(root, read_only=reason is not None)
    path = sqlite_file(url)
    if path is None and make_url(url).get_backend_name() == "postgresql":
        return _doctor_server(root, url, reason, repair)
    if path is None:
        raise QueryError(f"the index at {root} keeps its data in {url.split(':', 1)[0]}: check it with that database's tools")
    reason = reason or read_only_reason(root, path)
    report = DoctorReport(str(root), check_database(path), read_only=reason)
    if report.database.ok:
        report.vector_problems = vector_problems(root, url)
        return report
    if not repair:
        return report
    require_writable(reason, root, "repairing it")
    with IndexLock(root):
        report.repair = repair_database(path)
        for file in sorted(root.glob("*.faiss")):
            file.unlink()
            report.removed_vector_files.append(file.name)
    report.after = check_database(path)
    return report


def _doctor_server(root: Path, url: str, reason: str | None, repair: bool) -> DoctorReport:
    """:func:`doctor` for an index whose database is on a PostgreSQL server."""
    report = DoctorReport(str(root), check_server_database(url), read_only=reason)
    if report.database.ok or not repair:
        if report.database.ok:
            report.vector_problems = vector_problems(root, url)
        return report
    require_writable(reason, root, "repairing it")
    with IndexLock(root):
        report.repair = repair_server_database(url)
    report.after = check_server_database(url)
    report.vector_problems = vector_problems(root, url)  # made to match on the next open
    return report


def vector_problems(root: Path, url: str) -> list[str]:
    """How the vector files of the index differ from its (sound) database."""
    from ..retriever import VectorIndex
    from ..retriever.spaces import SPACES, VectorSpaces
    from ..store import Store

    problems = []
    store = Store.open(url, read_only=True)
    try:
        meta = store.get_meta()
        epoch = int(meta.get("vectors_epoch", "0"))
        for space in SPACES:
            file = root / VectorSpaces.file_name(space, epoch)
            if not file.exists():
                continue  # built from the database when first needed
            try:
                have = VectorIndex.load(file, owner=meta.get(IDENTITY_KEY)).ids()
            except FrozenLensError as exc:
                problems.append(f"{file.name}: {exc} (rebuilt from the database on the next open)")
                continue
            want = store.vector_ids(space)
            missing, extra = len(set(want.tolist()) - set(have.tolist())), len(set(have.tolist()) - set(want.tolist()))
            if missing or extra:
                problems.append(
                    f"{file.name}: {missing} vectors missing, {extra} not in the database (made to match on the next open)"
                )
    finally:
        store.close()
    return problems
