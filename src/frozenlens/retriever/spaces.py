"""The three FAISS vector spaces of an index, kept consistent with the database.

Spaces: ``semantic`` (image vectors comparable with text, id = image id),
``visual`` (image→image vectors, id = image id) and ``caption`` (caption text
vectors, id = caption id).

The database is the source of truth (vectors are stored there as float16 next
to their rows); the FAISS files in the index directory are a derived cache.
:meth:`VectorSpaces.reconcile` makes the in-memory indexes hold exactly the
ids the database holds. Because ids are never reused, a vector never changes
under the same id, so comparing id sets is a complete consistency check.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import IndexCorruptError, VectorFileMismatchError
from ..store import Delta, Store
from . import _ondisk, _persist
from .choice import AUTO, AutoPolicy, factory_for, lists_on_disk
from .tuning import Chunks, Tuning, build, measure, tune
from .vector_index import VectorIndex

log = logging.getLogger("frozenlens.spaces")  # the name it had before moving here: users' logging settings keep working

SPACES = ("semantic", "visual", "caption")
#: the spaces whose index type follows the index's setting (captions stay exact)
IMAGE_SPACES = ("semantic", "visual")
#: spaces read from their files on first use (only image→image queries and near-duplicates read ``visual``)
LAZY_SPACES = ("visual",)
_RECONCILE_CHUNK = 4096
_READ_CHUNK = 65536


class VectorSpaces:
    """Owns one :class:`VectorIndex` per space and its file in ``index_dir``.

    The spaces in ``lazy`` (see :meth:`open`) are read from their files on
    first use, not at open: a text search never reads the ``visual`` file
    (1,280 floats a photo for ``lite``: 0.5 GB at 100 k photos). A space
    loaded after :meth:`reconcile` ran is reconciled with the same store as
    it loads.
    """

    def __init__(
        self, index_dir: Path, indexes: dict[str, VectorIndex], dims: dict[str, int], epoch: int = 0,
        owner: str | None = None, *, factory: str = "Flat",
    ) -> None:
        self.index_dir = index_dir
        self._indexes = indexes  # the loaded spaces; the others load on first use
        self.dims = dims
        self.epoch = epoch
        #: the index's identity, recorded in every file saved (see :meth:`open`)
        self.owner = owner
        self._factory = factory
        self._lock = threading.Lock()
        self._store: Store | None = None  # the store the last reconcile used

    @staticmethod
    def file_name(space: str, epoch: int) -> str:
        """``semantic.faiss`` for epoch 0, ``semantic.e2.faiss`` after two re-indexes."""
        return f"{space}.faiss" if epoch == 0 else f"{space}.e{epoch}.faiss"

    @classmethod
    def open(
        cls, index_dir: Path, dims: dict[str, int], factory: str, epoch: int = 0, owner: str | None = None,
        *, lazy: tuple[str, ...] = LAZY_SPACES,
    ) -> VectorSpaces:
        """Load each space's file of this vector epoch if present (else create it empty);
        the spaces in ``lazy`` on first use instead.

        The epoch changes when the index is re-indexed with another encoder,
        so files holding the previous encoder's vectors are never loaded.

        A file that cannot be used is treated like a missing one (the space
        starts empty and :meth:`reconcile` rebuilds it from the database),
        with a warning, and is renamed ``<name>.corrupt-<UTC time>`` for
        inspection: a damaged (truncated, overwritten) file, one of another
        dimension, and — with ``owner``, the index's identity — a valid file
        of another index (``<name>.foreign-<UTC time>``). A file saved before
        files recorded their owner is accepted (and records it when next saved).

        ``factory`` is a FAISS factory string or an index-type name
        (:data:`~frozenlens.retriever.choice.INDEX_TYPES`); a name starts an
        empty space at the type it means for an empty collection (``auto``:
        exact) and :meth:`adapt` re-decides as the collection grows.
        """
        spaces = cls(index_dir, {}, dims, epoch, owner, factory=factory)
        for space in SPACES:
            if space not in lazy:
                spaces._indexes[space] = spaces._read(space)
        return spaces

    def _read(self, space: str) -> VectorIndex:
        path = self.index_dir / self.file_name(space, self.epoch)
        loaded = _load_usable(path, self.dims[space], self.owner) if path.exists() else None
        # captions are few per image: exact search is always affordable
        wanted = factory_for(self._factory, 0, self.dims[space]) if space != "caption" else "Flat"
        return loaded or VectorIndex.create(self.dims[space], wanted)

    def loaded(self, space: str) -> bool:
        """Whether ``space`` has been read (see the class's note on lazy spaces)."""
        return space in self._indexes

    def _get(self, space: str) -> VectorIndex:
        index = self._indexes.get(space)
        if index is not None:
            return index
        with self._lock:
            if space not in self._indexes:
                index = self._read(space)
                if self._store is not None:
                    _reconcile_one(space, index, self._store, self.dims[space])
                self._indexes[space] = index  # published once, fully reconciled
            return self._indexes[space]

    def load_all(self) -> VectorSpaces:
        """Read every lazy space now (a writer keeps all of them, and saves them); returns self."""
        for space in SPACES:
            self._get(space)
        return self

    def __getitem__(self, space: str) -> VectorIndex:
        return self._get(space)

    def reconcile(self, store: Store) -> dict[str, tuple[int, int]]:
        """Make every loaded space hold exactly the database's ids; returns (added, removed) per loaded space.

        Spaces not loaded yet are reconciled with ``store`` when they load."""
        with self._lock:
            self._store = store
            return {space: _reconcile_one(space, index, store, self.dims[space])
                    for space, index in list(self._indexes.items())}

    def apply(self, delta: Delta) -> None:
        """Mirror a committed transaction's changes (removals first) in the loaded spaces
        (one loaded later reads the committed rows from the database as it loads)."""
        loaded = {space: self._indexes.get(space) for space in SPACES}
        semantic, visual, caption = loaded["semantic"], loaded["visual"], loaded["caption"]
        if delta.removed_image_ids:
            ids = np.asarray(delta.removed_image_ids, np.int64)
            for index in (semantic, visual):
                if index is not None:
                    index.remove(ids)
        if delta.removed_caption_ids and caption is not None:
            caption.remove(np.asarray(delta.removed_caption_ids, np.int64))
        if delta.image_ids:
            ids = np.asarray(delta.image_ids, np.int64)
            if semantic is not None:
                semantic.add(ids, np.stack(delta.semantic))
            if visual is not None:
                visual.add(ids, np.stack(delta.visual))
        if delta.caption_ids and caption is not None:
            caption.add(np.asarray(delta.caption_ids, np.int64), np.stack(delta.caption_vectors))

    def save(self) -> None:
        """Write every space atomically (temp file + ``os.replace``); a space
        never loaded is unchanged and keeps its file."""
        os.makedirs(self.index_dir, exist_ok=True)
        for space, index in list(self._indexes.items()):
            index.save(self.index_dir / self.file_name(space, self.epoch), owner=self.owner)

    def remove_stale_files(self) -> list[str]:
        """Delete FAISS files of other epochs (an old encoder's, e.g. after a
        killed ``reindex``) and temp files of interrupted saves (call with the
        writer lock held: nobody else saves meanwhile), and inverted-lists files no kept file names
        (older saves, crash leftovers, working files of processes that are gone)."""
        keep = {self.file_name(space, self.epoch) for space in SPACES}
        removed = []
        for pattern in ("*.faiss", ".*.faiss.*.tmp"):
            for path in self.index_dir.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
                    removed.append(path.name)
        named = {_persist.recorded_lists_file(self.index_dir / name) for name in keep}
        for path in list(_ondisk.lists_files(self.index_dir)):
            if path not in named:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        if removed:
            log.info("removed stale vector files from %s: %s", self.index_dir, ", ".join(sorted(removed)))
        return removed

    def chunks(self, store: Store, space: str) -> Chunks:
        """The database's ``(ids, float32 vectors)`` of ``space``, in chunks (the ground truth)."""
        dim = self.dims[space]

        def read() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            ids = store.vector_ids(space)
            for i in range(0, ids.size, _READ_CHUNK):
                part = ids[i : i + _READ_CHUNK]
                yield part, store.vectors(space, part.tolist(), dim)

        return read

    def adapt(self, store: Store, index_type: str, policy: AutoPolicy,
              previous: dict[str, dict[str, object]] | None = None,
              only: tuple[str, ...] = IMAGE_SPACES) -> dict[str, Tuning]:
        """Re-decide and re-tune the image spaces for their current size (call with the writer lock,
        after :meth:`reconcile`); returns the new tunings by space (spaces left as they were are absent).

        ``auto`` rebuilds a space as the type :func:`~frozenlens.retriever.choice.recommend_factory`
        now picks when that differs (trained on a random sample of all stored vectors); any
        approximate space is re-tuned to ``policy.target_recall`` when it was rebuilt, never tuned
        (``previous``: the recorded tunings) or has doubled since. The caller saves the spaces
        (atomically) and records the tunings. ``only``: a subset of the image spaces (benchmarks).
        An IVF space whose type wants its inverted lists on disk
        (:func:`~frozenlens.retriever.choice.lists_on_disk`) gets them in ``index_dir``.
        """
        done: dict[str, Tuning] = {}
        for space in only:
            index, dim = self[space], self.dims[space]
            want = factory_for(index_type, len(index), dim, policy) if index_type == AUTO else index.factory
            disk = lists_on_disk(index_type, len(index), dim, policy)
            chunks = self.chunks(store, space)
            rebuilt = want != index.factory
            if rebuilt:
                log.info("space %s: %d vectors, switching %r -> %r", space, len(index), index.factory, want)
                index = self._indexes[space] = build(want, dim, chunks, metric=index.metric,
                                                     lists_dir=self.index_dir if disk else None)
            elif disk and index.is_trained and index.nlist and not index.lists_on_disk:
                index.move_lists_to_disk(self.index_dir)
            last = (previous or {}).get(space) or {}
            grown = len(index) >= 2 * int(last.get("n", 0) or 0) or last.get("factory") != index.factory
            approximate = index.is_trained and (index.nprobe is not None or index.ef_search is not None)
            if approximate and len(index) and (rebuilt or grown):
                done[space] = tune(index, chunks, policy)
        return done

    def measure_recall(self, store: Store, policy: AutoPolicy) -> dict[str, Tuning]:
        """Recall@k vs exact of each image space as searched now, on held-out queries."""
        return {space: measure(self[space], self.chunks(store, space), policy)
                for space in IMAGE_SPACES if len(self[space])}

    def sizes(self) -> dict[str, int]:
        return {space: len(self[space]) for space in SPACES}

    def factories(self) -> dict[str, str]:
        """The factory string of the index built for each space (what ``auto`` chose)."""
        return {space: self[space].factory for space in SPACES}


def _reconcile_one(space: str, index: VectorIndex, store: Store, dim: int) -> tuple[int, int]:
    """Make ``index`` hold exactly the database's ids of ``space``; (added, removed)."""
    db_ids = store.vector_ids(space)
    have = index.ids()
    missing = np.setdiff1d(db_ids, have, assume_unique=True)
    extra = np.setdiff1d(have, db_ids, assume_unique=True)
    if extra.size:
        index.remove(extra)
    for i in range(0, missing.size, _RECONCILE_CHUNK):
        chunk = missing[i : i + _RECONCILE_CHUNK]
        index.add(chunk, store.vectors(space, chunk.tolist(), dim))
    if missing.size or extra.size:
        log.info("space %s: added %d, removed %d to match the database", space, missing.size, extra.size)
    return int(missing.size), int(extra.size)


def _load_usable(path: Path, dim: int, owner: str | None) -> VectorIndex | None:
    """The index in ``path``, or ``None`` (after setting the file aside) when
    it is damaged, of another dimension or of another index."""
    try:
        index = VectorIndex.load(path, owner=owner)
        if index.dim != dim:
            raise IndexCorruptError(f"vector index {path} holds {index.dim}-d vectors, this index uses {dim}-d")
        return index
    except VectorFileMismatchError as exc:
        kind, problem = "foreign", str(exc)
    except IndexCorruptError as exc:
        kind, problem = "corrupt", str(exc)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{kind}-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.{kind}-{stamp}-{n}")
    try:
        os.replace(path, aside)
        kept = f"the file was kept as {aside.name}"
    except OSError as exc:  # read-only media: rebuild in memory, leave the file
        kept = f"the file stays in place ({exc.strerror or exc})"
    log.warning("%s; rebuilding it from the database (%s)", problem, kept)
    return None
