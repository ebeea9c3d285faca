"""Re-index with another encoder: resumable, atomic swap, old vectors never served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from frozenlens.engine import Engine
from frozenlens.errors import EncoderMismatchError
from frozenlens.models.lite import LiteEncoder


class Interrupt(Exception):
    pass


def test_reindex_resumes_and_swaps(tmp_path, testdata, lite_encoder, model_cache):
    lib = tmp_path / "lib"
    shutil.copytree(testdata / "photos", lib)
    shutil.copy(lib / "coffee.png", lib / "coffee_copy.png")  # a duplicate row
    (lib / "broken.jpg").write_bytes(b"nope")  # a failed row
    long_caption = "A cup of coffee on a table. " * 40
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(json.dumps({"path": f"lib/{n}", "text": t}) for n, t in
                  [("chelsea.png", "Our cat Chelsea"), ("coffee.png", long_caption)]), encoding="utf-8")
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    engine.index([lib], captions=manifest)
    n_images = engine.stats()["images"]
    before = engine.store.vectors("semantic", engine.store.vector_ids("semantic").tolist(), 512)
    old_files = sorted(p.name for p in (tmp_path / "index").glob("*.faiss"))

    other = LiteEncoder(cache_dir=model_cache, top_t=5)  # different ConSE → different vectors, same dims
    assert other.identity != lite_encoder.identity

    calls = 0

    def stop_after_two_batches(p):
        nonlocal calls
        if p.stage == "reindex-images":
            calls += 1
            if calls == 2:
                raise Interrupt

    with pytest.raises(Interrupt):
        engine.reindex(other, batch_size=3, progress=stop_after_two_batches)
    # nothing searchable changed yet
    assert engine.identity == lite_encoder.identity
    assert engine.search("a cat", k=1)[0].path.endswith("chelsea.png")
    engine.close()

    engine = Engine.open(tmp_path / "index", encoder=lite_encoder)  # still the old encoder
    report = engine.reindex(other, batch_size=3)
    assert report.resumed and report.swapped
    assert report.images == n_images - 6  # two batches of 3 were staged before the interruption
    assert report.captions >= 2
    assert engine.identity == other.identity
    after = engine.store.vectors("semantic", engine.store.vector_ids("semantic").tolist(), 512)
    assert after.shape == before.shape and not np.allclose(after, before, atol=1e-2)
    new_files = sorted(p.name for p in (tmp_path / "index").glob("*.faiss"))
    assert new_files == ["caption.e1.faiss", "semantic.e1.faiss", "visual.e1.faiss"] and new_files != old_files
    assert engine.search("un chat", k=1)[0].path.endswith("chelsea.png")
    assert engine.search("a cup of coffee on a table", k=1)[0].path.endswith("coffee.png")
    assert engine.stats()["duplicates"] == 1 and engine.stats()["failed"] == 1
    engine.close()

    with pytest.raises(EncoderMismatchError):
        Engine.open(tmp_path / "index", encoder=lite_encoder)
    reopened = Engine.open(tmp_path / "index", encoder=other)
    ids = reopened.spaces["semantic"].ids()
    np.testing.assert_allclose(
        reopened.spaces["semantic"].reconstruct(ids[:3]), reopened.store.vectors("semantic", ids[:3].tolist(), 512), atol=1e-6
    )
    reopened.close()


def test_searcher_holding_old_encoder_is_told(tmp_path, testdata, lite_encoder, model_cache):
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(testdata / "photos" / "rocket.jpg", lib / "rocket.jpg")
    writer = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    writer.index([lib])
    reader = Engine.open(tmp_path / "index", encoder=lite_encoder)
    assert reader.search("a rocket", k=1)
    watcher = Engine.open(tmp_path / "index")  # loads no encoder (like `info`)
    assert watcher.stats()["encoder"]["version"] == lite_encoder.identity.version == "3"
    seven = LiteEncoder(cache_dir=model_cache, top_t=7)
    writer.reindex(seven)
    with pytest.raises(EncoderMismatchError, match="re-indexed"):
        reader.search("a rocket", k=1)
    assert watcher.stats()["encoder"]["version"] == seven.identity.version  # follows the new epoch
    assert watcher.stats()["vectors"]["semantic"] == 1
    fresh = Engine.open(tmp_path / "index", encoder=seven)
    assert Path(fresh.search(Path(lib / "rocket.jpg"), k=1)[0].path).name == "rocket.jpg"
