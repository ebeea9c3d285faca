"""One owner of numpy's BLAS thread count while encoders run in several threads.

OpenBLAS built with pthreads (numpy's wheels) and MKL keep *one* thread count
per process: a ``threadpoolctl`` limit entered in one thread is seen by all of
them, and save/restore scopes entered from several threads interleave into a
wrong final state (A saves 2 and sets 1, B saves 1, A restores 2, B restores 1:
the process is left at one BLAS thread; measured with the ``lite`` text tower).
BLAS libraries built on OpenMP (faiss's ``libopenblaso``) keep their count in
OpenMP's per-thread ICV (measured: a limit set in one thread is not seen by
another), so they are not process-wide and are left alone here.

:func:`blas_threads` is a *counted* scope over the process-wide libraries: the
first caller to enter saves their counts; while any caller is inside, the
count is the smallest any caller asked for since the first one entered
(lowering never hurts a caller that asked for more, raising would hurt one
that asked for fewer); the last caller to leave restores the saved counts.
A burst of concurrent calls therefore always leaves the process at the counts
it started with.

threadpoolctl >= 3.7 lets only one "controlling" Python thread change a
pthreads OpenBLAS (the first to set it, while it lives) and silently ignores
the others; since this scope is the one owner and sets under its lock, it
takes control for each change (``clear_controlling_thread``), else the last
caller to leave could not restore the count.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_holders = 0
_current = 0
_saved: list[tuple[Any, int]] = []
_libs: list[Any] | None = None


def _process_wide_blas() -> list[Any]:
    """threadpoolctl's controllers of the BLAS libraries whose count is process-wide (found once)."""
    global _libs
    if _libs is None:
        from threadpoolctl import ThreadpoolController

        _libs = [
            lib
            for lib in ThreadpoolController().select(user_api="blas").lib_controllers
            if not (lib.internal_api in ("openblas", "blis") and getattr(lib, "threading_layer", "") == "openmp")
        ]
    return _libs


def _set(lib: Any, n: int) -> None:
    clear = getattr(type(lib), "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)
    lib.set_num_threads(n)


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run the block with at most ``n`` (>= 1) threads in process-wide BLAS libraries.

    Safe to enter from many threads at once; see the module docstring for the rule.
    """
    global _holders, _current, _saved
    if n < 1:
        raise ValueError(f"BLAS thread count must be >= 1, got {n}")
    with _lock:
        if _holders == 0:
            _saved = [(lib, lib.num_threads) for lib in _process_wide_blas()]
            _current = 0
        if _current == 0 or n < _current:
            _current = n
            for lib, _ in _saved:
                _set(lib, n)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                for lib, count in _saved:
                    _set(lib, count)
                _saved, _current = [], 0
