"""Warming an open engine: load now everything the first query would load lazily.

``frozenlens serve`` calls :func:`warm_engine` before it prints its address,
so the first query is answered as fast as the tenth: the FAISS spaces, the
encoder (its text side, and with ``images`` its image side: the ``lite``
network and class embeddings), the search filters' columns
(:class:`~frozenlens.store.columns.FilterColumns`), the reranker head if the index has one, and
one real text query through the whole path (first-call costs of BLAS, FAISS
and the database are paid here too). Nothing here changes the index.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import FrozenLensError
from ..request import SearchRequest

if TYPE_CHECKING:
    from .facade import Engine

log = logging.getLogger(__name__)

#: the text of the warm-up query (any text does; its hits are thrown away)
WARM_QUERY = "a photo"


def warm_engine(engine: Engine, *, images: bool = False) -> None:
    """Load what the first text query (and with ``images`` the first image query) needs.

    A damaged or mismatched reranker head is logged, not raised: the server
    still starts, and the queries that use the head report the error.
    """
    engine.sync()  # the FAISS spaces
    engine.store.filter_columns(force=True)  # filtered searches answered from memory
    engine.encoder.warm(text=True, images=images)
    try:
        engine.reranker()
    except FrozenLensError as exc:
        log.warning("reranker head not loaded: %s", exc)
    try:
        engine.search(SearchRequest(query=WARM_QUERY, k=1))
    except FrozenLensError as exc:
        log.warning("warm-up query failed: %s", exc)
