"""The server: REST API (FastAPI), the Gradio search page (``frozenlens serve``) and the MCP server (``frozenlens mcp``).

Needs the ``serve`` extra (the MCP server: the ``mcp`` extra); nothing is imported or started at package import time.

- :mod:`.app` — :func:`~frozenlens.server.app.create_app`: composes the API
  and the page into one ASGI app, with the token / host / upload-size guards;
- :mod:`.api` — the versioned REST API (``/api/v1``): JSON shapes, routes,
  error mapping;
- :mod:`.ui` — the Gradio page (layout, actions, HTML, styles);
- :mod:`.mcp` — ``frozenlens mcp``: the index as MCP tools for AI agents
  (the ``mcp`` extra), over stdio or streamable HTTP;
- shared by them: :mod:`.settings` (where the index is, who may connect,
  upload limits), :mod:`.state` (the open engine and indexing jobs),
  :mod:`.uploads` (decoding uploaded query photos), :mod:`.auth` and
  :mod:`.hosts` (the guards in front of every route and the page),
  :mod:`.shapes` (the JSON of hits, photos, stats and jobs) and
  :mod:`.error_codes` (what each library error means to a client).

``server.api``, ``server.ui`` and ``server.mcp`` never import each other; query limits are
:mod:`frozenlens.request`'s.
"""
