"""The MCP server's tools over one :class:`~frozenlens.server.state.ServerState`.

Read-only tools: ``search``, ``photo_metadata``, ``thumbnail`` and
``index_stats``. ``index_folder`` and ``index_job`` exist only when the
server was started with folders it may index (``--allow-index DIR``, the
same rule and code as ``frozenlens serve``).

Every library error becomes a tool error (``isError``): the REST API's error
code (:data:`frozenlens.server.error_codes.STATUS`) and message, after the
SDK's ``Error executing tool NAME:``, e.g. ``bad-query: the query is longer
than 1000 characters``. Arguments of the wrong type or shape are refused by
the SDK against the schema, naming the field; a crash is
logged on the server and reaches the client only as "Error executing tool
NAME" (the SDK's rule): never a traceback.
"""

import base64
import functools
import time
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from ... import __version__
from ...errors import DecodeError, FrozenLensError, ImageNotFoundError
from ...paths import to_text
from ...request import DUPLICATE_THRESHOLD, SearchRequest
from ..error_codes import invalid_message, status_of
from ..shapes import duplicates_json, hit_json, image_json, job_json, os_path, stats_json
from ..state import ServerState
from .arguments import (
    Candidates,
    Collapse,
    Filters,
    Fusion,
    GroupLimit,
    K,
    MinScore,
    Photo,
    Query,
    Rerank,
    Sort,
    Terms,
    Threshold,
    build_search,
)

#: image ids are SQLite / PostgreSQL 64-bit integers; any other number is simply not found
MAX_IMAGE_ID = 2**63 - 1
ImageId = Annotated[int, Field(description="the photo's id, from search results")]

#: the request object's defaults, which the search tool's schema states
DEFAULTS = SearchRequest()
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
INSTRUCTIONS = (
    "FrozenLens searches one photo archive by meaning, in any of 16 languages, or by example photo. "
    "Use `search` (a text query, or a photo: an indexed photo's id or path, or an uploaded one), then "
    "`photo_metadata` and `thumbnail` with a result's id; `index_stats` tells what the index holds."
)

F = TypeVar("F", bound=Callable[..., Any])


def tool_errors(fn: F) -> F:
    """Library errors as tool errors: ``"<code>: <message>"`` (paths in message text form)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FrozenLensError as exc:
            raise ToolError(f"{status_of(exc)[1]}: {to_text(str(exc))}") from exc

    return wrapper  # type: ignore[return-value]


class FrozenLensMCP(MCPServer):
    """The SDK's server, with arguments that fail the schema described as the REST API does:
    ``invalid: k: Input should be a valid integer`` (:func:`~frozenlens.server.error_codes.invalid_message`)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(exc, UnexpectedToolError) or not isinstance(cause, ValidationError):
                raise
            raise ToolError(f"Error executing tool {name}: invalid: {invalid_message(cause.errors())}") from cause


def _image_id(value: int) -> int:
    if not 0 <= value <= MAX_IMAGE_ID:
        raise ImageNotFoundError(f"no indexed image {value}")
    return value


def create_mcp(state: ServerState) -> MCPServer:
    """The MCP server (tools only) over ``state``; indexing tools when ``state`` allows indexing."""
    server = FrozenLensMCP("frozenlens", title="FrozenLens photo search", version=__version__,
                           instructions=INSTRUCTIONS, log_level="WARNING")
    limits = state.settings.limits

    @tool_errors
    def search(query: Query = None, photo: Photo | None = None, terms: Terms = None, filters: Filters | None = None,
               k: K = DEFAULTS.k, sort: Sort = DEFAULTS.sort, min_score: MinScore = None, rerank: Rerank = None,
               rerank_candidates: Candidates = DEFAULTS.rerank_candidates,
               fusion: Fusion = DEFAULTS.fusion, collapse: Collapse = False) -> dict[str, Any]:
        """Search the photo archive by a text query (any language), an example photo, or weighted terms.

        Give `query` or `photo`, not both; `terms` add weighted texts and photos to a query (or
        make one alone): e.g. query "beach", terms [{"text": "people", "weight": -1}]. Results are ranked by relevance (or, with `sort`,
        newest/oldest first among the relevant photos) and carry each photo's id, path, score,
        date, camera, size, captions and the labels the model saw.
        """
        s = build_search(limits, query=query, photo=photo, filters=filters, k=k, sort=sort, fusion=fusion,
                         rerank=rerank, rerank_candidates=rerank_candidates, min_score=min_score, terms=terms,
                         collapse=collapse)
        with state.engine() as engine:
            t0 = time.perf_counter()
            hits = s.run(engine)
            took = (time.perf_counter() - t0) * 1000
        return {"query": s.request.query, "k": s.request.k, "sort": s.request.sort, "took_ms": round(took, 2),
                "hits": [hit_json(h) for h in hits]}

    @tool_errors
    def photo_metadata(id: ImageId) -> dict[str, Any]:
        """An indexed photo's metadata: path, size, format, date taken, camera, lens, position,
        captions, labels and byte-identical copies."""
        with state.engine() as engine:
            return image_json(engine.image_by_id(_image_id(id)))

    @tool_errors
    def thumbnail(id: ImageId) -> CallToolResult:
        """A small preview of an indexed photo (WebP, longest side 256 px) as image content."""
        with state.engine() as engine:
            try:
                path = engine.thumbnail(_image_id(id))
            except DecodeError as exc:  # as the REST API: the photo is there no more, for a client
                raise ImageNotFoundError(f"image {id} can no longer be decoded: {exc}") from exc
            data = path.read_bytes()
        return CallToolResult(content=[
            ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/webp"),
            TextContent(type="text", text=f"thumbnail of photo {id} ({len(data)} bytes, WebP)"),
        ])

    @tool_errors
    def near_duplicates(threshold: Threshold = None, limit: GroupLimit = 50) -> dict[str, Any]:
        """Groups of near-identical photos (resized, re-encoded, slightly cropped or mirrored copies,
        bursts) and byte-identical copies, largest group first; members best first (most pixels,
        then earliest). `threshold`: least visual cosine within a group."""
        with state.engine() as engine:
            groups = duplicates_json(engine, threshold)
        return {"threshold": DUPLICATE_THRESHOLD if threshold is None else threshold, "total": len(groups),
                "groups": groups[:limit]}

    @tool_errors
    def index_stats() -> dict[str, Any]:
        """What the index holds: photo, duplicate, failure and caption counts, the encoder, vector
        counts, disk use, cameras, whether a reranker is trained, and the files that failed."""
        with state.engine() as engine:
            return stats_json(engine)

    server.add_tool(search, annotations=READ_ONLY, structured_output=True)
    server.add_tool(photo_metadata, annotations=READ_ONLY, structured_output=True)
    server.add_tool(thumbnail, annotations=READ_ONLY)
    server.add_tool(near_duplicates, annotations=READ_ONLY, structured_output=True)
    server.add_tool(index_stats, annotations=READ_ONLY, structured_output=True)
    if state.indexing_allowed:
        _add_indexing(server, state)
    return server


def _add_indexing(server: MCPServer, state: ServerState) -> None:
    roots = ", ".join(to_text(str(r)) for r in state.settings.index_roots)

    @tool_errors
    def index_folder(path: Annotated[str, Field(description=f"a folder inside {roots}")]) -> dict[str, Any]:
        """Start indexing a folder (new and changed photos; one job at a time) in the background.
        Returns the job; follow it with `index_job`. Searches keep working meanwhile."""
        return job_json(state.start_index(os_path(path) or ""))

    @tool_errors
    def index_job(id: Annotated[int, Field(description="the job's id")]) -> dict[str, Any]:
        """An indexing job's state (queued, running, done, failed), progress and report."""
        job = state.job(id)
        if job is None:
            raise ImageNotFoundError(f"no indexing job {id}")
        return job_json(job)

    server.add_tool(index_folder, annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                                              open_world_hint=False), structured_output=True)
    server.add_tool(index_job, annotations=READ_ONLY, structured_output=True)

