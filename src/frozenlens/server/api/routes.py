"""The ``/api/v1`` routes: thin handlers that validate, call the engine, and shape JSON.

Each search route builds a :class:`frozenlens.request.SearchRequest` (the one
owner of query limits and checks; its :class:`QueryError` is a 400) before it
touches the engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import FileResponse

from ...errors import DecodeError, ImageNotFoundError
from ...request import DEFAULT_K, MAX_FILTER_CHARS, MAX_K
from ...request import SearchRequest as SearchQuery
from ...types import Hit, SearchFilters
from ..shapes import image_json, job_json, os_path, stats_json
from ..state import IndexJob, ServerState
from ..uploads import decode_upload
from .duplicates import add_duplicates_route
from .models import (
    NO_NUL,
    PATH_TEXT,
    ComposedBody,
    ErrorOut,
    HealthOut,
    HitOut,
    ImageOut,
    IndexJobOut,
    IndexRequest,
    ResultParams,
    SearchBody,
    SearchRequest,
    SearchResponse,
    Sort,
    StatsOut,
    When,
)
from .terms import query_terms

if TYPE_CHECKING:
    from ...engine import Engine

ERRORS = {
    400: {"model": ErrorOut, "description": "invalid request"},
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
    422: {"model": ErrorOut, "description": "a parameter has the wrong type or shape"},
    503: {"model": ErrorOut, "description": "there is no index yet, or its database is damaged (`frozenlens doctor`)"},
}
RERANK = {409: {"model": ErrorOut, "description": "rerank=true but the index has no reranker head"}}
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such image, or its file is gone"}}
FORBIDDEN = {403: {"model": ErrorOut, "description": "the file lies outside the indexed folders"}}


ImageId = Annotated[str, Path(description="the image's id (an integer)")]


def parse_id(value: str) -> int:
    """An image id from a URL segment; anything but a plain integer is simply not found (404)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ImageNotFoundError(f"no indexed image {value[:40]!r}")
    return int(value)


def job_out(job: IndexJob) -> IndexJobOut:
    """An indexing job as JSON (:func:`frozenlens.server.shapes.job_json`)."""
    return IndexJobOut(**job_json(job))


def _version() -> str:
    try:
        return version("frozenlens")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def build_router(state: ServerState) -> APIRouter:
    """The versioned REST API over ``state``."""
    limits = state.settings.limits
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    def request_of(p: ResultParams, query: str | None = None, rerank: bool | None = None) -> SearchQuery:
        """The validated request (:class:`QueryError` → 400) for the routes' parameters."""
        filters = SearchFilters(after=p.after, before=p.before, camera=p.camera or None, under=os_path(p.under or None))
        return SearchQuery(query=query, k=p.k, filters=filters, sort=p.sort, rerank=rerank, min_score=p.min_score,
                           collapse=p.collapse)

    def respond(req: SearchQuery, search: Callable[[Engine], list[Hit]]) -> SearchResponse:
        """Run ``search`` on the engine and shape the answer; ``took_ms`` is the engine's own time."""
        with state.engine() as engine:
            t0 = time.perf_counter()
            hits = search(engine)
            took = (time.perf_counter() - t0) * 1000
        return SearchResponse(query=req.query, k=req.k, sort=req.sort, took_ms=round(took, 2),
                              hits=[HitOut.of(h) for h in hits])

    def run_text(params: SearchRequest) -> SearchResponse:
        req = request_of(params, params.q, params.rerank)
        return respond(req, lambda e: e.search(req))

    @router.get("/search", response_model=SearchResponse, summary="Search by text", responses=RERANK)
    def search_get(req: Annotated[SearchRequest, Query()]) -> SearchResponse:
        return run_text(req)

    @router.post("/search", response_model=SearchResponse, summary="Search by text (JSON body)", responses=RERANK)
    def search_post(req: SearchBody) -> SearchResponse:
        return run_text(req)

    @router.post(
        "/search/image", response_model=SearchResponse, summary="Search by an example photo (multipart upload)",
        responses={413: {"model": ErrorOut, "description": "upload too large"}},
    )
    def search_image(
        file: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, ...)")],
        k: Annotated[int, Form(ge=1, le=MAX_K)] = DEFAULT_K,
        after: Annotated[When, Form()] = None,
        before: Annotated[When, Form()] = None,
        camera: Annotated[str | None, Form(max_length=MAX_FILTER_CHARS, pattern=NO_NUL)] = None,
        under: Annotated[str | None, Form(max_length=MAX_FILTER_CHARS, pattern=PATH_TEXT)] = None,
        sort: Annotated[Sort, Form()] = "relevance",
        min_score: Annotated[float | None, Form()] = None,
        collapse: Annotated[bool, Form()] = False,
    ) -> SearchResponse:
        req = request_of(ResultParams(k=k, after=after, before=before, camera=camera, under=under, sort=sort,
                                      min_score=min_score, collapse=collapse))
        data = file.file.read(limits.max_upload_bytes + 1)  # read into memory; we never write it anywhere
        image = decode_upload(data, limits.max_upload_bytes, limits.max_upload_pixels)
        return respond(req, lambda e: e.search(req, image=image))

    @router.post(
        "/search/composed", response_model=SearchResponse, summary="Search by weighted text and photo terms",
        responses={**RERANK, 413: {"model": ErrorOut, "description": "uploads too large"}},
    )
    def search_composed(body: ComposedBody) -> SearchResponse:
        req = request_of(body, rerank=body.rerank)
        req = replace(req, terms=query_terms(body.terms, limits))
        return respond(req, lambda e: e.search(req))

    @router.get("/images/{image_id}", response_model=ImageOut, responses=NOT_FOUND, summary="An image's metadata")
    def image(image_id: ImageId) -> ImageOut:
        with state.engine() as engine:
            r = engine.image_by_id(parse_id(image_id))
        return ImageOut(**image_json(r), thumbnail_url=f"/api/v1/images/{r.id}/thumbnail",
                        file_url=f"/api/v1/images/{r.id}/file")

    @router.get("/images/{image_id}/similar", response_model=SearchResponse, responses=NOT_FOUND,
                summary="Photos that look like an indexed photo (more like this)")
    def similar(image_id: ImageId, p: Annotated[ResultParams, Query()]) -> SearchResponse:
        req, image = request_of(p), parse_id(image_id)
        return respond(req, lambda e: e.similar(image, req))

    @router.get(
        "/images/{image_id}/thumbnail", response_class=FileResponse, summary="A 256-px WebP thumbnail",
        responses={**NOT_FOUND, **FORBIDDEN, 200: {"content": {"image/webp": {}}}},
    )
    def image_thumbnail(image_id: ImageId) -> FileResponse:
        with state.engine() as engine:
            try:
                path = engine.thumbnail(parse_id(image_id))
            except DecodeError as exc:
                raise ImageNotFoundError(f"image {image_id} can no longer be decoded: {exc}") from exc
        return FileResponse(path, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})

    @router.get(
        "/images/{image_id}/file", response_class=FileResponse, summary="The original photo file",
        responses={**NOT_FOUND, **FORBIDDEN, 200: {"content": {"image/*": {}}}},
    )
    def image_file(image_id: ImageId) -> FileResponse:
        with state.engine() as engine:
            path, media = engine.image_file(parse_id(image_id))
        return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})

    @router.get("/stats", response_model=StatsOut, summary="What the index holds")
    def stats() -> StatsOut:
        with state.engine() as engine:
            return StatsOut(**stats_json(engine))

    add_duplicates_route(router, state)

    @router.get("/health", response_model=HealthOut, summary="Liveness")
    def health() -> HealthOut:
        return HealthOut(status="ok", version=_version(), index=state.has_index())

    @router.post("/index", response_model=IndexJobOut, status_code=202, summary="Start indexing a folder",
                 responses={403: {"model": ErrorOut, "description": "indexing not allowed here, or the index is read-only"}})
    def start_index(req: IndexRequest) -> IndexJobOut:
        return job_out(state.start_index(os_path(req.path)))

    @router.get("/index/jobs/{job_id}", response_model=IndexJobOut, responses=NOT_FOUND, summary="An indexing job")
    def index_job(job_id: int) -> IndexJobOut:
        job = state.job(job_id)
        if job is None:
            raise ImageNotFoundError(f"no indexing job {job_id}")
        return job_out(job)

    return router
