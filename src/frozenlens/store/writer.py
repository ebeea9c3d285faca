"""Writes to the store: one :class:`BatchWriter` per database transaction.

Each write method also records, in :attr:`BatchWriter.delta`, how the vector
spaces change, so the caller can mirror a *committed* transaction in FAISS.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence

import numpy as np
from sqlalchemy import delete, select, update

from ..errors import IndexCorruptError
from ..paths import to_text
from .records import CaptionVector, ChunkVector, Delta, PhotoFields
from .schema import DUPLICATE, FAILED, INDEXED, CaptionChunkRow, CaptionRow, ImageRow, VectorRow

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
        self._delete_path(path)
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
        self._c.execute(
            VectorRow.__table__.insert().values(
                image_id=image_id, semantic=to_blob(semantic), visual=to_blob(visual),
                tokens=None if tokens is None else to_blob(tokens),
            )
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
        """Record a byte-identical copy of indexed image ``duplicate_of``."""
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
        return image_id

    def add_failure(
        self, *, path: str, size: int, mtime_ns: int, content_hash: str | None, reason: str, message: str
    ) -> int:
        """Record a file that could not be indexed (replacing any older row).

        ``message`` is stored in the text form of :mod:`frozenlens.paths`
        (it may quote the path, whose bytes need not be UTF-8).
        """
        self._delete_path(path)
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
        self._delete_path(path, keep_id=image_id)
        self._c.execute(
            update(ImageRow)
            .where(ImageRow.id == image_id)
            .values(path=path, size=size, mtime_ns=mtime_ns, updated_at=_now())
        )

    def touch(self, image_id: int, *, size: int, mtime_ns: int) -> None:
        """The file's stat changed but its content hash did not."""
        self._c.execute(
            update(ImageRow).where(ImageRow.id == image_id).values(size=size, mtime_ns=mtime_ns, updated_at=_now())
        )

    def replace_captions(
        self, image_id: int, captions: Sequence[CaptionVector], caption_sig: str | None
    ) -> None:
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

    # -- internals -------------------------------------------------------
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

    def _delete_path(self, path: str, keep_id: int | None = None) -> None:
        old = self._c.execute(select(ImageRow.id).where(ImageRow.path == path)).scalar()
        if old is not None and old != keep_id:
            self.delete([old])

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
        result = self._c.execute(
            ImageRow.__table__.insert().values(
                path=path,
                size=size,
                mtime_ns=mtime_ns,
                content_hash=content_hash,
                status=status,
                error_reason=error_reason,
                error_message=error_message,
                duplicate_of=duplicate_of,
                **fields.as_columns(),
                camera=_camera_label(fields.camera_make, fields.camera_model),
                labels=labels,
                caption_sig=caption_sig,
                updated_at=_now(),
            )
        )
        return int(result.inserted_primary_key[0])

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
            result = self._c.execute(
                CaptionRow.__table__.insert().values(
                    image_id=image_id, lang=cap.lang, text=cap.text, source=cap.source, vector=to_blob(cap.vector)
                )
            )
            caption_id = int(result.inserted_primary_key[0])
            chunks = cap.chunks or (ChunkVector(cap.text, None, cap.vector),)
            for position, ch in enumerate(chunks):
                res = self._c.execute(
                    CaptionChunkRow.__table__.insert().values(
                        caption_id=caption_id, position=position, text=ch.text, n_tokens=ch.n_tokens,
                        vector=to_blob(ch.vector),
                    )
                )
                self.delta.caption_ids.append(int(res.inserted_primary_key[0]))
                self.delta.caption_vectors.append(_rounded(ch.vector))
