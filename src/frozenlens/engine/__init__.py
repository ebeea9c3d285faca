"""The public Python API: ``Engine.open(dir)`` then index / search / similar / stats.

Where each piece lives
----------------------
* :mod:`.facade` — the :class:`Engine` (one open index; delegates to the rest);
* :mod:`.opening` — opening an index, its recorded encoder;
* :mod:`.index_dir`, :mod:`.readonly`, :mod:`.disk_full`, :mod:`.rwlock`,
  :mod:`.checkup`, :mod:`.reindex` — the index directory: marker, database
  location, identity, leftovers, read-only media, a full disk, the lock
  between searches and writers, ``frozenlens doctor``, re-indexing;
* :mod:`.search` — the search pipeline as explicit steps over
  :class:`~.search.Candidates`;
* :mod:`.compose` — composed queries: how weighted text and photo terms combine;
* :mod:`.ranking` — the pure functions: score fusion, date order;
* :mod:`.reranking` — the index's reranker head;
* :mod:`.media` — thumbnails and served files.

Requests are validated by :class:`frozenlens.request.SearchRequest` (one set
of limits for every front door).

Text search scoring (documented contract)
-----------------------------------------
A text query ``q`` is embedded by the encoder's text tower. Each candidate
image gets

* ``image_score``   = cos(q, image's semantic vector) (pixels, via ConSE for
  ``lite``), and
* ``caption_score`` = max over the image's captions (its own and those of
  its byte-identical duplicates) of cos(q, caption vector), or ``None``;

and by default the final ``score = max(image_score, caption_score)``: a photo
is found by what it shows *or* by what its caption says, whichever is
stronger, and the two parts are reported on every hit. Two other fusions are
selectable per query (``fusion="weighted"`` for a score-normalised weighted
sum, ``fusion="rrf"`` for reciprocal-rank fusion); see :func:`fuse_scores`.
Candidates are the union of the top image vectors and the images of the top
caption vectors (each over-fetched, ``max(4k, 100)``), both scored exactly.
``min_score`` applies to the final score. Image queries and
:meth:`Engine.similar` use the visual space only (``score`` = cosine of
visual vectors).

Reranking (text queries, on by default once a head exists)
-----------------------------------------------------------
When the index directory holds a trained FrEVL head (``frozenlens
train-reranker``), the top ``rerank_candidates`` (default 100, at least
``k``) candidates by the first-stage score above are rescored in one batched
pass: each one's ``image_score`` becomes the head's score — the first-stage
cosine plus the head's learned correction, still on the cosine scale (see
:mod:`frozenlens.reranker.model`) — and the final score is fused with the
unchanged ``caption_score`` exactly as above. Candidates beyond the top
``rerank_candidates`` are dropped. ``rerank=False`` skips the head;
``rerank=True`` requires one (:class:`RerankerError` if absent).
"""

from __future__ import annotations

from ..request import FUSIONS, MAX_K, MAX_QUERY_CHARS, SORTS, SearchRequest
from ..types import Hit, IndexStats, SearchFilters
from .facade import Engine
from .neardup import DuplicateGroup
from .opening import DEFAULT_ENCODER, DEFAULT_FACTORY
from .ranking import DATE_SORT_MARGIN, RRF_K, date_sorted, fuse_scores
from .reindex import ReindexReport
from .search import SELECTOR_LIMIT, Candidates

__all__ = [
    "DATE_SORT_MARGIN",
    "DEFAULT_ENCODER",
    "DEFAULT_FACTORY",
    "FUSIONS",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "RRF_K",
    "SELECTOR_LIMIT",
    "SORTS",
    "Candidates",
    "DuplicateGroup",
    "Engine",
    "Hit",
    "IndexStats",
    "ReindexReport",
    "SearchFilters",
    "SearchRequest",
    "date_sorted",
    "fuse_scores",
]
