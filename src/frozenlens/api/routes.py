"""The ``/api/v1`` routes: thin handlers that validate, call the engine, and shape JSON."""

from __future__ import annotations

import datetime as dt
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import FileResponse

from ..errors import DecodeError, ImageNotFoundError, QueryError
from ..types import SearchFilters
from .models import (
    ErrorOut,
    FailedFileOut,
    HealthOut,
    HitOut,
    ImageOut,
    IndexJobOut,
    IndexRequest,
    ResultParams,
    SearchRequest,
    SearchResponse,
    Sort,
    StatsOut,
)
from .state import ServerState
from .uploads import decode_upload

ERRORS = {
    400: {"model": ErrorOut, "description": "invalid request"},
    401: {"model": ErrorOut, "description": "missing or wrong API token"},
    422: {"model": ErrorOut, "description": "a parameter has the wrong type or shape"},
    503: {"model": ErrorOut, "description": "there is no index yet"},
}
NOT_FOUND = {404: {"model": ErrorOut, "description": "no such image, or its file is gone"}}


def parse_when(value: str | None, name: str) -> dt.date | dt.datetime | None:
    """An ISO 8601 date or date-time from a request field (QueryError if malformed)."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name}: {value!r} is not an ISO 8601 date (YYYY-MM-DD) or date-time") from None


ImageId = Annotated[str, Path(description="the image's id (an integer)")]


def parse_id(value: str) -> int:
    """An image id from a URL segment; anything but a plain integer is simply not found (404)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ImageNotFoundError(f"no indexed image {value[:40]!r}")
    return int(value)


def _version() -> str:
    try:
        return version("frozenlens")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def build_router(state: ServerState) -> APIRouter:
    """The versioned REST API over ``state``."""
    limits = state.settings.limits
    router = APIRouter(prefix="/api/v1", responses=ERRORS)

    def check_k(k: int) -> int:
        if not 1 <= k <= limits.max_k:
            raise QueryError(f"k must be between 1 and {limits.max_k}")
        return k

    def filters_of(after: str | None, before: str | None, camera: str | None, under: str | None) -> SearchFilters:
        for name, v in (("camera", camera), ("under", under)):
            if v is not None and (len(v) > 1000 or "\x00" in v):
                raise QueryError(f"{name} is too long or contains a NUL character")
        return SearchFilters(
            after=parse_when(after, "after"), before=parse_when(before, "before"),
            camera=camera or None, under=under or None,
        )

    def run_text(req: SearchRequest) -> SearchResponse:
        q = req.q.strip()
        if not q:
            raise QueryError("empty query: type what you are looking for")
        if len(q) > limits.max_query_chars or "\x00" in q:
            raise QueryError(f"the query is longer than {limits.max_query_chars} characters or contains a NUL")
        k = check_k(req.k)
        filters = filters_of(req.after, req.before, req.camera, req.under)
        t0 = time.perf_counter()
        with state.engine() as engine:
            hits = engine.search(q, k, filters=filters, min_score=req.min_score, rerank=req.rerank, sort=req.sort)
        took = (time.perf_counter() - t0) * 1000
        return SearchResponse(query=q, k=k, sort=req.sort, took_ms=round(took, 2), hits=[HitOut.of(h) for h in hits])

    @router.get("/search", response_model=SearchResponse, summary="Search by text")
    def search_get(req: Annotated[SearchRequest, Query()]) -> SearchResponse:
        return run_text(req)

    @router.post("/search", response_model=SearchResponse, summary="Search by text (JSON body)")
    def search_post(req: SearchRequest) -> SearchResponse:
        return run_text(req)

    @router.post(
        "/search/image", response_model=SearchResponse, summary="Search by an example photo (multipart upload)",
        responses={413: {"model": ErrorOut, "description": "upload too large"}},
    )
    def search_image(
        file: Annotated[UploadFile, File(description="a photo (JPEG, PNG, WebP, ...)")],
        k: Annotated[int, Form()] = 10,
        after: Annotated[str | None, Form()] = None,
        before: Annotated[str | None, Form()] = None,
        camera: Annotated[str | None, Form()] = None,
        under: Annotated[str | None, Form()] = None,
        sort: Annotated[Sort, Form()] = "relevance",
        min_score: Annotated[float | None, Form()] = None,
    ) -> SearchResponse:
        k = check_k(k)
        filters = filters_of(after, before, camera, under)
        data = file.file.read(limits.max_upload_bytes + 1)  # read into memory; we never write it anywhere
        image = decode_upload(data, limits.max_upload_bytes, limits.max_upload_pixels)
        t0 = time.perf_counter()
        with state.engine() as engine:
            hits = engine.search(image, k, filters=filters, min_score=min_score, sort=sort)
        took = (time.perf_counter() - t0) * 1000
        return SearchResponse(query=None, k=k, sort=sort, took_ms=round(took, 2), hits=[HitOut.of(h) for h in hits])

    @router.get("/images/{image_id}", response_model=ImageOut, responses=NOT_FOUND, summary="An image's metadata")
    def image(image_id: ImageId) -> ImageOut:
        with state.engine() as engine:
            r = engine.image_by_id(parse_id(image_id))
        return ImageOut(
            id=r.id, path=r.path, status=r.status, size=r.size, format=r.format, width=r.width, height=r.height,
            taken_at=r.taken_at, camera=r.camera, lens=r.lens, lat=r.lat, lon=r.lon,
            captions=[{"text": t, "lang": lang, "source": src} for t, lang, src in r.captions],
            labels=[{"label": lab, "p": round(p, 6)} for lab, p in r.labels], duplicates=list(r.duplicates),
            thumbnail_url=f"/api/v1/images/{r.id}/thumbnail", file_url=f"/api/v1/images/{r.id}/file",
        )

    @router.get("/images/{image_id}/similar", response_model=SearchResponse, responses=NOT_FOUND,
                summary="Photos that look like an indexed photo (more like this)")
    def similar(image_id: ImageId, p: Annotated[ResultParams, Query()]) -> SearchResponse:
        k = check_k(p.k)
        filters = filters_of(p.after, p.before, p.camera, p.under)
        t0 = time.perf_counter()
        with state.engine() as engine:
            hits = engine.similar(parse_id(image_id), k, filters=filters, min_score=p.min_score, sort=p.sort)
        took = (time.perf_counter() - t0) * 1000
        return SearchResponse(query=None, k=k, sort=p.sort, took_ms=round(took, 2), hits=[HitOut.of(h) for h in hits])

    @router.get(
        "/images/{image_id}/thumbnail", response_class=FileResponse, summary="A 256-px WebP thumbnail",
        responses={**NOT_FOUND, 200: {"content": {"image/webp": {}}}},
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
        responses={**NOT_FOUND, 403: {"model": ErrorOut, "description": "the file lies outside the indexed folders"},
                   200: {"content": {"image/*": {}}}},
    )
    def image_file(image_id: ImageId) -> FileResponse:
        with state.engine() as engine:
            path, media = engine.image_file(parse_id(image_id))
        return FileResponse(path, media_type=media, headers={"X-Content-Type-Options": "nosniff"})

    @router.get("/stats", response_model=StatsOut, summary="What the index holds")
    def stats() -> StatsOut:
        with state.engine() as engine:
            s = engine.stats()
            failed = engine.errors()
            has_head = engine.reranker_path.exists()
        counts = {k: int(v) for k, v in s.items() if k in ("images", "duplicates", "failed", "captions", "with_date")}
        return StatsOut(
            images=counts["images"], counts=counts, encoder=s["encoder"], factory=str(s["factory"]),
            vectors=dict(s["vectors"]), schema_version=int(s["schema_version"]),
            bytes_on_disk=int(s["bytes_on_disk"]), cameras=dict(s["cameras"]), reranker=has_head,
            failed=[FailedFileOut(path=f.path, reason=f.reason, message=f.message) for f in failed[:1000]],
        )

    @router.get("/health", response_model=HealthOut, summary="Liveness")
    def health() -> HealthOut:
        return HealthOut(status="ok", version=_version(), index=state.has_index())

    @router.post("/index", response_model=IndexJobOut, status_code=202, summary="Start indexing a folder",
                 responses={403: {"model": ErrorOut, "description": "indexing not allowed here"}})
    def start_index(req: IndexRequest) -> IndexJobOut:
        return IndexJobOut(**vars(state.start_index(req.path)))

    @router.get("/index/jobs/{job_id}", response_model=IndexJobOut, responses=NOT_FOUND, summary="An indexing job")
    def index_job(job_id: int) -> IndexJobOut:
        job = state.job(job_id)
        if job is None:
            raise ImageNotFoundError(f"no indexing job {job_id}")
        return IndexJobOut(**vars(job))

    return router
