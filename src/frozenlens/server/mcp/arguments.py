"""The MCP tools' arguments: their JSON Schema, and how they become a validated search.

The schema *states* the limits of :mod:`frozenlens.request` (read from its
constants) so an agent sees them up front; the checking itself is left to
:class:`frozenlens.request.SearchRequest`, so a value out of range gets the
same :class:`~frozenlens.errors.QueryError` message from the MCP server as
from the CLI, the REST API and the Python API. The schema types (integer,
string, ...) are checked by the SDK before a tool runs.

A query is a text (``query``) or an example photo (``photo``: an indexed
photo by id or path, or an uploaded file as base64), and optionally weighted
``terms`` (texts and photos; :mod:`frozenlens.engine.compose` says how they
combine).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field

from ...errors import QueryError, QueryTermError
from ...request import (
    DUPLICATE_THRESHOLD,
    FUSIONS,
    MAX_FILTER_CHARS,
    MAX_K,
    MAX_QUERY_CHARS,
    MAX_TERM_WEIGHT,
    MAX_TERMS,
    SORTS,
    QueryTerm,
    SearchRequest,
)
from ...types import Hit, SearchFilters, parse_when
from ..settings import Limits
from ..shapes import os_path
from ..uploads import decode_upload

if TYPE_CHECKING:
    from ...engine import Engine


def _stated(description: str, **schema: object) -> object:
    """A field whose limits the schema states (``schema``) and the request object checks."""
    return Field(description=description, json_schema_extra=schema)


class Filters(BaseModel):
    """SQL filters on the photos a search may return (all optional; they combine with AND)."""

    model_config = ConfigDict(extra="forbid")

    after: str | None = Field(None, description="photos taken on or after this date (ISO 8601: YYYY-MM-DD, "
                                                "or a date-time)")
    before: str | None = Field(None, description="photos taken before this date-time; a date includes that day")
    camera: str | None = Field(None, description="case-insensitive part of the camera's make and model",
                               json_schema_extra={"maxLength": MAX_FILTER_CHARS})
    under: str | None = Field(None, description="only photos in this folder or below it (an absolute path, "
                                                "written as result paths are)",
                              json_schema_extra={"maxLength": MAX_FILTER_CHARS})
    min_width: int | None = Field(None, description="minimum width in pixels", json_schema_extra={"minimum": 1})
    min_height: int | None = Field(None, description="minimum height in pixels", json_schema_extra={"minimum": 1})

    def to_filters(self) -> SearchFilters:
        """The library's filters (checked by the request they go into)."""
        return SearchFilters(after=_when(self.after, "after"), before=_when(self.before, "before"),
                             camera=self.camera or None, under=os_path(self.under or None),
                             min_width=self.min_width, min_height=self.min_height)


class Photo(BaseModel):
    """An example photo: exactly one of ``id``, ``path`` or ``data``."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(None, description="an indexed photo's id (from search results): photos like it, "
                                             "itself left out")
    path: str | None = Field(None, description="an indexed photo's absolute path, written as in search results: "
                                               "photos like it, itself left out")
    data: str | None = Field(None, description="a photo file (JPEG, PNG, WebP, ...) encoded as base64: "
                                               "photos that look like it")


class Term(BaseModel):
    """One weighted term of a composed query: a text, or a photo (by ``id`` or uploaded ``data``)."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, description="a text in any language", json_schema_extra={"maxLength": MAX_QUERY_CHARS})
    photo: Photo | None = Field(None, description="a photo: an indexed photo's id, or an uploaded one (data)")
    weight: float = Field(1.0, description="non-zero; negative subtracts the term (e.g. -1: 'not this')",
                          json_schema_extra={"minimum": -MAX_TERM_WEIGHT, "maximum": MAX_TERM_WEIGHT})

    def to_term(self, limits: Limits) -> QueryTerm:
        """The library's term (validated by :class:`QueryTerm`: the REST API's and the CLI's rule)."""
        if self.photo is None:
            return QueryTerm(text=self.text, weight=self.weight)
        if self.text is not None:
            raise QueryTermError("a query term is either a text or a photo, not both")
        if self.photo.path is not None:
            raise QueryTermError("in a term, give a photo by id or as data (an indexed photo's path is not read)")
        if (self.photo.id is None) == (self.photo.data is None):
            raise QueryTermError("a term's photo is exactly one of id or data")
        if self.photo.id is not None:
            return QueryTerm(image=self.photo.id, weight=self.weight)
        image = decode_upload(_base64(self.photo.data or ""), limits.max_upload_bytes, limits.max_upload_pixels)
        return QueryTerm(image=image, weight=self.weight)


Terms = Annotated[list[Term] | None, _stated("weighted terms added to the query (composed search): e.g. "
                                             "query 'beach' with terms [{text: 'people', weight: -1}]",
                                             maxItems=MAX_TERMS)]
Query = Annotated[str | None, _stated("a text query in any language", maxLength=MAX_QUERY_CHARS)]
K = Annotated[int, _stated("number of results", minimum=1, maximum=MAX_K)]
Sort = Annotated[str, _stated("relevance, or newest/oldest first among the relevant photos", enum=list(SORTS))]
Fusion = Annotated[str, _stated("how pixel and caption evidence combine for a text query", enum=list(FUSIONS))]
Candidates = Annotated[int, _stated("first-stage candidates the reranker rescores", minimum=1, maximum=MAX_K)]
Rerank = Annotated[bool | None, Field(description="use the learned reranker on a text query (default: when the "
                                                  "index has one; true requires one)")]
MinScore = Annotated[float | None, Field(description="drop results scoring below this")]
Collapse = Annotated[bool, Field(description="show each group of near-identical photos once (its best member, "
                                             "with group_size)")]
Threshold = Annotated[float | None, _stated(f"least visual cosine of two photos in one group, in (0, 1] "
                                            f"(default {DUPLICATE_THRESHOLD})", exclusiveMinimum=0, maximum=1)]
GroupLimit = Annotated[int, Field(description="most groups returned (total says how many there are)", ge=1,
                                  le=MAX_K)]


@dataclass(frozen=True)
class Search:
    """A validated search: the request, and how to run it on an engine."""

    request: SearchRequest
    run: Callable[[Engine], list[Hit]]


def build_search(
    limits: Limits, *, query: str | None, photo: Photo | None, filters: Filters | None, k: int, sort: str,
    fusion: str, rerank: bool | None, rerank_candidates: int, min_score: float | None,
    terms: list[Term] | None = None, collapse: bool = False,
) -> Search:
    """The search the ``search`` tool's arguments ask for (:class:`QueryError` otherwise)."""
    if query is not None and photo is not None:
        raise QueryError("give either a text query or a photo, not both")
    if terms and photo is not None:
        raise QueryError("with terms, give the photo as a term ({photo: ..., weight: ...})")
    if query is None and photo is None and not terms:
        raise QueryError("give a text query, a photo or terms to search with")
    request = SearchRequest(query=query, k=k, filters=(filters or Filters()).to_filters(), sort=sort, fusion=fusion,
                            rerank=rerank, rerank_candidates=rerank_candidates, min_score=min_score,
                            terms=tuple(t.to_term(limits) for t in terms or ()), collapse=collapse)
    if photo is None:
        return Search(request, lambda engine: engine.search(request))
    given = [name for name in ("id", "path", "data") if getattr(photo, name) is not None]
    if len(given) != 1:
        raise QueryError("a photo is exactly one of id, path or data")
    if photo.data is not None:
        image = decode_upload(_base64(photo.data), limits.max_upload_bytes, limits.max_upload_pixels)
        return Search(request, lambda engine: engine.search(request, image=image))
    if photo.id is not None:
        target: int | str = photo.id
    else:
        target = os_path(photo.path) or ""
        if not os.path.isabs(target):
            raise QueryError("photo.path must be an absolute path, written as in search results")
    return Search(request, lambda engine: engine.similar(target, request))


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QueryError("photo.data is not valid base64") from None


def _when(text: str | None, name: str) -> object:
    """A date filter by :func:`frozenlens.types.parse_when` (the CLI's, the API's and the page's rule)."""
    if text is None or not text.strip():
        return None
    try:
        return parse_when(text)
    except ValueError:
        raise QueryError(f"{name}: {text[:40]!r} is not an ISO 8601 date (YYYY-MM-DD) or date-time") from None
