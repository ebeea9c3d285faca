"""Stage caching shared by the long quality benchmarks (FLAME ConSE, FLAME projector).

Each expensive stage (image logits, LLM hidden states, training) stores its
arrays under a key that hashes everything it depends on, written atomically,
so a rerun reuses finished stages; :class:`Clock` records each stage's wall
time and whether it came from the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def key_hash(obj: object) -> str:
    """A short, stable hash of a JSON-able description of a stage's inputs."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:20]


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    """Write ``arrays`` to ``path`` (.npz) atomically (temp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays saved at ``path``, or None when the stage has not run yet."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Clock:
    """Wall time per stage, and whether the stage came from the cache."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self.stages: dict[str, dict[str, Any]] = {}
        self.start = time.perf_counter()

    def run(self, name: str, fn: Callable[[], tuple[Any, bool]]) -> Any:
        t = time.perf_counter()
        value, cached = fn()
        dt = time.perf_counter() - t
        self.stages[name] = {"seconds": round(dt, 1), "cached": cached}
        self.log.info("%s: %.1f s%s", name, dt, " (cache)" if cached else "")
        return value
