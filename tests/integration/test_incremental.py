"""Incremental indexing: add, modify, delete, rename, copy, touch, caption edits.

Checks exactly what was re-encoded, with the real `lite` encoder, real SQLite
(and, for the tests taking ``db_url``, a real PostgreSQL server) and real FAISS.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from frozenlens.engine import Engine

PHOTOS = ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "china.jpg", "flower.jpg"]


def assert_consistent(engine: Engine) -> None:
    """Every indexed row has vectors in every space and FAISS holds exactly those ids."""
    store = engine.store
    db_img = np.sort(store.vector_ids("semantic"))
    for space in ("semantic", "visual"):
        np.testing.assert_array_equal(np.sort(engine.spaces[space].ids()), db_img)
    np.testing.assert_array_equal(np.sort(engine.spaces["caption"].ids()), np.sort(store.vector_ids("caption")))
    indexed = store.matching_ids(__import__("frozenlens.types", fromlist=["SearchFilters"]).SearchFilters())
    np.testing.assert_array_equal(np.sort(indexed), db_img)


def reopen(index_dir: Path, encoder) -> Engine:
    return Engine.open(index_dir, encoder=encoder)


@pytest.fixture
def library(tmp_path, testdata):
    lib = tmp_path / "photos"
    lib.mkdir()
    for name in PHOTOS:
        shutil.copy(testdata / "photos" / name, lib / name)
    return lib


def top_path(engine: Engine, query) -> str:
    return Path(engine.search(query, k=1)[0].path).name


def test_incremental_runs_reencode_exactly_what_changed(tmp_path, library, lite_encoder, db_url):
    index_dir = tmp_path / "index"
    engine = Engine.open(index_dir, encoder=lite_encoder, create=True, database_url=db_url)
    r = engine.index([library])
    assert (r.new, r.encoded, r.failed) == (6, 6, 0)
    assert_consistent(engine)
    first_ids = {Path(h.path).name: h.id for h in engine.search("a photo", k=10)}
    assert set(first_ids) == set(PHOTOS)

    # 1. nothing changed: nothing read or encoded
    r = engine.index([library])
    assert (r.skipped, r.encoded, r.new, r.changed) == (6, 0, 0, 0)

    # 2. touch without content change: hashed, not encoded
    os.utime(library / "rocket.jpg", ns=(1_000_000_000, 1_000_000_000))
    r = engine.index([library])
    assert (r.encoded, r.changed) == (0, 0)

    # 3. modify content: re-encoded under a new id
    Image.open(library / "coffee.png").rotate(90).save(library / "coffee.png")
    r = engine.index([library])
    assert (r.changed, r.encoded) == (1, 1)
    coffee = engine.get_image(library / "coffee.png")
    assert coffee.id != first_ids["coffee.png"]
    assert_consistent(engine)

    # 4. rename + move into a subfolder: same vectors, same id, no encode
    (library / "sub").mkdir()
    os.rename(library / "chelsea.png", library / "sub" / "kitty.png")
    r = engine.index([library])
    assert (r.moved, r.encoded, r.deleted) == (1, 0, 0)
    assert engine.get_image(library / "sub" / "kitty.png").id == first_ids["chelsea.png"]
    assert top_path(engine, "un chat") == "kitty.png"

    # 5. byte-identical copy: recorded as a duplicate, not encoded, not a second hit
    shutil.copy(library / "china.jpg", library / "china_copy.jpg")
    r = engine.index([library])
    assert (r.duplicates, r.encoded) == (1, 0)
    hits = engine.search("a photo", k=20)
    assert len(hits) == 6
    china = next(h for h in hits if h.path.endswith("china.jpg"))
    assert china.duplicates == (str(library / "china_copy.jpg"),)

    # 6. delete the original: the duplicate is promoted and stays searchable
    os.remove(library / "china.jpg")
    r = engine.index([library])
    assert (r.deleted, r.encoded) == (1, 0)
    names = {Path(h.path).name for h in engine.search("a photo", k=20)}
    assert "china_copy.jpg" in names and "china.jpg" not in names
    assert_consistent(engine)

    # 7. a caption sidecar appears next to an unchanged photo: only text is embedded
    (library / "flower.jpg.txt").write_text("Oma beim Geburtstag 1987", encoding="utf-8")
    r = engine.index([library])
    assert (r.captions_updated, r.encoded) == (1, 0)
    hit = engine.search("grandmother's birthday", k=1)[0]  # cross-lingual, through the caption
    assert hit.path.endswith("flower.jpg") and hit.caption_score is not None
    assert hit.caption_score > hit.image_score + 0.2
    (library / "flower.jpg.txt").write_text("ein Sonnenuntergang am Meer", encoding="utf-8")
    r = engine.index([library])
    assert r.captions_updated == 1
    after = next(h for h in engine.search("grandmother's birthday", k=10) if h.path.endswith("flower.jpg"))
    assert after.caption_score < hit.caption_score - 0.2
    assert_consistent(engine)

    # 8. delete: gone from database and FAISS
    os.remove(library / "astronaut.png")
    r = engine.index([library])
    assert r.deleted == 1
    assert "astronaut.png" not in {Path(h.path).name for h in engine.search("a photo", k=20)}
    assert_consistent(engine)
    engine.close()

    # 9. a fresh process sees the same state (FAISS files saved and reconciled)
    engine = reopen(index_dir, lite_encoder)
    assert engine.stats()["images"] == 5
    assert_consistent(engine)
    engine.close()


def test_copy_of_new_content_in_same_run_is_a_duplicate(tmp_path, library, lite_encoder, db_url):
    shutil.copy(library / "rocket.jpg", library / "rocket2.jpg")
    shutil.copy(library / "rocket.jpg", library / "rocket3.jpg")
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True, database_url=db_url)
    r = engine.index([library])
    assert (r.new, r.duplicates, r.encoded) == (6, 2, 6)
    assert engine.stats()["duplicates"] == 2
    assert_consistent(engine)


def test_move_out_of_scanned_root_reuses_vectors(tmp_path, library, lite_encoder, db_url):
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True, database_url=db_url)
    engine.index([library / "coffee.png"])
    other = tmp_path / "elsewhere"
    other.mkdir()
    old_id = engine.get_image(library / "coffee.png").id
    os.rename(library / "coffee.png", other / "coffee.png")
    r = engine.index([other])
    assert (r.moved, r.encoded) == (1, 0)
    assert engine.get_image(other / "coffee.png").id == old_id


def test_image_query_finds_edited_copy_first(tmp_path, library, lite_encoder):
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    engine.index([library])
    for name in PHOTOS:
        im = Image.open(library / name).convert("RGB")
        w, h = im.size
        edited = ImageOps.mirror(im.crop((w // 10, h // 10, w - w // 12, h - h // 8)))
        q = tmp_path / f"q_{name}.jpg"
        edited.save(q, quality=60)
        hits = engine.search(q, k=3)
        assert Path(hits[0].path).name == name, (name, [(Path(h.path).name, h.score) for h in hits])
    sim = engine.similar(library / "chelsea.png", k=5)
    assert all(not h.path.endswith("chelsea.png") for h in sim)
    assert len(sim) == 5
