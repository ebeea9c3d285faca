"""``frozenlens mcp``: the index over the Model Context Protocol (:mod:`frozenlens.server.mcp`).

Over stdio (default) the MCP client starts this command and talks on its
stdin/stdout, so nothing else may be printed there. ``--http`` serves
streamable HTTP at ``/mcp`` instead, with the address rules of ``frozenlens
serve`` (loopback unless a token is configured).
"""

from __future__ import annotations

import argparse

from ..errors import QueryError
from ..paths import to_text
from .serve import run_uvicorn, settings_of


def cmd_mcp(args: argparse.Namespace, index_dir: str) -> int:
    try:
        from ..server.mcp.http import MCP_PATH, create_http_app
        from ..server.mcp.tools import create_mcp
        from ..server.state import ServerState
    except ImportError as exc:
        raise QueryError(f"the MCP server needs the `mcp` extra: pip install 'frozenlens[mcp]' "
                         f"({exc.name} is missing)") from exc
    settings = settings_of(args, index_dir)
    settings.check()
    state = ServerState(settings)
    try:
        server = create_mcp(state)
        if not args.http:
            server.run("stdio")
            return 0
        app = create_http_app(server, settings)
        run_uvicorn(app, args.host, args.port, verbose=args.verbose,
                    banner=lambda host, port: f"FrozenLens MCP server for {to_text(str(settings.index_dir))} at "
                                              f"http://{host}:{port}{MCP_PATH}")
    finally:
        state.close()
    return 0
