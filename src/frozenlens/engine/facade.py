"""The :class:`Engine` facade: one open index — index, search, similar, media, stats.

The Engine owns the state of one open index (the store, the encoder, the
FAISS spaces and the locks) and delegates the work: opening to
:mod:`.opening`, the index directory to :mod:`.index_dir` / :mod:`.readonly`
/ :mod:`.disk_full`, the search steps to :mod:`.search` and :mod:`.ranking`,
the reranker head to :mod:`.reranking`, thumbnails and files to
:mod:`.media`. The scoring contract is stated in :mod:`frozenlens.engine`.

Before each query the Engine calls :meth:`Engine.sync` once: it loads the
FAISS spaces on first use and picks up rows other writers committed since.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

from ..errors import (
    EncoderMismatchError,
    ImageNotFoundError,
)
from ..indexer.lock import IndexLock
from ..models.base import Encoder, EncoderIdentity
from ..models.registry import create_encoder
from ..progress import ProgressCallback
from ..request import DEFAULT_K, DEFAULT_RERANK_CANDIDATES, MAX_K, SearchRequest
from ..retriever.choice import AutoPolicy
from ..retriever.spaces import VectorSpaces
from ..retriever.tuning import Tuning
from ..store import DUPLICATE, INDEXED, ImageRecord, Store
from ..types import FailedFile, Hit, IndexReport, IndexStats, SearchFilters
from . import search as steps
from .arguments import search_request, similar_request
from .compose import search_composed
from .disk_full import stop_on_full_disk
from .index_dir import IDENTITY_KEY, indexed_roots, record_roots, remove_leftovers
from .index_type import TUNING_KEY, adapt_index, measure_recall
from .media import THUMB_SIZE, PhotoFiles, prune_thumbnails
from .neardup import DuplicateGroup, GroupCache, Grouping, collapse, collapse_pool
from .opening import DEFAULT_FACTORY, identity_of, open_index, options_json
from .ranking import date_sorted
from .readonly import require_writable
from .reindex import ReindexReport
from .reranking import HeadSlot
from .rwlock import ReadWriteLock
from .stats import index_stats

if TYPE_CHECKING:
    from ..reranker.head import Reranker


class Engine:
    """One open index.

    Thread-safe for reading: any number of threads may search one Engine at
    once (``search``, ``similar``, ``get_image``, ``thumbnail``, ``stats``...);
    picking up other writers' rows takes a short exclusive step. ``index``
    and ``reindex`` on an Engine block its own searches while they write: a
    server indexes through a second Engine, so its searches go on.
    """

    def __init__(
        self,
        index_dir: Path,
        store: Store,
        meta: dict[str, str],
        encoder: Encoder | None,
        encoder_options: dict[str, object] | None = None,
        *,
        read_only: str | None = None,
    ) -> None:
        self.index_dir = index_dir
        #: why this index cannot be written (read-only media...), or None; see frozenlens.engine.readonly
        self.read_only_reason = read_only
        self._encoder_options = encoder_options or {}
        self.store = store
        self._meta = meta
        self._encoder = encoder
        self._spaces: VectorSpaces | None = None
        self._generation = -1
        self._head = HeadSlot(index_dir)
        self._files = PhotoFiles(index_dir, store, read_only is not None)
        # searches share the read side; loading, refreshing and writing the
        # FAISS spaces take the write side (see the class docstring)
        self._rw = ReadWriteLock()
        self._init_lock = threading.Lock()
        self._groups = GroupCache()  # near-duplicate groups, computed on first use

    @property
    def read_only(self) -> bool:
        """Opened read-only: searching works, writing raises :class:`IndexReadOnlyError`."""
        return self.read_only_reason is not None

    def require_writable(self, action: str) -> None:
        """:class:`IndexReadOnlyError` naming ``action`` when the index is read-only."""
        require_writable(self.read_only_reason, self.index_dir, action)

    # -- opening ---------------------------------------------------------
    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike[str],
        *,
        encoder: str | Encoder | None = None,
        create: bool = False,
        database_url: str | None = None,
        factory: str | None = None,
        encoder_options: dict[str, object] | None = None,
        index_policy: AutoPolicy | None = None,
    ) -> Engine:
        """Open an index directory (``create=True`` makes a new one if absent).

        encoder: registry name or instance; ``None`` = the index's own encoder
            (``"lite"`` for a new index). A different encoder than the one the
            index was built with raises :class:`EncoderMismatchError`.
        database_url: SQLAlchemy URL of the metadata database (default: SQLite
            file ``frozenlens.db`` in the index directory). Stored in the
            directory's marker so later opens find it.
        factory: index type of a new index (``"auto"``, ``"flat"``, ... or a FAISS factory string; default
            ``auto``); index_policy: its memory budget and target recall (see :mod:`.index_type`).
        """
        found = open_index(index_dir, encoder=encoder, create=create, database_url=database_url, factory=factory,
                           encoder_options=encoder_options, index_policy=index_policy)
        return cls(found.root, found.store, found.meta, found.encoder, found.encoder_options, read_only=found.read_only)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- components --------------------------------------------------------
    @property
    def identity(self) -> EncoderIdentity:
        """The identity of the encoder the index's vectors were made with."""
        return identity_of(self._meta)

    @property
    def encoder(self) -> Encoder:
        """The encoder, created on first use (opening an index loads no model)."""
        if self._encoder is None:
            with self._init_lock:
                if self._encoder is None:
                    enc = create_encoder(self.identity.name, **self._encoder_options)
                    if enc.identity != self.identity:
                        raise EncoderMismatchError(f"index was built with {self.identity.describe()}, "
                                                   f"installed encoder is {enc.identity.describe()}")
                    self._encoder = enc
        return self._encoder

    @property
    def spaces(self) -> VectorSpaces:
        """The FAISS spaces as of the last :meth:`sync` (which runs on first access).

        Reading this never picks up other writers' rows: searches call
        :meth:`sync` once per query for that.
        """
        spaces = self._spaces
        return spaces if spaces is not None else self.sync()

    def sync(self) -> VectorSpaces:
        """Load the FAISS spaces if not yet loaded, pick up rows committed by
        other writers since the last sync, and return the spaces.

        Cheap when nothing changed (one generation read). If the index was
        meanwhile re-indexed with another encoder, an engine holding the old
        encoder raises :class:`EncoderMismatchError`.
        """
        spaces = self._spaces
        if spaces is None or self.store.generation() != self._generation:
            with self._rw.write():
                if self._spaces is None:
                    self._spaces = self._open_spaces()
                self._refresh()
                spaces = self._spaces
        return spaces

    def refresh(self) -> None:
        """Pick up rows committed by another process (e.g. a running indexer),
        if the spaces are loaded (:meth:`sync` also loads them).

        If the index was meanwhile re-indexed with another encoder, an engine
        holding the old encoder raises :class:`EncoderMismatchError`; one
        that has not loaded an encoder yet switches to the new vectors.
        """
        with self._rw.write():
            self._refresh()

    def _open_spaces(self) -> VectorSpaces:
        ident = self.identity
        dims = {"semantic": ident.dim, "visual": ident.visual_dim, "caption": ident.dim}
        epoch, owner = int(self._meta.get("vectors_epoch", "0")), self._meta.get(IDENTITY_KEY)
        return VectorSpaces.open(self.index_dir, dims, self._meta.get("factory", DEFAULT_FACTORY), epoch, owner)

    def _refresh(self) -> None:  # holding the write side
        if self._spaces is None:
            return
        gen = self.store.generation()
        if gen == self._generation:
            return
        meta = self.store.get_meta()
        if meta.get(TUNING_KEY) != self._meta.get(TUNING_KEY):  # another writer rebuilt or re-tuned
            self._meta = meta
            self._spaces = self._open_spaces()
        if meta.get("vectors_epoch", "0") != self._meta.get("vectors_epoch", "0"):
            old = self.identity
            self._meta = meta
            if self._encoder is not None and self._encoder.identity != self.identity:
                raise EncoderMismatchError(
                    f"index at {self.index_dir} was re-indexed with {self.identity.describe()} "
                    f"(was {old.describe()}); open it again"
                )
            self._spaces = self._open_spaces()
        self._spaces.reconcile(self.store)
        self._generation = gen

    # -- indexing ------------------------------------------------------------
    def index(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        captions: str | os.PathLike[str] | None = None,
        progress: ProgressCallback | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        checkpoint_seconds: float = 60.0,
        follow_links: bool = False,
        engine: str = "local",
        address: str | None = None,
    ) -> IndexReport:
        """Index (or update) the photos under ``paths``; see :mod:`frozenlens.indexer.pipeline`.

        ``engine="ray"`` decodes and encodes on Ray (started here, or the cluster at ``address``:
        ``"auto"``/``"ray://host:port"``; :mod:`frozenlens.indexer.ray_engine`), with the same commits.

        Symlinks are followed only inside ``paths`` (``follow_links=True``: all); the others are
        skipped and counted in ``IndexReport.not_scanned["outside-roots"]``.

        Raises :class:`IndexLockedError` if another process indexes into this directory (or its
        PostgreSQL database), :class:`ScanRootNotFoundError`, :class:`ManifestError`.
        """
        from ..indexer.pipeline import IndexOptions
        from .indexing import build_indexer, check_roots

        self.require_writable("indexing")
        check_roots(paths)
        options = IndexOptions(batch_size=batch_size, workers=workers, checkpoint_seconds=checkpoint_seconds,
                               captions_manifest=str(captions) if captions else None, follow_links=follow_links)
        with stop_on_full_disk(self.store, self.index_dir), IndexLock(self.index_dir), self.store.writer_lock():
            spaces = self.sync().load_all()  # reconciles: repairs whatever a crash left
            encoder = self.encoder
            record_roots(self.store, paths)
            with self._rw.write():  # this engine's own searches wait; other engines and processes do not
                indexer = build_indexer(engine, self.store, spaces, encoder, options, progress, address=address,
                                        encoder_name=self.identity.name, encoder_options=self._encoder_options)
                report = indexer.run([str(p) for p in paths])
                adapt_index(self.store, self._meta, spaces, self._meta.get("factory", DEFAULT_FACTORY))
                self._meta = self.store.get_meta()
                self._generation = self.store.generation()
            spaces.remove_stale_files()  # and the other files of interrupted runs:
            remove_leftovers(self.index_dir)
        if report.deleted or report.changed:
            prune_thumbnails(self.index_dir, self.store.content_hashes())
        return report

    def roots(self) -> list[str] | None:
        """The folders (or files) ever indexed into this index, absolute;
        ``None`` for an index made before roots were recorded."""
        return indexed_roots(self.store)

    def reindex(
        self,
        encoder: str | Encoder,
        *,
        progress: ProgressCallback | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        encoder_options: dict[str, object] | None = None,
    ) -> ReindexReport:
        """Recompute all vectors with another encoder; see :mod:`frozenlens.engine.reindex`.

        Resumable: a killed run continues from what it staged. Afterwards this
        engine uses the new encoder; the old FAISS files are deleted, and a
        reranker head trained for the old encoder is renamed ``*.stale``.
        """
        from .reindex import run_reindex

        self.require_writable("re-indexing")
        enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder, **(encoder_options or {}))
        options = options_json(encoder_options if not isinstance(encoder, Encoder) else None)
        if enc.identity == self.identity:
            return ReindexReport()
        with (
            stop_on_full_disk(self.store, self.index_dir, "reindex"),
            IndexLock(self.index_dir),
            self.store.writer_lock(),
        ):
            epoch = int(self._meta.get("vectors_epoch", "0"))
            report = run_reindex(
                self.store, enc, epoch=epoch, batch_size=batch_size, workers=workers, progress=progress,
                extra_meta={"encoder_options": options},
            )
            with self._rw.write():
                self._meta = self.store.get_meta()
                self._encoder = enc
                self._encoder_options = json.loads(options)
                self._spaces = self._open_spaces().load_all()
                self._spaces.reconcile(self.store)
                self._spaces.save()
                self._spaces.remove_stale_files()
                remove_leftovers(self.index_dir)
                self._generation = self.store.generation()
                self._head.retire()
        return report

    # -- search ----------------------------------------------------------------
    def search(
        self,
        query: str | steps.ImageQuery | SearchRequest,
        k: int = DEFAULT_K,
        *,
        filters: SearchFilters | None = None,
        min_score: float | None = None,
        fusion: str = "max",
        caption_weight: float = 0.5,
        rerank: bool | None = None,
        rerank_candidates: int = DEFAULT_RERANK_CANDIDATES,
        sort: str = "relevance",
        image: steps.ImageQuery | None = None,
    ) -> list[Hit]:
        """Top-``k`` images for a text query (``str``) or an example image
        (PIL image, image file path as ``Path``, or encoded bytes).

        The options are checked by :class:`frozenlens.request.SearchRequest` (:class:`QueryError`, with its
        documented limits). A request built beforehand may be passed instead: ``search(request)`` for a text
        query (``request.query``), ``search(request, image=photo)`` for an example image (``request.query`` is
        ``None``); the other arguments then keep their defaults. A request with ``terms`` is a composed query
        (weighted texts and photos, :mod:`frozenlens.engine.compose`).

        ``sort``: ``"relevance"`` (default), or ``"newest"`` / ``"oldest"``
        first by date taken, *among the relevant photos only* (see
        :func:`~frozenlens.engine.ranking.date_sorted`: the relevance cutoff
        is ``min_score`` or, when that is ``None``, ``DATE_SORT_MARGIN`` below
        the best hit's score). The date order is taken from the ``MAX_K``
        most relevant photos (all of them reranked when a head is used).
        ``fusion`` combines pixel and caption evidence for text queries (see
        :func:`~frozenlens.engine.ranking.fuse_scores`); ``caption_weight`` is
        used by ``"weighted"``. ``rerank``: ``None`` (default) reranks text
        queries when the index has a trained head, ``False`` never, ``True``
        requires a head. Image queries are never reranked (the head scores text-image pairs).
        """
        request, image = search_request(
            query, image, k=k, filters=filters, min_score=min_score, fusion=fusion, caption_weight=caption_weight,
            rerank=rerank, rerank_candidates=rerank_candidates, sort=sort,
        )
        return self._run(request, image)

    def _run(self, request: SearchRequest, image: steps.ImageQuery | None) -> list[Hit]:
        """One validated search: a text query, or ``image`` when the request has none."""
        pool = MAX_K if request.sort != "relevance" else collapse_pool(request.k) if request.collapse else request.k
        index = self._search_index(self.sync())  # load or pick up other writers' changes, once per query
        with self._rw.read():
            if request.terms:  # a composed query: weighted text and photo terms (see frozenlens.engine.compose)
                hits = search_composed(index, self.encoder, request, pool, image,
                                       lambda: self._head.for_query(request.rerank, self.identity))
            elif request.query is not None:
                head = self._head.for_query(request.rerank, self.identity)
                hits = steps.search_text(
                    index, self.encoder, request.query, pool, request.filters, fusion=request.fusion,
                    caption_weight=request.caption_weight, min_score=request.min_score, head=head,
                    rerank_candidates=request.rerank_candidates,
                )
            else:
                vector = steps.embed_query_image(self.encoder, image)  # type: ignore[arg-type]
                hits = steps.search_visual(index, vector, pool, request.filters, request.min_score, exclude=set())
        return date_sorted(self._collapsed(hits, request), request.k, request.sort, request.min_score)

    def similar(
        self,
        image: int | str | os.PathLike[str],
        k: int | SearchRequest = DEFAULT_K,
        *,
        filters: SearchFilters | None = None,
        min_score: float | None = None,
        sort: str = "relevance",
    ) -> list[Hit]:
        """Images most like an indexed image (by id or path), itself excluded.

        ``sort`` as in :meth:`search`. A :class:`SearchRequest` without a
        query may be passed instead of ``k`` and the options:
        ``similar(image, request)`` (only its ``k``, filters, ``min_score``
        and ``sort`` apply).
        """
        request = similar_request(k, filters=filters, min_score=min_score, sort=sort)
        record = self.get_image(image)
        primary = record.duplicate_of if record.status == DUPLICATE and record.duplicate_of else record.id
        vector = self.store.vectors("visual", [primary], self.identity.visual_dim)[0]
        pool = MAX_K if request.sort != "relevance" else collapse_pool(request.k) if request.collapse else request.k
        index = self._search_index(self.sync())  # load or pick up other writers' changes, once per query
        with self._rw.read():
            hits = steps.search_visual(index, vector, pool, request.filters, request.min_score, exclude={primary})
        return date_sorted(self._collapsed(hits, request), request.k, request.sort, request.min_score)

    def _search_index(self, spaces: VectorSpaces) -> steps.SearchIndex:
        return steps.SearchIndex(self.store, spaces, self.identity, self._generation)

    # -- photos ------------------------------------------------------------------
    def get_image(self, image: int | str | os.PathLike[str]) -> ImageRecord:
        """The record of an indexed image by id or path (ImageNotFoundError if none)."""
        if isinstance(image, int) or (isinstance(image, str) and image.isdigit() and not os.path.exists(image)):
            record = self.store.images([int(image)]).get(int(image))
        else:
            record = self.store.find_path(os.path.abspath(os.fspath(image)))
        if record is None or record.status not in (INDEXED, DUPLICATE):
            raise ImageNotFoundError(f"no indexed image {image!s}")
        return record

    def image_by_id(self, image_id: int) -> ImageRecord:
        """The record of an indexed image by integer id only (never a path), for servers."""
        return self._files.record(image_id)

    def thumbnail(self, image_id: int, size: int = THUMB_SIZE) -> Path:
        """A cached WebP thumbnail (longest side ``size``) of an indexed image.

        Raises :class:`ImageNotFoundError` (no such image, or its file is gone),
        :class:`FileAccessError` (the file lies outside the indexed roots, as
        for :meth:`image_file`) and :class:`DecodeError` (it no longer decodes).
        """
        return self._files.thumbnail(image_id, size)

    def thumbnails(self, image_ids: Sequence[int], size: int = THUMB_SIZE) -> dict[int, Path]:
        """Thumbnails of several images with one lookup (a page of results); images whose thumbnail
        cannot be had (not indexed, file gone or outside the indexed roots, undecodable) are left out
        (the reason logged)."""
        return self._files.thumbnails(image_ids, size)

    def image_file(self, image_id: int) -> tuple[Path, str]:
        """(real path, media type) of an indexed image's original file, for serving.

        Only files inside the indexed roots are returned: a symlink that leads
        out of them raises :class:`FileAccessError`; a missing file
        :class:`ImageNotFoundError`. See :func:`frozenlens.engine.media.served_file`.
        """
        return self._files.original(image_id)

    def explain(self, image: int | str | os.PathLike[str]) -> list[tuple[str, float]]:
        """Top class labels with probabilities the encoder saw in an image."""
        return list(self.get_image(image).labels)

    # -- reranker ----------------------------------------------------------------
    @property
    def reranker_path(self) -> Path:
        """The reranker head's config file (it exists once a head was trained)."""
        return self._head.path

    def reranker(self) -> Reranker | None:
        """The index's trained head (loaded once, reloaded when retrained), or ``None``.

        Raises :class:`RerankerError` for a damaged head and
        :class:`RerankerMismatchError` for one trained for another encoder.
        """
        return self._head.load(self.identity)

    # -- what the index holds ------------------------------------------------------
    def stats(self) -> IndexStats:
        """Counts, encoder, FAISS spaces and disk use of the index (``to_json()`` for JSON)."""
        return index_stats(self.store, self.sync(), self._meta, self.identity, self.index_dir)

    def near_duplicates(self, threshold: float | None = None) -> list[DuplicateGroup]:
        """Near-identical photos, largest group first; see :mod:`frozenlens.engine.neardup`."""
        return list(self._grouping(threshold).groups)

    def _collapsed(self, hits: list[Hit], request: SearchRequest) -> list[Hit]:
        return collapse(hits, self._grouping()) if request.collapse else hits

    def _grouping(self, threshold: float | None = None) -> Grouping:
        spaces = self.sync()
        with self._rw.read():
            key = (self._generation, self._meta.get("vectors_epoch", "0"))
            return self._groups.get(self.store, spaces["visual"], self.identity.visual_dim, key, threshold)

    def measure_recall(self, queries: int | None = None) -> dict[str, Tuning]:
        """Recall@10 vs exact of the image spaces, by space (see :mod:`frozenlens.retriever.tuning`)."""
        spaces = self.sync()
        with self._rw.read():
            return measure_recall(self.store, self._meta, spaces, queries)

    def errors(self) -> list[FailedFile]:
        """Files that could not be indexed, with the reason."""
        return self.store.failures()

