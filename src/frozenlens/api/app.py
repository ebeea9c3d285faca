"""The server application: the REST API with the Gradio search page mounted at ``/``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    DatabaseDamagedError,
    DecodeError,
    FileAccessError,
    FrozenLensError,
    ImageNotFoundError,
    IndexReadOnlyError,
    QueryError,
    RerankerError,
)
from ..paths import to_text
from .auth import TokenMiddleware
from .hosts import LoopbackHostMiddleware
from .routes import build_router
from .settings import ServerSettings
from .state import IndexingNotAllowedError, NoIndexError, ServerState
from .uploads import PayloadTooLargeError, UploadSizeLimit

log = logging.getLogger(__name__)

#: library errors → (HTTP status, machine-readable code); first match wins
STATUS = (
    (PayloadTooLargeError, 413, "too-large"),
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


def create_app(settings: ServerSettings, *, encoder: str | None = None, ui: bool = True,
               state: ServerState | None = None) -> FastAPI:
    """The ASGI app of ``frozenlens serve``. ``ui=False`` leaves out the Gradio page."""
    settings.check()
    state = state or ServerState(settings, encoder=encoder)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

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
    if ui:
        import gradio as gr

        from ..ui import build_ui, mount_options

        blocks = build_ui(state)
        # the page shows thumbnails through the API routes above: Gradio itself serves no index files
        app = gr.mount_gradio_app(app, blocks, path="", **mount_options(state))
    # multipart overhead on top of the file itself: form fields and part headers
    app.add_middleware(UploadSizeLimit, max_bytes=settings.limits.max_upload_bytes + 64 * 1024,
                       paths=("/api/v1/search/image",))
    if settings.token is not None:
        app.add_middleware(TokenMiddleware, token=settings.token)
    else:  # no token: only this machine may ask, and DNS rebinding must not make a web page "this machine"
        app.add_middleware(LoopbackHostMiddleware, allowed_hosts=settings.allowed_hosts)
    return app
