"""A hostile-input corpus never stops a run; each bad file gets a recorded reason."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from frozenlens.engine import Engine
from frozenlens.indexer import pipeline
from frozenlens.indexer.scan import image_extensions

_spec = importlib.util.spec_from_file_location("hostile_corpus", Path(__file__).parent.parent / "hostile_corpus.py")
hostile_corpus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile_corpus)


def test_hostile_corpus_is_recorded_and_good_files_searchable(tmp_path, testdata, lite_encoder, monkeypatch):
    folder = tmp_path / "inbox"
    expected = hostile_corpus.make_hostile_corpus(folder)
    shutil.copy(testdata / "photos" / "chelsea.png", folder / "cat.png")
    expected["cat.png"] = "ok"
    # Permissions do not stop root, so fake one unreadable file at the OS boundary.
    (folder / "locked.jpg").write_bytes((testdata / "photos" / "china.jpg").read_bytes())
    expected["locked.jpg"] = "unreadable"
    real_open = pipeline.os.open

    def guarded_open(path, flags, *args):
        if str(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(pipeline.os, "open", guarded_open)

    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    report = engine.index([folder])
    # files whose extension no installed plugin reads (e.g. .heic without pillow-heif) are not scanned
    expected = {k: v for k, v in expected.items() if Path(k).suffix.lower().lstrip(".") in image_extensions()}
    bad = {k: v for k, v in expected.items() if v != "ok"}
    good = {k for k, v in expected.items() if v == "ok"}
    failures = {Path(f.path).name: f for f in engine.errors()}
    assert {name: f.reason for name, f in failures.items()} == bad
    assert all(f.message for f in failures.values())
    assert report.failed == len(bad)
    stats = engine.stats()
    assert stats["images"] + stats["duplicates"] == len(good)
    assert Path(engine.search("a cat", k=1)[0].path).name == "cat.png"
    assert Path(engine.search("eine Katze", k=1)[0].path).name == "cat.png"

    # unchanged bad files are not retried; a fixed one is
    report = engine.index([folder])
    assert (report.encoded, report.failed) == (0, 0)
    monkeypatch.setattr(pipeline.os, "open", real_open)
    shutil.copy(testdata / "photos" / "coffee.png", folder / "text.jpg")  # now a real image
    report = engine.index([folder])
    assert report.changed == 1 and report.encoded == 1
    assert "text.jpg" not in {Path(f.path).name for f in engine.errors()}
    assert Path(engine.search("une tasse de café", k=1)[0].path).name == "text.jpg"
    engine.close()
