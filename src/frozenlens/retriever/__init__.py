"""The retriever layer: the only FAISS code in FrozenLens.

:class:`VectorIndex` maps int64 image ids to L2-normalised float32 vectors and
answers (filtered) nearest-neighbour queries; see its module for guidance on
choosing a FAISS factory string by collection size.
"""

from __future__ import annotations

from frozenlens.retriever.vector_index import VectorIndex, recommend_factory, set_threads, threads

__all__ = ["VectorIndex", "recommend_factory", "set_threads", "threads"]
