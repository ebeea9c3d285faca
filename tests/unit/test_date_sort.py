"""Sorting search results by date keeps only relevant photos (engine.date_sorted)."""

from __future__ import annotations

import datetime as dt

import pytest

from frozenlens.engine import DATE_SORT_MARGIN, date_sorted
from frozenlens.types import Hit


def hit(i: int, score: float, day: int | None) -> Hit:
    return Hit(id=i, path=f"/p/{i}.jpg", score=score, taken_at=None if day is None else dt.datetime(2020, 1, day))


# relevance order, as the search returns them; 1-4 within the default margin of the best, 5 just outside
M = DATE_SORT_MARGIN
HITS = [hit(1, 0.70, 3), hit(2, 0.70 - 0.4 * M, 9), hit(3, 0.70 - 0.6 * M, None), hit(4, 0.70 - 0.9 * M, 1),
        hit(5, 0.70 - 1.1 * M, 20), hit(6, 0.30, 28)]


def test_relevance_order_is_kept():
    assert [h.id for h in date_sorted(HITS, 3, "relevance", None)] == [1, 2, 3]


def test_default_cutoff_then_newest_first_undated_last():
    out = date_sorted(HITS, 10, "newest", None)
    assert all(h.score >= 0.70 - DATE_SORT_MARGIN for h in out)
    assert [h.id for h in out] == [2, 1, 4, 3]  # 5 and 6 are below the cutoff


def test_oldest_first_and_k():
    assert [h.id for h in date_sorted(HITS, 2, "oldest", None)] == [4, 1]


def test_explicit_min_score_replaces_the_default_cutoff():
    # the search already dropped hits below min_score; nothing else is cut
    out = date_sorted(HITS, 10, "newest", 0.0)
    assert [h.id for h in out] == [6, 5, 2, 1, 4, 3]


def test_same_date_ties_keep_relevance_order():
    same = [hit(1, 0.9, 5), hit(2, 0.88, 5), hit(3, 0.87, 5)]
    assert [h.id for h in date_sorted(same, 3, "newest", None)] == [1, 2, 3]
    assert [h.id for h in date_sorted(same, 3, "oldest", None)] == [1, 2, 3]


@pytest.mark.parametrize("sort", ["newest", "oldest", "relevance"])
def test_empty(sort):
    assert date_sorted([], 5, sort, None) == []


def test_one_date_rule_for_cli_api_and_page():
    from frozenlens.types import parse_when

    assert parse_when(" 2005-07-01 ") == dt.date(2005, 7, 1)  # a whole day
    assert parse_when("2005-07-01T00:00") == dt.datetime(2005, 7, 1)  # an instant
    assert parse_when("2005-07-01T10:30+02:00") == dt.datetime(2005, 7, 1, 10, 30)  # wall clock, offset dropped
    for bad in ("2005-13-45", "yesterday", ""):
        with pytest.raises(ValueError):
            parse_when(bad)
