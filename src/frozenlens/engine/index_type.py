"""The index type of an index: its recorded setting, re-deciding it after a run, measuring recall.

An index records in its meta table ``factory`` (an index-type name of
:data:`~frozenlens.retriever.choice.INDEX_TYPES` or a FAISS factory string),
``index_policy`` (JSON of :class:`~frozenlens.retriever.choice.AutoPolicy`:
memory budget, target recall, tier sizes) and ``index_tuning`` (JSON: per
image space, the factory built and the ``nprobe``/``efSearch`` chosen with the
recall reached). The FAISS files themselves record factory and knob values, so
a reopened index searches with them; the meta table says how they were chosen.
"""

from __future__ import annotations

import json
import logging

from ..retriever.choice import AutoPolicy
from ..retriever.spaces import IMAGE_SPACES, VectorSpaces
from ..retriever.tuning import Tuning
from ..store import Store

log = logging.getLogger(__name__)

POLICY_KEY = "index_policy"
TUNING_KEY = "index_tuning"


def policy_of(meta: dict[str, str]) -> AutoPolicy:
    """The index's recorded policy (the default one for indexes made before policies existed)."""
    raw = meta.get(POLICY_KEY)
    return AutoPolicy.from_json(json.loads(raw)) if raw else AutoPolicy.default()


def tunings_of(meta: dict[str, str]) -> dict[str, dict[str, object]]:
    """The recorded tunings by space (empty when none was made)."""
    return json.loads(meta.get(TUNING_KEY) or "{}")


def adapt_index(store: Store, meta: dict[str, str], spaces: VectorSpaces, index_type: str) -> dict[str, Tuning]:
    """Re-decide and re-tune the image spaces after an indexing run, save them (atomically) if
    anything changed and record the tunings; call holding the writer lock."""
    before = {s: spaces[s].factory for s in IMAGE_SPACES}
    previous = tunings_of(meta)
    done = spaces.adapt(store, index_type, policy_of(meta), previous)
    if done or any(spaces[s].factory != f for s, f in before.items()):
        spaces.save()
    if done:
        previous.update({space: t.to_json() for space, t in done.items()})
        store.set_meta({TUNING_KEY: json.dumps(previous)})
    return done


def measure_recall(store: Store, meta: dict[str, str], spaces: VectorSpaces,
                   queries: int | None = None) -> dict[str, Tuning]:
    """Recall@k vs exact search of each non-empty image space, on ``queries`` held-out queries
    (default: the policy's)."""
    policy = policy_of(meta)
    if queries is not None:
        policy = AutoPolicy(**{**policy.to_json(), "queries": queries})  # type: ignore[arg-type]
    return spaces.measure_recall(store, policy)
