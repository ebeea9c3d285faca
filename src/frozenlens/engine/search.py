"""The search pipeline, as explicit steps over a typed candidate set.

A text query (see :mod:`frozenlens.engine` for the scoring contract) runs

    embed_query → gather_image_candidates → gather_caption_candidates
    → score_exactly → fuse → rerank (when a head is used) → rank_and_cut → to_hits

and an example image (or :meth:`Engine.similar`) runs ``search_visual`` over
the visual space. Every step is a function of its inputs: the facade
(:class:`frozenlens.engine.Engine`) synchronises the vector spaces with the
database once per query, holds the read lock, and hands the steps a
:class:`SearchIndex`.

Filters: when at most :data:`SELECTOR_LIMIT` photos pass them, FAISS searches
only those ids; above that it over-fetches and checks the candidates in SQL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import DecodeError, QueryError
from ..indexer.language import detect_language
from ..models.base import Encoder, EncoderIdentity, ImageEmbeddings
from ..retriever import threads as faiss_threads
from ..retriever.spaces import VectorSpaces
from ..store import ImageRecord, Store
from ..types import CaptionInfo, Hit, SearchFilters
from .ranking import fuse_scores

if TYPE_CHECKING:
    from ..reranker.head import Reranker

#: above this many filter matches, filters are applied by over-fetching
#: instead of handing FAISS the full list of allowed ids
SELECTOR_LIMIT = 50_000

#: an example image: a PIL image, an image file path, or encoded bytes
ImageQuery = Image.Image | os.PathLike[str] | bytes


@dataclass(frozen=True)
class SearchIndex:
    """What a search reads: the metadata store and the FAISS spaces, in sync."""

    store: Store
    spaces: VectorSpaces
    identity: EncoderIdentity
    #: the database generation ``spaces`` were synced at (filters are answered at it), None: read it
    generation: int | None = None


@dataclass(frozen=True)
class TextQuery:
    """An embedded text query: its text, detected language and vector (float32 (d,), L2-normalised)."""

    text: str
    lang: str | None
    vector: np.ndarray


@dataclass(frozen=True)
class Candidates:
    """The candidate photos of one text query, as aligned arrays of length n.

    ids: int64 (n,) image ids (the database keys = FAISS ids).
    image: float64 (n,) image score: cosine with the photo's semantic vector,
        or the reranker head's score once reranked.
    caption: float64 (n,) best cosine with the photo's caption vectors, NaN
        when it has none.
    first_stage: float64 (n,) the image cosine before reranking, or ``None``
        when the candidates were not reranked.
    score: float64 (n,) the fused final score, or ``None`` before :func:`fuse`.
    """

    ids: np.ndarray
    image: np.ndarray
    caption: np.ndarray
    first_stage: np.ndarray | None = None
    score: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.size)

    def take(self, rows: np.ndarray) -> Candidates:
        """The candidates at positions ``rows`` (int (m,)), in that order."""
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[rows]

        return Candidates(self.ids[rows], self.image[rows], self.caption[rows], pick(self.first_stage), pick(self.score))


# -- text search, step by step ------------------------------------------------------------
def embed_query(encoder: Encoder, text: str) -> TextQuery:
    """Step 1: detect the query's language and embed it with the text tower."""
    lang = detect_language(text)
    return TextQuery(text, lang, encoder.encode_texts_in([text], lang)[0])


def gather_image_candidates(
    index: SearchIndex, vector: np.ndarray, filters: SearchFilters, fetch: int
) -> dict[int, float]:
    """Step 2: the top ``fetch`` photos of the semantic space → {id: cosine}, best first."""
    scores, ids = image_hits(index, "semantic", vector, filters, fetch)
    return {int(i): float(s) for i, s in zip(ids, scores)}


def gather_caption_candidates(
    index: SearchIndex, vector: np.ndarray, filters: SearchFilters, fetch: int
) -> list[int]:
    """Step 3: the photos owning the top ``fetch`` caption vectors that pass ``filters`` → ids."""
    caption_index = index.spaces["caption"]
    if not len(caption_index):
        return []
    with faiss_threads(1):
        _, cids = caption_index.search(vector[None, :], fetch)
    owners = index.store.caption_owners([int(c) for c in cids[0] if c >= 0])
    ids = sorted(set(owners.values()))
    if not filters.is_empty() and ids:
        ids = index.store.matching_ids(filters, among=ids, generation=index.generation).tolist()
    return ids


def score_exactly(
    index: SearchIndex, vector: np.ndarray, image_scores: dict[int, float], caption_owners: list[int]
) -> Candidates:
    """Step 4: the union of both candidate lists with both evidence scores.

    Photos found only through a caption get their image cosine from their
    stored semantic vector; every candidate's caption score is the best
    cosine over its caption vectors (its own and its duplicates').
    """
    scores = dict(image_scores)
    extra = [i for i in caption_owners if i not in scores]
    if extra:
        vecs = index.store.vectors("semantic", extra, index.identity.dim)  # (m, d)
        for i, s in zip(extra, vecs @ vector):
            scores[i] = float(s)
    cap_vecs = index.store.caption_vectors_for(list(scores), index.identity.dim)
    ids = list(scores)
    caption = [float((cap_vecs[i] @ vector).max()) if i in cap_vecs and len(cap_vecs[i]) else np.nan for i in ids]
    return Candidates(
        ids=np.asarray(ids, dtype=np.int64),
        image=np.asarray([scores[i] for i in ids], dtype=np.float64),
        caption=np.asarray(caption, dtype=np.float64),
    )


def fuse(candidates: Candidates, fusion: str, caption_weight: float) -> Candidates:
    """Step 5: the final score from the two evidence scores (:func:`~frozenlens.engine.ranking.fuse_scores`)."""
    return replace(candidates, score=fuse_scores(candidates.image, candidates.caption, fusion, caption_weight))


def rerank(
    candidates: Candidates, keep: int, head_scores: Callable[[list[int]], np.ndarray], fusion: str,
    caption_weight: float,
) -> Candidates:
    """Step 6 (optional): the top ``keep`` by first-stage score, rescored by the head and fused again.

    head_scores: image ids → float32 (m,) the head's scores, which replace
    the image scores; the first-stage cosines are kept in ``first_stage``.
    Candidates beyond the top ``keep`` are dropped.
    """
    assert candidates.score is not None, "fuse before reranking"
    if not len(candidates):
        return candidates
    top = candidates.take(np.lexsort((candidates.ids, -candidates.score))[:keep])  # first-stage top K'
    image = np.asarray(head_scores(top.ids.tolist())).astype(np.float64)
    return fuse(replace(top, image=image, first_stage=top.image), fusion, caption_weight)


def rank_and_cut(candidates: Candidates, k: int, min_score: float | None) -> Candidates:
    """Step 7: candidates scoring at least ``min_score``, best first (ties: lower id), the first ``k``."""
    assert candidates.score is not None, "fuse before ranking"
    rows = np.arange(len(candidates))
    if min_score is not None:
        rows = rows[candidates.score >= min_score]
    order = rows[np.lexsort((candidates.ids[rows], -candidates.score[rows]))]
    return candidates.take(order[:k])


def to_hits(store: Store, ranked: Candidates) -> list[Hit]:
    """Step 8: one :class:`Hit` per ranked candidate still in the database, in order."""
    assert ranked.score is not None
    records = store.images(ranked.ids.tolist())
    hits = []
    for j, i in enumerate(ranked.ids.tolist()):
        if i not in records:
            continue
        cap = float(ranked.caption[j])
        first = None if ranked.first_stage is None else float(ranked.first_stage[j])
        hits.append(to_hit(records[i], float(ranked.score[j]), float(ranked.image[j]), None if np.isnan(cap) else cap,
                           first))
    return hits


def search_text(
    index: SearchIndex, encoder: Encoder, text: str, k: int, filters: SearchFilters, *, fusion: str,
    caption_weight: float, min_score: float | None, head: Reranker | None = None, rerank_candidates: int = 0,
) -> list[Hit]:
    """The top ``k`` photos for ``text``: the steps above, in order.

    head: the reranker head, or ``None`` for first-stage scores only; it
    rescores the top ``max(k, rerank_candidates)`` candidates.
    """
    query = embed_query(encoder, text)
    fetch = max(4 * k, 100)
    found = gather_image_candidates(index, query.vector, filters, fetch)
    owners = gather_caption_candidates(index, query.vector, filters, fetch)
    candidates = fuse(score_exactly(index, query.vector, found, owners), fusion, caption_weight)
    if head is not None:
        def scores(ids: list[int]) -> np.ndarray:
            return head_scores(index, encoder, head, query, ids)

        candidates = rerank(candidates, max(k, rerank_candidates), scores, fusion, caption_weight)
    return to_hits(index.store, rank_and_cut(candidates, k, min_score))


def head_scores(index: SearchIndex, encoder: Encoder, head: Reranker, query: TextQuery, ids: list[int]) -> np.ndarray:
    """The head's scores of the photos ``ids`` for the query → float32 (n,)."""
    from ..reranker.features import ImageTokens, encode_texts_with_units

    ident = index.identity
    images = ImageTokens.from_store(index.store, ids, ident.dim, ident.visual_dim, encoder.image_tokens)
    tokens = encode_texts_with_units(encoder, [query.text], [query.lang])
    return head.score(tokens, images)


# -- image search ----------------------------------------------------------------------------
def embed_query_image(encoder: Encoder, query: ImageQuery) -> np.ndarray:
    """The visual vector (float32 (d_visual,)) of an example image; :class:`QueryError` if it does not decode."""
    return embed_query_photo(encoder, query).visual[0]


def embed_query_photo(encoder: Encoder, query: ImageQuery) -> ImageEmbeddings:
    """Both vectors (semantic (1, d), visual (1, d_visual)) of an example image; :class:`QueryError`
    if it does not decode."""
    from ..indexer.decode import decode_bytes, decode_file

    try:
        if isinstance(query, Image.Image):
            image = query.convert("RGB")
        elif isinstance(query, bytes | bytearray):
            image = decode_bytes(bytes(query), draft_size=encoder.draft_size).image
        elif isinstance(query, os.PathLike):
            image = decode_file(os.fspath(query), draft_size=encoder.draft_size).image
        else:
            raise QueryError(f"unsupported query type {type(query).__name__}")
    except DecodeError as exc:
        raise QueryError(f"cannot use this query image: {exc} [{exc.reason}]") from exc
    return encoder.embed_images([image])


def search_visual(
    index: SearchIndex, vector: np.ndarray, k: int, filters: SearchFilters, min_score: float | None,
    exclude: set[int],
) -> list[Hit]:
    """The top ``k`` photos by visual cosine with ``vector`` (float32 (d_visual,)), ``exclude`` left out."""
    scores, ids = image_hits(index, "visual", vector, filters, max(k + len(exclude), 50))
    pairs = [(float(s), int(i)) for s, i in zip(scores, ids) if int(i) not in exclude]
    if min_score is not None:
        pairs = [(s, i) for s, i in pairs if s >= min_score]
    pairs = pairs[:k]
    records = index.store.images([i for _, i in pairs])
    return [to_hit(records[i], s, None, None) for s, i in pairs if i in records]


# -- shared ------------------------------------------------------------------------------------
def allowed_ids(store: Store, filters: SearchFilters, generation: int | None = None) -> tuple[np.ndarray | None, bool]:
    """(allowed ids or None, filtering needed): the full allowed set when it
    is small (FAISS then searches only those ids), else None (over-fetch)."""
    if filters.is_empty():
        return None, False
    ids = store.matching_ids(filters, limit=SELECTOR_LIMIT + 1, generation=generation)
    return (ids, True) if ids.size <= SELECTOR_LIMIT else (None, True)


def image_hits(
    index: SearchIndex, space: str, vector: np.ndarray, filters: SearchFilters, fetch: int
) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32 (m,), ids int64 (m,)), best first: the top ``fetch`` of ``space`` passing ``filters``."""
    allowed, needed = allowed_ids(index.store, filters, index.generation)
    vectors = index.spaces[space]
    if not needed:
        with faiss_threads(1):
            scores, ids = vectors.search(vector[None, :], fetch)
        keep = ids[0] >= 0
        return scores[0][keep], ids[0][keep]
    if allowed is not None and allowed.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)

    def accept(ids: np.ndarray) -> np.ndarray:
        ok = index.store.matching_ids(filters, among=ids.tolist(), generation=index.generation)
        return np.isin(ids, ok)

    with faiss_threads(1):
        return vectors.search_filtered(vector, fetch, accept, allowed_ids=allowed)


def to_hit(r: ImageRecord, score: float, s_img: float | None, s_cap: float | None, first: float | None = None) -> Hit:
    """A search result from a photo's record and its scores."""
    return Hit(
        id=r.id,
        path=r.path,
        score=score,
        image_score=s_img,
        caption_score=s_cap,
        first_stage_image_score=first,
        reranked=first is not None,
        taken_at=r.taken_at,
        date_source=r.taken_at_source if r.taken_at else None,
        camera=r.camera,
        lens=r.lens,
        width=r.width,
        height=r.height,
        lat=r.lat,
        lon=r.lon,
        captions=tuple(CaptionInfo(t, lang, src) for t, lang, src in r.captions),
        labels=tuple(r.labels),
        duplicates=tuple(r.duplicates),
    )
