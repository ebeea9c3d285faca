"""The server: REST API (FastAPI) and the Gradio search page, run by ``frozenlens serve``.

Needs the ``serve`` extra; nothing is imported or started at package import time.

- :mod:`.app` — :func:`~frozenlens.server.app.create_app`: composes the API
  and the page into one ASGI app, with the token / host / upload-size guards;
- :mod:`.api` — the versioned REST API (``/api/v1``): JSON shapes, routes,
  error mapping;
- :mod:`.ui` — the Gradio page (layout, actions, HTML, styles);
- shared by both: :mod:`.settings` (where the index is, who may connect,
  upload limits), :mod:`.state` (the open engine and indexing jobs),
  :mod:`.uploads` (decoding uploaded query photos), :mod:`.auth` and
  :mod:`.hosts` (the guards in front of every route and the page).

``server.api`` and ``server.ui`` never import each other; query limits are
:mod:`frozenlens.request`'s.
"""
