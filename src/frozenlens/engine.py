"""The public Python API: ``Engine.open(dir)`` then index / search / similar / stats.

Text search scoring (documented contract)
-----------------------------------------
A text query ``q`` is embedded by the encoder's text tower. Each candidate
image gets

* ``image_score``   = cos(q, image's semantic vector) (pixels, via ConSE for
  ``lite``), and
* ``caption_score`` = max over the image's captions (its own and those of
  its byte-identical duplicates) of cos(q, caption vector), or ``None``;

and by default the final ``score = max(image_score, caption_score)``: a photo
is found by what it shows *or* by what its caption says, whichever is
stronger, and the two parts are reported on every hit. Two other fusions are
selectable per query (``fusion="weighted"`` for a score-normalised weighted
sum, ``fusion="rrf"`` for reciprocal-rank fusion); see :func:`fuse_scores`. Candidates are the union of the top
image vectors and the images of the top caption vectors (each over-fetched,
``max(4k, 100)``), both scored exactly. ``min_score`` applies to the final
score. Image queries and :meth:`Engine.similar` use the visual space only
(``score`` = cosine of visual vectors).

Reranking (text queries, on by default once a head exists)
-----------------------------------------------------------
When the index directory holds a trained FrEVL head (``frozenlens
train-reranker``), the top ``rerank_candidates`` (default 100, at least
``k``) candidates by the first-stage score above are rescored in one batched
pass: each one's ``image_score`` becomes the head's score — the first-stage
cosine plus the head's learned correction, still on the cosine scale (see
:mod:`frozenlens.reranker.model`) — and the final score is fused with the
unchanged ``caption_score`` exactly as above. Candidates beyond the top
``rerank_candidates`` are dropped. ``rerank=False`` skips the head;
``rerank=True`` requires one (:class:`RerankerError` if absent).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import (
    DecodeError,
    ScanRootNotFoundError,
    EncoderMismatchError,
    FrozenLensError,
    ImageNotFoundError,
    IndexNotFoundError,
    QueryError,
    RerankerError,
)
from .disk_full import stop_on_full_disk
from .index_dir import MARKER  # noqa: F401 - re-exported (frozenlens.api.state)
from .index_dir import IDENTITY_KEY, ensure_identity, remove_leftovers
from .readonly import open_store, require_writable
from .indexer.language import detect_language
from .indexer.lock import IndexLock
from .media import THUMB_SIZE, media_type, prune_thumbnails, served_file, thumbnail
from .models.base import Encoder, EncoderIdentity
from .models.registry import create_encoder
from .progress import ProgressCallback
from .reindex import ReindexReport
from .reranker import CONFIG_NAME as RERANKER_CONFIG
from .rwlock import ReadWriteLock
from .retriever import threads as faiss_threads
from .spaces import VectorSpaces
from .store import INDEXED, DUPLICATE, ImageRecord, Store
from .types import CaptionInfo, FailedFile, Hit, IndexReport, SearchFilters

if TYPE_CHECKING:
    from .reranker.head import Reranker

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "lite"
DEFAULT_FACTORY = "Flat"
MAX_K = 1000
MAX_QUERY_CHARS = 2000
DEFAULT_RERANK_CANDIDATES = 100
#: above this many filter matches, filters are applied by over-fetching
#: instead of handing FAISS the full list of allowed ids
SELECTOR_LIMIT = 50_000


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
        #: why this index cannot be written (read-only media...), or None; see frozenlens.readonly
        self.read_only_reason = read_only
        self._encoder_options = encoder_options or {}
        self.store = store
        self._meta = meta
        self._encoder = encoder
        self._spaces: VectorSpaces | None = None
        self._generation = -1
        self._reranker: Reranker | None = None
        self._reranker_stamp: tuple[int, int] | None = None
        # searches share the read side; loading, refreshing and writing the
        # FAISS spaces take the write side (see the class docstring)
        self._rw = ReadWriteLock()
        self._init_lock = threading.Lock()

    @property
    def read_only(self) -> bool:
        """Opened read-only: searching works, writing raises :class:`IndexReadOnlyError`."""
        return self.read_only_reason is not None

    def require_writable(self, action: str) -> None:
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
    ) -> Engine:
        """Open an index directory (``create=True`` makes a new one if absent).

        encoder: registry name or instance; ``None`` = the index's own encoder
            (``"lite"`` for a new index). A different encoder than the one the
            index was built with raises :class:`EncoderMismatchError`.
        database_url: SQLAlchemy URL of the metadata database (default: SQLite
            file ``frozenlens.db`` in the index directory). Stored in the
            directory's marker so later opens find it.
        factory: FAISS factory string for a new index (default exact ``Flat``).
        """
        root = Path(index_dir).expanduser().absolute()
        store, read_only = open_store(root, create=create, database_url=database_url)
        meta = store.get_meta()
        enc_obj = encoder if isinstance(encoder, Encoder) else None
        if "encoder_name" not in meta:
            if not create:
                raise IndexNotFoundError(f"index at {root} was never initialised; run `frozenlens index`")
            enc_obj = enc_obj or create_encoder(encoder or DEFAULT_ENCODER, **(encoder_options or {}))
            ident = enc_obj.identity
            store.set_meta(
                {
                    "encoder_options": _options_json(encoder_options),
                    "encoder_name": ident.name,
                    "encoder_version": ident.version,
                    "dim": str(ident.dim),
                    "visual_dim": str(ident.visual_dim),
                    "factory": factory or DEFAULT_FACTORY,
                    "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                }
            )
            meta = store.get_meta()
        recorded = EncoderIdentity(
            meta["encoder_name"], meta["encoder_version"], int(meta["dim"]), int(meta["visual_dim"])
        )
        requested: EncoderIdentity | None = None
        if enc_obj is not None:
            requested = enc_obj.identity
        elif isinstance(encoder, str) and encoder != recorded.name:
            requested = EncoderIdentity(encoder, "?", 0, 0)
        if requested is not None and requested != recorded:
            store.close()
            raise EncoderMismatchError(
                f"index at {root} was built with encoder {recorded.describe()}, "
                f"but {requested.name if requested.version == '?' else requested.describe()} was requested; "
                "use the index's encoder or build a new index"
            )
        if encoder_options is None:  # reuse what the index was built with (e.g. --weights PATH)
            encoder_options = json.loads(meta.get("encoder_options") or "{}")
        meta = ensure_identity(store, meta, read_only=read_only is not None)
        return cls(root, store, meta, enc_obj, encoder_options, read_only=read_only)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- components --------------------------------------------------------
    @property
    def identity(self) -> EncoderIdentity:
        m = self._meta
        return EncoderIdentity(m["encoder_name"], m["encoder_version"], int(m["dim"]), int(m["visual_dim"]))

    @property
    def encoder(self) -> Encoder:
        """The encoder, created on first use (opening an index loads no model)."""
        if self._encoder is None:
            with self._init_lock:
                if self._encoder is None:
                    enc = create_encoder(self.identity.name, **self._encoder_options)
                    if enc.identity != self.identity:
                        raise EncoderMismatchError(
                            f"index was built with {self.identity.describe()}, "
                            f"installed encoder is {enc.identity.describe()}"
                        )
                    self._encoder = enc
        return self._encoder

    @property
    def spaces(self) -> VectorSpaces:
        """FAISS indexes, loaded on first use and kept in sync with the database."""
        if self._spaces is None or self.store.generation() != self._generation:
            with self._rw.write():
                if self._spaces is None:
                    self._spaces = self._open_spaces()
                self._refresh()
        return self._spaces

    def _open_spaces(self) -> VectorSpaces:
        ident = self.identity
        dims = {"semantic": ident.dim, "visual": ident.visual_dim, "caption": ident.dim}
        epoch, owner = int(self._meta.get("vectors_epoch", "0")), self._meta.get(IDENTITY_KEY)
        return VectorSpaces.open(self.index_dir, dims, self._meta.get("factory", DEFAULT_FACTORY), epoch, owner)

    def refresh(self) -> None:
        """Pick up rows committed by another process (e.g. a running indexer).

        If the index was meanwhile re-indexed with another encoder, an engine
        holding the old encoder raises :class:`EncoderMismatchError`; one
        that has not loaded an encoder yet switches to the new vectors.
        """
        with self._rw.write():
            self._refresh()

    def _refresh(self) -> None:  # holding the write side
        if self._spaces is None:
            return
        gen = self.store.generation()
        if gen == self._generation:
            return
        meta = self.store.get_meta()
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
    ) -> IndexReport:
        """Index (or update) the photos under ``paths``; see :mod:`frozenlens.indexer.pipeline`.

        Symlinks are followed only while they stay inside ``paths``
        (``follow_links=True`` follows all of them); the others are skipped and
        counted in ``IndexReport.not_scanned["outside-roots"]``.

        Raises :class:`IndexLockedError` if another process is indexing into
        this directory, ``FileNotFoundError``-like :class:`FrozenLensError`s
        for missing roots, :class:`ManifestError` for a malformed manifest.
        """
        from .indexer.pipeline import Indexer, IndexOptions

        self.require_writable("indexing")
        if not paths:
            raise QueryError("no paths to index")
        for p in paths:
            if not os.path.exists(p):
                raise ScanRootNotFoundError(f"path does not exist: {p}")
        options = IndexOptions(
            batch_size=batch_size,
            workers=workers,
            checkpoint_seconds=checkpoint_seconds,
            captions_manifest=str(captions) if captions else None,
            follow_links=follow_links,
        )
        with stop_on_full_disk(self.store, self.index_dir), IndexLock(self.index_dir):
            spaces = self.spaces  # reconciles: repairs whatever a crash left
            encoder = self.encoder
            self._record_roots(paths)
            with self._rw.write():  # this engine's own searches wait; other engines and processes do not
                report = Indexer(self.store, spaces, encoder, options, progress).run([str(p) for p in paths])
                self._generation = self.store.generation()
            spaces.remove_stale_files()  # and the other files of interrupted runs:
            remove_leftovers(self.index_dir)
        if report.deleted or report.changed:
            prune_thumbnails(self.index_dir, self.store.content_hashes())
        return report

    def roots(self) -> list[str] | None:
        """The folders (or files) ever indexed into this index, absolute;
        ``None`` for an index made before roots were recorded."""
        raw = self.store.get_meta().get("roots")
        return None if raw is None else list(json.loads(raw))

    def _record_roots(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        known = set(self.roots() or [])
        new = {os.path.abspath(os.fspath(p)) for p in paths} - known
        if new:
            self.store.set_meta({"roots": json.dumps(sorted(known | new))})

    def reindex(
        self,
        encoder: str | Encoder,
        *,
        progress: ProgressCallback | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        encoder_options: dict[str, object] | None = None,
    ) -> ReindexReport:
        """Recompute all vectors with another encoder; see :mod:`frozenlens.reindex`.

        Resumable: a killed run continues from what it staged. Afterwards this
        engine uses the new encoder; the old FAISS files are deleted.
        """
        from .reindex import ReindexReport, run_reindex

        self.require_writable("re-indexing")
        enc = encoder if isinstance(encoder, Encoder) else create_encoder(encoder, **(encoder_options or {}))
        options = _options_json(encoder_options if not isinstance(encoder, Encoder) else None)
        if enc.identity == self.identity:
            return ReindexReport()
        with stop_on_full_disk(self.store, self.index_dir, "reindex"), IndexLock(self.index_dir):
            epoch = int(self._meta.get("vectors_epoch", "0"))
            report = run_reindex(
                self.store, enc, epoch=epoch, batch_size=batch_size, workers=workers, progress=progress,
                extra_meta={"encoder_options": options},
            )
            with self._rw.write():
                self._meta = self.store.get_meta()
                self._encoder = enc
                self._encoder_options = json.loads(options)
                self._spaces = self._open_spaces()
                self._spaces.reconcile(self.store)
                self._spaces.save()
                self._spaces.remove_stale_files()
                remove_leftovers(self.index_dir)
                self._generation = self.store.generation()
                self._retire_reranker()
        return report

    def _retire_reranker(self) -> None:
        """A head trained on the old encoder's embeddings is useless after a
        re-index: its files are renamed ``*.stale`` (kept, never used)."""
        from .reranker import WEIGHTS_NAME

        for name in (RERANKER_CONFIG, WEIGHTS_NAME):
            path = self.index_dir / name
            if path.exists():
                os.replace(path, path.with_name(path.name + ".stale"))
                log.warning("reranker head %s was trained for the old encoder; renamed to %s.stale", name, name)
        self._reranker, self._reranker_stamp = None, None

    # -- search ----------------------------------------------------------------
    def search(
        self,
        query: str | Image.Image | os.PathLike[str] | bytes,
        k: int = 10,
        *,
        filters: SearchFilters | None = None,
        min_score: float | None = None,
        fusion: str = "max",
        caption_weight: float = 0.5,
        rerank: bool | None = None,
        rerank_candidates: int = DEFAULT_RERANK_CANDIDATES,
        sort: str = "relevance",
    ) -> list[Hit]:
        """Top-``k`` images for a text query (``str``) or an example image
        (PIL image, image file path as ``Path``, or encoded bytes).

        ``sort``: ``"relevance"`` (default), or ``"newest"`` / ``"oldest"``
        first by date taken, *among the relevant photos only* (see
        :func:`date_sorted`: the relevance cutoff is ``min_score`` or, when
        that is ``None``, ``DATE_SORT_MARGIN`` below the best hit's score).
        The date order is taken from the ``MAX_K`` most relevant photos (all
        of them reranked when a head is used).

        ``fusion`` combines pixel and caption evidence for text queries (see
        :func:`fuse_scores`); ``caption_weight`` is used by ``"weighted"``.
        ``rerank``: ``None`` (default) reranks text queries when the index has
        a trained head, ``False`` never, ``True`` requires a head. Image
        queries are never reranked (the head scores text-image pairs).
        """
        k_out = _check_k(k)
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
        if sort != "relevance":
            k = MAX_K  # the relevance pool the date order is taken from
        filters = filters or SearchFilters()
        _ = self.spaces  # load or pick up other writers' changes, once per query
        with self._rw.read():
            hits = self._search(query, k, filters, min_score, fusion, caption_weight, rerank, rerank_candidates)
        return date_sorted(hits, k_out, sort, min_score)

    def _search(
        self, query: str | Image.Image | os.PathLike[str] | bytes, k: int, filters: SearchFilters,
        min_score: float | None, fusion: str, caption_weight: float, rerank: bool | None, rerank_candidates: int,
    ) -> list[Hit]:
        if isinstance(query, str):
            text = query.strip()
            if not text:
                raise QueryError("empty query")
            if len(text) > MAX_QUERY_CHARS:
                raise QueryError(f"query is longer than {MAX_QUERY_CHARS} characters")
            if fusion not in FUSIONS:
                raise QueryError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")
            if not 0.0 <= caption_weight <= 1.0:
                raise QueryError("caption_weight must be between 0 and 1")
            if not isinstance(rerank_candidates, int) or not 1 <= rerank_candidates <= MAX_K:
                raise QueryError(f"rerank_candidates must be an integer between 1 and {MAX_K}")
            head = self._head_for_query(rerank)
            return self._search_text(text, k, filters, min_score, fusion, caption_weight, head,
                                     max(k, rerank_candidates))
        vector = self._embed_query_image(query)
        return self._search_visual(vector, k, filters, min_score, exclude=set())

    def similar(
        self,
        image: int | str | os.PathLike[str],
        k: int = 10,
        *,
        filters: SearchFilters | None = None,
        min_score: float | None = None,
        sort: str = "relevance",
    ) -> list[Hit]:
        """Images most like an indexed image (by id or path), itself excluded.
        ``sort`` as in :meth:`search`."""
        k_out = _check_k(k)
        if sort not in SORTS:
            raise QueryError(f"unknown sort {sort!r}; choose one of {', '.join(SORTS)}")
        record = self.get_image(image)
        primary = record.duplicate_of if record.status == DUPLICATE and record.duplicate_of else record.id
        vector = self.store.vectors("visual", [primary], self.identity.visual_dim)[0]
        _ = self.spaces  # load or pick up other writers' changes, once per query
        with self._rw.read():
            hits = self._search_visual(vector, k_out if sort == "relevance" else MAX_K, filters or SearchFilters(),
                                       min_score, exclude={primary})
        return date_sorted(hits, k_out, sort, min_score)

    def get_image(self, image: int | str | os.PathLike[str]) -> ImageRecord:
        """The record of an indexed image by id or path (ImageNotFoundError if none)."""
        if isinstance(image, int) or (isinstance(image, str) and image.isdigit() and not os.path.exists(image)):
            record = self.store.images([int(image)]).get(int(image))
        else:
            record = self.store.find_path(os.path.abspath(os.fspath(image)))
        if record is None or record.status not in (INDEXED, DUPLICATE):
            raise ImageNotFoundError(f"no indexed image {image!s}")
        return record

    def thumbnail(self, image_id: int, size: int = THUMB_SIZE) -> Path:
        """A cached WebP thumbnail (longest side ``size``) of an indexed image.

        Raises :class:`ImageNotFoundError` (no such image, or its file is gone),
        :class:`FileAccessError` (the file lies outside the indexed roots, as
        for :meth:`image_file`) and :class:`DecodeError` (it no longer decodes).
        """
        record = self.image_by_id(image_id)
        return self._thumbnail(record, self.roots(), size)

    def thumbnails(self, image_ids: Sequence[int], size: int = THUMB_SIZE) -> dict[int, Path]:
        """Thumbnails of several images with one lookup (a page of results).

        Images whose thumbnail cannot be had (not indexed, file gone or outside
        the indexed roots, no longer decodable) are left out, with the reason
        logged.
        """
        records, roots, out = self.store.images(image_ids), self.roots(), {}
        for i in image_ids:
            record = records.get(i)
            try:
                if record is None or record.status not in (INDEXED, DUPLICATE):
                    raise ImageNotFoundError(f"no indexed image {i}")
                out[i] = self._thumbnail(record, roots, size)
            except FrozenLensError as exc:
                log.info("no thumbnail for image %s: %s", i, exc)
        return out

    def _thumbnail(self, record: ImageRecord, roots: list[str] | None, size: int) -> Path:
        real = served_file(record.path, roots)
        return thumbnail(self.index_dir, record.id, str(real), record.content_hash, size, read_only=self.read_only)

    def image_file(self, image_id: int) -> tuple[Path, str]:
        """(real path, media type) of an indexed image's original file, for serving.

        Only files inside the indexed roots are returned: a symlink that leads
        out of them raises :class:`FileAccessError`; a missing file
        :class:`ImageNotFoundError`. See :func:`frozenlens.media.served_file`.
        """
        record = self.image_by_id(image_id)
        return served_file(record.path, self.roots()), media_type(record.format)

    def image_by_id(self, image_id: int) -> ImageRecord:
        """The record of an indexed image by integer id only (never a path), for servers."""
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ImageNotFoundError(f"image ids are integers, not {image_id!r}")
        record = self.store.images([image_id]).get(image_id)
        if record is None or record.status not in (INDEXED, DUPLICATE):
            raise ImageNotFoundError(f"no indexed image {image_id}")
        return record

    def explain(self, image: int | str | os.PathLike[str]) -> list[tuple[str, float]]:
        """Top class labels with probabilities the encoder saw in an image."""
        return list(self.get_image(image).labels)

    def stats(self) -> dict[str, object]:
        counts = self.store.counts()
        spaces = self.spaces
        size = sum(p.stat().st_size for p in self.index_dir.iterdir() if p.is_file())
        return {
            **counts,
            "encoder": self.identity.as_dict(),
            "factory": self._meta.get("factory", DEFAULT_FACTORY),
            "vectors": spaces.sizes(),
            "schema_version": self.store.schema_version,
            "index_dir": str(self.index_dir),
            "database": self.store.engine.url.render_as_string(hide_password=True),
            "bytes_on_disk": size,
            "created_at": self._meta.get("created_at"),
            "cameras": dict(self.store.cameras()),
        }

    def errors(self) -> list[FailedFile]:
        """Files that could not be indexed, with the reason."""
        return self.store.failures()

    # -- internals -------------------------------------------------------------
    def _allowed(self, filters: SearchFilters) -> tuple[np.ndarray | None, bool]:
        """(allowed ids or None, filtering needed): the full allowed set when it
        is small (FAISS then searches only those ids), else None (over-fetch)."""
        if filters.is_empty():
            return None, False
        ids = self.store.matching_ids(filters, limit=SELECTOR_LIMIT + 1)
        return (ids, True) if ids.size <= SELECTOR_LIMIT else (None, True)

    def _image_hits(
        self, space: str, vector: np.ndarray, k: int, filters: SearchFilters, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        allowed, needed = self._allowed(filters)
        index = self._spaces[space]  # refreshed once per query by search()/similar()
        if not needed:
            with faiss_threads(1):
                scores, ids = index.search(vector[None, :], fetch)
            keep = ids[0] >= 0
            return scores[0][keep], ids[0][keep]
        if allowed is not None and allowed.size == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)

        def accept(ids: np.ndarray) -> np.ndarray:
            ok = self.store.matching_ids(filters, among=ids.tolist())
            return np.isin(ids, ok)

        with faiss_threads(1):
            return index.search_filtered(vector, fetch, accept, allowed_ids=allowed)

    def _search_text(
        self, text: str, k: int, filters: SearchFilters, min_score: float | None, fusion: str, caption_weight: float,
        head: Reranker | None = None, rerank_candidates: int = DEFAULT_RERANK_CANDIDATES,
    ) -> list[Hit]:
        lang = detect_language(text)
        q = self.encoder.encode_texts_in([text], lang)[0]
        fetch = max(4 * k, 100)
        img_scores, img_ids = self._image_hits("semantic", q, k, filters, fetch)
        candidates = {int(i): float(s) for i, s in zip(img_ids, img_scores)}

        caption_index = self._spaces["caption"]
        cap_ids: list[int] = []
        if len(caption_index):
            with faiss_threads(1):
                _, cids = caption_index.search(q[None, :], fetch)
            owners = self.store.caption_owners([int(c) for c in cids[0] if c >= 0])
            cap_ids = sorted(set(owners.values()))
            if not filters.is_empty() and cap_ids:
                cap_ids = self.store.matching_ids(filters, among=cap_ids).tolist()
        extra = [i for i in cap_ids if i not in candidates]
        if extra:
            vecs = self.store.vectors("semantic", extra, self.identity.dim)
            for i, s in zip(extra, vecs @ q):
                candidates[i] = float(s)
        cap_vecs = self.store.caption_vectors_for(list(candidates), self.identity.dim)
        ids = list(candidates)
        s_img = np.asarray([candidates[i] for i in ids], dtype=np.float64)
        s_cap = np.asarray(
            [float((cap_vecs[i] @ q).max()) if i in cap_vecs and len(cap_vecs[i]) else np.nan for i in ids]
        )
        final = fuse_scores(s_img, s_cap, fusion, caption_weight)
        first_img: np.ndarray | None = None
        if head is not None and ids:
            keep = np.lexsort((np.asarray(ids), -final))[:rerank_candidates]  # first-stage top K'
            ids = [ids[j] for j in keep]
            first_img, s_cap = s_img[keep], s_cap[keep]
            s_img = self._rerank_scores(head, text, lang, q, ids).astype(np.float64)
            final = fuse_scores(s_img, s_cap, fusion, caption_weight)
        scored = [
            (float(f), i, float(a), None if np.isnan(b) else float(b), None if first_img is None else float(first_img[j]))
            for j, (f, i, a, b) in enumerate(zip(final, ids, s_img, s_cap))
            if min_score is None or f >= min_score
        ]
        scored.sort(key=lambda t: (-t[0], t[1]))
        scored = scored[:k]
        records = self.store.images([t[1] for t in scored])
        return [_hit(records[i], final, s_img, s_cap, first) for final, i, s_img, s_cap, first in scored if i in records]

    def _rerank_scores(self, head: Reranker, text: str, lang: str | None, q: np.ndarray, ids: list[int]) -> np.ndarray:
        """The head's scores of the candidate images ``ids`` for the query → float32 (n,)."""
        from .reranker.features import ImageTokens, encode_texts_with_units

        ident = self.identity
        images = ImageTokens.from_store(self.store, ids, ident.dim, ident.visual_dim, self.encoder.image_tokens)
        query = encode_texts_with_units(self.encoder, [text], [lang])
        return head.score(query, images)

    # -- reranker ----------------------------------------------------------------
    @property
    def reranker_path(self) -> Path:
        return self.index_dir / RERANKER_CONFIG

    def reranker(self) -> Reranker | None:
        """The index's trained head (loaded once, reloaded when retrained), or ``None``.

        Raises :class:`RerankerError` for a damaged head and
        :class:`RerankerMismatchError` for one trained for another encoder.
        """
        try:
            st = self.reranker_path.stat()
        except FileNotFoundError:
            self._reranker, self._reranker_stamp = None, None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        if self._reranker is None or stamp != self._reranker_stamp:
            from .reranker.head import Reranker

            self._reranker = Reranker.load(self.index_dir, self.identity)
            self._reranker_stamp = stamp
        return self._reranker

    def _head_for_query(self, rerank: bool | None) -> Reranker | None:
        if rerank is False:
            return None
        head = self.reranker()
        if head is None and rerank is True:
            raise RerankerError(
                f"no reranker head in {self.index_dir}; train one with `frozenlens train-reranker` or search without reranking"
            )
        return head

    def _search_visual(
        self, vector: np.ndarray, k: int, filters: SearchFilters, min_score: float | None, exclude: set[int]
    ) -> list[Hit]:
        scores, ids = self._image_hits("visual", vector, k + len(exclude), filters, max(k + len(exclude), 50))
        pairs = [(float(s), int(i)) for s, i in zip(scores, ids) if int(i) not in exclude]
        if min_score is not None:
            pairs = [(s, i) for s, i in pairs if s >= min_score]
        pairs = pairs[:k]
        records = self.store.images([i for _, i in pairs])
        return [_hit(records[i], s, None, None) for s, i in pairs if i in records]

    def _embed_query_image(self, query: Image.Image | os.PathLike[str] | bytes) -> np.ndarray:
        from .indexer.decode import decode_bytes, decode_file

        try:
            if isinstance(query, Image.Image):
                image = query.convert("RGB")
            elif isinstance(query, bytes | bytearray):
                image = decode_bytes(bytes(query), draft_size=self.encoder.draft_size).image
            elif isinstance(query, os.PathLike):
                image = decode_file(os.fspath(query), draft_size=self.encoder.draft_size).image
            else:
                raise QueryError(f"unsupported query type {type(query).__name__}")
        except DecodeError as exc:
            raise QueryError(f"cannot use this query image: {exc} [{exc.reason}]") from exc
        return self.encoder.embed_images([image]).visual[0]


SORTS = ("relevance", "newest", "oldest")
#: without an explicit ``min_score``, a date-sorted result keeps the hits
#: scoring within this margin of the best hit (see date_sorted). Cosine-scale
#: scores of one query cluster tightly (with ``lite`` on the KPhotoAlbum demo,
#: most photos score 0.45-0.6 for any query); the matches stand ~0.1 above.
DATE_SORT_MARGIN = 0.1


def date_sorted(hits: list[Hit], k: int, sort: str, min_score: float | None) -> list[Hit]:
    """The top ``k`` of relevance-ordered ``hits`` in ``sort`` order.

    ``"relevance"`` keeps the order. ``"newest"``/``"oldest"`` first apply a
    relevance cutoff, so that sorting by date never brings in photos that do
    not match the query: ``min_score`` when given (already applied by the
    search), else ``score >= best score - DATE_SORT_MARGIN``. The survivors
    are then ordered by date taken (photos without a date last), ties by
    relevance.
    """
    if sort == "relevance" or not hits:
        return hits[:k]
    if min_score is None:
        floor = max(h.score for h in hits) - DATE_SORT_MARGIN
        hits = [h for h in hits if h.score >= floor]
    rank = {h.id: r for r, h in enumerate(hits)}
    dated = [h for h in hits if h.taken_at is not None]
    sign = -1.0 if sort == "newest" else 1.0
    dated.sort(key=lambda h: (sign * _timestamp(h.taken_at), rank[h.id]))
    undated = [h for h in hits if h.taken_at is None]
    return (dated + undated)[:k]


def _timestamp(t: dt.datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()


FUSIONS = ("max", "weighted", "rrf")
RRF_K = 60


def fuse_scores(s_img: np.ndarray, s_cap: np.ndarray, fusion: str, caption_weight: float = 0.5) -> np.ndarray:
    """Final text-search scores of candidates from their two evidence scores.

    s_img: float64 (n,) cosine of the query with each photo's image vector.
    s_cap: float64 (n,) best cosine with the photo's caption chunks, NaN if
        the photo has no caption.

    ``"max"`` (default): ``max(s_img, s_cap)`` — found by what it shows or by
    what its caption says, whichever is stronger; raw cosines, so a
    ``min_score`` keeps its meaning.
    ``"weighted"``: each evidence min-max normalised over the candidates,
    then ``(1 - w) * img + w * cap`` (a photo without caption gets 0 for the
    caption part).
    ``"rrf"``: reciprocal-rank fusion, ``Σ 1 / (60 + rank)`` over the two
    rankings (a photo without caption only gets the image term).
    """
    has_cap = ~np.isnan(s_cap)
    if fusion == "max":
        return np.where(has_cap, np.fmax(s_img, s_cap), s_img)
    if fusion == "weighted":

        def minmax(x: np.ndarray) -> np.ndarray:
            if x.size == 0:
                return x
            lo, hi = float(np.min(x)), float(np.max(x))
            return np.ones_like(x) if hi - lo < 1e-12 else (x - lo) / (hi - lo)

        n_img = minmax(s_img)
        n_cap = np.zeros_like(s_img)
        if has_cap.any():
            n_cap[has_cap] = minmax(s_cap[has_cap])
        return (1.0 - caption_weight) * n_img + caption_weight * n_cap
    if fusion == "rrf":
        out = 1.0 / (RRF_K + _ranks(s_img))
        if has_cap.any():
            cap_rank = _ranks(s_cap[has_cap])
            out[has_cap] += 1.0 / (RRF_K + cap_rank)
        return out
    raise QueryError(f"unknown fusion {fusion!r}; choose one of {', '.join(FUSIONS)}")


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based rank of each value, highest first (ties share order of index)."""
    order = np.argsort(-x, kind="stable")
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.arange(1, x.size + 1)
    return ranks


def _options_json(options: dict[str, object] | None) -> str:
    """Encoder options recorded in the index so later opens rebuild the same encoder.

    Only JSON-representable values are kept (paths become strings).
    """
    clean = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in (options or {}).items()}
    try:
        return json.dumps(clean, sort_keys=True)
    except TypeError:
        return "{}"


def _check_k(k: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > MAX_K:
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return k


def _hit(r: ImageRecord, score: float, s_img: float | None, s_cap: float | None, first: float | None = None) -> Hit:
    return Hit(
        id=r.id,
        path=r.path,
        score=score,
        image_score=s_img,
        caption_score=s_cap,
        first_stage_image_score=first,
        reranked=first is not None,
        taken_at=r.taken_at,
        date_source=r.taken_at_source if r.taken_at else None,
        camera=r.camera,
        lens=r.lens,
        width=r.width,
        height=r.height,
        lat=r.lat,
        lon=r.lon,
        captions=tuple(CaptionInfo(t, lang, src) for t, lang, src in r.captions),
        labels=tuple(r.labels),
        duplicates=tuple(r.duplicates),
    )

