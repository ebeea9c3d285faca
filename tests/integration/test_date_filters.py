"""Every date a request accepts filters without error, at the ends of the calendar too.

``--before 9999-12-31`` (CLI) and ``before=9999-12-31`` (API) once crashed (the day
after the last day of the calendar overflows). Property: any date or date-time that
:func:`frozenlens.types.parse_when` accepts, as ``after`` or ``before``, filters a real
index without error and keeps exactly the photos the rule says; out-of-range text is
a validation error.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.types import SearchFilters, parse_when

from ..conftest import index_kphotoalbum

SETTINGS = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, testdata, shared_lite):
    photos, index = index_kphotoalbum(tmp_path_factory.mktemp("dates"), testdata)
    engine = Engine.open(index)
    # every photo with a date, and its date (the oracle the filters are checked against)
    ids = engine.store.matching_ids(SearchFilters())
    taken = {i: r.taken_at for i, r in engine.store.images(ids).items() if r.taken_at is not None}
    yield engine, index, taken
    engine.close()


def expected(taken: dict[int, dt.datetime], after, before) -> set[int]:
    def ok(t: dt.datetime) -> bool:
        if after is not None:
            start = after if isinstance(after, dt.datetime) else dt.datetime.combine(after, dt.time())
            if t < start:
                return False
        if before is not None:
            if isinstance(before, dt.datetime):
                return t < before
            return t.date() <= before
        return True

    return {i for i, t in taken.items() if ok(t)}


moments = st.one_of(
    st.dates(),
    st.datetimes(),
    st.sampled_from([dt.date.min, dt.date.max, dt.datetime.min, dt.datetime.max, dt.date(2005, 1, 1)]),
)


@SETTINGS
@given(after=st.none() | moments, before=st.none() | moments)
def test_any_accepted_date_filters_without_error(indexed, after, before):
    engine, _, taken = indexed
    # through the one parsing rule, as the CLI, the API and the page do
    after = None if after is None else parse_when(after.isoformat())
    before = None if before is None else parse_when(before.isoformat())
    filters = SearchFilters(after=after, before=before)
    got = set(engine.store.matching_ids(filters).tolist())
    assert got == expected(taken, after, before)
    assert engine.store.count_matching(filters) == len(got)


def test_last_day_of_the_calendar_through_cli_and_engine(indexed, capsys):
    engine, index, taken = indexed
    hits = engine.search("a photo", k=50, filters=SearchFilters(before=parse_when("9999-12-31")))
    assert {h.id for h in hits} <= set(taken) and len(hits) == min(50, len(taken))
    assert cli.main(["search", "a photo", "--before", "9999-12-31", "--after", "0001-01-01", "--index", str(index)]) == 0
    assert cli.main(["search", "a photo", "--before", "9999-12-31T23:59:59.999999", "--index", str(index)]) == 0
    capsys.readouterr()
    assert cli.main(["search", "a photo", "--before", "10000-01-01", "--index", str(index)]) == 2
    assert "before" in capsys.readouterr().err


def test_last_day_of_the_calendar_through_the_api(indexed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from frozenlens.server.app import create_app
    from frozenlens.server.settings import ServerSettings

    _, index, taken = indexed
    with TestClient(create_app(ServerSettings(index_dir=index), ui=False), base_url="http://127.0.0.1") as c:
        r = c.get("/api/v1/search", params={"q": "a photo", "k": 50, "before": "9999-12-31"})
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]) == min(50, len(taken))
        r = c.post("/api/v1/search", json={"q": "a photo", "after": "0001-01-01", "before": "9999-12-31T23:59:59"})
        assert r.status_code == 200, r.text
        for bad in ("10000-01-01", "9999-12-32", "0000-01-01"):
            r = c.get("/api/v1/search", params={"q": "a photo", "before": bad})
            assert r.status_code == 422, (bad, r.text)
