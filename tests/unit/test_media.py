"""Serving rules for original files, and the thumbnail cache (real files, real Pillow)."""

from __future__ import annotations

import pytest
from PIL import Image

from frozenlens.engine.media import prune_thumbnails, served_file, thumbnail, thumbnail_path
from frozenlens.errors import DecodeError, FileAccessError, ImageNotFoundError


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (640, 480), "red").save(root / "sub" / "a.jpg")
    Image.new("RGB", (30, 20), "blue").save(outside / "b.jpg")
    (root / "inner_link.jpg").symlink_to(root / "sub" / "a.jpg")
    (root / "out_link.jpg").symlink_to(outside / "b.jpg")
    (root / "out_dir").symlink_to(outside, target_is_directory=True)
    return root, outside


def test_files_inside_the_roots_are_served_resolved(tree):
    root, _ = tree
    assert served_file(str(root / "sub" / "a.jpg"), [str(root)]) == (root / "sub" / "a.jpg").resolve()
    # a symlink that stays inside the roots is fine; the real file is what is served
    assert served_file(str(root / "inner_link.jpg"), [str(root)]) == (root / "sub" / "a.jpg").resolve()
    # a root that is itself a single indexed file
    assert served_file(str(root / "sub" / "a.jpg"), [str(root / "sub" / "a.jpg")]).name == "a.jpg"


def test_symlinks_out_of_the_roots_are_refused(tree):
    root, outside = tree
    for p in (root / "out_link.jpg", root / "out_dir" / "b.jpg"):
        with pytest.raises(FileAccessError, match="outside the indexed folders"):
            served_file(str(p), [str(root)])
    # a sibling folder whose name merely starts with the root's name is outside too
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    Image.new("RGB", (8, 8)).save(sibling / "c.jpg")
    with pytest.raises(FileAccessError):
        served_file(str(sibling / "c.jpg"), [str(root)])
    # an index without recorded roots serves only symlink-free paths
    assert served_file(str(root / "sub" / "a.jpg"), None).name == "a.jpg"
    with pytest.raises(FileAccessError, match="symlink"):
        served_file(str(root / "inner_link.jpg"), None)
    with pytest.raises(ImageNotFoundError, match="gone"):
        served_file(str(root / "missing.jpg"), [str(root)])
    with pytest.raises(FileAccessError, match="regular file"):
        served_file(str(root / "sub"), [str(root)])


def test_thumbnail_is_made_once_and_pruned_when_stale(tree, tmp_path):
    root, _ = tree
    index = tmp_path / "index"
    t = thumbnail(index, 7, str(root / "sub" / "a.jpg"), "abc123")
    assert t == thumbnail_path(index, 7, "abc123") and t.exists()
    with Image.open(t) as im:
        assert im.format == "WEBP" and im.size == (256, 192)
    stamp = t.stat().st_mtime_ns
    assert thumbnail(index, 7, str(root / "sub" / "a.jpg"), "abc123").stat().st_mtime_ns == stamp
    other = thumbnail(index, 8, str(root / "sub" / "a.jpg"), "def456")
    assert prune_thumbnails(index, {7: "abc123", 8: "def456"}) == 0
    assert prune_thumbnails(index, {7: "changed"}) == 2  # 7's content changed, 8 is gone
    assert not t.exists() and not other.exists()
    with pytest.raises(ImageNotFoundError):
        thumbnail(index, 9, str(root / "nope.jpg"), "x")
    (root / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DecodeError):
        thumbnail(index, 10, str(root / "bad.jpg"), "y")
