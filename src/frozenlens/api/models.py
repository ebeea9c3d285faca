"""The REST API's JSON shapes (pydantic): versioned with the URL prefix ``/api/v1``."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..types import Hit

Sort = Literal["relevance", "newest", "oldest"]


class ResultParams(BaseModel):
    """How many results, filters and order: shared by every search route."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(10, description="number of results")
    after: str | None = Field(None, description="photos taken on or after this date/time (ISO 8601)")
    before: str | None = Field(None, description="photos taken before this date/time; a date includes that day")
    camera: str | None = Field(None, description="case-insensitive part of the camera's make and model")
    under: str | None = Field(None, description="only photos in this folder (absolute path) or below it")
    sort: Sort = Field("relevance", description="relevance, or newest/oldest first among relevant photos")
    min_score: float | None = Field(None, description="relevance cutoff on the final score")


class SearchRequest(ResultParams):
    """A text search (``POST /api/v1/search``; ``GET`` takes the same fields as query parameters)."""

    q: str = Field(description="the query, in any language")
    rerank: bool | None = Field(None, description="use the learned reranker (default: when the index has one)")


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
    path: str
    score: float
    image_score: float | None = None
    caption_score: float | None = None
    first_stage_image_score: float | None = None
    reranked: bool = False
    taken_at: dt.datetime | None = None
    camera: str | None = None
    lens: str | None = None
    width: int | None = None
    height: int | None = None
    lat: float | None = None
    lon: float | None = None
    captions: list[CaptionOut] = []
    labels: list[LabelOut] = []
    duplicates: list[str] = []
    thumbnail_url: str
    file_url: str

    @classmethod
    def of(cls, hit: Hit) -> HitOut:
        d = hit.to_dict()
        d["taken_at"] = hit.taken_at
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
    path: str
    status: str
    size: int
    format: str | None
    width: int | None
    height: int | None
    taken_at: dt.datetime | None
    camera: str | None
    lens: str | None
    lat: float | None
    lon: float | None
    captions: list[CaptionOut]
    labels: list[LabelOut]
    duplicates: list[str]
    thumbnail_url: str
    file_url: str


class FailedFileOut(BaseModel):
    path: str
    reason: str
    message: str


class StatsOut(BaseModel):
    """What the index holds."""

    images: int
    counts: dict[str, int]
    encoder: dict[str, object]
    factory: str
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

    path: str = Field(description="folder to index; must lie inside a folder the server allows")


class IndexJobOut(BaseModel):
    id: int
    path: str
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
