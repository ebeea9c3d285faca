"""Re-index an existing index with another encoder, resumably.

Metadata (paths, EXIF, captions' text, duplicates, failures) is kept; only
vectors are recomputed: every indexed photo is re-read, checked against its
stored content hash, decoded and embedded; every caption is re-chunked for the
new text tower and re-embedded. Results go to staging tables
(:mod:`frozenlens.store.staging`) batch by batch, so a killed run resumes
where it stopped; when everything is staged, one transaction swaps the new
vectors in, records the new encoder and starts a new vector epoch (FAISS
files of the old epoch are discarded). Until then the index keeps answering
with the old encoder. A photo that can no longer be read, or whose content
changed, is recorded as failed (``frozenlens index`` picks it up again).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..cores import usable_cores
from ..errors import DecodeError
from ..indexer.chunking import embed_captions
from ..indexer.decode import DecodeLimits, decode_bytes
from ..indexer.pipeline import hash_bytes, read_regular_file
from ..models.base import Encoder
from ..progress import Progress, ProgressCallback, ignore_progress
from ..store import Store
from ..store.staging import Staging

log = logging.getLogger(__name__)


@dataclass
class ReindexReport:
    images: int = 0
    failed: int = 0
    captions: int = 0
    resumed: bool = False
    swapped: bool = False


def identity_meta(encoder: Encoder) -> dict[str, str]:
    ident = encoder.identity
    return {
        "encoder_name": ident.name,
        "encoder_version": ident.version,
        "dim": str(ident.dim),
        "visual_dim": str(ident.visual_dim),
    }


def run_reindex(
    store: Store,
    encoder: Encoder,
    *,
    epoch: int,
    batch_size: int = 32,
    workers: int | None = None,
    limits: DecodeLimits | None = None,
    progress: ProgressCallback | None = None,
    extra_meta: dict[str, str] | None = None,
) -> ReindexReport:
    """Stage new vectors for every image and caption, then swap them in.

    ``epoch`` is the current vector epoch; the swap records ``epoch + 1``.
    The caller holds the index's writer lock.
    """
    progress = progress or ignore_progress
    limits = limits or DecodeLimits()
    staging = Staging(store)
    target = identity_meta(encoder)
    report = ReindexReport(resumed=staging.start(target))
    total = staging.count_pending_images()
    done = 0

    def work(row: tuple[int, str, str | None]) -> tuple[int, np.ndarray | None, str, str]:
        image_id, path, content_hash = row
        try:
            data = read_regular_file(path)
            if content_hash and hash_bytes(data) != content_hash:
                return image_id, None, "changed", "file content changed since it was indexed"
            decoded = decode_bytes(data, draft_size=encoder.draft_size, limits=limits)
            return image_id, encoder.prepare(decoded.image), "", ""
        except FileNotFoundError:
            return image_id, None, "vanished", "file disappeared"
        except DecodeError as exc:
            return image_id, None, exc.reason, str(exc)
        except OSError as exc:
            return image_id, None, "unreadable", str(exc)

    with ThreadPoolExecutor(max_workers=workers or usable_cores(), thread_name_prefix="frozenlens-reindex") as pool:
        while True:
            rows = staging.pending_images(batch_size * 4)
            if not rows:
                break
            for batch in _batches(pool.map(work, rows), batch_size):
                ok = [(i, px) for i, px, _, _ in batch if px is not None]
                failures = [(i, reason, msg) for i, px, reason, msg in batch if px is None]
                staged = []
                if ok:
                    emb = encoder.embed_prepared(np.stack([px for _, px in ok]))
                    for j, (image_id, _) in enumerate(ok):
                        labels = emb.labels[j] if emb.labels is not None else None
                        toks = emb.tokens[j] if emb.tokens is not None else None
                        staged.append((image_id, emb.semantic[j], emb.visual[j], labels, toks))
                staging.stage_images(staged, failures)
                report.images += len(staged)
                report.failed += len(failures)
                done += len(batch)
                progress(Progress(stage="reindex-images", done=done, total=total, failed=report.failed))

    while True:
        caps = staging.pending_captions(256)
        if not caps:
            break
        embedded = embed_captions(encoder, [t for _, t, _ in caps], [lang for _, _, lang in caps])
        staging.stage_captions([(cid, pooled, chunks) for (cid, _, _), (pooled, chunks) in zip(caps, embedded)])
        report.captions += len(caps)
        progress(Progress(stage="reindex-captions", done=report.captions, total=None))

    staging.swap({**target, "vectors_epoch": str(epoch + 1), **(extra_meta or {})})
    report.swapped = True
    return report


def _batches(items: Iterator, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
