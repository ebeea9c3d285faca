"""The retriever layer: the only FAISS code in FrozenLens.

:class:`VectorIndex` maps int64 image ids to L2-normalised float32 vectors and
answers (filtered) nearest-neighbour queries; :mod:`.choice` says which FAISS
index type suits a collection (and owns the ``--index-type`` names),
:mod:`.tuning` builds one from stored vectors and tunes it to a target recall.

Names are loaded on first use, so :mod:`.choice` (no numpy, no FAISS) can be
read by the CLI parser without loading FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "INDEX_TYPES": "choice", "AutoPolicy": "choice", "recommend_factory": "choice",
    "VectorIndex": "vector_index", "set_threads": "vector_index", "threads": "vector_index",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
