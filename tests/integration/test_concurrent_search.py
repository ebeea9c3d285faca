"""One Engine searched from many threads at once (as the web server does), also while
another Engine indexes new photos into the same index: real SQLite and PostgreSQL (each
test runs on both), FAISS and encoder."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from frozenlens.engine import Engine
from tests.conftest import index_kphotoalbum

QUERIES = ["un lapin", "a pool table", "ein Hund", "Grand Canyon", "the northern part of Denmark", "snow"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite, module_db_url):
    root = tmp_path_factory.mktemp("concurrent")
    return (root, *index_kphotoalbum(root, testdata, module_db_url))


def ids(hits) -> list[int]:
    return [h.id for h in hits]


@pytest.mark.slow
def test_concurrent_searches_agree_with_serial_ones(archive):
    _, photos, index = archive
    with Engine.open(index) as engine:
        first = engine.search("photo", k=1)[0].id
        expected = {q: ids(engine.search(q, k=5)) for q in QUERIES}
        expected_similar = ids(engine.similar(first, k=5))
        expected_image = ids(engine.search(photos / "pool.jpg", k=3))

        def work(i: int) -> None:
            for j in range(12):
                q = QUERIES[(i + j) % len(QUERIES)]
                assert ids(engine.search(q, k=5)) == expected[q], q
                if j % 4 == 0:
                    assert ids(engine.similar(first, k=5)) == expected_similar
                    assert ids(engine.search(photos / "pool.jpg", k=3)) == expected_image

        with ThreadPoolExecutor(6) as pool:
            for f in [pool.submit(work, i) for i in range(6)]:
                f.result()


@pytest.mark.slow
def test_searches_go_on_while_another_engine_indexes(archive, testdata):
    root, _, index = archive
    extra = root / "extra"
    extra.mkdir()
    for name in ("astronaut.png", "coffee.png", "rocket.jpg", "chelsea.png"):
        shutil.copy(testdata / "photos" / name, extra / name)
    with Engine.open(index) as reader:
        before = reader.stats()["images"]
        stop = threading.Event()
        errors: list[BaseException] = []
        counts: list[int] = []

        def search_loop() -> None:
            try:
                while not stop.is_set():
                    hits = reader.search("a cup of coffee", k=5)
                    assert hits and all(h.path for h in hits)
                    counts.append(len(hits))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=search_loop) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            with Engine.open(index) as writer:
                report = writer.index([extra])
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[0]
        assert report.new == 4 and len(counts) > 0
        # the reader picks up the new photos on its next query
        assert reader.stats()["images"] == before + 4
        assert Path(reader.search("a cup of coffee", k=1)[0].path).name == "coffee.png"
