"""Incremental, crash-safe bulk indexing: scan → hash → decode → encode → write.

Commit protocol (what makes SIGKILL at any moment safe)
--------------------------------------------------------
1. The database is the only source of truth. An image row, its vectors
   (float16 blobs) and its captions with their vectors are written in ONE
   transaction, so a row marked ``indexed`` always has its vectors and no
   vector exists without its row.
2. Work is committed per batch (``batch_size`` encoded images plus any
   moves/touches/duplicates/caption edits gathered meanwhile). A batch that
   was not committed when the process died simply did not happen: its files
   still look new or changed to the next run and are redone. Writing a row for
   a path first deletes any older row at that path (paths are unique), so a
   redo never duplicates.
3. FAISS files are a cache of the database. After each commit the in-memory
   indexes receive the same changes; every ``checkpoint_seconds`` and at the
   end they are saved, each to a temp file then ``os.replace`` (never a
   half-written file). When an index is opened, its id set is reconciled with
   the database (missing vectors added from the blobs, stale ids removed). Ids
   are never reused (AUTOINCREMENT), so the vector under an id never changes
   and id-set reconciliation is complete.
4. Deleted files are removed in the final transaction of a run; a run killed
   before that leaves them for the next run to find missing again.

Incremental rules: a file whose (size, mtime) match the database is skipped
without being read (its captions are re-read only if its sidecar files or
manifest entry changed). Otherwise it is hashed (BLAKE2b-128): same hash as
before → metadata touch; hash of an indexed row whose file is gone → move
(row keeps its id and vectors, nothing re-encoded); hash of an indexed file
that still exists → recorded as a duplicate of it; else decoded and encoded
(new content gets a new id). Failed files are retried only when they change.

Streaming (memory flat in collection size): the scan is a generator that
feeds the hash/decode pool directly, through a window of at most
``batch_size * prefetch_batches`` files in flight; no list of the files to do
is ever built. Rows already in the database under the roots are loaded once
(path → state) and popped as the scan reaches them, so what is left at the end
of the scan is exactly the set of missing files. Because the scan is not over
while files are classified, a file whose content is held by an indexed row
whose file still exists *and has not been reached by the scan yet* cannot be
told apart from a move out of the scanned set; it is deferred to the end of
the run (when the missing set is known), like a copy of content first seen in
this run. The progress total is ``None`` until the scan ends.

Decoding runs in a thread pool (Pillow releases the GIL while decoding and
resizing) a few batches ahead of the encoder, which runs in the calling
thread. :mod:`.ray_engine` replaces that pool by a Ray Data job and commits
through the same :meth:`Indexer._commit`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..cores import usable_cores
from ..errors import DecodeError
from ..models.base import Encoder, ImageEmbeddings, split_embeddings, stack_embeddings
from ..paths import to_text
from ..progress import Progress, ProgressCallback, ignore_progress
from ..retriever.spaces import VectorSpaces
from ..store import CaptionVector, ChunkVector, FileState, PhotoFields, Store
from ..types import IndexReport
from .captions import Caption, captions_signature, load_caption_manifest, read_sidecar_captions
from .chunking import embed_captions
from .classify import Classifier as _Classifier
from .classify import Work as _Work
from .decode import DecodeLimits
from .fileio import decode_photo, failure_of, hash_bytes, read_checked, read_regular_file
from .language import detect_language
from .scan import FileEntry, ScanProblem, scan

__all__ = ["IndexOptions", "Indexer", "hash_bytes", "read_regular_file"]

log = logging.getLogger(__name__)

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class IndexOptions:
    """Tuning knobs of an indexing run.

    batch_size: images per encoder batch and per database transaction.
    workers: decoder threads (default: usable cores).
    prefetch_batches: how many batches decoding may run ahead of encoding.
    checkpoint_seconds: how often FAISS files are saved during a run.
    captions_manifest: optional JSONL manifest of captions.
    limits: decoder safety limits.
    follow_links: follow symlinks that lead outside the named roots (by
        default they are skipped and counted, see :mod:`.scan`).
    """

    batch_size: int = 32
    workers: int | None = None
    prefetch_batches: int = 3
    checkpoint_seconds: float = 60.0
    captions_manifest: str | None = None
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    follow_links: bool = False


# -- worker results -----------------------------------------------------------
@dataclass
class _Result:
    work: _Work
    action: str  # "encode" | "touch" | "move" | "duplicate" | "defer" | "failed"
    content_hash: str | None = None
    target: FileState | None = None
    pixels: np.ndarray | None = None
    fields: PhotoFields | None = None
    reason: str | None = None
    message: str | None = None
    #: embeddings already computed elsewhere (a Ray encoder actor): n = 1
    embedded: ImageEmbeddings | None = None


class Indexer:
    """Runs one indexing job against a store, vector spaces and an encoder."""

    def __init__(
        self,
        store: Store,
        spaces: VectorSpaces,
        encoder: Encoder,
        options: IndexOptions | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.store = store
        self.spaces = spaces
        self.encoder = encoder
        self.options = options or IndexOptions()
        self.progress = progress or ignore_progress
        self.report = IndexReport()
        self._last_checkpoint = time.monotonic()
        self._todo = 0  # files handed to the hash/decode stage so far
        self._scan_done = False

    # -- public ---------------------------------------------------------
    def run(self, roots: Sequence[str]) -> IndexReport:
        # encoders that build their image side lazily (lite) build it now, not inside the first batch
        self.encoder.warm(text=False, images=True)
        started = time.monotonic()
        roots = [os.path.abspath(r) for r in roots]
        manifest = load_caption_manifest(self.options.captions_manifest) if self.options.captions_manifest else {}
        unseen = self.store.file_states(roots)  # taken from as the scan reaches each path
        classifier = _Classifier(self.store, unseen, self.store.last_image_id() + 1)

        self._process(self._scan_work(roots, manifest, unseen, classifier), classifier)

        # Files gone from disk that were not claimed by a move.
        gone = [s.id for s in unseen.values() if s.id not in classifier.moved_ids]
        if gone:
            with self.store.batch() as w:
                w.delete(gone)
            self.spaces.apply(w.delta)
            self.report.deleted += len(gone)
        self.spaces.save()
        if self.report.encoded or self.report.deleted or self.report.moved:
            self.store.analyze()  # keep the planner's choice of index right for filters
        self.report.seconds = time.monotonic() - started
        self._emit("finish", self._todo, self._todo)
        return self.report

    # -- stages -----------------------------------------------------------
    def _scan_work(
        self, roots: list[str], manifest: dict[str, list[Caption]], unseen: dict[str, FileState],
        classifier: _Classifier,
    ) -> Iterator[_Work]:
        """Stream the files to hash/decode; skipped files whose captions
        changed are committed here in batches. Ends the classifier's scan."""
        caption_updates: list[_Work] = []
        links = "all" if self.options.follow_links else "inside"
        for entry in scan(roots, links=links, on_problem=self._on_problem):
            self.report.scanned += 1
            if self.report.scanned % 1000 == 0:
                self._emit("scan", self.report.scanned, None)
            old = classifier.reach(entry.path, self.report.scanned)
            manifest_caps = manifest.get(entry.path, [])
            sig = captions_signature(entry, manifest_caps)
            if old is not None and old.size == entry.size and old.mtime_ns == entry.mtime_ns:
                self.report.skipped += 1
                if old.status != "failed" and old.caption_sig != sig:
                    caption_updates.append(_Work(entry, self._captions(entry, manifest_caps), sig, old))
                    if len(caption_updates) >= self.options.batch_size:
                        self._commit([], [], caption_updates, classifier)
                        caption_updates = []
                continue
            self._todo += 1
            yield _Work(entry, self._captions(entry, manifest_caps), sig, old, self.report.scanned)
        self._commit([], [], caption_updates, classifier)
        self._scan_done = True
        self._emit("scan", self.report.scanned, self.report.scanned)

    def _results(self, works: Iterator[_Work], classifier: _Classifier) -> Iterator[_Result]:
        """Hash, classify and decode ``works`` in the decoder pool (in order, a window ahead)."""
        opts = self.options
        workers = opts.workers or usable_cores()
        window = max(workers, opts.batch_size * opts.prefetch_batches)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="frozenlens-decode") as pool:
            numbered = ((i, w) for i, w in enumerate(works))
            yield from _bounded_map(pool, lambda iw: self._work(iw[1], classifier, turn=iw[0]), numbered, window)

    def _process(self, works: Iterator[_Work], classifier: _Classifier) -> None:
        opts = self.options
        pending: list[_Result] = []  # non-encode writes waiting for the next commit
        batch: list[_Result] = []
        deferred: list[_Work] = []
        done = 0

        for result in self._results(works, classifier):
            done += 1
            if result.action == "encode":
                batch.append(result)
            elif result.action == "defer":
                deferred.append(result.work)
            else:
                pending.append(result)
            if len(batch) >= opts.batch_size or len(pending) >= 4 * opts.batch_size:
                self._commit(batch, pending, [], classifier)
                batch, pending = [], []
                self._emit("encode", done, self._todo if self._scan_done else None)
        self._commit(batch, pending, [], classifier)
        self._emit("encode", done, self._todo)
        classifier.scan_finished()

        # Byte-identical copies of content first seen in this run, and copies
        # of content whose primary the scan had not reached: their primary is
        # committed (or failed, in which case they are decoded themselves and
        # fail with their own reason) and the missing set is known now.
        while deferred:
            chunk, deferred = deferred[: opts.batch_size], deferred[opts.batch_size :]
            results = [self._work(w, classifier) for w in chunk]
            deferred += [r.work for r in results if r.action == "defer"]  # a copy of a copy: next round
            batch = [r for r in results if r.action == "encode"]
            pending = [r for r in results if r.action not in ("encode", "defer")]
            self._commit(batch, pending, [], classifier)

    def _work(self, work: _Work, classifier: _Classifier, turn: int | None = None) -> _Result:
        """Runs in a decoder thread: hash, classify (in turn: scan order), decode if needed."""
        entry = work.entry
        try:
            data = read_checked(entry, self.options.limits)
            content_hash = hash_bytes(data)
        except DecodeError as exc:
            classifier.skip(work, turn)
            return _Result(work, "failed", reason=exc.reason, message=str(exc))
        except BaseException:
            classifier.skip(work, turn)  # never leave the other threads waiting for this turn
            raise
        if not data:
            classifier.skip(work, turn)
            return _Result(work, "failed", content_hash, reason="empty", message="file is empty (0 bytes)")
        action, target = classifier.classify(work, content_hash, turn)
        if action != "encode":
            return _Result(work, action, content_hash, target=target)
        try:
            image, fields = decode_photo(entry, data, self.encoder.draft_size, self.options.limits)
            pixels = self.encoder.prepare(image)
        except Exception as exc:  # noqa: BLE001 - a bad file is a failure row; failure_of logs the unexpected
            reason, message = failure_of(exc, entry.path)
            return _Result(work, "failed", content_hash, reason=reason, message=message)
        return _Result(work, "encode", content_hash, pixels=pixels, fields=fields)

    def _commit(
        self, batch: list[_Result], pending: list[_Result], caption_updates: list[_Work], classifier: _Classifier
    ) -> None:
        if not (batch or pending or caption_updates):
            return
        if batch:
            emb = self._embed(batch)
            self.report.encoded += len(batch)
        # One text-encoder call for every caption in this commit.
        works = [r.work for r in batch] + [r.work for r in pending if r.action in ("move", "duplicate", "touch")]
        works += caption_updates
        cap_vectors = self._embed_captions(works)

        with self.store.batch() as w:
            for j, r in enumerate(batch):
                e = r.work.entry
                w.add_image(
                    path=e.path,
                    size=e.size,
                    mtime_ns=e.mtime_ns,
                    content_hash=r.content_hash,
                    fields=r.fields,
                    semantic=emb.semantic[j],
                    visual=emb.visual[j],
                    labels=emb.labels[j] if emb.labels is not None else None,
                    tokens=emb.tokens[j] if emb.tokens is not None else None,
                    captions=cap_vectors[id(r.work)],
                    caption_sig=r.work.caption_sig,
                )
                self._count_new(r.work)
            for r in pending:
                e = r.work.entry
                if r.action == "failed":
                    w.add_failure(
                        path=e.path, size=e.size, mtime_ns=e.mtime_ns, content_hash=r.content_hash,
                        reason=r.reason or "corrupt", message=r.message or "",
                    )
                    self.report.failed += 1
                    if len(self.report.problems) < 1000:
                        self.report.problems.append(f"{to_text(e.path)}: {to_text(r.message or '')}")
                elif r.action == "touch":
                    w.touch(r.target.id, size=e.size, mtime_ns=e.mtime_ns)
                    if r.target.caption_sig != r.work.caption_sig:
                        w.replace_captions(r.target.id, cap_vectors[id(r.work)], r.work.caption_sig)
                        self.report.captions_updated += 1
                    self.report.skipped += 1
                elif r.action == "move":
                    w.move(r.target.id, path=e.path, size=e.size, mtime_ns=e.mtime_ns)
                    if r.target.caption_sig != r.work.caption_sig:
                        w.replace_captions(r.target.id, cap_vectors[id(r.work)], r.work.caption_sig)
                    self.report.moved += 1
                elif r.action == "duplicate":
                    w.add_duplicate(
                        path=e.path, size=e.size, mtime_ns=e.mtime_ns, content_hash=r.content_hash,
                        duplicate_of=r.target.id, captions=cap_vectors[id(r.work)], caption_sig=r.work.caption_sig,
                    )
                    self.report.duplicates += 1
            for work in caption_updates:
                w.replace_captions(work.old.id, cap_vectors[id(work)], work.caption_sig)
                self.report.captions_updated += 1
        self.spaces.apply(w.delta)
        # Content is now committed (or recorded as failed): later copies of it
        # find it in the database instead of waiting for it.
        classifier.release([r.content_hash for r in batch + pending if r.content_hash])
        if time.monotonic() - self._last_checkpoint >= self.options.checkpoint_seconds:
            self.spaces.save()
            self._last_checkpoint = time.monotonic()

    # -- helpers ----------------------------------------------------------
    def _embed(self, batch: list[_Result]) -> ImageEmbeddings:
        """Embeddings of ``batch`` in its order: rows embedded elsewhere are
        used as they are, the others go through the encoder in one call."""
        todo = [r for r in batch if r.embedded is None]
        if len(todo) == len(batch):
            return self.encoder.embed_prepared(np.stack([r.pixels for r in batch]))
        fresh = iter(split_embeddings(self.encoder.embed_prepared(np.stack([r.pixels for r in todo])))) if todo else None
        return stack_embeddings([r.embedded if r.embedded is not None else next(fresh) for r in batch])

    def _captions(self, entry: FileEntry, manifest_caps: list[Caption]) -> list[Caption]:
        caps = read_sidecar_captions(entry) + list(manifest_caps)
        unique: dict[tuple[str, str | None], Caption] = {}
        for c in caps:
            text = c.text.strip()
            if text:
                unique.setdefault((text, c.lang), c)
        return list(unique.values())

    def _embed_captions(self, works: list[_Work]) -> dict[int, list[CaptionVector]]:
        """Chunk and embed every caption of ``works`` in one text-encoder call."""
        caps = [(w, c, c.lang or detect_language(c.text)) for w in works for c in w.captions]
        embedded = embed_captions(self.encoder, [c.text for _, c, _ in caps], [lang for _, _, lang in caps])
        out: dict[int, list[CaptionVector]] = {id(w): [] for w in works}
        for (w, c, lang), (pooled, chunks) in zip(caps, embedded):
            parts = tuple(ChunkVector(t, n, v) for t, n, v in chunks) if len(chunks) > 1 else ()
            out[id(w)].append(CaptionVector(c.text, lang, c.source, pooled, parts))
        return out

    def _count_new(self, work: _Work) -> None:
        if work.old is None:
            self.report.new += 1
        else:
            self.report.changed += 1

    def _on_problem(self, problem: ScanProblem) -> None:
        log.warning("scan: %s: %s", to_text(problem.path), to_text(problem.message))
        self.report.not_scanned[problem.reason] = self.report.not_scanned.get(problem.reason, 0) + 1
        if len(self.report.problems) < 1000:
            self.report.problems.append(f"{to_text(problem.path)}: {to_text(problem.message)}")  # frozenlens.paths

    def _emit(self, stage: str, done: int, total: int | None) -> None:
        r = self.report
        self.progress(
            Progress(
                stage=stage, done=done, total=total, new=r.new, changed=r.changed, skipped=r.skipped,
                failed=r.failed, moved=r.moved, duplicates=r.duplicates, deleted=r.deleted,
            )
        )


def _bounded_map(pool: ThreadPoolExecutor, fn, items: Iterator, window: int) -> Iterator:  # noqa: ANN001
    """Like ``pool.map`` but keeps at most ``window`` tasks in flight, in order."""
    inflight: deque[Future] = deque()
    for item in items:
        inflight.append(pool.submit(fn, item))
        if len(inflight) >= window:
            yield inflight.popleft().result()
    while inflight:
        yield inflight.popleft().result()
