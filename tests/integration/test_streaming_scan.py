"""The streaming scan (issue 14 §3): files are classified while the scan is still
running, so the cases that depend on what the scan has not reached yet must come
out as they did when the whole work list was built first."""

from __future__ import annotations

import shutil
from pathlib import Path

from frozenlens.engine import Engine
from frozenlens.indexer.scan import INDEX_MARKER
from frozenlens.progress import Progress

from ..conftest import write_noise_jpegs


def by_name(engine: Engine, root: Path) -> dict[str, tuple[int, str, int | None]]:
    return {Path(p).relative_to(root).as_posix(): (s.id, s.status, s.duplicate_of)
            for p, s in engine.store.file_states([str(root)]).items()}


def test_a_copy_scanned_before_its_indexed_original_is_a_duplicate(tmp_path, lite_encoder):
    photos = tmp_path / "photos"
    write_noise_jpegs(photos / "b", 3)
    with Engine.open(tmp_path / "index", encoder=lite_encoder, create=True) as engine:
        engine.index([photos])
        before = by_name(engine, photos)
        # "a/" is walked before "b/": when the copy is hashed, its original has not
        # been reached by this run's scan yet (it could have moved out of the roots)
        shutil.copy(photos / "b" / "img_0001.jpg", photos / "a_copy.jpg")
        r = engine.index([photos])
        assert (r.new, r.encoded, r.duplicates, r.moved, r.deleted) == (0, 0, 1, 0, 0)
        after = by_name(engine, photos)
        assert after["a_copy.jpg"][1:] == ("duplicate", before["b/img_0001.jpg"][0])
        assert {k: v for k, v in after.items() if k != "a_copy.jpg"} == before


def test_a_file_moved_out_of_the_scanned_set_but_still_on_disk_is_a_move(tmp_path, lite_encoder):
    """The original still exists at its path but is no longer scanned (its folder now holds an
    index marker, so the scan skips it): when the copy is hashed, the scan has not said yet
    whether the original is still in the scanned set, so the copy waits for the end of the scan
    and is then a move (same id, nothing encoded), as when the work list was built first."""
    photos = tmp_path / "photos"
    write_noise_jpegs(photos / "b", 3)
    with Engine.open(tmp_path / "index", encoder=lite_encoder, create=True) as engine:
        engine.index([photos])
        old = by_name(engine, photos)["b/img_0002.jpg"][0]
        shutil.copy(photos / "b" / "img_0002.jpg", photos / "a_new.jpg")
        (photos / "b" / INDEX_MARKER).write_text("")
        r = engine.index([photos])
        # img_0002 moved to a_new.jpg; img_0000/0001 are gone from the scanned set
        assert (r.encoded, r.moved, r.duplicates, r.deleted) == (0, 1, 0, 2)
        after = by_name(engine, photos)
        assert after["a_new.jpg"][:2] == (old, "indexed")  # same id, same vectors
        assert "b/img_0002.jpg" not in after


def test_progress_total_is_unknown_until_the_scan_ends(tmp_path, lite_encoder):
    photos = tmp_path / "photos"
    write_noise_jpegs(photos, 40)
    events: list[Progress] = []
    with Engine.open(tmp_path / "index", encoder=lite_encoder, create=True) as engine:
        engine.index([photos], batch_size=4, progress=events.append)
    scan_end = next(i for i, p in enumerate(events) if p.stage == "scan" and p.total is not None)
    assert events[scan_end].total == 40
    encode = [p for p in events if p.stage == "encode"]
    assert encode and all(p.total in (None, 40) for p in encode)
    assert all(p.total == 40 for p in events[scan_end:] if p.stage in ("encode", "finish"))
    assert events[-1].stage == "finish" and (events[-1].done, events[-1].total) == (40, 40)


def test_cli_bar_gets_its_total_when_the_scan_ends():
    from frozenlens.cli.progress import IndexBar

    bar = IndexBar()
    common = dict(new=0, changed=0, skipped=0, failed=0, moved=0, duplicates=0, deleted=0)
    bar(Progress(stage="encode", done=4, total=None, **common))
    assert bar.bar.total is None
    bar(Progress(stage="encode", done=8, total=12, **common))
    assert (bar.bar.n, bar.bar.total) == (8, 12)
    bar.close()


def test_ids_do_not_depend_on_thread_timing(tmp_path, lite_encoder):
    """Byte-identical copies, moves and a changed file race through the decoder pool: whatever
    the timing (one worker, or four and a small batch so commits interleave with classification),
    the same folder gets the same rows, ids, statuses and primaries."""
    photos = tmp_path / "photos"
    originals = write_noise_jpegs(photos / "m", 12)
    for i, src in enumerate(originals[:6]):  # copies before and after their original in scan order
        shutil.copy(src, photos / f"a_copy_{i}.jpg")
        shutil.copy(src, photos / "m" / f"z_copy_{i}.jpg")

    def build(name: str, workers: int, batch: int) -> tuple[dict, dict]:
        root = tmp_path / name
        shutil.copytree(photos, root)
        with Engine.open(tmp_path / f"index-{name}", encoder=lite_encoder, create=True) as engine:
            engine.index([root], workers=workers, batch_size=batch)
            first = by_name(engine, root)
            # second run: one moved, one changed into a copy of another, one new copy of a changed file
            (root / "m" / "img_0007.jpg").rename(root / "moved_7.jpg")
            shutil.copy(root / "m" / "img_0008.jpg", root / "b_copy_of_old_8.jpg")
            shutil.copy(root / "m" / "img_0009.jpg", root / "m" / "img_0008.jpg")
            engine.index([root], workers=workers, batch_size=batch)
            return first, by_name(engine, root)

    reference = build("serial", workers=1, batch=64)
    for attempt in range(3):
        assert build(f"threads{attempt}", workers=4, batch=2) == reference
