"""Writes to the store: one :class:`BatchWriter` per database transaction.

Each write method also records, in :attr:`BatchWriter.delta`, how the vector
spaces change, so the caller can mirror a *committed* transaction in FAISS.

Ids are assigned here (:mod:`.ids`), never by the database, so the same
writes give the same rows on SQLite and PostgreSQL. New rows are buffered and
inserted in bulk (one Core ``insert()`` with a list of rows per table, parents
first) when the batch ends or before any statement that reads or changes
existing rows, so the order of effects is that of the calls.

Values are made to fit every back end: strings are cut to their column's
length (SQLite ignores it, PostgreSQL refuses longer ones) and U+0000, which
PostgreSQL text cannot hold, becomes U+FFFD in free text (paths keep their
own lossless text form, see :mod:`.schema`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence

import numpy as np
from sqlalchemy import String, Table, delete, select, update

from ..errors import IndexCorruptError
from ..paths import to_text
from .ids import IdAllocator
from .records import CaptionVector, ChunkVector, Delta, PhotoFields
from .schema import DUPLICATE, FAILED, INDEXED, CaptionChunkRow, CaptionRow, ImageRow, VectorRow

#: tables whose new rows are buffered, in insertion order (parents first)
_BUFFERED: tuple[Table, ...] = (ImageRow.__table__, VectorRow.__table__, CaptionRow.__table__, CaptionChunkRow.__table__)

_CHUNK = 500  # ids per IN (...) clause: stays under every backend's limit


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_blob(vector: np.ndarray) -> bytes:
    """float vector → little-endian float16 bytes."""
    return np.ascontiguousarray(vector, dtype="<f2").tobytes()


def from_blobs(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """float16 blobs → float32 (n, dim)."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    arr = np.frombuffer(b"".join(blobs), dtype="<f2")
    if arr.size != len(blobs) * dim:
        raise IndexCorruptError(f"stored vectors do not have dimension {dim}")
    return arr.reshape(len(blobs), dim).astype(np.float32)


def _rounded(vector: np.ndarray) -> np.ndarray:
    return np.asarray(vector, dtype=np.float16).astype(np.float32)


def id_chunks(values: Sequence[int], size: int = _CHUNK) -> Iterator[Sequence[int]]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _limits(table: Table) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns if isinstance(c.type, String) and c.type.length}


_LIMITS = {t.name: _limits(t) for t in _BUFFERED}


def fit_row(table: Table, row: dict[str, object]) -> dict[str, object]:
    """``row`` with its strings cut to their column's length and U+0000 replaced
    (except ``images.path``, stored in its own lossless form)."""
    limits = _LIMITS.get(table.name) or _limits(table)
    for key, value in row.items():
        if isinstance(value, str) and key != "path":
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            limit = limits.get(key)
            row[key] = value[:limit] if limit else value
    return row


def _camera_label(make: str | None, model: str | None) -> str | None:
    make = (make or "").strip()
    model = (model or "").strip()
    if make and model.lower().startswith(make.split()[0].lower()):
        return model  # "Canon" + "Canon PowerShot G2" → "Canon PowerShot G2"
    joined = f"{make} {model}".strip()
    return joined or None



class BatchWriter:
    """Writes inside one transaction; see :meth:`Store.batch`."""

    def __init__(self, session) -> None:  # noqa: ANN001 - SQLAlchemy Connection
        self._c = session
        self.delta = Delta()
        self._ids = IdAllocator(session)
        self._rows: dict[str, list[dict[str, object]]] = {t.name: [] for t in _BUFFERED}
        self._new_paths: set[str] = set()  # paths of the buffered images

    def flush(self) -> None:
        """Replace the rows at the buffered images' paths, then insert the
        buffered rows (one bulk insert per table, parents first).

        Every statement on existing rows flushes first, so between two
        flushes there are only new images at distinct paths: deleting their
        paths' old rows together ends as deleting them one by one would.
        """
        if self._new_paths:
            paths = sorted(self._new_paths)
            self._new_paths.clear()
            old = []
            for chunk in id_chunks(paths):
                old.extend(self._c.execute(select(ImageRow.id).where(ImageRow.path.in_(chunk))).scalars())
            if old:
                self._delete_ids(old)
        for table in _BUFFERED:
            rows = self._rows[table.name]
            if rows:
                self._c.execute(table.insert(), rows)
                self._rows[table.name] = []

    def finish(self) -> None:
        """Flush and record the ids handed out; :meth:`Store.batch` calls it before committing."""
        self.flush()
        self._ids.save()

    # -- images ----------------------------------------------------------
    def add_image(
        self,
        *,
        path: str,
        size: int,
        mtime_ns: int,
        content_hash: str,
        fields: PhotoFields,
        semantic: np.ndarray,
        visual: np.ndarray,
        labels: list[tuple[str, float]] | None,
        captions: Sequence[CaptionVector],
        caption_sig: str | None,
        tokens: np.ndarray | None = None,
    ) -> int:
        """Insert an indexed image with its vectors and captions; returns its id.

        ``tokens``: the encoder's image tokens float32 (n_tokens, dim) for the
        reranker, or ``None`` when the encoder has none.

        Any existing row at ``path`` (an older version of the file) is deleted
        first, so the new content always gets a new id.
        """
        self._claim(path)
        image_id = self._insert_image(
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            content_hash=content_hash,
            status=INDEXED,
            fields=fields,
            labels=json.dumps(labels) if labels is not None else None,
            caption_sig=caption_sig,
        )
        self._rows[VectorRow.__tablename__].append(
            {"image_id": image_id, "semantic": to_blob(semantic), "visual": to_blob(visual),
             "tokens": None if tokens is None else to_blob(tokens)}
        )
        self.delta.image_ids.append(image_id)
        self.delta.semantic.append(_rounded(semantic))
        self.delta.visual.append(_rounded(visual))
        self._insert_captions(image_id, captions)
        return image_id

    def add_duplicate(
        self,
        *,
        path: str,
        size: int,
        mtime_ns: int,
        content_hash: str,
        duplicate_of: int,
        captions: Sequence[CaptionVector],
        caption_sig: str | None,
    ) -> int:
        """Record a byte-identical copy of indexed image ``duplicate_of`` (written at once:
        a later row in this batch may replace the primary, which then promotes it)."""
        self.flush()  # the primary may be one of the buffered rows
        self._delete_path(path)
        primary = self._c.execute(select(ImageRow.__table__).where(ImageRow.id == duplicate_of)).one()
        fields = PhotoFields.copy_from(primary)
        image_id = self._insert_image(
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            content_hash=content_hash,
            status=DUPLICATE,
            fields=fields,
            labels=primary.labels,
            caption_sig=caption_sig,
            duplicate_of=duplicate_of,
        )
        self._insert_captions(image_id, captions)
        self.flush()
        return image_id

    def add_failure(
        self, *, path: str, size: int, mtime_ns: int, content_hash: str | None, reason: str, message: str
    ) -> int:
        """Record a file that could not be indexed (replacing any older row).

        ``message`` is stored in the text form of :mod:`frozenlens.paths`
        (it may quote the path, whose bytes need not be UTF-8).
        """
        self._claim(path)
        return self._insert_image(
            path=path,
            size=size,
            mtime_ns=mtime_ns,
            content_hash=content_hash,
            status=FAILED,
            fields=PhotoFields(),
            labels=None,
            caption_sig=None,
            error_reason=reason,
            error_message=to_text(message)[:2000],  # may quote the path: stored in its text form
        )

    def move(self, image_id: int, *, path: str, size: int, mtime_ns: int) -> None:
        """A file was renamed/moved with unchanged content: keep id and vectors."""
        self.flush()
        self._delete_path(path, keep_id=image_id)
        self._c.execute(
            update(ImageRow)
            .where(ImageRow.id == image_id)
            .values(path=path, size=size, mtime_ns=mtime_ns, updated_at=_now())
        )

    def touch(self, image_id: int, *, size: int, mtime_ns: int) -> None:
        """The file's stat changed but its content hash did not."""
        self.flush()
        self._c.execute(
            update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns, updated_at=_now())
        )

    def replace_captions(
        self, image_id: int, captions: Sequence[CaptionVector], caption_sig: str | None
    ) -> None:
        self.flush()
        self._delete_captions_of([image_id])
        self._insert_captions(image_id, captions)
        self._c.execute(
            update(ImageRow).where(ImageRow.id == image_id).values(caption_sig=caption_sig, updated_at=_now())
        )

    def delete(self, image_ids: Sequence[int]) -> None:
        """Delete images (and their vectors and captions).

        When a deleted indexed image has byte-identical duplicates, the first
        remaining duplicate is promoted: it gets a copy of the vectors and
        becomes the primary of the others.
        """
        self.flush()
        self._delete_ids(image_ids)

    # -- internals -------------------------------------------------------
    def _delete_ids(self, image_ids: Sequence[int]) -> None:
        ids = sorted(set(image_ids))
        for chunk in id_chunks(ids):
            self._promote_duplicates(chunk, set(ids))
            vec_ids = (
                self._c.execute(select(VectorRow.image_id).where(VectorRow.image_id.in_(chunk))).scalars().all()
            )
            self._delete_captions_of(chunk)
            self._c.execute(delete(VectorRow).where(VectorRow.image_id.in_(chunk)))
            self._c.execute(
                update(ImageRow).where(ImageRow.duplicate_of.in_(chunk)).values(duplicate_of=None)
            )
            self._c.execute(delete(ImageRow).where(ImageRow.id.in_(chunk)))
            self.delta.removed_image_ids.extend(vec_ids)

    def _promote_duplicates(self, chunk: Sequence[int], deleting: set[int]) -> None:
        rows = self._c.execute(
            select(ImageRow.id, ImageRow.duplicate_of)
            .where(ImageRow.duplicate_of.in_(chunk), ImageRow.status == DUPLICATE)
            .order_by(ImageRow.id)
        ).all()
        by_primary: dict[int, list[int]] = {}
        for dup_id, primary in rows:
            if dup_id not in deleting:
                by_primary.setdefault(primary, []).append(dup_id)
        for primary, dups in by_primary.items():
            heir, rest = dups[0], dups[1:]
            vec = self._c.execute(
                select(VectorRow.semantic, VectorRow.visual, VectorRow.tokens).where(VectorRow.image_id == primary)
            ).one_or_none()
            if vec is None:
                continue
            self._c.execute(VectorRow.__table__.insert().values(
                image_id=heir, semantic=vec.semantic, visual=vec.visual, tokens=vec.tokens))
            self._c.execute(
                update(ImageRow).where(ImageRow.id == heir).values(status=INDEXED, duplicate_of=None, updated_at=_now())
            )
            if rest:
                self._c.execute(update(ImageRow).where(ImageRow.id.in_(rest)).values(duplicate_of=heir))
            self.delta.image_ids.append(heir)
            self.delta.semantic.append(from_blobs([vec.semantic], len(vec.semantic) // 2)[0])
            self.delta.visual.append(from_blobs([vec.visual], len(vec.visual) // 2)[0])

    def _claim(self, path: str) -> None:
        """A new row for ``path`` is buffered: its old row goes at the next flush."""
        if path in self._new_paths:  # twice in one batch: the first one is written (and replaced) first
            self.flush()
        self._new_paths.add(path)

    def _delete_path(self, path: str, keep_id: int | None = None) -> None:
        """Delete the row at ``path`` now (unless it is ``keep_id``); nothing may be buffered."""
        old = self._c.execute(select(ImageRow.id).where(ImageRow.path == path)).scalar()
        if old is not None and old != keep_id:
            self._delete_ids([old])

    def _insert_image(
        self,
        *,
        path: str,
        size: int,
        mtime_ns: int,
        content_hash: str | None,
        status: str,
        fields: PhotoFields,
        labels: str | None,
        caption_sig: str | None,
        duplicate_of: int | None = None,
        error_reason: str | None = None,
        error_message: str | None = None,
    ) -> int:
        image_id = self._ids.take("images")[0]
        self._rows[ImageRow.__tablename__].append(fit_row(ImageRow.__table__, {
            "id": image_id,
            "path": path,
            "size": size,
            "mtime_ns": mtime_ns,
            "content_hash": content_hash,
            "status": status,
            "error_reason": error_reason,
            "error_message": error_message,
            "duplicate_of": duplicate_of,
            **fields.as_columns(),
            "camera": _camera_label(fields.camera_make, fields.camera_model),
            "labels": labels,
            "caption_sig": caption_sig,
            "updated_at": _now(),
        }))
        return image_id

    def _delete_captions_of(self, image_ids: Sequence[int]) -> None:
        """Delete the captions (and chunks) of these images; record removed chunk ids."""
        cap_ids = select(CaptionRow.id).where(CaptionRow.image_id.in_(image_ids))
        chunk_ids = (
            self._c.execute(select(CaptionChunkRow.id).where(CaptionChunkRow.caption_id.in_(cap_ids))).scalars().all()
        )
        if chunk_ids:
            self._c.execute(delete(CaptionChunkRow).where(CaptionChunkRow.caption_id.in_(cap_ids)))
            self.delta.removed_caption_ids.extend(chunk_ids)
        self._c.execute(delete(CaptionRow).where(CaptionRow.image_id.in_(image_ids)))

    def _insert_captions(self, image_id: int, captions: Sequence[CaptionVector]) -> None:
        """Insert captions with their pooled vector, and their chunks (the searchable unit)."""
        for cap in captions:
            caption_id = self._ids.take("captions")[0]
            self._rows[CaptionRow.__tablename__].append(fit_row(CaptionRow.__table__, {
                "id": caption_id, "image_id": image_id, "lang": cap.lang, "text": cap.text, "source": cap.source,
                "vector": to_blob(cap.vector),
            }))
            chunks = cap.chunks or (ChunkVector(cap.text, None, cap.vector),)
            chunk_ids = self._ids.take("caption_chunks", len(chunks))
            for position, (chunk_id, ch) in enumerate(zip(chunk_ids, chunks)):
                self._rows[CaptionChunkRow.__tablename__].append(fit_row(CaptionChunkRow.__table__, {
                    "id": chunk_id, "caption_id": caption_id, "position": position, "text": ch.text,
                    "n_tokens": ch.n_tokens, "vector": to_blob(ch.vector),
                }))
                self.delta.caption_ids.append(chunk_id)
                self.delta.caption_vectors.append(_rounded(ch.vector))
