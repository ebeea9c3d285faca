"""Deciding what one file of an indexing run is, once its content hash is known.

Touch (same content, new mtime), move (content of a row whose file is gone),
duplicate (content of an indexed file that exists), encode (new content), or
defer (decided at the end of the run). Shared by the local engine
(:mod:`.pipeline`) and the Ray engine (:mod:`.ray_engine`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from ..store import INDEXED, FileState, Store
from .captions import Caption
from .scan import FileEntry

__all__ = ["Classifier", "Work"]


@dataclass
class Work:
    entry: FileEntry
    captions: list[Caption]
    caption_sig: str
    old: FileState | None
    scanned: int = 0  # files scanned when the scan yielded this one


class Classifier:
    """Thread-safe, deterministic decisions about a file once its content hash is known.

    ``unseen`` is the run's path → state map of database rows under the roots
    that the scan has not reached yet (the scan takes from it through
    :meth:`reach`); after :meth:`scan_finished`, what is left of it is missing.

    Determinism (a SQLite and a PostgreSQL index of one folder must be
    identical row for row, whatever the thread timing): the decoder threads
    classify in scan order (a turn per work, ``turn=work.seq``), and no
    decision depends on how far the committer or the scan has got: content
    that this run already added, moved, re-encoded or retired is deferred to
    the end of the run whether or not its commit has happened yet, and "has
    the scan reached the primary's path" is answered as of the moment the
    work itself was scanned.
    """

    def __init__(self, store: Store, unseen: dict[str, FileState], first_new_id: int) -> None:
        self._store = store
        self._unseen = unseen
        self._reached: dict[str, int] = {}  # path of a database row → files scanned when the scan reached it
        self._missing: dict[str, FileState] = {}
        self._scanning = True
        self._first_new_id = first_new_id  # rows with ids from here on were added by this run
        self._claims: dict[str, str] = {}  # hash → path, for content not yet committed
        self._retired: set[str] = set()  # hashes of rows this run re-encodes or fails
        self._changed_ids: set[int] = set()
        self._cv = threading.Condition()
        self._turn = 0
        self.moved_ids: set[int] = set()

    def reach(self, path: str, scanned: int) -> FileState | None:
        """The scan reached ``path`` (the ``scanned``-th file): its database row, if any."""
        old = self._unseen.get(path)
        if old is not None:
            self._reached[path] = scanned  # before the pop: readers check ``unseen`` first
            del self._unseen[path]
        return old

    def scan_finished(self) -> None:
        """Called once every work of the streaming pass is classified."""
        with self._cv:
            self._scanning = False
            self._missing = {
                s.content_hash: s for s in self._unseen.values() if s.status == INDEXED and s.content_hash
            }

    @contextmanager
    def _in_turn(self, turn: int | None) -> Iterator[None]:
        with self._cv:
            if turn is not None:
                self._cv.wait_for(lambda: self._turn == turn)
            try:
                yield
            finally:
                if turn is not None:
                    self._turn += 1
                    self._cv.notify_all()

    def skip(self, work: Work, turn: int | None = None) -> None:
        """``work`` failed before it could be classified (its old content is retired)."""
        with self._in_turn(turn):
            self._retire(work.old)

    def classify(self, work: Work, content_hash: str, turn: int | None = None) -> tuple[str, FileState | None]:
        with self._in_turn(turn):
            old = work.old
            if old is not None and old.content_hash == content_hash and old.status != "failed":
                return "touch", old
            action, target = self._decide(work, content_hash)
            if action != "defer":
                self._retire(old)
            return action, target

    def _retire(self, old: FileState | None) -> None:
        if old is not None and old.status == INDEXED and old.content_hash:
            self._retired.add(old.content_hash)
            self._changed_ids.add(old.id)

    def _decide(self, work: Work, content_hash: str) -> tuple[str, FileState | None]:
        if content_hash in self._claims or (self._scanning and content_hash in self._retired):
            return "defer", None  # content this run is adding or changing: known at the end
        moved = self._missing.pop(content_hash, None)
        if moved is None:
            primary = self._store.indexed_by_hash([content_hash]).get(content_hash)
            if primary is not None and primary.path != work.entry.path:
                if self._scanning and self._touched_by_run(primary, work):
                    return "defer", None  # a duplicate, or a move out of the scanned set: known at the end
                if os.path.exists(primary.path):
                    return "duplicate", primary
            moved = primary  # None, or an indexed row whose file left the scanned roots
        self._claims[content_hash] = work.entry.path
        if moved is not None and moved.path != work.entry.path:
            self.moved_ids.add(moved.id)
            return "move", moved
        return "encode", None

    def _touched_by_run(self, primary: FileState, work: Work) -> bool:
        """Whether this run added, moved or re-encoded ``primary``, or the scan had not reached its path
        when it reached ``work`` (answers that do not depend on commit or scan timing)."""
        if primary.id >= self._first_new_id or primary.id in self.moved_ids or primary.id in self._changed_ids:
            return True
        return primary.path in self._unseen or self._reached.get(primary.path, -1) > work.scanned

    def release(self, hashes: Sequence[str]) -> None:
        with self._cv:
            for h in hashes:
                self._claims.pop(h, None)
