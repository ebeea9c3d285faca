"""Staging area for re-indexing an index with another encoder (resumable).

New vectors are written to ``staged_*`` tables in ordinary batch
transactions; nothing searchable changes until :meth:`Staging.swap`, which in
ONE transaction replaces every image vector and caption chunk, records the
new encoder identity and bumps the vector epoch (the FAISS files of the old
epoch are then ignored). A killed re-index resumes from what was staged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from sqlalchemy import delete, func, select, update

from ..errors import IndexCorruptError
from ..paths import to_text
from .ids import IdAllocator
from .migrations import upsert_meta
from .schema import (
    FAILED,
    INDEXED,
    CaptionChunkRow,
    CaptionRow,
    ImageRow,
    Meta,
    StagedCaptionRow,
    StagedFailureRow,
    StagedImageRow,
    VectorRow,
)
from .store import Store, bump_generation
from .writer import _now, fit_row, to_blob

TARGET_KEY = "reindex_target"


class Staging:
    """Reads and writes the staging tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- target ------------------------------------------------------------
    def target(self) -> dict[str, str] | None:
        raw = self.store.get_meta().get(TARGET_KEY)
        return json.loads(raw) if raw else None

    def start(self, target: dict[str, str]) -> bool:
        """Begin (or resume) staging for ``target``; returns True when resuming.

        Staged work for a different target is discarded.
        """
        current = self.target()
        if current == target:
            return True
        self.clear()
        self.store.set_meta({TARGET_KEY: json.dumps(target, sort_keys=True)})
        return False

    def clear(self) -> None:
        with self.store.engine.begin() as c:
            for table in (StagedImageRow, StagedFailureRow, StagedCaptionRow):
                c.execute(delete(table))
            c.execute(delete(Meta).where(Meta.key == TARGET_KEY))

    # -- images --------------------------------------------------------------
    def pending_images(self, limit: int) -> list[tuple[int, str, str | None]]:
        """(id, path, content_hash) of indexed images with nothing staged yet."""
        staged = select(StagedImageRow.image_id)
        failed = select(StagedFailureRow.image_id)
        stmt = (
            select(ImageRow.id, ImageRow.path, ImageRow.content_hash)
            .where(ImageRow.status == INDEXED, ImageRow.id.not_in(staged), ImageRow.id.not_in(failed))
            .order_by(ImageRow.id)
            .limit(limit)
        )
        with self.store.engine.connect() as c:
            return [(int(i), p, h) for i, p, h in c.execute(stmt)]

    def count_pending_images(self) -> int:
        staged = select(StagedImageRow.image_id)
        failed = select(StagedFailureRow.image_id)
        with self.store.engine.connect() as c:
            return int(
                c.execute(
                    select(func.count()).select_from(ImageRow).where(
                        ImageRow.status == INDEXED, ImageRow.id.not_in(staged), ImageRow.id.not_in(failed)
                    )
                ).scalar()
                or 0
            )

    def stage_images(
        self,
        rows: Sequence[tuple[int, np.ndarray, np.ndarray, list[tuple[str, float]] | None, np.ndarray | None]],
        failures: Sequence[tuple[int, str, str]],
    ) -> None:
        """Stage (image_id, semantic, visual, labels, tokens) rows and (image_id, reason, message) failures."""
        with self.store.engine.begin() as c:
            if rows:
                c.execute(
                    StagedImageRow.__table__.insert(),
                    [
                        {"image_id": i, "semantic": to_blob(s), "visual": to_blob(v),
                         "tokens": None if t is None else to_blob(t),
                         "labels": json.dumps(lb) if lb is not None else None}
                        for i, s, v, lb, t in rows
                    ],
                )
            if failures:
                c.execute(
                    StagedFailureRow.__table__.insert(),
                    [{"image_id": i, "reason": r, "message": to_text(m)[:2000]} for i, r, m in failures],
                )

    # -- captions --------------------------------------------------------------
    def pending_captions(self, limit: int) -> list[tuple[int, str, str | None]]:
        """(caption id, text, language) of captions with nothing staged yet."""
        staged = select(StagedCaptionRow.caption_id)
        stmt = (
            select(CaptionRow.id, CaptionRow.text, CaptionRow.lang)
            .where(CaptionRow.id.not_in(staged))
            .order_by(CaptionRow.id)
            .limit(limit)
        )
        with self.store.engine.connect() as c:
            return [(int(i), t, lang) for i, t, lang in c.execute(stmt)]

    def stage_captions(self, rows: Sequence[tuple[int, np.ndarray, list[tuple[str, int | None, np.ndarray]]]]) -> None:
        """Stage (caption_id, pooled vector, [(chunk text, n_tokens, chunk vector), ...])."""
        if not rows:
            return
        with self.store.engine.begin() as c:
            c.execute(
                StagedCaptionRow.__table__.insert(),
                [
                    {
                        "caption_id": i,
                        "vector": to_blob(pooled),
                        "chunk_texts": json.dumps([[t, n] for t, n, _ in chunks], ensure_ascii=False),
                        "chunk_vectors": to_blob(np.stack([v for _, _, v in chunks])),
                    }
                    for i, pooled, chunks in rows
                ],
            )

    # -- swap ------------------------------------------------------------------
    def swap(self, meta: dict[str, str]) -> None:
        """Replace all vectors with the staged ones and record ``meta`` (one transaction)."""
        if self.count_pending_images():
            raise IndexCorruptError("re-index is incomplete: some images have no staged vectors")
        if self.pending_captions(1):
            raise IndexCorruptError("re-index is incomplete: some captions have no staged vectors")
        with self.store.engine.begin() as c:
            ids = IdAllocator(c)
            for image_id, reason, message in c.execute(
                select(StagedFailureRow.image_id, StagedFailureRow.reason, StagedFailureRow.message)
            ).all():
                c.execute(delete(VectorRow).where(VectorRow.image_id == image_id))
                c.execute(
                    update(ImageRow)
                    .where(ImageRow.id == image_id)
                    .values(status=FAILED, error_reason=reason, error_message=message, labels=None, updated_at=_now())
                )
            staged = c.execute(
                select(StagedImageRow.image_id, StagedImageRow.semantic, StagedImageRow.visual, StagedImageRow.labels,
                       StagedImageRow.tokens)
            ).all()
            for image_id, sem, vis, labels, toks in staged:
                c.execute(update(VectorRow).where(VectorRow.image_id == image_id).values(
                    semantic=sem, visual=vis, tokens=toks))
                c.execute(update(ImageRow).where(ImageRow.id == image_id).values(labels=labels))
            c.execute(delete(CaptionChunkRow))
            for caption_id, vector, texts, blob in c.execute(
                select(StagedCaptionRow.caption_id, StagedCaptionRow.vector, StagedCaptionRow.chunk_texts,
                       StagedCaptionRow.chunk_vectors)
            ).all():
                c.execute(update(CaptionRow).where(CaptionRow.id == caption_id).values(vector=vector))
                parts = json.loads(texts)
                width = len(blob) // max(1, len(parts))
                c.execute(
                    CaptionChunkRow.__table__.insert(),
                    [
                        fit_row(CaptionChunkRow.__table__, {
                            "id": chunk_id, "caption_id": caption_id, "position": k, "text": t, "n_tokens": n,
                            "vector": blob[k * width : (k + 1) * width]})
                        for k, (chunk_id, (t, n)) in enumerate(zip(ids.take("caption_chunks", len(parts)), parts))
                    ],
                )
            ids.save()
            upsert_meta(c, meta)
            for t in (StagedImageRow, StagedFailureRow, StagedCaptionRow):
                c.execute(delete(t))
            c.execute(delete(Meta).where(Meta.key == TARGET_KEY))
            bump_generation(c)

