"""What each library error means to a client: one table for the REST API and the MCP server.

The REST API answers ``{"error": {"status", "code", "message"}}`` with the
HTTP status; the MCP server returns a tool error whose text starts with the
same ``code``.
"""

from __future__ import annotations

from ..errors import (
    DatabaseDamagedError,
    DecodeError,
    FileAccessError,
    ImageNotFoundError,
    IndexReadOnlyError,
    QueryError,
    RerankerError,
)
from .state import IndexingNotAllowedError, NoIndexError
from .uploads import PayloadTooLargeError

#: library errors → (HTTP status, machine-readable code); first match wins
STATUS = (
    (PayloadTooLargeError, 413, "too-large"),
    (QueryError, 400, "bad-query"),
    (DecodeError, 400, "bad-image"),
    (NoIndexError, 503, "no-index"),
    (ImageNotFoundError, 404, "not-found"),
    (FileAccessError, 403, "forbidden"),
    (IndexingNotAllowedError, 403, "indexing-not-allowed"),
    (RerankerError, 409, "reranker"),
    (DatabaseDamagedError, 503, "database-damaged"),
    (IndexReadOnlyError, 403, "read-only"),
)


def status_of(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, code) of a library error; (500, ``"internal"``) for one not in :data:`STATUS`."""
    for cls, status, code in STATUS:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"
