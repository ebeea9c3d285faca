"""Thread-count scopes entered from several threads at once, interleaved on purpose
(A enters, B enters, A leaves, B leaves): nothing is left changed afterwards."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager

import faiss
import pytest
from threadpoolctl import threadpool_info

from frozenlens.models._blas import _process_wide_blas, blas_threads
from frozenlens.retriever import threads as faiss_threads


def interleave(scope_a: Callable[[], AbstractContextManager], scope_b: Callable[[], AbstractContextManager],
               probe: Callable[[], object]) -> dict[str, object]:
    """Run A-enter, B-enter, A-leave, B-leave in two threads; probe(): what the calling thread sees."""
    steps = [threading.Event() for _ in range(4)]
    seen: dict[str, object] = {}

    def a() -> None:
        seen["a0"] = probe()
        with scope_a():
            seen["a_in"] = probe()
            steps[0].set()
            steps[1].wait(10)
        seen["a_out"] = probe()
        steps[2].set()

    def b() -> None:
        seen["b0"] = probe()
        steps[0].wait(10)
        with scope_b():
            seen["b_in"] = probe()
            steps[1].set()
            steps[2].wait(10)
        seen["b_out"] = probe()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(s.is_set() for s in steps[:3])
    return seen


def test_faiss_thread_scope_is_per_thread_and_interleaves_safely():
    main_before = faiss.omp_get_max_threads()
    seen = interleave(lambda: faiss_threads(1), lambda: faiss_threads(3), faiss.omp_get_max_threads)
    assert (seen["a_in"], seen["b_in"]) == (1, 3)  # B's scope did not change A's count, nor A's B's
    assert (seen["a_out"], seen["b_out"]) == (seen["a0"], seen["b0"])
    assert faiss.omp_get_max_threads() == main_before
    fresh: list[int] = []
    t = threading.Thread(target=lambda: fresh.append(faiss.omp_get_max_threads()))
    t.start()
    t.join()
    assert fresh == [seen["a0"]]


def blas_counts() -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


@pytest.mark.skipif(not _process_wide_blas(), reason="no process-wide BLAS loaded")
def test_counted_blas_scope_interleaves_and_restores_the_process_count():
    libs = {lib.filepath for lib in _process_wide_blas()}
    before = blas_counts()
    seen = interleave(lambda: blas_threads(1), lambda: blas_threads(2), blas_counts)
    for path in libs:
        assert seen["a_in"][path] == 1
        assert seen["b_in"][path] == 1  # joined while A held 1: never raised over a holder's limit
    assert seen["a_out"] == seen["b_in"]  # A left while B held the scope: B's limit stays
    assert seen["b_out"] == before == blas_counts()  # the last to leave restores the process


def test_blas_scope_rejects_nonsense():
    with pytest.raises(ValueError, match=">= 1"), blas_threads(0):
        pass
