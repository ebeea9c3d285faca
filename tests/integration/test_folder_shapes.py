"""Folder shapes: an indexing run never leaves the folders the user named unless asked.

A directory symlink to ``/`` inside a photo folder once made a run index files
from all over the system. Now symlinks (to folders or files) are followed only
while their target stays inside the named folders; the others are skipped and
the run's summary says so. ``--follow-links`` follows them all (loops are still
walked once).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from frozenlens import cli
from frozenlens.engine import Engine
from frozenlens.types import SearchFilters

NAMES = ("pool.jpg", "snow.jpg", "skagen.jpg")


@pytest.fixture()
def folders(tmp_path: Path, testdata: Path) -> tuple[Path, Path]:
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    photos.mkdir()
    outside.mkdir()
    for name in NAMES:
        shutil.copy(testdata / "kphotoalbum" / name, photos / name)
    shutil.copy(testdata / "photos" / "rocket.jpg", outside / "rocket.jpg")
    (photos / "out").symlink_to(outside, target_is_directory=True)  # leads out
    (photos / "loop").symlink_to(photos, target_is_directory=True)  # stays inside (a loop)
    return photos, outside


def indexed_paths(index: Path) -> set[str]:
    """Paths of the indexed (non-duplicate) photos."""
    with Engine.open(index) as engine:
        ids = engine.store.matching_ids(SearchFilters())
        return {r.path for r in engine.store.images(ids).values()}


def test_links_leading_out_are_skipped_and_reported(folders, tmp_path, capsys, shared_lite):
    photos, _ = folders
    (photos / "everything").symlink_to("/", target_is_directory=True)
    index = tmp_path / "index"
    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "not scanned: 2 symlinks leading outside the named folders (--follow-links follows them)" in out
    assert f"{photos / 'everything'}: symlink leads outside the indexed folders" in out
    assert f"{photos / 'out'}: symlink leads outside the indexed folders" in out
    assert indexed_paths(index) == {str(photos / n) for n in NAMES}


def test_follow_links_follows_them_and_a_later_run_without_it_drops_them(folders, tmp_path, capsys, shared_lite):
    photos, _ = folders
    index = tmp_path / "index"
    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress", "--follow-links"]) == 0
    assert "not scanned" not in capsys.readouterr().out
    assert indexed_paths(index) == {str(photos / n) for n in NAMES} | {str(photos / "out" / "rocket.jpg")}
    # the same folder without --follow-links: what lay outside it leaves the index
    assert cli.main(["index", str(photos), "--index", str(index), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 deleted" in out and "not scanned: 1 symlinks leading outside" in out
    assert indexed_paths(index) == {str(photos / n) for n in NAMES}


def test_file_link_inside_is_indexed_and_file_link_out_is_not(folders, tmp_path, shared_lite):
    photos, outside = folders
    os.symlink(photos / "pool.jpg", photos / "pool_again.jpg")
    os.symlink(outside / "rocket.jpg", photos / "rocket_link.jpg")
    with Engine.open(tmp_path / "index", create=True) as engine:
        report = engine.index([photos])
    assert report.not_scanned == {"outside-roots": 2}
    assert report.duplicates == 1  # pool_again.jpg: the same bytes as pool.jpg, inside the folder
    assert str(photos / "rocket_link.jpg") not in indexed_paths(tmp_path / "index")
