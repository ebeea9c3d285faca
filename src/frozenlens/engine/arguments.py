"""The arguments of :meth:`Engine.search` / :meth:`Engine.similar` as one :class:`SearchRequest`.

The engine accepts the keyword arguments it always has, or a request built
beforehand (as the CLI, the API and the page do); either way every option
is checked by :class:`frozenlens.request.SearchRequest`, the one owner of the
limits. Mixing both (a request *and* options as arguments) is refused, so
there is never a doubt about which value applies.
"""

from __future__ import annotations

from ..errors import QueryError
from ..request import DEFAULT_K, DEFAULT_RERANK_CANDIDATES, SearchRequest
from ..types import SearchFilters
from .search import ImageQuery

#: the defaults of Engine.search's options (a request given with any of them changed is refused)
SEARCH_DEFAULTS: dict[str, object] = {
    "k": DEFAULT_K, "filters": None, "min_score": None, "fusion": "max", "caption_weight": 0.5, "rerank": None,
    "rerank_candidates": DEFAULT_RERANK_CANDIDATES, "sort": "relevance",
}
SIMILAR_DEFAULTS: dict[str, object] = {"filters": None, "min_score": None, "sort": "relevance"}


def search_request(
    query: str | ImageQuery | SearchRequest, image: ImageQuery | None, **options: object
) -> tuple[SearchRequest, ImageQuery | None]:
    """(the request, the example image or ``None``) of one :meth:`Engine.search` call.

    query: the text (``str``), an example image, or a request; ``image``
        only goes with a request (whose ``query`` is then ``None``).
    options: ``k``, ``filters``, ``min_score``, ``fusion``, ``caption_weight``,
        ``rerank``, ``rerank_candidates``, ``sort``.
    """
    if isinstance(query, SearchRequest):
        _refuse_both(options, SEARCH_DEFAULTS)
        if not query.terms and (query.query is None) == (image is None):  # composed: any mix (engine.compose)
            raise QueryError("a search request needs either a text query or an example image (image=...)")
        return query, image
    if image is not None:
        raise QueryError("image=... goes with a SearchRequest; pass the example image as the query")
    filters = options.pop("filters", None) or SearchFilters()
    if isinstance(query, str):
        return SearchRequest(query=query, filters=filters, **options), None  # type: ignore[arg-type]
    return SearchRequest(query=None, filters=filters, **options), query  # type: ignore[arg-type]


def similar_request(k: int | SearchRequest, **options: object) -> SearchRequest:
    """The request of one :meth:`Engine.similar` call: ``k`` is a count or a
    request without a text query; options: ``filters``, ``min_score``, ``sort``."""
    if isinstance(k, SearchRequest):
        _refuse_both(options, SIMILAR_DEFAULTS)
        if k.query is not None:
            raise QueryError("similar() searches by an indexed image: its request has no text query")
        return k
    filters = options.pop("filters", None) or SearchFilters()
    return SearchRequest(k=k, filters=filters, **options)  # type: ignore[arg-type]


def _refuse_both(options: dict[str, object], defaults: dict[str, object]) -> None:
    """:class:`QueryError` when an option was given as an argument next to a request."""
    given = sorted(name for name, value in options.items() if value is not defaults[name] and value != defaults[name])
    if given:
        raise QueryError(f"pass the search options in the SearchRequest or as arguments, not both ({', '.join(given)})")
