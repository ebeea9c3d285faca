"""The index's reranker head (FrEVL): found in the index directory, loaded
once, reloaded when retrained, retired when the index changes encoder.

The head's files are named by :mod:`frozenlens.reranker` (torch-free), so
an index without a head never imports torch.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RerankerError
from ..models.base import EncoderIdentity
from ..reranker import CONFIG_NAME as RERANKER_CONFIG

if TYPE_CHECKING:
    from ..reranker.head import Reranker

log = logging.getLogger(__name__)


class HeadSlot:
    """The trained head of the index at ``index_dir``, if any (safe to share between threads)."""

    def __init__(self, index_dir: Path) -> None:
        self.index_dir = index_dir
        #: (loaded head, (mtime_ns, size) of its config file), replaced as one value
        self._loaded: tuple[Reranker, tuple[int, int]] | None = None

    @property
    def path(self) -> Path:
        """The head's config file (present once a head was trained)."""
        return self.index_dir / RERANKER_CONFIG

    def load(self, identity: EncoderIdentity) -> Reranker | None:
        """The head (loaded once, reloaded when its file changed), or ``None`` without one.

        Raises :class:`RerankerError` for a damaged head and
        :class:`RerankerMismatchError` for one trained for another encoder
        than ``identity``.
        """
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._loaded = None
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        loaded = self._loaded
        if loaded is None or loaded[1] != stamp:
            from ..reranker.head import Reranker

            loaded = (Reranker.load(self.index_dir, identity), stamp)
            self._loaded = loaded
        return loaded[0]

    def for_query(self, rerank: bool | None, identity: EncoderIdentity) -> Reranker | None:
        """The head a text query uses: none for ``rerank=False``; for ``True`` one
        must exist (:class:`RerankerError`); for ``None`` the head if any."""
        if rerank is False:
            return None
        head = self.load(identity)
        if head is None and rerank is True:
            raise RerankerError(
                f"no reranker head in {self.index_dir}; train one with `frozenlens train-reranker` "
                "or search without reranking"
            )
        return head

    def retire(self) -> None:
        """A head trained on the old encoder's embeddings is useless after a
        re-index: its files are renamed ``*.stale`` (kept, never used)."""
        from ..reranker import WEIGHTS_NAME

        for name in (RERANKER_CONFIG, WEIGHTS_NAME):
            path = self.index_dir / name
            if path.exists():
                os.replace(path, path.with_name(path.name + ".stale"))
                log.warning("reranker head %s was trained for the old encoder; renamed to %s.stale", name, name)
        self._loaded = None
