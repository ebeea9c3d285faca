"""What one server process shares between requests: the open index and indexing jobs.

Requests share one :class:`~frozenlens.engine.Engine`, which is safe for
concurrent searches. The web server runs handlers in a pool of up to 40
threads; at most one search per usable core runs at a time (more only thrash
the GIL and the BLAS/OpenMP pools: measured with ``bench/bench_serve.py``,
see docs/benchmarks.md), the others wait their turn. An index that does not exist yet is not an error
here: :meth:`ServerState.engine` raises :class:`NoIndexError`, which clients
show as an empty state. Indexing jobs run in a background thread with their
own engine (writer), while searches keep being served; the search engine picks
up the new rows on its next query.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..cores import usable_cores
from ..engine import Engine
from ..engine.media import resolved_inside
from ..engine.readonly import read_only_reason, require_writable
from ..errors import FrozenLensError, IndexNotFoundError
from ..progress import Progress
from ..types import MARKER
from .settings import ServerSettings

log = logging.getLogger(__name__)


class NoIndexError(FrozenLensError):
    """The server's index directory holds no index yet."""


class IndexingNotAllowedError(FrozenLensError):
    """Indexing from the server is off, or the folder is outside the allowed roots."""


@dataclass
class IndexJob:
    """One indexing run started from the server (a snapshot is returned to clients)."""

    id: int
    path: str
    state: str = "queued"  # queued | running | done | failed
    stage: str = ""
    done: int = 0
    total: int | None = None
    message: str = ""
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    report: dict[str, object] | None = None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


class ServerState:
    """The open index of one server, plus its indexing jobs."""

    def __init__(self, settings: ServerSettings, encoder: str | None = None) -> None:
        self.settings = settings
        self._encoder = encoder
        self._engine: Engine | None = None
        self._lock = threading.RLock()
        self._slots = threading.BoundedSemaphore(settings.concurrency or max(1, usable_cores()))
        self._jobs: dict[int, IndexJob] = {}
        self._job_ids = itertools.count(1)
        self._jobs_lock = threading.Lock()

    # -- reading ---------------------------------------------------------
    @contextlib.contextmanager
    def engine(self) -> Iterator[Engine]:
        """The open engine (opened on first use), shared by concurrent requests.

        Raises :class:`NoIndexError` when there is no index yet.
        """
        with self._slots:
            yield self._open_engine()

    def _open_engine(self) -> Engine:
        engine = self._engine
        if engine is None:
            with self._lock:
                if self._engine is None:
                    if not (self.settings.index_dir / MARKER).exists():
                        raise NoIndexError(f"there is no index at {self.settings.index_dir} yet")
                    try:
                        self._engine = Engine.open(self.settings.index_dir, encoder=self._encoder)
                    except IndexNotFoundError as exc:
                        raise NoIndexError(str(exc)) from exc
                engine = self._engine
        return engine

    def warm(self) -> None:
        """Open the index and load everything its first query needs (no-op without an index yet)."""
        from ..engine.warmup import warm_engine

        if self.has_index():
            warm_engine(self._open_engine(), images=True)

    def has_index(self) -> bool:
        return (self.settings.index_dir / MARKER).exists()

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    # -- indexing ----------------------------------------------------------
    @property
    def indexing_allowed(self) -> bool:
        return bool(self.settings.index_roots)

    def check_index_path(self, path: str) -> Path:
        """The absolute folder to index, if it lies inside an allowed root."""
        if not self.settings.index_roots:
            raise IndexingNotAllowedError(
                "indexing from the server is off; start it with --allow-index FOLDER to allow it"
            )
        if not path:
            raise IndexingNotAllowedError("no folder given")
        real = resolved_inside(os.path.expanduser(path), self.settings.index_roots)
        if real is not None:
            if not real.is_dir():
                raise IndexingNotAllowedError(f"not a folder: {path}")
            return real
        allowed = ", ".join(str(r) for r in self.settings.index_roots)
        raise IndexingNotAllowedError(f"{path} is outside the folders that may be indexed ({allowed})")

    def start_index(self, path: str) -> IndexJob:
        """Start indexing ``path`` in the background; one job at a time
        (:class:`IndexReadOnlyError` when the index cannot be written)."""
        folder = self.check_index_path(path)
        require_writable(read_only_reason(self.settings.index_dir), self.settings.index_dir, "indexing")
        with self._jobs_lock:
            if any(j.active for j in self._jobs.values()):
                raise IndexingNotAllowedError("an indexing job is already running; wait for it to finish")
            job = IndexJob(next(self._job_ids), str(folder))
            self._jobs[job.id] = job
        threading.Thread(target=self._run_job, args=(job,), name=f"frozenlens-index-{job.id}", daemon=True).start()
        return replace(job)

    def job(self, job_id: int) -> IndexJob | None:
        with self._jobs_lock:
            job = self._jobs.get(job_id)
            return None if job is None else replace(job)

    def jobs(self) -> list[IndexJob]:
        with self._jobs_lock:
            return [replace(j) for j in sorted(self._jobs.values(), key=lambda j: j.id)]

    def _run_job(self, job: IndexJob) -> None:
        def progress(p: Progress) -> None:
            with self._jobs_lock:
                job.state, job.stage, job.done, job.total = "running", p.stage, p.done, p.total

        with self._jobs_lock:
            job.state = "running"
        try:
            with Engine.open(self.settings.index_dir, encoder=self._encoder, create=True) as writer:
                report = writer.index([job.path], progress=progress)
            summary = {k: v for k, v in vars(report).items() if k != "problems"}
            summary["problems"] = list(report.problems[:20])
            with self._jobs_lock:
                job.state, job.report = "done", summary
                job.message = f"indexed {report.new + report.changed} new or changed photos, {report.failed} failed"
        except FrozenLensError as exc:
            log.warning("indexing job %s failed: %s", job.id, exc)
            with self._jobs_lock:
                job.state, job.message = "failed", str(exc)
        except Exception as exc:  # a job must always end in a state (logged with its traceback)
            log.exception("indexing job %s crashed", job.id)
            with self._jobs_lock:
                job.state, job.message = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            with self._jobs_lock:
                job.finished_at = dt.datetime.now(dt.UTC)
