"""The combination rule of composed queries (frozenlens.engine.compose.combine) on seeded
vectors, and the term rules of frozenlens.request (QueryTerm, composed_terms)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from frozenlens.engine.compose import EmbeddedTerm, combine
from frozenlens.errors import QueryTermError
from frozenlens.request import MAX_TERMS, QueryTerm, SearchRequest, composed_terms

rng = np.random.default_rng(7)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def text(weight: float, d: int = 8) -> EmbeddedTerm:
    return EmbeddedTerm(QueryTerm(text="t", weight=weight), unit(rng.normal(size=d)), None)


def photo(weight: float, d: int = 8, dv: int = 5) -> EmbeddedTerm:
    return EmbeddedTerm(QueryTerm(image=1, weight=weight), unit(rng.normal(size=d)), unit(rng.normal(size=dv)))


def test_weighted_sums_per_space_and_the_photo_share():
    terms = [text(1.0), text(-0.5), photo(0.5), photo(-1.0)]
    q = combine(terms)
    s = sum(t.term.weight * t.semantic.astype(np.float64) for t in terms)
    v = sum(t.term.weight * t.visual.astype(np.float64) for t in terms if t.visual is not None)
    np.testing.assert_allclose(q.semantic, s / np.linalg.norm(s), atol=1e-6)
    np.testing.assert_allclose(q.visual, v / np.linalg.norm(v), atol=1e-6)
    assert q.photo_share == pytest.approx(1.5 / 3.0)
    assert [w for _, w in q.texts] == [1.0]  # only positive text terms go to the reranker


def test_text_only_and_photo_only():
    only_text = combine([text(2.0), text(-1.0)])
    assert only_text.photo_share == 0.0 and only_text.visual is None and only_text.semantic is not None
    one = photo(1.0)
    only_photo = combine([one, photo(-0.5)])
    assert only_photo.photo_share == 1.0 and only_photo.semantic is None and only_photo.visual is not None
    assert np.allclose(combine([one]).visual, one.visual)  # one photo of weight 1: its own visual vector


def test_terms_that_cancel_out_are_refused():
    t = text(1.0)
    with pytest.raises(QueryTermError, match="cancel out"):
        combine([t, EmbeddedTerm(QueryTerm(text="t", weight=-1.0), t.semantic, None)])


def test_term_rules():
    assert QueryTerm(text="  sunset ").text == "sunset"
    assert QueryTerm(image=Path("a.jpg"), weight=-10).weight == -10.0
    for bad in ({"text": "x", "weight": 0}, {"text": "x", "weight": -10.01}, {"text": "x", "weight": float("inf")},
                {"text": "x", "weight": "1"}, {"text": ""}, {"text": "a\x00b"}, {"text": "x" * 1001},
                {"image": 1, "text": "x"}, {"image": 1.5}, {"image": Path("a\x00b")}):
        with pytest.raises(QueryTermError):
            QueryTerm(**bad)
    with pytest.raises(QueryTermError, match="list of QueryTerm"):
        SearchRequest(query="x", terms=QueryTerm(text="y"))  # type: ignore[arg-type]
    full = tuple(QueryTerm(text=f"t{i}") for i in range(MAX_TERMS - 1))
    assert len(composed_terms(SearchRequest(query="x", terms=full))) == MAX_TERMS
    with pytest.raises(QueryTermError, match=f"at most {MAX_TERMS}"):
        composed_terms(SearchRequest(query="x", terms=full), image=b"photo")  # the example image counts too
    with pytest.raises(QueryTermError, match="positive weight"):
        composed_terms(SearchRequest(terms=(QueryTerm(text="x", weight=-1),)))
    assert composed_terms(SearchRequest(terms=(QueryTerm(text="x", weight=-1),)), image=3)[0].image == 3
