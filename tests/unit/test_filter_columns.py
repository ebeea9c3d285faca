"""Search filters from memory (store/columns.py) give exactly the SQL filters' ids — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pytest

from frozenlens.store import PhotoFields, Store
from frozenlens.store.columns import ColumnCache, FilterColumns
from frozenlens.types import SearchFilters

CAMERAS = [None, "Canon PowerShot G2", "canon EOS 5D", "OLYMPUS IMAGING CORP. C5050Z", "Nikon D750", "NIKON Z6"]
SUBSTRINGS = ["canon", "CANON", "nikon", "olympus", "d", "5", "zz", "EOS 5"]


@pytest.fixture
def store(store_url):
    s = Store.open(store_url)
    yield s
    s.close()


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _random_moment(r: random.Random) -> dt.datetime | None:
    if r.random() < 0.15:
        return None
    day = dt.date(2001, 1, 1) + dt.timedelta(days=r.randrange(0, 4 * 365))
    # day boundaries and microseconds are where a date filter can go wrong
    return dt.datetime(day.year, day.month, day.day) + r.choice(
        [dt.timedelta(0), dt.timedelta(microseconds=1), dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999_999),
         dt.timedelta(seconds=r.randrange(86_400), microseconds=r.randrange(1_000_000))])


def _populate(store: Store, n: int, seed: int) -> tuple[list[int], list[dt.datetime]]:
    """(ids, the moments the photos were taken) of ``n`` random photos."""
    r, rng = random.Random(seed), np.random.default_rng(seed)
    ids, moments = [], []
    with store.batch() as w:
        for i in range(n):
            camera = r.choice(CAMERAS)
            make, model = (None, None) if camera is None else camera.split(" ", 1)
            taken = _random_moment(r)
            moments += [taken] if taken else []
            ids.append(w.add_image(
                path=f"/p/{i // 50}/{i}.jpg", size=10, mtime_ns=1, content_hash=f"h{seed}-{i}",
                fields=PhotoFields(width=r.choice([None, 640, 1024, 4000]), height=r.choice([None, 480, 3000]),
                                   taken_at=taken, camera_make=make, camera_model=model),
                semantic=_unit(rng, 8), visual=_unit(rng, 4), labels=[], captions=[], caption_sig="s", tokens=None))
        w.add_failure(path="/p/bad.jpg", size=0, mtime_ns=1, content_hash=None, reason="empty", message="0 bytes")
    return ids, moments


def _random_filters(r: random.Random, moments: list[dt.datetime]) -> SearchFilters:
    def bound() -> dt.date | dt.datetime | None:
        # half the bounds are a photo's own moment, or its day: the edges a filter can get wrong
        m = r.choice(moments) if r.random() < 0.5 else _random_moment(r)
        if m is None:
            return None
        return m.date() if r.random() < 0.5 else m

    before = bound()
    if r.random() < 0.05:
        before = dt.date(9999, 12, 31)  # its day has no next day: every dated photo passes
    return SearchFilters(after=bound(), before=before,
                         camera=r.choice([None, None, *SUBSTRINGS]),
                         min_width=r.choice([None, None, 800, 4000]), min_height=r.choice([None, 500]))


def test_columns_answer_random_filters_exactly_as_sql(store):
    ids, moments = _populate(store, 400, seed=3)
    columns = store.filter_columns(force=True)
    assert columns is not None and columns.ids.tolist() == sorted(ids)
    r = random.Random(7)
    nonempty = 0
    for _ in range(300):
        f = _random_filters(r, moments)
        want = store.matching_ids_sql(f)
        got = columns.matching(f)
        assert got.tolist() == want.tolist(), f
        among = r.sample(ids, 60) + [10**9]  # an id that does not exist
        assert columns.matching(f, np.asarray(among)).tolist() == store.matching_ids_sql(f, among=among).tolist(), f
        nonempty += bool(want.size)
    assert nonempty > 100  # the random filters are not all trivially empty
    # the edges, checked by name: a bound equal to a photo's moment, and a date that needs no upper bound
    m = moments[0]
    for f in (SearchFilters(after=m), SearchFilters(before=m), SearchFilters(before=m.date()),
              SearchFilters(before=dt.date(9999, 12, 31)), SearchFilters(after=dt.date(1, 1, 1))):
        assert columns.matching(f).tolist() == store.matching_ids_sql(f).tolist(), f
    undated = sorted(set(ids) - set(store.matching_ids_sql(SearchFilters(before=dt.date(9999, 12, 31))).tolist()))
    assert len(undated) > 20 and not set(undated) & set(columns.matching(SearchFilters(before=dt.date(9999, 12, 31))).tolist())


def test_a_one_shot_caller_never_builds_and_a_write_is_seen_at_once(store):
    _populate(store, 50, seed=1)
    f = SearchFilters(camera="canon")
    assert store.filter_columns() is None  # first look at this generation: SQL answers
    first = store.matching_ids(f)
    columns = store.filter_columns()  # seen before: now built
    assert columns is not None and store.filter_columns() is columns  # and kept
    assert store.matching_ids(f).tolist() == first.tolist()
    with store.batch() as w:
        new = w.add_image(path="/q/new.jpg", size=1, mtime_ns=1, content_hash="new",
                          fields=PhotoFields(camera_make="Canon", camera_model="IXUS"),
                          semantic=_unit(np.random.default_rng(0), 8), visual=_unit(np.random.default_rng(1), 4),
                          labels=[], captions=[], caption_sig="s", tokens=None)
    assert store.filter_columns() is None  # a new generation: not rebuilt on its first call ...
    assert new in store.matching_ids(f).tolist()  # ... and the new photo is found through SQL
    rebuilt = store.filter_columns()
    assert rebuilt is not None and new in rebuilt.ids.tolist()


def test_a_path_prefix_goes_to_sql(store):
    _populate(store, 120, seed=2)
    store.filter_columns(force=True)
    f = SearchFilters(under="/p/1", camera="nikon")
    assert not FilterColumns.answers(f)
    got = store.matching_ids(f).tolist()
    assert got and got == store.matching_ids_sql(f).tolist()


def test_a_declined_build_is_not_retried_within_a_generation():
    calls = []

    def build() -> FilterColumns | None:
        calls.append(1)
        return None  # e.g. more photos than MAX_ROWS

    cache = ColumnCache()
    assert cache.get(5, build) is None and calls == []  # first sight
    for _ in range(3):
        assert cache.get(5, build) is None
    assert len(calls) == 1
    assert cache.get(6, build, force=True) is None and len(calls) == 2


def test_limit_and_empty_index(store):
    assert store.filter_columns(force=True).ids.size == 0
    assert store.matching_ids(SearchFilters(camera="canon")).size == 0
    _populate(store, 30, seed=4)
    store.filter_columns(force=True)
    every = store.matching_ids(SearchFilters(min_width=1))
    assert store.matching_ids(SearchFilters(min_width=1), limit=5).tolist() == every[:5].tolist()
