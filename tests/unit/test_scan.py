"""Tests for frozenlens.indexer.scan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from frozenlens.errors import FrozenLensError, ScanRootNotFoundError
from frozenlens.indexer.scan import (
    IMAGE_EXTENSIONS,
    INDEX_MARKER,
    FileEntry,
    ScanProblem,
    image_extensions,
    scan,
)


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def rel(entries: list[FileEntry], root: Path) -> list[str]:
    return [os.path.relpath(e.path, root) for e in entries]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in ["b.jpg", "a.PNG", "notes.txt", "z.JpEg", "sub/c.gif", "sub/deeper/d.webp",
                 "sub/e.tif", "aa/f.bmp", ".hidden/g.jpg", ".h.jpg", "doc.pdf"]:
        touch(root / name)
    return root


def test_nested_dirs_files_first_then_subdirs_sorted(tree: Path) -> None:
    got = rel(list(scan([tree])), tree)
    assert got == ["a.PNG", "b.jpg", "z.JpEg", "aa/f.bmp", "sub/c.gif", "sub/e.tif",
                   "sub/deeper/d.webp"]


def test_order_is_deterministic(tree: Path) -> None:
    assert list(scan([tree])) == list(scan([tree]))


def test_entries_are_absolute_with_stat_fields(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree.parent)
    entries = list(scan(["photos"]))
    e = entries[0]
    assert os.path.isabs(e.path) and e.path == str(tree / "a.PNG")
    st = os.stat(e.path)
    assert (e.size, e.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_extensions_case_insensitive_and_overridable(tree: Path) -> None:
    assert rel(list(scan([tree], extensions=[".PNG", "Gif"])), tree) == ["a.PNG", "sub/c.gif"]
    assert {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"} == IMAGE_EXTENSIONS
    assert image_extensions() >= IMAGE_EXTENSIONS


def test_hidden_skipped_by_default_and_configurable(tree: Path) -> None:
    assert not any("hidden" in p or ".h.jpg" in p for p in rel(list(scan([tree])), tree))
    with_hidden = rel(list(scan([tree], include_hidden=True)), tree)
    assert ".h.jpg" in with_hidden and ".hidden/g.jpg" in with_hidden


def test_hidden_root_is_still_walked(tmp_path: Path) -> None:
    touch(tmp_path / ".archive" / "p.jpg")
    assert len(list(scan([tmp_path / ".archive"]))) == 1


def test_symlink_loop_terminates(tmp_path: Path) -> None:
    root = tmp_path / "r"
    touch(root / "a" / "x.jpg")
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "a", root / "a" / "self")
    got = rel(list(scan([root])), root)
    assert got == ["a/x.jpg"]


def test_symlinked_dir_followed_once_and_path_not_resolved(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    touch(outside / "y.jpg")
    root = tmp_path / "r"
    touch(root / "real" / "x.jpg")
    os.symlink(root / "real", root / "zlink")  # second path to real/
    os.symlink(outside, root / "ext")  # only path to elsewhere/
    got = rel(list(scan([root], links="all")), root)
    assert got == ["ext/y.jpg", "real/x.jpg"]
    assert rel(list(scan([root], links="none")), root) == ["real/x.jpg"]
    # by default the scan does not leave the root: the link inside it is followed
    # (and walked once), the one leading out is skipped and reported
    problems: list[ScanProblem] = []
    assert rel(list(scan([root], on_problem=problems.append)), root) == ["real/x.jpg"]
    assert [(p.path, p.reason) for p in problems] == [(str(root / "ext"), "outside-roots")]


def test_symlinked_file_yielded_at_its_own_path(tmp_path: Path) -> None:
    target = touch(tmp_path / "store" / "t.jpg")
    root = tmp_path / "r"
    root.mkdir()
    os.symlink(target, root / "link.jpg")
    entries = list(scan([root], links="all"))
    assert [e.path for e in entries] == [str(root / "link.jpg")]
    assert entries[0].size == 1
    assert list(scan([root], links="none")) == []
    problems: list[ScanProblem] = []
    assert list(scan([root], on_problem=problems.append)) == []  # it leads out of the root
    assert [(p.path, p.reason) for p in problems] == [(str(root / "link.jpg"), "outside-roots")]
    os.symlink(root / "link.jpg", root / "second.jpg")  # a link to a link: resolved, still outside
    assert list(scan([root])) == []


def test_links_inside_the_roots_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "r"
    target = touch(root / "store" / "t.jpg")
    os.symlink(target, root / "file_link.jpg")
    os.symlink(root / "store", root / "dir_link")
    problems: list[ScanProblem] = []
    got = rel(list(scan([root], on_problem=problems.append)), root)
    assert got == ["file_link.jpg", "dir_link/t.jpg"]  # files first; store/ is walked once, at the first path reached
    assert problems == []


def test_link_to_another_named_root_is_inside(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    touch(b / "y.jpg")
    a.mkdir()
    os.symlink(b, a / "to_b")
    problems: list[ScanProblem] = []
    got = sorted(Path(e.path).relative_to(tmp_path).as_posix() for e in scan([a, b], on_problem=problems.append))
    assert got == ["a/to_b/y.jpg"]  # b/ was already walked through the link: once only
    assert problems == []


def test_link_to_filesystem_root_is_not_followed(tmp_path: Path) -> None:
    touch(tmp_path / "p.jpg")
    os.symlink("/", tmp_path / "everything")
    problems: list[ScanProblem] = []
    assert rel(list(scan([tmp_path], on_problem=problems.append)), tmp_path) == ["p.jpg"]
    assert [p.reason for p in problems] == ["outside-roots"]


def test_root_that_is_a_symlink_is_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    touch(real / "x.jpg")
    os.symlink(real / "x.jpg", real / "inner.jpg")
    os.symlink(real, tmp_path / "named")
    problems: list[ScanProblem] = []
    got = rel(list(scan([tmp_path / "named"], on_problem=problems.append)), tmp_path / "named")
    assert got == ["inner.jpg", "x.jpg"]
    assert problems == []


def test_unknown_link_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="links must be one of"):
        list(scan([tmp_path], links="some"))


def test_broken_symlink_reported(tmp_path: Path) -> None:
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    touch(tmp_path / "ok.jpg")
    problems: list[ScanProblem] = []
    assert rel(list(scan([tmp_path], on_problem=problems.append)), tmp_path) == ["ok.jpg"]
    assert [(Path(p.path).name, p.reason) for p in problems] == [("dangling.jpg", "broken-symlink")]


def test_unreadable_dir_reported_and_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir
    blocked = str(tree / "sub")

    def fake_scandir(path):  # type: ignore[no-untyped-def]
        if os.fspath(path) == blocked:
            raise PermissionError(13, "Permission denied", blocked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    problems: list[ScanProblem] = []
    got = rel(list(scan([tree], on_problem=problems.append)), tree)
    assert got == ["a.PNG", "b.jpg", "z.JpEg", "aa/f.bmp"]
    assert problems == [ScanProblem(blocked, "unreadable", problems[0].message)]
    assert "Permission denied" in problems[0].message


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unreadable_dir_real_permissions(tree: Path) -> None:
    os.chmod(tree / "sub", 0)
    try:
        problems: list[ScanProblem] = []
        list(scan([tree], on_problem=problems.append))
        assert [p.reason for p in problems] == ["unreadable"]
    finally:
        os.chmod(tree / "sub", 0o755)


def test_vanished_file_reported_and_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir
    victim = tree / "b.jpg"

    class ListThenDelete:
        """Lists the directory, then deletes a file before the caller stats it."""

        def __init__(self, path: str) -> None:
            with real_scandir(path) as it:
                self.entries = list(it)
            if os.fspath(path) == str(tree) and victim.exists():
                victim.unlink()

        def __enter__(self):  # type: ignore[no-untyped-def]
            return iter(self.entries)

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(os, "scandir", ListThenDelete)
    problems: list[ScanProblem] = []
    got = rel(list(scan([tree], on_problem=problems.append)), tree)
    assert "b.jpg" not in got and "a.PNG" in got
    assert [(p.path, p.reason) for p in problems] == [(str(victim), "vanished")]


def test_default_on_problem_logs_instead_of_raising(
    tree: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_scandir = os.scandir

    def fake_scandir(path):  # type: ignore[no-untyped-def]
        if os.fspath(path) == str(tree / "aa"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", fake_scandir)
    assert len(list(scan([tree]))) == 6
    assert "unreadable" in caplog.text


def test_sidecars_attached_case_insensitively(tmp_path: Path) -> None:
    touch(tmp_path / "Photo.JPG")
    for name in ["photo.txt", "Photo.JPG.json", "PHOTO.xmp", "photo.jpg.txt", "photo.jpg.xmp",
                 "photo.json", "other.txt", "photo.md", "photograph.txt"]:
        touch(tmp_path / name, b"caption")
    (entry,) = list(scan([tmp_path]))
    names = sorted(Path(s.path).name for s in entry.sidecars)
    assert names == sorted(["photo.txt", "Photo.JPG.json", "PHOTO.xmp", "photo.jpg.txt",
                            "photo.jpg.xmp", "photo.json"])
    assert [s.path for s in entry.sidecars] == sorted(s.path for s in entry.sidecars)
    side = entry.sidecars[0]
    st = os.stat(side.path)
    assert (side.size, side.mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_sidecar_shared_by_same_stem_images(tmp_path: Path) -> None:
    touch(tmp_path / "p.jpg")
    touch(tmp_path / "p.png")
    touch(tmp_path / "p.txt", b"shared")
    entries = list(scan([tmp_path]))
    assert [len(e.sidecars) for e in entries] == [1, 1]


def test_root_that_is_a_file(tmp_path: Path) -> None:
    img = touch(tmp_path / "one.jpg")
    touch(tmp_path / "one.txt", b"cap")
    txt = touch(tmp_path / "two.txt")
    (entry,) = list(scan([img]))
    assert entry.path == str(img) and [Path(s.path).name for s in entry.sidecars] == ["one.txt"]
    assert list(scan([txt])) == []


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(ScanRootNotFoundError) as info:
        scan([tmp_path, tmp_path / "nope"])
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, FrozenLensError)
    assert info.value.filename == str(tmp_path / "nope")


def test_overlapping_roots_yield_each_file_once(tree: Path) -> None:
    entries = list(scan([tree / "sub", tree, tree / "b.jpg"]))
    paths = [e.path for e in entries]
    assert len(paths) == len(set(paths)) == 7
    assert rel(entries, tree)[:3] == ["sub/c.gif", "sub/e.tif", "sub/deeper/d.webp"]


def test_index_directory_skipped(tree: Path) -> None:
    index = tree / "index"
    touch(index / INDEX_MARKER, b"")
    touch(index / "thumb.jpg")
    touch(index / "nested" / "t2.jpg")
    assert not any(p.startswith("index") for p in rel(list(scan([tree])), tree))
