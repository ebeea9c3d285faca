"""The first request to a freshly started ``frozenlens serve``, made by the server's own process.

:meth:`frozenlens.server.state.ServerState.warm` loads the index and the
models, but the web stack has first-request costs of its own (~0.7 s here:
lazy imports and schema work in the framework, the worker thread pool). One
real search through the socket, before the address is printed, pays them.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from urllib.parse import urlencode

log = logging.getLogger(__name__)

#: where a server bound to "any address" is reached from its own machine
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def first_request(host: str, port: int, token: str | None, timeout: float = 120.0) -> None:
    """GET one text search from the server at ``host:port`` (errors are logged, never raised)."""
    host = _LOOPBACK.get(host, host)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = urllib.request.Request(f"http://{netloc}/api/v1/search?{urlencode({'q': 'a photo', 'k': 1})}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # our own server, on loopback
            response.read()
    except (urllib.error.URLError, OSError) as exc:
        log.warning("warm-up request to the server failed: %s", exc)
