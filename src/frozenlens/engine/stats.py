"""What an open index holds: :meth:`frozenlens.engine.Engine.stats` (moved out of the facade)."""

from __future__ import annotations

from pathlib import Path

from ..models.base import EncoderIdentity
from ..retriever.spaces import VectorSpaces
from ..store import Store
from ..types import STAT_COUNTS, IndexStats
from .opening import DEFAULT_FACTORY


def index_stats(store: Store, spaces: VectorSpaces, meta: dict[str, str], identity: EncoderIdentity,
                index_dir: Path) -> IndexStats:
    """Counts, encoder, FAISS spaces and disk use of the index in ``index_dir``."""
    counts = store.counts()
    size = sum(p.stat().st_size for p in index_dir.iterdir() if p.is_file())
    return IndexStats(
        **{name: int(counts[name]) for name in STAT_COUNTS},
        encoder=dict(identity.as_dict()),
        factory=meta.get("factory", DEFAULT_FACTORY),
        vectors=spaces.sizes(),
        index_types=spaces.factories(),
        schema_version=store.schema_version,
        index_dir=str(index_dir),
        database=store.engine.url.render_as_string(hide_password=True),
        bytes_on_disk=size,
        created_at=meta.get("created_at"),
        cameras=dict(store.cameras()),
    )
