"""The REST API's JSON shapes (pydantic): versioned with the URL prefix ``/api/v1``.

The limits the schema states (``k``, query and filter lengths, sort names) are
read from :mod:`frozenlens.request`, which also validates every request the
routes build; the schema only publishes them (and refuses with 422 early).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

from ...paths import OS_PATH_TEXT_PATTERN, to_text
from ...request import DEFAULT_K, MAX_FILTER_CHARS, MAX_K, MAX_QUERY_CHARS, MAX_TERM_WEIGHT, MAX_TERMS, SORTS
from ...types import Hit, parse_when

#: the result orders of :data:`frozenlens.request.SORTS`, as the schema's enum
Sort = Literal[SORTS]  # type: ignore[valid-type]
#: no NUL anywhere (SQL and paths); a query also needs one non-space character
NO_NUL = r"^[^\x00]*$"
SOME_TEXT = r"^[^\x00]*[^\x00\s\x1c-\x1f][^\x00]*$"  # \x1c-\x1f: spaces to Python, not to \s
#: a path in the text form of results (frozenlens.paths; no raw NUL either: that is \x00)
PATH_TEXT = OS_PATH_TEXT_PATTERN


def _when(value: object) -> dt.date | dt.datetime | None:
    """A request's date field, by :func:`frozenlens.types.parse_when`."""
    if value is None or isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        raise ValueError("expected an ISO 8601 date (YYYY-MM-DD) or date-time")
    try:
        return parse_when(value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an ISO 8601 date (YYYY-MM-DD) or date-time") from None


When = Annotated[dt.date | dt.datetime | None, BeforeValidator(_when)]


def _integral(value: object) -> object:
    """JSON Schema counts 1.0 as an integer; so does the API (also in strict bodies)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Count = Annotated[int, BeforeValidator(_integral)]


class ResultParams(BaseModel):
    """How many results, filters and order: shared by every search route."""

    model_config = ConfigDict(extra="forbid")

    k: Count = Field(DEFAULT_K, ge=1, le=MAX_K, description="number of results")
    after: When = Field(None, description="photos taken on or after this date/time (ISO 8601)")
    before: When = Field(None, description="photos taken before this date/time; a date includes that day")
    camera: str | None = Field(None, max_length=MAX_FILTER_CHARS, pattern=NO_NUL,
                               description="case-insensitive part of the camera's make and model")
    under: str | None = Field(None, max_length=MAX_FILTER_CHARS, pattern=PATH_TEXT,
                              description="only photos in this folder (absolute path, in the text form of result "
                                          "paths) or below it")
    sort: Sort = Field("relevance", description="relevance, or newest/oldest first among relevant photos")
    min_score: float | None = Field(None, description="relevance cutoff on the final score")
    collapse: bool = Field(False, description="show each group of near-duplicates once: its best member among the "
                                              "results, with group_size (see GET /api/v1/duplicates)")


class SearchRequest(ResultParams):
    """A text search as query parameters (``GET /api/v1/search``)."""

    q: str = Field(max_length=MAX_QUERY_CHARS, pattern=SOME_TEXT, description="the query, in any language")
    rerank: bool | None = Field(None, description="use the learned reranker (default: when the index has one)")


class SearchBody(SearchRequest):
    """A text search as a JSON body (``POST /api/v1/search``): types are strict (``"rerank": 0`` is an error)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _nonzero(value: float) -> float:
    if value == 0:
        raise ValueError("a term's weight must not be 0 (a negative weight subtracts the term)")
    return value


#: a term's weight: non-zero, at most MAX_TERM_WEIGHT either way (frozenlens.request)
Weight = Annotated[float, Field(ge=-MAX_TERM_WEIGHT, le=MAX_TERM_WEIGHT, json_schema_extra={"not": {"const": 0}},
                                description="non-zero; a negative weight subtracts the term"),
                   AfterValidator(_nonzero)]


class TextTermIn(BaseModel):
    """A text term, in any supported language."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(max_length=MAX_QUERY_CHARS, pattern=SOME_TEXT)
    weight: Weight = 1.0


class IdTermIn(BaseModel):
    """An indexed photo, by id (e.g. a result's ``id``)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_id: Count = Field(ge=0)
    weight: Weight = 1.0


class PhotoTermIn(BaseModel):
    """A photo file, base64-encoded (the photos of one body together at most the upload limit of /search/image)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image: str = Field(pattern=r"^[A-Za-z0-9+/]*={0,2}$", json_schema_extra={"contentEncoding": "base64"})
    weight: Weight = 1.0


def _term_kind(value: object) -> str | None:
    if isinstance(value, dict):
        return next((key for key in ("text", "image_id", "image") if key in value), None)
    return {TextTermIn: "text", IdTermIn: "image_id", PhotoTermIn: "image"}.get(type(value))


#: one weighted term: a text, an indexed photo's id, or an uploaded photo
TermIn = Annotated[Annotated[TextTermIn, Tag("text")] | Annotated[IdTermIn, Tag("image_id")]
                   | Annotated[PhotoTermIn, Tag("image")],
                   Discriminator(_term_kind, custom_error_type="term",
                                 custom_error_message="a term has one of text, image_id or image")]


class ComposedBody(ResultParams):
    """A composed query (``POST /api/v1/search/composed``): weighted text and photo terms, combined as
    ``frozenlens.engine.compose`` defines (README, "Composed queries"); types are strict."""

    model_config = ConfigDict(extra="forbid", strict=True)

    terms: list[TermIn] = Field(min_length=1, max_length=MAX_TERMS,
                                description=f"1 to {MAX_TERMS} terms, at least one with a positive weight")
    rerank: bool | None = Field(None, description="rerank with the positive text terms (default: when the index "
                                                  "has a head; a query without a positive text term never is)")


TAKEN_AT = ("when the photo was taken, ISO 8601 without a time-zone offset (the camera's wall clock; "
            "the file's modification time when the photo has no EXIF date, see date_source)")
DATE_SOURCE = "where taken_at comes from: exif, or mtime (no EXIF date: the file's modification time)"
PATH = ("the file's path in the lossless text form of frozenlens.paths: valid UTF-8; a backslash is \\\\, "
        "newline/tab/CR are \\n \\t \\r, a byte that is not UTF-8 or an ASCII control is \\xNN, C1 and "
        "bidi controls are \\uNNNN, everything else is itself. The exact path: frozenlens.paths.from_text(path) "
        "(os.fsencode of that for bytes); or fetch the file by id (file_url)")
PATHS = "the paths of byte-identical copies, each in the same text form as path"


class CaptionOut(BaseModel):
    text: str
    lang: str | None
    source: str


class LabelOut(BaseModel):
    label: str
    p: float


class HitOut(BaseModel):
    """One result. Scores: ``score`` ranks; ``image_score``/``caption_score`` are its parts."""

    id: int
    path: str = Field(description=PATH)
    score: float
    image_score: float | None = None
    caption_score: float | None = None
    first_stage_image_score: float | None = None
    reranked: bool = False
    taken_at: str | None = Field(None, description=TAKEN_AT)
    date_source: Literal["exif", "mtime"] | None = Field(None, description=DATE_SOURCE)
    camera: str | None = None
    lens: str | None = None
    width: int | None = None
    height: int | None = None
    lat: float | None = None
    lon: float | None = None
    captions: list[CaptionOut] = []
    labels: list[LabelOut] = []
    duplicates: list[str] = Field([], description=PATHS)
    group_size: int = Field(1, description="with collapse: how many files the photo's near-duplicate group holds")
    group_id: int | None = Field(None, description="with collapse: the group's id (its best member's image id)")
    thumbnail_url: str
    file_url: str

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        d = {**hit.to_dict(), "path": to_text(hit.path), "duplicates": [to_text(p) for p in hit.duplicates]}
        return cls(**d, thumbnail_url=f"/api/v1/images/{hit.id}/thumbnail", file_url=f"/api/v1/images/{hit.id}/file")


class SearchResponse(BaseModel):
    query: str | None = Field(None, description="the text query (absent for an image query)")
    k: int
    sort: Sort
    took_ms: float
    hits: list[HitOut]


class ImageOut(BaseModel):
    """An indexed photo's metadata."""

    id: int
    path: str = Field(description=PATH)
    status: str
    size: int
    format: str | None
    width: int | None
    height: int | None
    taken_at: str | None = Field(description=TAKEN_AT)
    date_source: Literal["exif", "mtime"] | None = Field(description=DATE_SOURCE)
    camera: str | None
    lens: str | None
    lat: float | None
    lon: float | None
    captions: list[CaptionOut]
    labels: list[LabelOut]
    duplicates: list[str] = Field(description=PATHS)
    thumbnail_url: str
    file_url: str


class FailedFileOut(BaseModel):
    path: str = Field(description=PATH)
    reason: str
    message: str


class StatsOut(BaseModel):
    """What the index holds."""

    images: int
    counts: dict[str, int]
    encoder: dict[str, object]
    factory: str = Field(description="the index-type setting (auto, flat, ... or a FAISS factory string)")
    index_types: dict[str, str] = Field(description="per vector space, the FAISS factory of the index built")
    vectors: dict[str, int]
    schema_version: int
    bytes_on_disk: int
    cameras: dict[str, int]
    reranker: bool
    failed: list[FailedFileOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    index: bool


class IndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(pattern=PATH_TEXT,
                      description="folder to index, in the text form of result paths (frozenlens.paths.to_text); "
                                  "must lie inside a folder the server allows")


class IndexJobOut(BaseModel):
    id: int
    path: str = Field(description=PATH)
    state: str
    stage: str
    done: int
    total: int | None
    message: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    report: dict[str, object] | None


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str


class ErrorOut(BaseModel):
    """Every error response: ``{"error": {"status", "code", "message"}}``."""

    error: ErrorBody


class GroupMemberOut(BaseModel):
    id: int
    path: str = Field(description=PATH)
    width: int | None
    height: int | None
    thumbnail_url: str


class GroupCopyOut(BaseModel):
    id: int
    path: str = Field(description=PATH)
    copy_of: int = Field(description="the id of the photo this file is a byte-identical copy of")


class DuplicateGroupOut(BaseModel):
    """A group of near-identical photos; every pair of members is at least ``threshold`` similar."""

    id: int = Field(description="the group's id: its best member's image id")
    size: int = Field(description="files in the group (members and byte-identical copies)")
    similarity: float = Field(description="the lowest cosine between two members")
    members: list[GroupMemberOut] = Field(description="best member first (most pixels, then earliest)")
    copies: list[GroupCopyOut]


class DuplicatesOut(BaseModel):
    threshold: float = Field(description="the least cosine of the visual vectors of two photos in one group")
    groups: list[DuplicateGroupOut] = Field(description="largest group first")
