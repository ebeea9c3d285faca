"""What each library error means to a client: one table for the REST API and the MCP server.

The REST API answers ``{"error": {"status", "code", "message"}}`` with the
HTTP status; the MCP server returns a tool error with the same ``code`` and
message. Arguments of the wrong type or shape (refused by the schema before
any library code runs) are ``invalid``, described by :func:`invalid_message`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import (
    DatabaseDamagedError,
    DecodeError,
    FileAccessError,
    ImageNotFoundError,
    IndexReadOnlyError,
    QueryError,
    QueryTermError,
    RerankerError,
)
from .state import IndexingNotAllowedError, NoIndexError
from .uploads import PayloadTooLargeError

#: library errors → (HTTP status, machine-readable code); first match wins
STATUS = (
    (PayloadTooLargeError, 413, "too-large"),
    (QueryTermError, 422, "bad-term"),
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


def invalid_message(errors: Iterable[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> str:
    """``"field: what is wrong; ..."`` for pydantic's validation errors (the first five), the
    field's location without the ``skip`` parts (e.g. FastAPI's ``body``/``query``)."""
    parts = []
    for e in itertools.islice(errors, 5):
        where = ".".join(str(x) for x in e.get("loc") or () if x not in skip)
        msg = str(e.get("msg", "invalid"))
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts) or "invalid request"
