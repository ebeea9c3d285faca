"""How many CPU cores this process may use (torch-free, numpy-free).

The one owner of the rule: the indexer's decode pool, the re-index pool, the
``lite`` encoder's default thread count and the server's default number of
searches at once all size themselves with :func:`usable_cores`.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask (Linux), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


__all__ = ["usable_cores"]
