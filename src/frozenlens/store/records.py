"""Plain values passed into and out of the store (no SQLAlchemy objects leak).

Every ``path`` here (and each of :attr:`ImageRecord.duplicates`) is the OS
path as Python has it (:func:`os.fsdecode`: undecodable bytes are lone
surrogates), which reopens the file; the database holds its text form
(:mod:`frozenlens.paths`), and anything shown to a person or sent as JSON
must use :func:`frozenlens.paths.to_text` too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

import numpy as np


@dataclass(frozen=True)
class FileState:
    """What the database knows about one file path (for incremental indexing)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str
    caption_sig: str | None
    duplicate_of: int | None


@dataclass(frozen=True)
class PhotoFields:
    """Descriptive columns of an image row (from decoding + EXIF)."""

    format: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: dt.datetime | None = None
    taken_at_source: str | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    lat: float | None = None
    lon: float | None = None

    @classmethod
    def copy_from(cls, source: object, **overrides: object) -> PhotoFields:
        """Fields read from any object with same-named attributes (an image
        row, decoder metadata), then ``overrides``."""
        values = {f.name: getattr(source, f.name, None) for f in fields(cls)}
        return cls(**{**values, **overrides})  # type: ignore[arg-type]

    def as_columns(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ChunkVector:
    """One chunk of a long caption and its vector float32 (dim,)."""

    text: str
    n_tokens: int | None
    vector: np.ndarray


@dataclass(frozen=True)
class CaptionVector:
    """A caption, its pooled vector float32 (dim,) and its chunks.

    ``chunks`` empty means the caption is a single chunk (its own text and
    vector).
    """

    text: str
    lang: str | None
    source: str
    vector: np.ndarray  # float32 (dim,)
    chunks: tuple[ChunkVector, ...] = ()


@dataclass
class Delta:
    """What a committed transaction changed in the vector spaces.

    The pipeline applies it to the in-memory FAISS indexes after the commit.
    Vectors are the float16-rounded values stored in the database, as float32.
    """

    image_ids: list[int] = field(default_factory=list)
    semantic: list[np.ndarray] = field(default_factory=list)
    visual: list[np.ndarray] = field(default_factory=list)
    removed_image_ids: list[int] = field(default_factory=list)
    caption_ids: list[int] = field(default_factory=list)
    caption_vectors: list[np.ndarray] = field(default_factory=list)
    removed_caption_ids: list[int] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.image_ids or self.removed_image_ids or self.caption_ids or self.removed_caption_ids)


@dataclass(frozen=True)
class ImageRecord:
    """An image row with its captions, for building search hits."""

    id: int
    path: str
    status: str
    size: int
    content_hash: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: dt.datetime | None
    camera: str | None
    lens: str | None
    lat: float | None
    lon: float | None
    labels: list[tuple[str, float]]
    captions: list[tuple[str, str | None, str]]  # (text, lang, source)
    duplicates: list[str]
    duplicate_of: int | None
    taken_at_source: str | None = None  # "exif", or "mtime" when the file had no EXIF date
