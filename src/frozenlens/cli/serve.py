"""``frozenlens serve``: the REST API and the search page (:mod:`frozenlens.server`) under uvicorn."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..errors import QueryError
from ..paths import to_text
from ..server.settings import ServerSettings, read_token
from .serve_warm import first_request


def cmd_serve(args: argparse.Namespace, index_dir: str) -> int:
    try:
        import uvicorn  # noqa: F401 - checks the extra before anything starts

        from ..server.app import create_app
        from ..server.state import ServerState
    except ImportError as exc:
        raise QueryError(f"serving needs the `serve` extra: pip install 'frozenlens[serve]' ({exc.name} is missing)") from exc
    settings = settings_of(args, index_dir)
    state = ServerState(settings)
    app = create_app(settings, ui=not args.no_ui, state=state)
    state.warm()  # before the address is printed: the first query is as fast as the tenth
    run_uvicorn(app, args.host, args.port, verbose=args.verbose,
                banner=lambda host, port: f"FrozenLens serving {to_text(str(settings.index_dir))} at "
                                          f"http://{host}:{port}/ (API: /api/v1, docs: /docs)",
                # the web stack's own first-request costs, paid before saying "ready"
                before_banner=lambda host, port: first_request(host, port, settings.token))
    return 0


def settings_of(args: argparse.Namespace, index_dir: str) -> ServerSettings:
    """The server settings of ``serve`` / ``mcp --http``: address, token, indexable folders, guards."""
    return ServerSettings(
        index_dir=Path(index_dir).expanduser().absolute(), host=args.host, port=args.port,
        token=read_token(args.token_file), index_roots=tuple(Path(d).expanduser().absolute() for d in args.allow_index),
        concurrency=args.concurrency, allowed_hosts=tuple(args.allowed_host),
    )


def run_uvicorn(app: object, host: str, port: int, *, verbose: bool, banner: Callable[[str, int], str],
                before_banner: Callable[[str, int], None] | None = None) -> None:
    """Serve ``app`` under uvicorn until interrupted; print ``banner(host, port)`` with the real
    address once listening (port 0 = any free port), after ``before_banner(host, port)`` (in a thread)."""
    import asyncio

    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="info" if verbose else "warning",
                            access_log=verbose)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            sockets = [s for srv in server.servers for s in srv.sockets]
            if sockets and before_banner is not None:
                await asyncio.to_thread(before_banner, *sockets[0].getsockname()[:2])
            for sock in sockets:
                print(banner(*sock.getsockname()[:2]), flush=True)
        try:
            await task
        except SystemExit:  # uvicorn exits when it cannot bind
            raise QueryError(f"cannot listen on {host}:{port} (address in use or not available)") from None

    asyncio.run(run())
