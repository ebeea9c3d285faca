"""A search request: one typed object, one set of limits, one validation.

Every front door — :class:`frozenlens.engine.Engine`, the CLI, the REST API
and the web page — builds a :class:`SearchRequest` and reports the
:class:`~frozenlens.errors.QueryError` it raises; no other module checks a
query's length, ``k``, the sort or fusion names, or the score options. The
API's OpenAPI schema states the limits by reading the constants below.

Limits (documented in the README):

- a text query: 1 to :data:`MAX_QUERY_CHARS` characters after stripping
  white space, no NUL character;
- ``k``: 1 to :data:`MAX_K` results;
- ``rerank_candidates``: 1 to :data:`MAX_K`;
- ``caption_weight``: 0 to 1; ``min_score``: a finite number;
- ``sort``: one of :data:`SORTS`; ``fusion``: one of :data:`FUSIONS`;
- composed queries: at most :data:`MAX_TERMS` terms (the text query
  included), each a text (checked like a query) or a photo, with a non-zero
  weight between -:data:`MAX_TERM_WEIGHT` and +:data:`MAX_TERM_WEIGHT`, at
  least one of them positive (:class:`~frozenlens.errors.QueryTermError`);
- filters: ``after`` not later than ``before`` (else no photo could match),
  ``camera``/``under`` at most :data:`MAX_FILTER_CHARS` characters, no NUL;
  ``min_width``/``min_height`` positive;
- ``collapse``: a bool; a near-duplicate threshold: in (0, 1] (default
  :data:`DUPLICATE_THRESHOLD`).

A request is valid once built (validation runs in ``__post_init__``) and
immutable, so it can be shared between threads and passed down the layers.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .errors import QueryError, QueryTermError
from .types import SearchFilters

if TYPE_CHECKING:
    from PIL import Image

#: longest text query, in characters (after stripping white space)
MAX_QUERY_CHARS = 1000
#: most results one request may ask for (also the most reranked candidates)
MAX_K = 1000
#: longest camera or folder filter, in characters
MAX_FILTER_CHARS = 1000
#: result orders: by relevance, or by date taken among the relevant photos
SORTS: tuple[str, ...] = ("relevance", "newest", "oldest")
#: how pixel and caption evidence are combined for text queries
FUSIONS: tuple[str, ...] = ("max", "weighted", "rrf")
DEFAULT_K = 10
DEFAULT_RERANK_CANDIDATES = 100
#: near-duplicate groups: least cosine of two photos' visual vectors for one group (chosen on a
#: validation set, see docs/quality.md "Near-duplicate groups"; the rule: frozenlens.engine.neardup)
DUPLICATE_THRESHOLD = 0.60


@dataclass(frozen=True)
class SearchRequest:
    """One search, validated on construction (:class:`QueryError` otherwise).

    query: the text of a text search (stripped), or ``None`` for a search by
        example image or for :meth:`Engine.similar`.
    k: how many results.
    filters: SQL filters (date, camera, folder, size).
    sort: ``"relevance"``, or ``"newest"``/``"oldest"`` first among the
        relevant photos (see :func:`frozenlens.engine.ranking.date_sorted`).
    fusion / caption_weight: how image and caption scores combine (text only).
    rerank: ``None`` reranks text queries when the index has a head,
        ``False`` never, ``True`` requires one.
    rerank_candidates: how many first-stage candidates the head rescores
        (at least ``k`` are used).
    min_score: drop hits scoring below this.
    terms: more weighted terms (:class:`QueryTerm`) after ``query``: a
        composed query (see :func:`composed_terms` and
        :mod:`frozenlens.engine.compose`).
    collapse: show each near-duplicate group once (its best member among the
        results, with ``group_size``; see :mod:`frozenlens.engine.neardup`).
    """

    query: str | None = None
    k: int = DEFAULT_K
    filters: SearchFilters = field(default_factory=SearchFilters)
    sort: str = "relevance"
    fusion: str = "max"
    caption_weight: float = 0.5
    rerank: bool | None = None
    rerank_candidates: int = DEFAULT_RERANK_CANDIDATES
    min_score: float | None = None
    terms: tuple[QueryTerm, ...] = ()
    collapse: bool = False

    def __post_init__(self) -> None:
        if self.query is not None:
            object.__setattr__(self, "query", check_query(self.query))
        check_k(self.k)
        if self.sort not in SORTS:
            raise QueryError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORTS)}")
        if self.fusion not in FUSIONS:
            raise QueryError(f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}")
        if not _is_number(self.caption_weight) or not 0.0 <= self.caption_weight <= 1.0:
            raise QueryError("caption_weight must be between 0 and 1")
        if self.rerank not in (None, True, False):
            raise QueryError(f"rerank must be true, false or unset, not {self.rerank!r}")
        if not _is_int(self.rerank_candidates) or not 1 <= self.rerank_candidates <= MAX_K:
            raise QueryError(f"rerank_candidates must be an integer between 1 and {MAX_K}")
        if self.min_score is not None and (not _is_number(self.min_score) or not math.isfinite(self.min_score)):
            raise QueryError(f"min_score must be a finite number, not {self.min_score!r}")
        if not isinstance(self.collapse, bool):
            raise QueryError(f"collapse must be true or false, not {self.collapse!r}")
        if not isinstance(self.filters, SearchFilters):
            raise QueryError("filters must be a SearchFilters")
        check_filters(self.filters)
        object.__setattr__(self, "terms", check_terms(self.terms, self.query is not None))

    def with_query(self, query: str | None) -> SearchRequest:
        """The same options for another query (validated)."""
        return replace(self, query=query)


def check_query(text: str) -> str:
    """A text query, stripped; :class:`QueryError` when empty, too long or holding NUL."""
    if not isinstance(text, str):
        raise QueryError(f"a text query must be a string, not {type(text).__name__}")
    text = text.strip()
    if not text:
        raise QueryError("empty query")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if "\x00" in text:
        raise QueryError("the query contains a NUL character")
    return text


def check_k(k: object) -> int:
    """``k`` when it is an integer between 1 and :data:`MAX_K`, else :class:`QueryError`."""
    if not _is_int(k) or not 1 <= k <= MAX_K:  # type: ignore[operator]
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return int(k)  # type: ignore[call-overload]


def check_threshold(value: object) -> float:
    """A near-duplicate threshold: a cosine in (0, 1] (else :class:`QueryError`)."""
    if not _is_number(value) or not 0.0 < value <= 1.0:  # type: ignore[operator]
        raise QueryError(f"the duplicate threshold must be a number in (0, 1], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_filters(f: SearchFilters) -> SearchFilters:
    """The filter rules every front door shares (see the module docstring)."""
    for name in ("camera", "under"):
        value = getattr(f, name)
        if value is not None and (len(value) > MAX_FILTER_CHARS or "\x00" in value):
            raise QueryError(f"the {name} filter is longer than {MAX_FILTER_CHARS} characters or holds a NUL character")
    for name in ("min_width", "min_height"):
        value = getattr(f, name)
        if value is not None and (not _is_int(value) or value < 1):
            raise QueryError(f"{name} must be a positive integer")
    if f.after is not None and f.before is not None and _day(f.after) > _day(f.before):
        raise QueryError("The “after” date is later than the “before” date: no photo can match both.")
    return f


def _day(value: dt.date | dt.datetime) -> dt.date:
    """The day of a date or date-time (a datetime is also a date, so test it first)."""
    return value.date() if isinstance(value, dt.datetime) else value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- composed queries: weighted terms -------------------------------------------------------
#: most terms in one composed query (the text query and an example image count as terms)
MAX_TERMS = 16
#: largest absolute weight of one term; weights are non-zero, negative ones subtract
MAX_TERM_WEIGHT = 10.0


@dataclass(frozen=True)
class QueryTerm:
    """One weighted term of a composed query: a text, or a photo.

    text: a text in any supported language (checked like a query).
    image: an indexed photo's id (``int``), a photo file (``os.PathLike``),
        an encoded photo (``bytes``: an upload) or a decoded PIL image.
    weight: non-zero, at most :data:`MAX_TERM_WEIGHT` in absolute value;
        a negative weight subtracts the term (see :mod:`frozenlens.engine.compose`).

    Exactly one of ``text`` and ``image``; :class:`QueryTermError` otherwise.
    Whether an id is indexed and a file exists and decodes is checked when
    the search runs (also a :class:`QueryTermError`).
    """

    text: str | None = None
    image: int | os.PathLike[str] | bytes | Image.Image | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise QueryTermError("a query term is either a text or a photo (text=... or image=...)")
        w = self.weight
        if not _is_number(w) or not math.isfinite(w) or w == 0 or abs(w) > MAX_TERM_WEIGHT:
            raise QueryTermError(f"the weight of {self.describe()} must be a non-zero number between "
                                 f"-{MAX_TERM_WEIGHT:g} and {MAX_TERM_WEIGHT:g}, not {w!r}")
        object.__setattr__(self, "weight", float(w))
        if self.text is not None:
            try:
                object.__setattr__(self, "text", check_query(self.text))
            except QueryError as exc:
                raise QueryTermError(f"text term: {exc}") from None
            return
        image = self.image
        if _is_int(image):
            if image < 0:  # type: ignore[operator]
                raise QueryTermError(f"photo ids are non-negative integers, not {image!r}")
        elif isinstance(image, bytes | bytearray):
            if not image:
                raise QueryTermError("an uploaded photo term is empty")
            object.__setattr__(self, "image", bytes(image))
        elif hasattr(image, "getbands") and hasattr(image, "convert"):  # a decoded PIL image (an upload)
            pass
        elif isinstance(image, os.PathLike):
            path = os.fspath(image)
            if not path or "\x00" in path:
                raise QueryTermError(f"not a photo path: {path!r}")
        else:
            raise QueryTermError(f"a photo term is an image id (int), a file path (os.PathLike) or the photo's "
                                 f"bytes, not {type(image).__name__}")

    @property
    def kind(self) -> str:
        """``"text"`` or ``"photo"``."""
        return "text" if self.text is not None else "photo"

    def describe(self) -> str:
        """The term in a few words, for messages (``text 'sunset'``, ``photo 12``, ``photo ./a.jpg``)."""
        if self.text is not None:
            return f"text {self.text[:40]!r}"
        if isinstance(self.image, bytes):
            return f"uploaded photo ({len(self.image):,} bytes)"
        if not isinstance(self.image, int | os.PathLike):
            return "uploaded photo"
        return f"photo {os.fspath(self.image) if isinstance(self.image, os.PathLike) else self.image}"


def check_terms(terms: object, has_query: bool = False) -> tuple[QueryTerm, ...]:
    """The extra terms of a request as a tuple, checked together: each a
    :class:`QueryTerm`, at most :data:`MAX_TERMS` with the text query
    (``has_query``). That one of them is positive is checked with the
    example image, if any, by :func:`composed_terms`."""
    if isinstance(terms, QueryTerm) or not isinstance(terms, list | tuple):
        raise QueryTermError("terms must be a list of QueryTerm")
    terms = tuple(terms)
    if not terms:
        return terms
    if not all(isinstance(t, QueryTerm) for t in terms):
        raise QueryTermError("terms must be a list of QueryTerm")
    if len(terms) + has_query > MAX_TERMS:
        raise QueryTermError(f"a composed query has at most {MAX_TERMS} terms, got {len(terms) + has_query}")
    return terms


def composed_terms(request: SearchRequest, image: int | os.PathLike[str] | bytes | Image.Image | None = None
                   ) -> tuple[QueryTerm, ...]:
    """All the terms of a request, in order: its text ``query`` (weight 1),
    an example ``image`` given with it (weight 1), then ``request.terms``;
    :class:`QueryTermError` when none has a positive weight."""
    head = [] if request.query is None else [QueryTerm(text=request.query)]
    if image is not None:
        head.append(QueryTerm(image=image))
    terms = (*head, *request.terms)
    check_terms(list(terms))  # the count limit holds for the whole list too
    if all(t.weight < 0 for t in terms):
        raise QueryTermError("a composed query needs at least one term with a positive weight (something to find)")
    return terms

