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

import logging
import os
from pathlib import Path

import numpy as np

from .retriever import VectorIndex
from .store import Delta, Store

log = logging.getLogger(__name__)

SPACES = ("semantic", "visual", "caption")
_RECONCILE_CHUNK = 4096


class VectorSpaces:
    """Owns one :class:`VectorIndex` per space and its file in ``index_dir``."""

    def __init__(
        self, index_dir: Path, indexes: dict[str, VectorIndex], dims: dict[str, int], epoch: int = 0
    ) -> None:
        self.index_dir = index_dir
        self.indexes = indexes
        self.dims = dims
        self.epoch = epoch

    @staticmethod
    def file_name(space: str, epoch: int) -> str:
        """``semantic.faiss`` for epoch 0, ``semantic.e2.faiss`` after two re-indexes."""
        return f"{space}.faiss" if epoch == 0 else f"{space}.e{epoch}.faiss"

    @classmethod
    def open(cls, index_dir: Path, dims: dict[str, int], factory: str, epoch: int = 0) -> VectorSpaces:
        """Load each space's file of this vector epoch if present (else create it empty).

        The epoch changes when the index is re-indexed with another encoder,
        so files holding the previous encoder's vectors are never loaded.
        """
        indexes: dict[str, VectorIndex] = {}
        for space in SPACES:
            path = index_dir / cls.file_name(space, epoch)
            if path.exists():
                indexes[space] = VectorIndex.load(path)
            else:
                # captions are few per image: exact search is always affordable
                indexes[space] = VectorIndex.create(dims[space], factory if space != "caption" else "Flat")
        return cls(index_dir, indexes, dims, epoch)

    def __getitem__(self, space: str) -> VectorIndex:
        return self.indexes[space]

    def reconcile(self, store: Store) -> dict[str, tuple[int, int]]:
        """Make every space hold exactly the database's ids; returns (added, removed) per space."""
        out: dict[str, tuple[int, int]] = {}
        for space in SPACES:
            index = self.indexes[space]
            db_ids = store.vector_ids(space)
            have = index.ids()
            missing = np.setdiff1d(db_ids, have, assume_unique=True)
            extra = np.setdiff1d(have, db_ids, assume_unique=True)
            if extra.size:
                index.remove(extra)
            for i in range(0, missing.size, _RECONCILE_CHUNK):
                chunk = missing[i : i + _RECONCILE_CHUNK]
                index.add(chunk, store.vectors(space, chunk.tolist(), self.dims[space]))
            if missing.size or extra.size:
                log.info("space %s: added %d, removed %d to match the database", space, missing.size, extra.size)
            out[space] = (int(missing.size), int(extra.size))
        return out

    def apply(self, delta: Delta) -> None:
        """Mirror a committed transaction's changes (removals first)."""
        if delta.removed_image_ids:
            ids = np.asarray(delta.removed_image_ids, np.int64)
            self.indexes["semantic"].remove(ids)
            self.indexes["visual"].remove(ids)
        if delta.removed_caption_ids:
            self.indexes["caption"].remove(np.asarray(delta.removed_caption_ids, np.int64))
        if delta.image_ids:
            ids = np.asarray(delta.image_ids, np.int64)
            self.indexes["semantic"].add(ids, np.stack(delta.semantic))
            self.indexes["visual"].add(ids, np.stack(delta.visual))
        if delta.caption_ids:
            self.indexes["caption"].add(np.asarray(delta.caption_ids, np.int64), np.stack(delta.caption_vectors))

    def save(self) -> None:
        """Write every space atomically (temp file + ``os.replace``)."""
        os.makedirs(self.index_dir, exist_ok=True)
        for space in SPACES:
            self.indexes[space].save(self.index_dir / self.file_name(space, self.epoch))

    def remove_stale_files(self) -> list[str]:
        """Delete FAISS files of other epochs (call with the writer lock held)."""
        keep = {self.file_name(space, self.epoch) for space in SPACES}
        removed = []
        for path in self.index_dir.glob("*.faiss"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        return removed

    def sizes(self) -> dict[str, int]:
        return {space: len(self.indexes[space]) for space in SPACES}
