"""Which indexer runs a job: the local thread pool or Ray (``engine="ray"``)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import QueryError, ScanRootNotFoundError
from ..indexer.pipeline import Indexer, IndexOptions
from ..models.base import Encoder
from ..progress import ProgressCallback
from ..retriever.spaces import VectorSpaces
from ..store import Store

#: values of ``Engine.index(engine=...)`` and ``frozenlens index --engine``
INDEX_ENGINES: tuple[str, ...] = ("local", "ray")


def check_roots(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Raise :class:`QueryError` for no paths, :class:`ScanRootNotFoundError` for a missing one."""
    if not paths:
        raise QueryError("no paths to index")
    for p in paths:
        if not os.path.exists(p):
            raise ScanRootNotFoundError(f"path does not exist: {p}")


def build_indexer(
    engine: str,
    store: Store,
    spaces: VectorSpaces,
    encoder: Encoder,
    options: IndexOptions,
    progress: ProgressCallback | None,
    *,
    encoder_name: str,
    encoder_options: dict[str, object],
    address: str | None = None,
) -> Indexer:
    """An indexer for ``engine``; Ray is imported only for ``"ray"`` (a
    :class:`~frozenlens.errors.RayUnavailableError` when it is not installed)."""
    if engine == "local":
        if address is not None:
            raise QueryError("--address needs --engine ray")
        return Indexer(store, spaces, encoder, options, progress)
    if engine == "ray":
        from ..indexer.ray_engine import RayIndexer, RayOptions

        return RayIndexer(store, spaces, encoder, encoder_name, encoder_options, options, progress,
                          RayOptions(address=address))
    raise QueryError(f"unknown indexing engine {engine!r}; choose one of {', '.join(INDEX_ENGINES)}")
