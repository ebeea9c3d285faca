"""The MCP server over streamable HTTP, behind the same guards as ``frozenlens serve``.

Without a token the server listens on loopback only and answers only
requests addressed to a loopback host (:mod:`frozenlens.server.hosts`, the
DNS-rebinding defence); with one, every request must carry it
(:mod:`frozenlens.server.auth`). :meth:`ServerSettings.check` refuses any
other address without a token. The SDK's own Host check is replaced by these
(it knows neither the token nor ``--allowed-host``). Request bodies may hold
one uploaded photo as base64, so their size limit follows the upload limit.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

from ..auth import TokenMiddleware
from ..hosts import LoopbackHostMiddleware
from ..settings import ServerSettings

#: where the MCP endpoint is served
MCP_PATH = "/mcp"
#: JSON-RPC framing around the base64 of an upload
ENVELOPE_BYTES = 64 * 1024


def create_http_app(server: MCPServer, settings: ServerSettings):  # noqa: ANN201 - an ASGI app
    """The ASGI app serving ``server`` at :data:`MCP_PATH` (:class:`ServerConfigError` for unsafe settings)."""
    settings.check()
    base64_upload = 4 * (settings.limits.max_upload_bytes // 3 + 1)
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH, max_request_body_size=base64_upload + ENVELOPE_BYTES, host=settings.host,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    if settings.token is not None:
        return TokenMiddleware(app, token=settings.token)
    return LoopbackHostMiddleware(app, allowed_hosts=settings.allowed_hosts)
