"""``frozenlens serve``: the REST API and the search page (:mod:`frozenlens.server`) under uvicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import QueryError
from ..paths import to_text
from .serve_warm import first_request


def cmd_serve(args: argparse.Namespace, index_dir: str) -> int:
    try:
        import uvicorn

        from ..server.app import create_app
        from ..server.settings import ServerSettings, read_token
        from ..server.state import ServerState
    except ImportError as exc:
        raise QueryError(f"serving needs the `serve` extra: pip install 'frozenlens[serve]' ({exc.name} is missing)") from exc
    settings = ServerSettings(
        index_dir=Path(index_dir).expanduser().absolute(), host=args.host, port=args.port,
        token=read_token(args.token_file), index_roots=tuple(Path(d).expanduser().absolute() for d in args.allow_index),
        concurrency=args.concurrency, allowed_hosts=tuple(args.allowed_host),
    )
    import asyncio

    state = ServerState(settings)
    app = create_app(settings, ui=not args.no_ui, state=state)
    state.warm()  # before the address is printed: the first query is as fast as the tenth
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                            access_log=args.verbose)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:  # print the real address (port 0 = any free port)
            sockets = [s for srv in server.servers for s in srv.sockets]
            if sockets:  # the web stack's own first-request costs, paid before saying "ready"
                await asyncio.to_thread(first_request, *sockets[0].getsockname()[:2], settings.token)
            for sock in sockets:
                host, port = sock.getsockname()[:2]
                print(f"FrozenLens serving {to_text(str(settings.index_dir))} at http://{host}:{port}/ "
                      "(API: /api/v1, docs: /docs)", flush=True)
        try:
            await task
        except SystemExit:  # uvicorn exits when it cannot bind
            raise QueryError(f"cannot listen on {args.host}:{args.port} (address in use or not available)") from None

    asyncio.run(run())
    return 0
