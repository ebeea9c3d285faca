"""The metadata store: the only SQLAlchemy code of FrozenLens.

One :class:`Store` wraps one database (SQLite file in the index directory by
default; PostgreSQL through ``postgresql+psycopg://...``; the same schema,
migrations and rows on both). All writes go through :meth:`Store.batch`,
one database transaction per batch; the :class:`BatchWriter` collects a
:class:`Delta` describing the vector changes the caller must mirror in FAISS
*after* the commit succeeded. A writer holds :meth:`Store.writer_lock` for
its whole run (see :mod:`.postgres`).
"""


from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
from sqlalchemy import Engine, and_, create_engine, event, func, or_, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from ..errors import DatabaseUnavailableError, IndexCorruptError, IndexReadOnlyError
from ..types import FailedFile, SearchFilters
from .columns import MAX_ROWS as COLUMNS_MAX_ROWS
from .columns import ColumnCache, FilterColumns, cameras_matching, date_bounds
from .connection import connect_args, sqlite_file, translate_errors
from .ids import high_water_marks
from .migrations import SCHEMA_VERSION, current_version, increment_meta, migrate, upsert_meta
from .postgres import lock_migrations, writer_lock
from .records import FileState, ImageRecord
from .schema import DUPLICATE, FAILED, INDEXED, CaptionChunkRow, CaptionRow, ImageRow, Meta, VectorRow
from .writer import BatchWriter, from_blobs, id_chunks

log = logging.getLogger(__name__)

class Store:
    """Metadata database of one index. Create with :meth:`open`."""

    def __init__(self, engine: Engine, *, read_only: bool = False) -> None:
        self.engine = engine
        self.read_only = read_only
        self._columns = ColumnCache()
        # reads run each statement on its own (as READ COMMITTED does anyway): on PostgreSQL that saves
        # the BEGIN and ROLLBACK round trips around every read; SQLite's reads start no transaction
        self._reader = engine.execution_options(isolation_level="AUTOCOMMIT") if engine.dialect.name == "postgresql" else engine

    @classmethod
    def open(cls, url: str, *, read_only: bool = False) -> Store:
        """Open (and create/migrate) the database at a SQLAlchemy URL.

        SQLite databases use WAL journaling (readers never block the indexer),
        ``synchronous=NORMAL`` (durable against process crashes; a power cut
        may lose the last transactions, never consistency) and a 30 s busy
        timeout. Other backends get their defaults.

        ``read_only=True`` (an index on read-only media) opens a SQLite file
        through its read-only URI (see :mod:`.connection`) and writes nothing:
        no journal mode switch, no migration (an older schema raises
        :class:`IndexReadOnlyError`). A damaged SQLite file raises
        :class:`DatabaseDamagedError`, here or from any later call. A
        database server that cannot be reached (or a driver that is not
        installed) raises :class:`DatabaseUnavailableError`.

        Processes opening one PostgreSQL database at once migrate it one
        after the other (an advisory lock, see :mod:`.postgres`).
        """
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        try:
            engine = create_engine(url, **connect_args(url, read_only))
        except ModuleNotFoundError as exc:
            raise DatabaseUnavailableError(
                f"the driver for {shown} is not installed ({exc.name}); for PostgreSQL: pip install 'psycopg[binary]'"
            ) from exc
        translate_errors(engine, str(sqlite_file(url) or shown))
        if is_sqlite:

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA query_only=ON" if read_only else "PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA case_sensitive_like=ON")  # path prefixes: /a/Photos/ is not /a/photos/
                cur.close()

        try:
            with engine.connect() if read_only else engine.begin() as conn:
                if not read_only:
                    lock_migrations(conn)
                found = current_version(conn) if read_only else SCHEMA_VERSION
                if found < SCHEMA_VERSION:
                    raise IndexReadOnlyError(
                        f"the index database {sqlite_file(url) or 'of this index'} has schema version {found} and "
                        f"must be upgraded to {SCHEMA_VERSION} on writable media (open a writable copy once)"
                    )
                migrate(conn)  # read-only: refuses a newer schema, writes nothing at the current one
        except OperationalError as exc:
            engine.dispose()
            if is_sqlite:
                raise
            raise DatabaseUnavailableError(f"cannot use the index database {shown}: {' '.join(str(exc.orig).split())}") from exc
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, read_only=read_only)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def schema_version(self) -> int:
        return SCHEMA_VERSION

    # -- meta ------------------------------------------------------------
    def get_meta(self) -> dict[str, str]:
        with self._reader.connect() as c:
            return {k: v for k, v in c.execute(select(Meta.key, Meta.value))}

    def set_meta(self, values: dict[str, str]) -> None:
        with self.engine.begin() as c:
            upsert_meta(c, values)

    # -- writes ----------------------------------------------------------
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Be this index's only writer for the body (PostgreSQL: an advisory
        lock of the database; SQLite: nothing, the index directory's file lock
        does it). Raises :class:`IndexLockedError` while another writer runs."""
        with writer_lock(self.engine):
            yield

    @contextmanager
    def batch(self) -> Iterator[BatchWriter]:
        """One transaction: commits on normal exit, rolls back on exception."""
        with self.engine.begin() as conn:
            writer = BatchWriter(conn)
            yield writer
            writer.finish()
            bump_generation(conn)

    def generation(self) -> int:
        """A counter bumped by every write transaction (cheap change detection)."""
        with self._reader.connect() as c:
            return _generation(c)

    # -- incremental indexing reads ---------------------------------------
    def file_states(self, roots: Sequence[str]) -> dict[str, FileState]:
        """Rows whose path is one of ``roots`` or lies under one of them.

        Paths are OS paths here and the lossless text form of
        :mod:`frozenlens.paths` in the database (:class:`~.schema.FsPathText`,
        which also binds the LIKE prefix); prefixes match exactly (case too).
        """
        conds = []
        for root in roots:
            root = root.rstrip("/") or "/"
            prefix = root if root.endswith("/") else root + "/"
            conds.append(ImageRow.path == root)
            conds.append(ImageRow.path.startswith(prefix, autoescape=True))
        out: dict[str, FileState] = {}
        if not conds:
            return out
        stmt = _select_states().where(or_(*conds))
        with self._reader.connect() as c:
            for row in c.execute(stmt):
                out[row.path] = FileState(*row)
        return out

    def last_image_id(self) -> int:
        """The highest image id ever handed out (0 for a new index): rows above it are newer."""
        with self._reader.connect() as c:
            return high_water_marks(c)["images"]

    def indexed_by_hash(self, hashes: Iterable[str]) -> dict[str, FileState]:
        """For each hash, the indexed (primary) row holding that content."""
        hashes = sorted(set(hashes))
        out: dict[str, FileState] = {}
        with self._reader.connect() as c:
            for chunk in id_chunks(hashes):
                stmt = _select_states().where(ImageRow.content_hash.in_(chunk), ImageRow.status == INDEXED).order_by(ImageRow.id)
                for row in c.execute(stmt):
                    out.setdefault(row.content_hash, FileState(*row))
        return out

    # -- vectors -----------------------------------------------------------
    def vector_ids(self, space: str) -> np.ndarray:
        """All ids that have a vector in ``space`` ("semantic", "visual", "caption")."""
        col = CaptionChunkRow.id if space == "caption" else VectorRow.image_id
        with self._reader.connect() as c:
            ids = c.execute(select(col)).scalars().all()
        return np.asarray(ids, dtype=np.int64)

    def vectors(self, space: str, ids: Sequence[int], dim: int) -> np.ndarray:
        """float32 (len(ids), dim) vectors in the order of ``ids`` (all must exist)."""
        if space == "caption":
            id_col, vec_col = CaptionChunkRow.id, CaptionChunkRow.vector
        else:
            id_col = VectorRow.image_id
            vec_col = VectorRow.semantic if space == "semantic" else VectorRow.visual
        found: dict[int, bytes] = {}
        ids = [int(i) for i in ids]
        with self._reader.connect() as c:
            for chunk in id_chunks(ids):
                for i, blob in c.execute(select(id_col, vec_col).where(id_col.in_(chunk))):
                    found[i] = blob
        missing = [i for i in ids if i not in found]
        if missing:
            raise IndexCorruptError(f"{len(missing)} vectors missing from the database, e.g. id {missing[0]}")
        return from_blobs([found[i] for i in ids], dim)

    def tokens(self, ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """The reranker's image tokens: {id: float32 (n_tokens, dim)} for the
        ``ids`` that have them (images indexed before schema v5, or by an
        encoder without tokens, are absent)."""
        out: dict[int, np.ndarray] = {}
        with self._reader.connect() as c:
            for chunk in id_chunks([int(i) for i in ids]):
                rows = c.execute(
                    select(VectorRow.image_id, VectorRow.tokens).where(
                        VectorRow.image_id.in_(chunk), VectorRow.tokens.is_not(None)
                    )
                )
                for i, blob in rows:
                    if blob and len(blob) % (2 * dim) == 0:
                        out[int(i)] = np.frombuffer(blob, dtype="<f2").reshape(-1, dim).astype(np.float32)
        return out

    # -- search-time reads -------------------------------------------------
    def _filter_conditions(self, f: SearchFilters) -> list:
        conds = [ImageRow.status == INDEXED]
        lower, upper, dated = date_bounds(f)
        if lower is not None:
            conds.append(ImageRow.taken_at >= lower)
        if upper is not None:
            conds.append(ImageRow.taken_at < upper)
        elif dated:  # a date is required; the upper bound lies past the last day of the calendar
            conds.append(ImageRow.taken_at.is_not(None))
        if f.camera:
            # match the substring against the few distinct camera labels, then
            # use the indexed column (a LIKE '%x%' over every row cannot)
            conds.append(ImageRow.camera.in_(cameras_matching(self._camera_labels(), f.camera)))
        if f.under:
            root = f.under.rstrip("/") or "/"
            prefix = root if root.endswith("/") else root + "/"
            conds.append(or_(ImageRow.path == root, ImageRow.path.startswith(prefix, autoescape=True)))
        if f.min_width:
            conds.append(ImageRow.width >= f.min_width)
        if f.min_height:
            conds.append(ImageRow.height >= f.min_height)
        return conds

    def _camera_labels(self) -> list[str]:
        with self._reader.connect() as c:
            return list(c.execute(select(ImageRow.camera).where(ImageRow.camera.is_not(None)).distinct()).scalars())

    def analyze(self) -> None:
        """Refresh the query planner's statistics (after bulk changes)."""
        with self.engine.begin() as c:
            c.exec_driver_sql("ANALYZE")

    def count_matching(self, filters: SearchFilters) -> int:
        with self._reader.connect() as c:
            return int(c.execute(select(func.count()).select_from(ImageRow).where(*self._filter_conditions(filters))).scalar() or 0)

    def matching_ids(
        self, filters: SearchFilters, among: Sequence[int] | None = None, limit: int | None = None, *,
        generation: int | None = None,
    ) -> np.ndarray:
        """Ids of indexed images matching ``filters`` (restricted to ``among``;
        at most ``limit`` of them when ``among`` is None), ascending.

        Answered from the in-memory :class:`~.columns.FilterColumns` once a
        long-lived caller has made them worth building (see :class:`~.columns.ColumnCache`),
        else through SQL; both give the same ids. ``generation``: the database
        generation the caller works at (saves reading it; columns of another
        generation are not used)."""
        columns = self.filter_columns(generation=generation) if FilterColumns.answers(filters) else None
        if columns is not None:
            ids = columns.matching(filters, None if among is None else np.asarray(among))
            return ids if among is not None or limit is None else ids[:limit]
        return self.matching_ids_sql(filters, among, limit)

    def matching_ids_sql(
        self, filters: SearchFilters, among: Sequence[int] | None = None, limit: int | None = None
    ) -> np.ndarray:
        """:meth:`matching_ids` through SQL only."""
        conds = self._filter_conditions(filters)
        out: list[int] = []
        with self._reader.connect() as c:
            if among is None:
                out = list(c.execute(select(ImageRow.id).where(*conds).limit(limit)).scalars())
            else:
                for chunk in id_chunks([int(i) for i in among]):
                    out.extend(c.execute(select(ImageRow.id).where(and_(*conds, ImageRow.id.in_(chunk)))).scalars())
        return np.asarray(sorted(out), dtype=np.int64)

    def filter_columns(self, *, force: bool = False, generation: int | None = None) -> FilterColumns | None:
        """The in-memory filter columns of the current generation (or of ``generation``), or ``None``
        when not (yet) worth building (``force``: build now, e.g. when a server warms up)."""
        gen = self.generation() if generation is None else generation
        return self._columns.get(gen, self._read_filter_columns, force=force)

    def _read_filter_columns(self) -> FilterColumns | None:
        with self._reader.connect() as c:  # the generation first: rows newer than it only cause a rebuild
            gen = _generation(c)
            indexed = ImageRow.status == INDEXED
            if (c.execute(select(func.count()).select_from(ImageRow).where(indexed)).scalar() or 0) > COLUMNS_MAX_ROWS:
                return None
            stmt = select(ImageRow.id, ImageRow.taken_at, ImageRow.camera, ImageRow.width, ImageRow.height)
            rows = c.execute(stmt.where(indexed).order_by(ImageRow.id)).all()
        return FilterColumns.from_rows(gen, rows)

    def caption_owners(self, caption_ids: Sequence[int]) -> dict[int, int]:
        """caption chunk id (the caption space id) → id of the indexed image it describes (duplicates resolved)."""
        out: dict[int, int] = {}
        with self._reader.connect() as c:
            for chunk in id_chunks([int(i) for i in caption_ids]):
                stmt = (
                    select(CaptionChunkRow.id, ImageRow.id, ImageRow.status, ImageRow.duplicate_of)
                    .join(CaptionRow, CaptionRow.id == CaptionChunkRow.caption_id)
                    .join(ImageRow, ImageRow.id == CaptionRow.image_id)
                    .where(CaptionChunkRow.id.in_(chunk))
                )
                for cap_id, img_id, status, dup_of in c.execute(stmt):
                    if status == INDEXED:
                        out[cap_id] = img_id
                    elif status == DUPLICATE and dup_of is not None:
                        out[cap_id] = dup_of
        return out

    def caption_texts(self) -> list[tuple[int, str, str | None]]:
        """Every caption as (id of the indexed image it describes, text, language),
        duplicates resolved to their primary, in caption id order."""
        stmt = (
            select(CaptionRow.id, CaptionRow.text, CaptionRow.lang, ImageRow.id, ImageRow.status, ImageRow.duplicate_of)
            .join(ImageRow, ImageRow.id == CaptionRow.image_id)
            .where(ImageRow.status.in_((INDEXED, DUPLICATE)))
            .order_by(CaptionRow.id)
        )
        out: list[tuple[int, str, str | None]] = []
        with self._reader.connect() as c:
            for _, text, lang, img_id, status, dup_of in c.execute(stmt):
                owner = img_id if status == INDEXED else dup_of
                if owner is not None:
                    out.append((int(owner), text, lang))
        return out

    def caption_vectors_for(self, image_ids: Sequence[int], dim: int) -> dict[int, np.ndarray]:
        """image id → float32 (n_chunks, dim): the caption chunks of the image and of its duplicates."""
        blobs: dict[int, list[bytes]] = {}
        with self._reader.connect() as c:
            for chunk in id_chunks([int(i) for i in image_ids]):
                owner = func.coalesce(ImageRow.duplicate_of, ImageRow.id)
                stmt = (
                    select(owner, CaptionChunkRow.vector)
                    .join(CaptionRow, CaptionRow.id == CaptionChunkRow.caption_id)
                    .join(ImageRow, ImageRow.id == CaptionRow.image_id)
                    .where(or_(ImageRow.id.in_(chunk), ImageRow.duplicate_of.in_(chunk)))
                )
                for image_id, blob in c.execute(stmt):
                    blobs.setdefault(int(image_id), []).append(blob)
        return {i: from_blobs(b, dim) for i, b in blobs.items()}

    def images(self, ids: Sequence[int]) -> dict[int, ImageRecord]:
        """Full records (with captions, and duplicates' captions) by id."""
        ids = [int(i) for i in ids]
        rows: dict[int, object] = {}
        caps: dict[int, list[tuple[str, str | None, str]]] = {i: [] for i in ids}
        dups: dict[int, list[str]] = {i: [] for i in ids}
        with self._reader.connect() as c:
            for chunk in id_chunks(ids):
                for row in c.execute(select(ImageRow.__table__).where(ImageRow.id.in_(chunk))):
                    rows[row.id] = row
                dup_rows = c.execute(
                    select(ImageRow.id, ImageRow.path, ImageRow.duplicate_of)
                    .where(ImageRow.duplicate_of.in_(chunk), ImageRow.status == DUPLICATE)
                    .order_by(ImageRow.path)
                ).all()
                owner = {d.id: d.duplicate_of for d in dup_rows}
                for d in dup_rows:
                    dups[d.duplicate_of].append(d.path)
                cap_stmt = (
                    select(CaptionRow.image_id, CaptionRow.text, CaptionRow.lang, CaptionRow.source)
                    .where(CaptionRow.image_id.in_(list(chunk) + list(owner)))
                    .order_by(CaptionRow.id)
                )
                for image_id, text, lang, source in c.execute(cap_stmt):
                    caps[owner.get(image_id, image_id)].append((text, lang, source))
        out: dict[int, ImageRecord] = {}
        for i, row in rows.items():
            out[i] = ImageRecord(
                id=row.id,
                path=row.path,
                status=row.status,
                size=row.size,
                content_hash=row.content_hash,
                width=row.width,
                height=row.height,
                format=row.format,
                taken_at=row.taken_at,
                camera=row.camera,
                lens=row.lens,
                lat=row.lat,
                lon=row.lon,
                labels=[(str(label), float(p)) for label, p in json.loads(row.labels)] if row.labels else [],
                captions=caps.get(i, []),
                duplicates=dups.get(i, []),
                duplicate_of=row.duplicate_of,
                taken_at_source=row.taken_at_source,
            )
        return out

    def find_path(self, path: str) -> ImageRecord | None:
        with self._reader.connect() as c:
            image_id = c.execute(select(ImageRow.id).where(ImageRow.path == path)).scalar()
        if image_id is None:
            return None
        return self.images([image_id]).get(image_id)

    def content_hashes(self) -> dict[int, str | None]:
        """``{image id: content hash}`` of every indexed or duplicate image."""
        with self._reader.connect() as c:
            rows = c.execute(
                select(ImageRow.id, ImageRow.content_hash).where(ImageRow.status.in_((INDEXED, DUPLICATE)))
            ).all()
        return {int(i): h for i, h in rows}

    def failures(self) -> list[FailedFile]:
        with self._reader.connect() as c:
            rows = c.execute(
                select(ImageRow.path, ImageRow.error_reason, ImageRow.error_message, ImageRow.size, ImageRow.updated_at)
                .where(ImageRow.status == FAILED)
                .order_by(ImageRow.path)
            ).all()
        return [FailedFile(path=p, reason=r or "unknown", message=m or "", size=s, last_tried=t) for p, r, m, s, t in rows]

    def duplicate_pairs(self) -> list[tuple[int, int]]:
        """``(id, duplicate_of)`` of every byte-identical copy, by id."""
        with self._reader.connect() as c:
            rows = c.execute(select(ImageRow.id, ImageRow.duplicate_of).where(
                ImageRow.status == DUPLICATE, ImageRow.duplicate_of.is_not(None)).order_by(ImageRow.id)).all()
        return [(int(i), int(d)) for i, d in rows]

    def counts(self) -> dict[str, int]:
        with self._reader.connect() as c:
            by_status = dict(c.execute(select(ImageRow.status, func.count()).group_by(ImageRow.status)).all())
            captions = c.execute(select(func.count()).select_from(CaptionRow)).scalar() or 0
            with_date = c.execute(
                select(func.count()).select_from(ImageRow).where(ImageRow.status == INDEXED, ImageRow.taken_at.is_not(None))
            ).scalar() or 0
        return {
            "images": int(by_status.get(INDEXED, 0)),
            "duplicates": int(by_status.get(DUPLICATE, 0)),
            "failed": int(by_status.get(FAILED, 0)),
            "captions": int(captions),
            "with_date": int(with_date),
        }

    def cameras(self) -> list[tuple[str, int]]:
        with self._reader.connect() as c:
            rows = c.execute(
                select(ImageRow.camera, func.count())
                .where(ImageRow.status == INDEXED, ImageRow.camera.is_not(None))
                .group_by(ImageRow.camera)
                .order_by(func.count().desc())
            ).all()
        return [(str(cam), int(n)) for cam, n in rows]


def _select_states():  # noqa: ANN202 - a SQLAlchemy Select of FileState columns
    return select(
        ImageRow.id,
        ImageRow.path,
        ImageRow.size,
        ImageRow.mtime_ns,
        ImageRow.content_hash,
        ImageRow.status,
        ImageRow.caption_sig,
        ImageRow.duplicate_of,
    )


def bump_generation(conn) -> None:  # noqa: ANN001 - SQLAlchemy Connection
    """Count one more write transaction (see :meth:`Store.generation`)."""
    increment_meta(conn, "generation")


def _generation(conn) -> int:  # noqa: ANN001 - SQLAlchemy Connection
    value = conn.execute(select(Meta.value).where(Meta.key == "generation")).scalar()
    return int(value) if value is not None else 0
