"""Progress reporting: library code calls a callback, clients draw bars."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """A snapshot of a long-running job, passed to a progress callback.

    ``stage`` names the phase (``"scan"``, ``"hash"``, ``"encode"``,
    ``"finish"``); ``done``/``total`` count files in that phase (``total`` is
    ``None`` while unknown). The counters are cumulative for the whole run.
    """

    stage: str
    done: int
    total: int | None
    new: int = 0
    changed: int = 0
    skipped: int = 0
    failed: int = 0
    moved: int = 0
    duplicates: int = 0
    deleted: int = 0


ProgressCallback = Callable[[Progress], None]


def ignore_progress(_: Progress) -> None:
    """The default callback: do nothing."""
