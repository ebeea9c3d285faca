"""The ``visual`` space is read on first use: a text search never loads it, and a searcher that
loads it late (after another process added photos) gets exactly the database's vectors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from frozenlens.engine import Engine
from tests.conftest import write_noise_jpegs


def test_text_search_leaves_visual_unread_and_a_late_load_sees_every_commit(tmp_path: Path, testdata: Path,
                                                                           shared_lite) -> None:
    photos, index = tmp_path / "photos", tmp_path / "index"
    shutil.copytree(testdata / "photos", photos)
    with Engine.open(index, create=True) as writer:
        writer.index([photos])

    with Engine.open(index) as searcher:
        first = searcher.search("a cat", k=1)[0]
        spaces = searcher.spaces
        assert spaces.loaded("semantic") and spaces.loaded("caption") and not spaces.loaded("visual")

        more = write_noise_jpegs(tmp_path / "more", 3)  # another engine adds photos meanwhile ...
        before = (index / "visual.faiss").read_bytes()
        with Engine.open(index) as writer:
            writer.index([photos, more[0].parent])
            added = {writer.store.find_path(str(p)).id for p in more}
        (index / "visual.faiss").write_bytes(before)  # ... and its visual file is lost (as in a crash before saving)

        searcher.search("a cat", k=1)  # picks up the commit (visual still unread)
        assert not searcher.spaces.loaded("visual")
        similar = searcher.similar(first.id, k=50)  # reads visual now, reconciled with the database
        assert searcher.spaces.loaded("visual")
        assert added <= {h.id for h in similar}
        visual = searcher.spaces["visual"]
        db_ids = searcher.store.vector_ids("visual")
        assert np.array_equal(np.sort(visual.ids()), np.sort(db_ids))
        stored = searcher.store.vectors("visual", db_ids.tolist(), searcher.identity.visual_dim)
        assert np.allclose(visual.reconstruct(db_ids), stored, atol=1e-3)
