"""``frozenlens mcp``: the index served over the Model Context Protocol (needs the ``mcp`` extra).

- :mod:`.tools` — :func:`~frozenlens.server.mcp.tools.create_mcp`: the tools
  (search, photo metadata, thumbnail, index stats; indexing only when
  allowed) over a :class:`~frozenlens.server.state.ServerState`;
- :mod:`.arguments` — the tools' argument schema, turned into a validated
  :class:`frozenlens.request.SearchRequest` (the one owner of query limits);
- :mod:`.http` — streamable HTTP behind the token / loopback-host guards of
  ``frozenlens serve``.

Over stdio the client starts ``frozenlens mcp`` itself. Nothing is imported
at package import time; the REST API, the page and this package never
import each other (they share :mod:`frozenlens.server.state`,
:mod:`~frozenlens.server.shapes` and :mod:`~frozenlens.server.error_codes`).
"""
