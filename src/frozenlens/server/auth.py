"""API-token check for every HTTP request and websocket (REST routes and the UI).

A client proves it knows the token with ``Authorization: Bearer <token>``,
an ``X-API-Token`` header, or the ``frozenlens_token`` cookie. A browser gets
the cookie by opening any page once with ``?token=<token>``: the server sets
an HttpOnly, SameSite=Strict cookie and redirects to the same URL without the
token (so it does not stay in the address bar or history). Comparisons are
constant-time. Without a configured token the middleware is not installed
(the server then only listens on loopback; see :class:`ServerSettings`).
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, quote, urlencode

COOKIE = "frozenlens_token"
LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>FrozenLens: token needed</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:sans-serif;max-width:32em;margin:4em auto">
<h1>FrozenLens</h1><p>This server needs its API token. Ask whoever runs it.</p>
<form method="get"><label>Token <input name="token" type="password" autofocus></label>
<button type="submit">Open</button></form></body></html>"""


class TokenMiddleware:
    """Pure ASGI middleware (works for streaming responses and websockets)."""

    def __init__(self, app, token: str) -> None:  # noqa: ANN001 - any ASGI app
        self.app = app
        self._token = token.encode("utf-8")

    def _ok(self, candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self._token)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is simply no token
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        if self._ok(bearer) or self._ok(headers.get("x-api-token")) or self._ok(from_cookie):
            await self.app(scope, receive, send)
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if scope["type"] == "http" and given and self._ok(given[-1]):
            rest = urlencode([(k, v) for k, v in query if k != "token"])
            path = quote(scope.get("root_path", "") + scope["path"], safe="/:@!$&'()*+,;=-._~")  # no CR/LF
            location = path + (f"?{rest}" if rest else "")
            await _respond(send, 303, b"", "text/plain", [
                (b"location", location.encode("latin-1", "replace")),
                (b"set-cookie", f"{COOKIE}={given[-1]}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1")),
            ])
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if scope["path"].startswith("/api/") or "text/html" not in headers.get("accept", ""):
            body = json.dumps({"error": {"status": 401, "code": "unauthorized",
                                         "message": "missing or wrong API token"}}).encode()
            await _respond(send, 401, body, "application/json", [(b"www-authenticate", b"Bearer")])
            return
        await _respond(send, 401, LOGIN_PAGE.encode(), "text/html; charset=utf-8", [])


async def _respond(send, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]]) -> None:  # noqa: ANN001
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"), *extra],
    })
    await send({"type": "http.response.body", "body": body})
