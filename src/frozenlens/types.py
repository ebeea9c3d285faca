"""Plain typed values shared by the engine, store and clients.

This module imports nothing heavy: it is safe for thin clients (CLI, REST).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

#: the file that marks a directory as a FrozenLens index (see
#: :mod:`frozenlens.engine.index_dir`); the indexer's scan skips such
#: directories, so an index inside a photo folder is never indexed
MARKER = ".frozenlens-index"


def parse_when(text: str) -> dt.date | dt.datetime:
    """A filter date from text: ``YYYY-MM-DD`` is a date (a whole day, so
    ``before`` includes it); a longer ISO 8601 string is a date-time, whose
    time-zone offset is dropped (photo times are the camera's wall clock).

    Raises ``ValueError``. The CLI, the REST API and the page all parse dates
    with this one rule.
    """
    text = text.strip()
    if len(text) == 10:
        return dt.date.fromisoformat(text)
    return dt.datetime.fromisoformat(text).replace(tzinfo=None)


@dataclass(frozen=True)
class SearchFilters:
    """Filters applied in SQL to search results.

    after:  keep photos taken on or after this moment (a ``date`` means its
            first instant).
    before: keep photos taken before this moment; a ``date`` is inclusive,
            i.e. it means "up to the end of that day".
    camera: case-insensitive substring of "make model" (e.g. ``"canon"``).
    under:  keep photos whose path is this directory or inside it.
    min_width / min_height: minimum pixel size of the original photo.

    Photos with no known date never match a date filter.
    """

    after: dt.datetime | dt.date | None = None
    before: dt.datetime | dt.date | None = None
    camera: str | None = None
    under: str | None = None
    min_width: int | None = None
    min_height: int | None = None

    def is_empty(self) -> bool:
        return all(
            v is None
            for v in (self.after, self.before, self.camera, self.under, self.min_width, self.min_height)
        )


@dataclass(frozen=True)
class CaptionInfo:
    text: str
    lang: str | None
    source: str


@dataclass(frozen=True)
class Hit:
    """One search result.

    ``score`` is the final ranking score (higher is better); ``image_score``
    and ``caption_score`` are its parts (``None`` when not computed, e.g. for
    image→image search or images without captions). When the reranker ran,
    ``image_score`` is the head's score (first-stage cosine + learned
    correction) and ``first_stage_image_score`` the cosine it started from.
    """

    id: int
    path: str
    score: float
    image_score: float | None = None
    caption_score: float | None = None
    taken_at: dt.datetime | None = None
    camera: str | None = None
    lens: str | None = None
    width: int | None = None
    height: int | None = None
    lat: float | None = None
    lon: float | None = None
    captions: tuple[CaptionInfo, ...] = ()
    labels: tuple[tuple[str, float], ...] = ()
    duplicates: tuple[str, ...] = ()
    first_stage_image_score: float | None = None
    reranked: bool = False
    date_source: str | None = None  # "exif", or "mtime": no EXIF date, taken_at is the file's modification time
    group_size: int = 1  # collapsed results: files in this photo's near-duplicate group (frozenlens.engine.neardup)
    group_id: int | None = None  # collapsed results: the group's id (its best member's image id), None if alone

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "image_score": None if self.image_score is None else round(self.image_score, 6),
            "caption_score": None if self.caption_score is None else round(self.caption_score, 6),
            "taken_at": self.taken_at.isoformat() if self.taken_at else None,
            "date_source": self.date_source,
            "camera": self.camera,
            "lens": self.lens,
            "width": self.width,
            "height": self.height,
            "lat": self.lat,
            "lon": self.lon,
            "captions": [{"text": c.text, "lang": c.lang, "source": c.source} for c in self.captions],
            "labels": [{"label": name, "p": round(p, 6)} for name, p in self.labels],
            "duplicates": list(self.duplicates),
            "reranked": self.reranked,
            "group_size": self.group_size,
            "group_id": self.group_id,
            "first_stage_image_score": None
            if self.first_stage_image_score is None
            else round(self.first_stage_image_score, 6),
        }


@dataclass(frozen=True)
class FailedFile:
    path: str
    reason: str
    message: str
    size: int | None
    last_tried: dt.datetime | None


@dataclass
class IndexReport:
    """What one ``Engine.index`` run did (counts of files).

    ``not_scanned`` counts what the scan skipped, by reason (e.g.
    ``"outside-roots"``: symlinks leading out of the named folders,
    ``"unreadable"``, ``"broken-symlink"``); ``problems`` names the first
    1,000 of them.
    """

    scanned: int = 0
    new: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    moved: int = 0
    duplicates: int = 0
    deleted: int = 0
    captions_updated: int = 0
    encoded: int = 0
    problems: list[str] = field(default_factory=list)
    not_scanned: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


#: the counts of :class:`IndexStats`, in the order they are reported
STAT_COUNTS: tuple[str, ...] = ("images", "duplicates", "failed", "captions", "with_date")


@dataclass(frozen=True)
class IndexStats:
    """What an index holds: :meth:`frozenlens.engine.Engine.stats`.

    images: indexed photos (duplicates not included); duplicates: byte-identical
    copies of indexed photos; failed: files that could not be indexed;
    captions: caption rows; with_date: indexed photos with a date taken.
    encoder: the index's encoder identity (``name``, ``version``, ``dim``,
    ``visual_dim``); factory: the index-type setting (``auto``, ``flat``, ... or
    a FAISS factory string); index_types: per FAISS space, the factory string of
    the index actually built (what ``auto`` chose for the collection's size);
    vectors: vectors per FAISS space; cameras: indexed photos per camera, most
    photos first.

    :meth:`to_json` gives the JSON form (the CLI's ``info --json`` and the
    REST API's ``/stats`` are built from it). Reading a field by its JSON
    key (``stats["images"]``, ``"images" in stats``) still works, for code
    written when ``stats()`` returned that dict; new code reads attributes.
    """

    images: int
    duplicates: int
    failed: int
    captions: int
    with_date: int
    encoder: dict[str, str | int]
    factory: str
    vectors: dict[str, int]
    schema_version: int
    index_dir: str
    database: str
    bytes_on_disk: int
    created_at: str | None = None
    cameras: dict[str, int] = field(default_factory=dict)
    index_types: dict[str, str] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        """The photo and caption counts by name (:data:`STAT_COUNTS`)."""
        return {name: getattr(self, name) for name in STAT_COUNTS}

    def to_json(self) -> dict[str, object]:
        """A JSON-serialisable dict (a fresh copy: changing it changes nothing here)."""
        return {
            **self.counts,
            "encoder": dict(self.encoder),
            "factory": self.factory,
            "index_types": dict(self.index_types),
            "vectors": dict(self.vectors),
            "schema_version": self.schema_version,
            "index_dir": self.index_dir,
            "database": self.database,
            "bytes_on_disk": self.bytes_on_disk,
            "created_at": self.created_at,
            "cameras": dict(self.cameras),
        }

    @property
    def index_type_text(self) -> str:
        """The setting and what was built, for people: ``auto (semantic SQfp16, visual SQfp16, caption Flat)``."""
        return index_type_text(self.factory, self.index_types)

    def __getitem__(self, key: str) -> object:
        """The field by its JSON key (``KeyError`` for another key)."""
        return self.to_json()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()


def index_type_text(setting: str, built: Mapping[str, str]) -> str:
    """An index-type setting and the factory built per space, for people (CLI ``info``, the page)."""
    spaces = ", ".join(f"{space} {factory}" for space, factory in built.items())
    return f"{setting} ({spaces})" if spaces else setting
