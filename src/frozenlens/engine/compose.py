"""Composed queries: how weighted text and photo terms combine — the one definition.

A composed query is a list of terms ``(t_i, w_i)`` (:class:`frozenlens.request.QueryTerm`):
each a text in any supported language or a photo (an indexed photo's id, a
file, or uploaded bytes), with a non-zero weight ``w_i`` (negative = subtract).

Vectors of a term (all L2-normalised):

* a text term: ``s_i`` = the text tower's embedding (semantic space); no visual vector;
* a photo term: ``s_i`` = its semantic vector (the space texts live in) and
  ``v_i`` = its visual vector (image↔image space). An indexed photo's stored
  vectors are used (its primary's, for a byte-identical duplicate); a file or
  an upload is decoded by the indexer's hardened decoder and embedded.

The query, per space:

* semantic query ``q_s = normalise(Σ_i w_i · s_i)`` over *all* terms; it is
  matched against the photos' semantic vectors and their caption vectors
  exactly as a text query is (``image_score``, ``caption_score``, fused by the
  request's ``fusion``) → the text part ``S_text``;
* visual query ``q_v = normalise(Σ_{photo i} w_i · v_i)`` over the photo terms
  only → the visual part ``S_vis = cos(q_v, photo's visual vector)``;
* the photo share ``β = Σ_{photo i} |w_i| / Σ_i |w_i|``.

Final score ``= (1 − β) · S_text + β · S_vis``. So a text-only query (β = 0)
is a text search with the mixed vector ``q_s`` (one term of weight 1 is
exactly today's text search), a photo-only query (β = 1) a visual search with
``q_v`` (one photo of weight 1 is exactly today's search by example), and a
mixed query interpolates the two by the weight the user gave each kind. With
the default ``fusion="max"`` both parts are cosines, so the score stays on
the cosine scale and ``min_score`` keeps its meaning. A sum whose length is
(nearly) zero — terms that cancel out — is refused (:class:`QueryTermError`).

Candidates: the union of the top ``max(4k, 100)`` of the semantic space and
of the caption space for ``q_s`` (when β < 1) and of the visual space for
``q_v`` (when β > 0), all passing the filters, every part then scored exactly
from the stored vectors. Filters, ``min_score`` and date sort apply as for
any search.

Reranking (when the index has a head and the query has a text term with a
positive weight): the head scores text–photo pairs, so it reads each
positive text term on its own; what it adds is its correction
``δ_i(x) = head(t_i, x) − cos(s_i, x)``, and the reranked image score is
``cos(q_s, x) + Σ_{positive text i} (w_i / W⁺) · δ_i(x)`` (``W⁺`` = the sum of
those weights). The subtracted terms and the photos stay in the cosine part,
so reranking never undoes a subtraction; one text term of weight 1 gives
exactly the head's score, as in a plain text search. The top
``max(k, rerank_candidates)`` candidates by the first-stage final score are
rescored; a query without a positive text term (photo-only, or photos minus
texts) is not reranked, as a search by example never is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from ..errors import QueryError, QueryTermError
from ..models.base import Encoder
from ..request import QueryTerm, SearchRequest, composed_terms
from ..store import DUPLICATE, INDEXED
from ..types import Hit
from . import search as steps
from .ranking import fuse_scores

if TYPE_CHECKING:
    from ..reranker.head import Reranker

#: a sum of weighted unit vectors shorter than this is "the terms cancel out"
MIN_NORM = 1e-6


@dataclass(frozen=True)
class EmbeddedTerm:
    """One term with its vectors: semantic float32 (d,), visual float32 (d_visual,) or ``None`` (text)."""

    term: QueryTerm
    semantic: np.ndarray
    visual: np.ndarray | None
    lang: str | None = None


@dataclass(frozen=True)
class ComposedQuery:
    """The combined query (see the module docstring).

    semantic: float32 (d,) ``q_s``, or ``None`` when β = 1 (photo terms only).
    visual: float32 (d_visual,) ``q_v``, or ``None`` without photo terms.
    photo_share: β in [0, 1].
    texts: the positive text terms as (query, weight) for the reranker.
    """

    semantic: np.ndarray | None
    visual: np.ndarray | None
    photo_share: float
    texts: tuple[tuple[steps.TextQuery, float], ...]


def combine(terms: Sequence[EmbeddedTerm]) -> ComposedQuery:
    """The composed query of embedded terms: the definition of the module docstring (numpy only)."""
    weights = np.array([t.term.weight for t in terms], dtype=np.float64)
    is_photo = np.array([t.visual is not None for t in terms])
    beta = float(np.abs(weights[is_photo]).sum() / np.abs(weights).sum())
    semantic = None
    if beta < 1.0:
        semantic = _normalised(sum(w * t.semantic.astype(np.float64) for w, t in zip(weights, terms)), "semantic")
    visual = None
    if is_photo.any():
        visual = _normalised(sum(w * t.visual.astype(np.float64) for w, t in zip(weights, terms) if t.visual is not None),
                             "visual")
    texts = tuple((steps.TextQuery(t.term.text, t.lang, t.semantic), float(t.term.weight))  # type: ignore[arg-type]
                  for t in terms if t.term.text is not None and t.term.weight > 0)
    return ComposedQuery(semantic, visual, beta, texts)


def _normalised(v: np.ndarray, space: str) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    if norm < MIN_NORM:
        raise QueryTermError(f"the terms cancel out in the {space} space: nothing is left to search for")
    return (v / norm).astype(np.float32)


def embed_terms(index: steps.SearchIndex, encoder: Encoder, terms: Sequence[QueryTerm]) -> list[EmbeddedTerm]:
    """Each term's vectors (see the module docstring); :class:`QueryTermError` for an unknown photo id
    or a photo file that is missing or does not decode."""
    out = []
    for n, term in enumerate(terms, 1):
        if term.text is not None:
            q = steps.embed_query(encoder, term.text)
            out.append(EmbeddedTerm(term, q.vector, None, q.lang))
        elif isinstance(term.image, int):
            out.append(EmbeddedTerm(term, *_stored_vectors(index, term.image, n)))
        else:
            if isinstance(term.image, os.PathLike) and not os.path.isfile(term.image):
                raise QueryTermError(f"term {n}: query image not found: {os.fspath(term.image)}")
            try:
                emb = steps.embed_query_photo(encoder, term.image)  # type: ignore[arg-type]
            except QueryError as exc:
                raise QueryTermError(f"term {n} ({term.describe()}): {exc}") from None
            out.append(EmbeddedTerm(term, emb.semantic[0], emb.visual[0]))
    return out


def _stored_vectors(index: steps.SearchIndex, image_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    record = index.store.images([image_id]).get(image_id)
    if record is None or record.status not in (INDEXED, DUPLICATE):
        raise QueryTermError(f"term {n}: no indexed photo with id {image_id}")
    primary = record.duplicate_of if record.status == DUPLICATE and record.duplicate_of else record.id
    ident = index.identity
    return index.store.vectors("semantic", [primary], ident.dim)[0], index.store.vectors("visual", [primary],
                                                                                           ident.visual_dim)[0]


def search_composed(
    index: steps.SearchIndex, encoder: Encoder, request: SearchRequest, pool: int,
    image: steps.ImageQuery | None, head_for_query: Callable[[], Reranker | None],
) -> list[Hit]:
    """The top ``pool`` photos for the request's terms (its text query, ``image`` and ``request.terms``).

    head_for_query: the reranker head the request asks for (called only when
    the query has a positive text term; it raises when ``rerank=True`` and
    there is none).
    """
    query = combine(embed_terms(index, encoder, composed_terms(request, image)))
    candidates, visual = gather(index, query, request, pool)
    beta = query.photo_share
    final = _final(candidates, visual, beta, request)
    candidates = replace(candidates, score=final)
    head = head_for_query() if query.texts else None
    if head is not None and len(candidates):
        keep = max(pool, request.rerank_candidates)
        rows = np.lexsort((candidates.ids, -final))[:keep]
        top, visual = candidates.take(rows), visual[rows]
        image_scores = top.image + _correction(index, encoder, head, query, top.ids.tolist())
        top = replace(top, image=image_scores, first_stage=top.image)
        candidates = replace(top, score=_final(top, visual, beta, request))
    ranked = steps.rank_and_cut(candidates, pool, request.min_score)
    hits = steps.to_hits(index.store, ranked)
    if beta == 1.0:  # photo terms only: the score is the visual cosine; there are no text parts to report
        hits = [replace(h, image_score=None, caption_score=None) for h in hits]
    return hits


def gather(index: steps.SearchIndex, query: ComposedQuery, request: SearchRequest, pool: int
           ) -> tuple[steps.Candidates, np.ndarray]:
    """(candidates with their semantic and caption cosines, float64 (n,) visual cosines) of the composed query."""
    fetch, f = max(4 * pool, 100), request.filters
    found: dict[int, float] = {}
    owners: list[int] = []
    if query.semantic is not None:
        found = steps.gather_image_candidates(index, query.semantic, f, fetch)
        owners = steps.gather_caption_candidates(index, query.semantic, f, fetch)
    if query.visual is not None:
        _, ids = steps.image_hits(index, "visual", query.visual, f, fetch)
        owners = owners + [int(i) for i in ids if int(i) not in found]
    ident = index.identity
    if query.semantic is not None:
        candidates = steps.score_exactly(index, query.semantic, found, owners)
    else:  # photo terms only: no text part
        ids = np.asarray(sorted(set(owners)), dtype=np.int64)
        candidates = steps.Candidates(ids, np.zeros(ids.size), np.full(ids.size, np.nan))
    visual = np.zeros(len(candidates))
    if query.visual is not None and len(candidates):
        visual = (index.store.vectors("visual", candidates.ids.tolist(), ident.visual_dim) @ query.visual).astype(
            np.float64)
    return candidates, visual


def _final(c: steps.Candidates, visual: np.ndarray, beta: float, request: SearchRequest) -> np.ndarray:
    """``(1 − β) · S_text + β · S_vis`` (float64 (n,)), ``S_text`` fused by the request's fusion."""
    if beta == 1.0:
        return visual
    text = fuse_scores(c.image, c.caption, request.fusion, request.caption_weight)
    return text if beta == 0.0 else (1.0 - beta) * text + beta * visual


def _correction(index: steps.SearchIndex, encoder: Encoder, head: Reranker, query: ComposedQuery,
                ids: list[int]) -> np.ndarray:
    """``Σ (w_i / W⁺) · (head(t_i, x) − cos(s_i, x))`` over the positive text terms → float64 (len(ids),)."""
    total = sum(w for _, w in query.texts)
    semantic = index.store.vectors("semantic", ids, index.identity.dim).astype(np.float64)
    out = np.zeros(len(ids))
    for text, w in query.texts:
        scores = steps.head_scores(index, encoder, head, text, ids).astype(np.float64)
        out += (w / total) * (scores - semantic @ text.vector.astype(np.float64))
    return out
