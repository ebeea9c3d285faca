"""Host-header check for a server without a token (DNS-rebinding defence).

A server on loopback without an API token trusts whoever can reach it, which
is meant to be only this machine. A web page the user visits could still read
it through DNS rebinding: its own host name (``evil.example.com``) is made to
resolve to 127.0.0.1, so the browser sends the page's requests to our server,
with ``Host: evil.example.com``. As Jupyter does, such a server answers only
requests whose ``Host`` names a loopback address or ``localhost`` (and its
``*.localhost`` sub-names, which browsers resolve to loopback), plus the names
the operator lists (``--allowed-host``, e.g. a reverse proxy's name). Others
get HTTP 400 (a websocket is closed with 1008). A request without a ``Host``
header comes from no browser and is let through.
"""

from __future__ import annotations

import json

from .settings import is_loopback


def host_name(header: str) -> str:
    """The host name of a ``Host`` header, without port or IPv6 brackets, lower case."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:7860
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def host_allowed(header: str, extra: frozenset[str] = frozenset()) -> bool:
    """True when ``header`` names this machine's loopback or one of ``extra`` (lower case)."""
    name = host_name(header)
    return is_loopback(name) or name.endswith(".localhost") or name in extra


class LoopbackHostMiddleware:
    """Pure ASGI middleware: refuses requests whose ``Host`` is not loopback (see module doc)."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] = ()) -> None:  # noqa: ANN001 - any ASGI app
        self.app = app
        self._extra = frozenset(h.strip().lower().rstrip(".") for h in allowed_hosts)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), None)
        if host is None or host_allowed(host, self._extra):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {
            "status": 400, "code": "bad_host",
            "message": "this server answers only requests addressed to localhost or a loopback address "
                       "(add a reverse proxy's name with --allowed-host)",
        }}).encode()
        await send({"type": "http.response.start", "status": 400, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})
