"""The REST API's FastAPI application: routes plus one error mapping for every answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import (
    DatabaseDamagedError,
    DecodeError,
    FileAccessError,
    FrozenLensError,
    ImageNotFoundError,
    IndexReadOnlyError,
    QueryError,
    QueryTermError,
    RerankerError,
)
from ...paths import to_text
from ..state import IndexingNotAllowedError, NoIndexError, ServerState
from ..uploads import PayloadTooLargeError
from .routes import build_router

log = logging.getLogger(__name__)

#: library errors → (HTTP status, machine-readable code); first match wins
STATUS = (
    (PayloadTooLargeError, 413, "too-large"),
    (QueryTermError, 422, "bad-term"),
    (QueryError, 400, "bad-query"),
    (DecodeError, 400, "bad-image"),
    (NoIndexError, 503, "no-index"),
    (ImageNotFoundError, 404, "not-found"),
    (FileAccessError, 403, "forbidden"),
    (IndexingNotAllowedError, 403, "indexing-not-allowed"),
    (RerankerError, 409, "reranker"),
    (DatabaseDamagedError, 503, "database-damaged"),
    (IndexReadOnlyError, 403, "read-only"),
)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    message = to_text(message)  # it may quote a path whose bytes are not UTF-8 (frozenlens.paths)
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status_code=status)


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """HTTP methods some route of ``app`` accepts at the request's path."""
    methods: set[str] = set()

    def walk(routes: list) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI's wrapper of an included router
            if inner is not None:
                walk(inner.routes)
            elif getattr(route, "methods", None) and route.path_regex.match(scope["path"]):
                methods.update(route.methods)

    walk(app.router.routes)
    return sorted(methods)


def create_api(state: ServerState,
               lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None) -> FastAPI:
    """The FastAPI app serving ``/api/v1`` over ``state`` (its OpenAPI docs at ``/docs``).

    Every error, whichever layer raises it, is answered as
    ``{"error": {"status", "code", "message"}}`` (see :data:`STATUS`).
    """
    app = FastAPI(
        lifespan=lifespan,
        title="FrozenLens",
        version="1",
        summary="Multilingual photo search: text and example-image queries over a FrozenLens index.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    app.state.frozenlens = state

    @app.exception_handler(FrozenLensError)
    async def library_error(_: Request, exc: FrozenLensError) -> JSONResponse:
        for cls, status, code in STATUS:
            if isinstance(exc, cls):
                return error_response(status, code, str(exc))
        log.error("unmapped FrozenLens error: %r", exc)
        return error_response(500, "internal", str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return error_response(422, "invalid", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error_response(exc.status_code, "http", str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:  # every method of every route at this path, not only the first route's
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
        return response

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error")
        return error_response(500, "internal", f"internal error: {type(exc).__name__}")

    app.include_router(build_router(state))
    return app
