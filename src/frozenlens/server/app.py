"""The server application: the REST API with the Gradio search page mounted at ``/``.

This module composes the two front ends (:mod:`.api` and :mod:`.ui`, which
never import each other) over one :class:`~.state.ServerState`, and puts the
guards every request passes in front of both: the upload size limit, then the
API token (:mod:`.auth`) or, without a token, the loopback ``Host`` check
(:mod:`.hosts`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from .api.app import create_api
from .auth import TokenMiddleware
from .hosts import LoopbackHostMiddleware
from .settings import ServerSettings
from .state import ServerState
from .uploads import UploadSizeLimit


def create_app(settings: ServerSettings, *, encoder: str | None = None, ui: bool = True,
               state: ServerState | None = None) -> FastAPI:
    """The ASGI app of ``frozenlens serve``. ``ui=False`` leaves out the Gradio page."""
    settings.check()
    state = state or ServerState(settings, encoder=encoder)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = create_api(state, lifespan=lifespan)
    if ui:
        import gradio as gr

        from .ui import build_ui, mount_options

        blocks = build_ui(state)
        # the page shows thumbnails through the API routes: Gradio itself serves no index files
        app = gr.mount_gradio_app(app, blocks, path="", **mount_options(state))
    # multipart overhead on top of the file itself: form fields and part headers
    app.add_middleware(UploadSizeLimit, max_bytes=settings.limits.max_upload_bytes + 64 * 1024,
                       paths=("/api/v1/search/image",))
    # a composed query's photos travel base64-encoded (4/3 of their size) in its JSON body
    app.add_middleware(UploadSizeLimit, max_bytes=settings.limits.max_upload_bytes * 4 // 3 + 64 * 1024,
                       paths=("/api/v1/search/composed",))
    if settings.token is not None:
        app.add_middleware(TokenMiddleware, token=settings.token)
    else:  # no token: only this machine may ask, and DNS rebinding must not make a web page "this machine"
        app.add_middleware(LoopbackHostMiddleware, allowed_hosts=settings.allowed_hosts)
    return app
