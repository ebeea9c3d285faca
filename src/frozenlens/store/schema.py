"""SQLAlchemy ORM tables of a FrozenLens index.

Identity rule: ``images.id`` IS the FAISS id of the image's vectors and
``caption_chunks.id`` the FAISS id of a caption chunk's vector. The writer
assigns every id itself (:mod:`.ids`), never reusing one after a delete — the
retriever relies on this to reconcile its index files with the database by id
sets alone — and leaving no gaps after a rollback, so SQLite and PostgreSQL
hold the same rows under the same ids. The columns keep their generators
(SQLite ``AUTOINCREMENT``, a PostgreSQL sequence) from the schema's first
versions; nothing draws from them any more.

Vectors are stored as float16 blobs beside their rows, so one database
transaction commits a row and its vectors together (see
:mod:`frozenlens.indexer.pipeline` for the full commit protocol).

Paths: ``images.path`` holds the lossless text form of
:mod:`frozenlens.paths` (schema v6), valid UTF-8 on every backend: a
backslash is ``\\\\``, a newline/tab/CR ``\\n``/``\\t``/``\\r``, a byte that is
not UTF-8 or an ASCII control ``\\xNN``, C1 controls, lone surrogates and
bidi/line-separator controls ``\\uNNNN``; everything else is itself.
:class:`FsPathText` converts on the way in and out, so Python code (and
``ImageRow.path == p``) always sees the OS path, which reopens the file.
Prefix filters (``ImageRow.path.startswith(prefix, autoescape=True)``) bind
the prefix through it too: LIKE-escaping (``/`` before ``%``, ``_``, ``/``)
and the text form commute, neither touches what the other adds. SQLite runs
with ``PRAGMA case_sensitive_like=ON`` so a prefix never matches a name that
differs only in case.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..errors import IndexCorruptError
from ..paths import from_text, to_text

# Status of an ``images`` row.
INDEXED = "indexed"      # has vectors, searchable
DUPLICATE = "duplicate"  # byte-identical to ``duplicate_of``; shares its vectors
FAILED = "failed"        # could not be decoded; ``error_reason`` says why

# Integer primary key that is BIGINT on PostgreSQL but INTEGER (rowid alias)
# on SQLite, where only "INTEGER PRIMARY KEY" gets AUTOINCREMENT.
IdType = BigInteger().with_variant(Integer(), "sqlite")


class FsPathText(TypeDecorator[str]):
    """An OS path (surrogateescape ``str``) stored as its text form (:func:`frozenlens.paths.to_text`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else to_text(value)

    def process_result_value(self, value: str | None, dialect: object) -> str | None:
        if value is None:
            return None
        try:
            return from_text(value)
        except ValueError as exc:
            raise IndexCorruptError(f"a stored path is not in the path text form ({exc}): {value[:200]!r}") from None


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Key/value facts about the index: schema version, encoder identity ..."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class ImageRow(Base):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_hash", "content_hash"),
        Index("ix_images_status", "status"),
        Index("ix_images_taken_at", "taken_at"),
        Index("ix_images_camera", "camera"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPathText, unique=True)  # text form, see the module docstring
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error_reason: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    duplicate_of: Mapped[int | None] = mapped_column(
        IdType, ForeignKey("images.id", ondelete="SET NULL"), index=True
    )
    format: Mapped[str | None] = mapped_column(String(16))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    taken_at_source: Mapped[str | None] = mapped_column(String(8))  # "exif" | "mtime"
    camera_make: Mapped[str | None] = mapped_column(String(128))
    camera_model: Mapped[str | None] = mapped_column(String(128))
    camera: Mapped[str | None] = mapped_column(String(256))
    lens: Mapped[str | None] = mapped_column(String(256))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    labels: Mapped[str | None] = mapped_column(Text)  # JSON [[label, p], ...]
    caption_sig: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime)

    vectors: Mapped[VectorRow | None] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )
    captions: Mapped[list[CaptionRow]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class VectorRow(Base):
    """The image's vectors (float16 little-endian blobs)."""

    __tablename__ = "image_vectors"
    image_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    semantic: Mapped[bytes] = mapped_column(LargeBinary)
    visual: Mapped[bytes] = mapped_column(LargeBinary)
    #: schema v5: the encoder's image tokens, float16 (n_tokens, dim) row-major,
    #: for the reranker; NULL for images indexed before v5 or by an encoder without tokens
    tokens: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    image: Mapped[ImageRow] = relationship(back_populates="vectors")


class CaptionRow(Base):
    __tablename__ = "captions"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    lang: Mapped[str | None] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    image: Mapped[ImageRow] = relationship(back_populates="captions")


class CaptionChunkRow(Base):
    """One chunk of a caption (schema v2). Its id is the FAISS id in the
    ``caption`` space; a short caption has exactly one chunk, which for
    captions migrated from v1 reuses the caption's id and vector."""

    __tablename__ = "caption_chunks"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    caption_id: Mapped[int] = mapped_column(IdType, ForeignKey("captions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int | None] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)


# -- schema v3: staging area of `frozenlens reindex` ------------------------------
# New vectors computed by a re-index with another encoder wait here until every
# image has them; one transaction then swaps them in (see frozenlens.reindex).


class StagedImageRow(Base):
    __tablename__ = "staged_image_vectors"
    image_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    semantic: Mapped[bytes] = mapped_column(LargeBinary)
    visual: Mapped[bytes] = mapped_column(LargeBinary)
    tokens: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # schema v5
    labels: Mapped[str | None] = mapped_column(Text)


class StagedFailureRow(Base):
    """Images whose file could not be re-read during a re-index."""

    __tablename__ = "staged_failures"
    image_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    reason: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class StagedCaptionRow(Base):
    """A caption's pooled vector and its chunks (JSON texts + float16 blob) under the new encoder."""

    __tablename__ = "staged_captions"
    caption_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("captions.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    chunk_texts: Mapped[str] = mapped_column(Text)  # JSON [[text, n_tokens], ...]
    chunk_vectors: Mapped[bytes] = mapped_column(LargeBinary)  # (n_chunks, dim) float16
