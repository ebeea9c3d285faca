"""IVF inverted lists in a memory-mapped file (issue 14 §3): same hits as in RAM, reopen, copy-on-write,
crash safety of the lists file + index file pair, typed errors for damaged lists files, a moved index
directory, add/remove then reopen, and a clean stdout although FAISS printf's on every growth.

Real FAISS on seeded clustered vectors; the in-RAM index built the same way is the reference.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from frozenlens.errors import IndexCorruptError, VectorFileMismatchError
from frozenlens.retriever import AutoPolicy, VectorIndex, _ondisk, _persist
from frozenlens.retriever.choice import factory_for, lists_on_disk, recommend_factory
from frozenlens.retriever.spaces import VectorSpaces
from frozenlens.retriever.tuning import build

from .test_index_auto import chunks_of
from .test_retriever import _one_faiss_thread, clustered  # noqa: F401 - the autouse fixture

FACTORIES = ["IVF32,Flat", "IVF32,SQ8", "OPQ8,IVF32,PQ8", "IVF32,PQ8x4,Refine(SQfp16)"]
SHARD = 2500
_TRAINED: dict[str, VectorIndex] = {}


@pytest.fixture(scope="module")
def data():
    x = clustered(5, 12_040, 32, centres=80).astype(np.float16).astype(np.float32)
    ids = np.random.default_rng(3).permutation(50_000)[:12_000].astype(np.int64)
    return ids, x[:12_000], x[12_000:]


def _lists_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith((".ivfdata", ".work", ".tmp")))


def _same(a: VectorIndex, b: VectorIndex, q: np.ndarray, k: int = 10) -> None:
    sa, ia = a.search(q, k)
    sb, ib = b.search(q, k)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(sa, sb)


def _template(factory: str, x: np.ndarray) -> VectorIndex:
    """An empty index of ``factory`` trained on a random sample of ``x`` (once per factory)."""
    if factory not in _TRAINED:
        _TRAINED[factory] = VectorIndex.create(32, factory, use_gpu=False)
        _TRAINED[factory].train(x[np.random.default_rng(0).choice(len(x), 3000, replace=False)])
    return _TRAINED[factory]


def _pair(factory, data, directory):
    """The same vectors merged shard by shard into an in-RAM index and one with its lists in ``directory``
    (trained once per factory: OPQ training is slow)."""
    ids, x, _ = data
    template = _template(factory, x)
    ram, disk = template.empty_like(), template.empty_like()
    disk.move_lists_to_disk(directory)
    for i in range(0, len(ids), SHARD):
        for index in (ram, disk):
            shard = template.empty_like()
            shard.add(ids[i : i + SHARD], x[i : i + SHARD])
            index.merge(shard)
    return ram, disk


def test_build_merges_shards_into_lists_on_disk(data, tmp_path):
    ids, x, q = data
    chunks = chunks_of(ids, x, 1000)
    ram = build(FACTORIES[1], 32, chunks, shard=SHARD)
    disk = build(FACTORIES[1], 32, chunks, shard=SHARD, lists_dir=tmp_path)
    assert disk.lists_on_disk and not ram.lists_on_disk and len(disk) == len(ids)
    _same(ram, disk, q)
    assert [n.endswith(".work") for n in _lists_files(tmp_path)] == [True]


@pytest.mark.parametrize("factory", FACTORIES)
def test_same_hits_as_in_ram_then_reopened(factory, data, tmp_path):
    ids, x, q = data
    ram, disk = _pair(factory, data, tmp_path)
    assert disk.lists_on_disk and not ram.lists_on_disk and disk.is_trained and len(disk) == len(ids)
    assert disk.k_factor == ram.k_factor and (disk.k_factor is not None) == ("Refine" in factory)
    _same(ram, disk, q)
    disk.save(tmp_path / "semantic.faiss")
    (lists,) = _lists_files(tmp_path)  # the working file went; one generation file remains
    assert lists.startswith("semantic.faiss.") and lists.endswith(".ivfdata")
    ram.save(tmp_path / "ram.faiss")  # the lists' bytes moved out of the index file into the lists file
    moved = (tmp_path / "ram.faiss").stat().st_size - (tmp_path / "semantic.faiss").stat().st_size
    assert 0.9 * (tmp_path / lists).stat().st_size < moved <= (tmp_path / lists).stat().st_size
    _same(ram, disk, q)  # now mapped on the saved file
    again = VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False)
    assert again.lists_on_disk and again.nprobe == ram.nprobe
    _same(ram, again, q)
    np.testing.assert_array_equal(again.ids(), np.sort(ids))


def test_add_remove_reopen_and_copy_on_write(data, tmp_path):
    ids, x, q = data
    factory = FACTORIES[3]
    ram, disk = _pair(factory, data, tmp_path)
    disk.save(tmp_path / "semantic.faiss")
    (first,) = _lists_files(tmp_path)
    digest = hashlib.sha256((tmp_path / first).read_bytes()).hexdigest()
    loaded = VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False)
    reader = VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False)  # another reader of the same file
    gone, back = ids[::7], ids[::14]
    for index in (ram, loaded):
        assert index.remove(gone) == gone.size
        index.add(back, x[::14])
        index.add(np.array([90_000, 90_001]), x[:2])
    _same(ram, loaded, q)
    _same(VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False), reader, q)
    # the mapped lists file was never written: the changes went to a working copy
    assert hashlib.sha256((tmp_path / first).read_bytes()).hexdigest() == digest
    assert any(name.endswith(".work") for name in _lists_files(tmp_path))
    loaded.save(tmp_path / "semantic.faiss")
    (second,) = _lists_files(tmp_path)  # new generation; the old one and the working copy are gone
    assert second != first
    reopened = VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False)
    _same(ram, reopened, q)
    assert len(reopened) == len(ram) and 90_001 in reopened.ids()
    assert reader.search(q, 10)[1].shape == (len(q), 10)  # a reader of the removed generation keeps its mapping


def test_a_failed_save_keeps_the_old_index_usable(data, tmp_path, monkeypatch):
    ids, x, q = data
    _, disk = _pair(FACTORIES[2], data, tmp_path)
    path = tmp_path / "semantic.faiss"
    disk.save(path)
    before = _lists_files(tmp_path)
    old = VectorIndex.load(path, use_gpu=False)
    disk.remove(ids[:100])

    def crash(*args, **kwargs):  # between the lists file's rename and the index file's
        assert len(_lists_files(tmp_path)) == 3  # old generation, working copy, new generation
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_persist, "write_atomic", crash)
    with pytest.raises(OSError):
        disk.save(path)
    monkeypatch.undo()
    assert [n for n in _lists_files(tmp_path) if n.endswith(".ivfdata")] == before  # the new one went
    _same(old, VectorIndex.load(path, use_gpu=False), q)  # the old pair is intact
    assert not np.isin(ids[:100], disk.search(q, 50)[1]).any()  # the index in memory still works
    disk.save(path)
    assert len(VectorIndex.load(path, use_gpu=False)) == len(ids) - 100


def test_killed_between_lists_and_index_file_leaves_the_old_index(data, tmp_path):
    ids, x, q = data
    _, disk = _pair(FACTORIES[0], data, tmp_path)
    path = tmp_path / "semantic.faiss"
    disk.save(path)
    old = VectorIndex.load(path, use_gpu=False)
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        from frozenlens.retriever import VectorIndex, _persist
        vi = VectorIndex.load({str(path)!r}, use_gpu=False)
        vi.remove(vi.ids()[:500])
        _persist.write_atomic = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        vi.save({str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, env=_env(), timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    leftovers = _lists_files(tmp_path)
    assert len(leftovers) == 3  # the old generation, the dead writer's working copy, the unnamed new one
    _same(old, VectorIndex.load(path, use_gpu=False), q)
    removed = VectorSpaces(tmp_path, {}, {"semantic": 32}).remove_stale_files()
    assert sorted(removed) == sorted(set(leftovers) - {_persist.recorded_lists_file(path).name})
    _same(old, VectorIndex.load(path, use_gpu=False), q)


def test_damaged_lists_files_raise_typed_errors(data, tmp_path):
    ids, x, q = data
    _, disk = _pair(FACTORIES[1], data, tmp_path)
    path = tmp_path / "semantic.faiss"
    disk.save(path)
    lists = _persist.recorded_lists_file(path)
    good = lists.read_bytes()
    lists.write_bytes(good[: len(good) // 2])
    with pytest.raises(IndexCorruptError, match="truncated"):
        VectorIndex.load(path, use_gpu=False)
    lists.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, another save's token
    with pytest.raises(VectorFileMismatchError):
        VectorIndex.load(path, use_gpu=False)
    lists.unlink()
    with pytest.raises(IndexCorruptError, match="missing"):
        VectorIndex.load(path, use_gpu=False)
    lists.write_bytes(good)
    assert len(VectorIndex.load(path, use_gpu=False)) == len(ids)


def test_a_moved_index_directory_still_opens(data, tmp_path):
    ids, x, q = data
    (tmp_path / "a").mkdir()
    ram, disk = _pair(FACTORIES[3], data, tmp_path / "a")
    disk.save(tmp_path / "a" / "semantic.faiss")
    del disk
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    os.rename(tmp_path / "a", tmp_path / "c")
    for d in ("b", "c"):
        _same(ram, VectorIndex.load(tmp_path / d / "semantic.faiss", use_gpu=False), q)


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_writing_lists_prints_nothing_on_stdout(tmp_path):
    """FAISS printf's "resizing <file>" on every growth of on-disk lists; our writes keep stdout clean."""
    script = textwrap.dedent(f"""
        import numpy as np, faiss
        from frozenlens.retriever import VectorIndex
        from frozenlens.retriever.tuning import build
        rng = np.random.default_rng(0)
        x = rng.standard_normal((6000, 16)).astype("float32")
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        ids = np.arange(6000)
        import sys
        if sys.argv[1] == "raw":  # FAISS's own growth path, uncontained: proves the trap is real
            od = faiss.OnDiskInvertedLists(4, 8, {str(tmp_path / "raw.data")!r})
            od.add_entries(0, 1, faiss.swig_ptr(np.zeros(1, "int64")), faiss.swig_ptr(np.zeros(8, "uint8")))
        else:
            vi = build("IVF16,Flat", 16, lambda: [(ids[:3000], x[:3000])], lists_dir={str(tmp_path)!r})
            vi.save({str(tmp_path / "v.faiss")!r})
            vi = VectorIndex.load({str(tmp_path / "v.faiss")!r}, use_gpu=False)
            for i in range(3000, 6000, 500):
                vi.add(ids[i:i + 500], x[i:i + 500])
            vi.remove(ids[:2000])
            vi.save({str(tmp_path / "v.faiss")!r})
        print("DONE")
    """)
    for mode, want in (("raw", b"resizing"), ("ours", None)):
        proc = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, env=_env(), timeout=120)
        assert proc.returncode == 0, proc.stderr.decode()
        if want:
            assert want in proc.stdout
        else:
            assert proc.stdout == b"DONE\n"


def test_auto_and_the_ivfpq_ondisk_type():
    big = 50_000_000
    roomy, tight = AutoPolicy(64 << 30), AutoPolicy(256 << 20)
    assert not lists_on_disk("auto", big, 512, roomy) and not lists_on_disk("ivfpq", big, 512, tight)
    assert lists_on_disk("auto", big, 512, tight) and lists_on_disk("ivfpq-ondisk", 0, 512)
    # in RAM the budget narrows the codes; on disk they stay the widest, re-ranking only if its codes fit
    assert recommend_factory(big, 512, roomy) == "OPQ64,IVF32768,PQ64,Refine(SQfp16)"
    assert recommend_factory(big, 512, tight) == "OPQ64,IVF32768,PQ64"
    assert recommend_factory(100_000, 512, AutoPolicy(1 << 20)) == "OPQ64,IVF1024,PQ64"
    assert factory_for("ivfpq-ondisk", 0, 64) == "OPQ16,IVF4096,PQ16,Refine(SQfp16)"
    assert not lists_on_disk("auto", 100_000, 512, AutoPolicy(100_000 * 24))  # 8-byte codes still fit


def test_spaces_reconcile_by_id_with_lists_on_disk(tmp_path):
    """A real SQLite store is the truth: spaces with on-disk lists reopen, reconcile (add + remove by id)
    with copy-on-write, save a new generation, and the stale-file sweep keeps only the named lists files."""
    from frozenlens.store import PhotoFields, Store

    x = clustered(9, 2400, 32, centres=40)
    store = Store.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    dims = {"semantic": 32, "visual": 32, "caption": 32}

    def add(rows: range) -> None:
        with store.batch() as w:
            for i in rows:
                w.add_image(path=f"p{i}.jpg", size=1, mtime_ns=1, content_hash=f"h{i}", fields=PhotoFields(),
                            semantic=x[i], visual=x[-1 - i], labels=None, captions=[], caption_sig=None)

    add(range(2000))
    index_dir = tmp_path / "index"
    index_dir.mkdir()
    spaces = VectorSpaces.open(index_dir, dims, "IVF32,Flat", lazy=())
    spaces.reconcile(store)
    assert all(spaces[space].is_trained and not spaces[space].lists_on_disk for space in ("semantic", "visual"))
    tuned = spaces.adapt(store, "ivfpq-ondisk", AutoPolicy(1 << 30, queries=50))  # the type's rule moves the lists
    assert set(tuned) == {"semantic", "visual"} and all(spaces[s].lists_on_disk for s in ("semantic", "visual"))
    spaces.save()
    assert spaces.remove_stale_files() == []  # the working files went with the save
    first = {_persist.recorded_lists_file(index_dir / f"{s}.faiss") for s in ("semantic", "visual")}
    with store.batch() as w:
        w.delete(list(range(1, 200)))
    add(range(2000, 2400))

    again = VectorSpaces.open(index_dir, dims, "IVF32,Flat", lazy=())
    assert again["semantic"].lists_on_disk and len(again["semantic"]) == 2000
    assert again.reconcile(store)["semantic"] == (400, 199)
    for space in ("semantic", "visual"):
        np.testing.assert_array_equal(again[space].ids(), store.vector_ids(space))
    ids = store.vector_ids("semantic")
    reference = VectorIndex.create(32, "Flat", use_gpu=False)
    reference.add(ids, store.vectors("semantic", ids.tolist(), 32))
    q = x[::97]
    hits = again["semantic"].search(q, 5)[1]
    truth = reference.search(q, 5)[1]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(hits, truth)]) >= 0.8
    again.save()
    again.remove_stale_files()
    now = {_persist.recorded_lists_file(index_dir / f"{s}.faiss") for s in ("semantic", "visual")}
    assert not now & first and all(p.exists() for p in now) and not any(p.exists() for p in first)
    assert sorted(_lists_files(index_dir)) == sorted(p.name for p in now)
    reopened = VectorSpaces.open(index_dir, dims, "IVF32,Flat", lazy=())
    assert reopened.reconcile(store)["semantic"] == (0, 0)
    np.testing.assert_array_equal(reopened["semantic"].search(q, 5)[1], hits)
    store.close()


def test_an_empty_trained_index_on_disk_saves_loads_and_grows(data, tmp_path):
    ids, x, q = data
    template = _template(FACTORIES[0], x)
    index = template.empty_like()
    index.move_lists_to_disk(tmp_path)
    index.save(tmp_path / "semantic.faiss")
    loaded = VectorIndex.load(tmp_path / "semantic.faiss", use_gpu=False)
    assert loaded.lists_on_disk and len(loaded) == 0 and (loaded.search(q, 3)[1] == -1).all()
    loaded.add(ids[:500], x[:500])
    reference = template.empty_like()
    reference.add(ids[:500], x[:500])
    _same(reference, loaded, q)


def test_a_reader_that_races_a_writer_reads_the_new_index(data, tmp_path, monkeypatch):
    """The writer replaces the index file and removes the old lists file between the reader's read of the
    index file and its mapping of the lists file: the reader reads the index file again."""
    ids, x, q = data
    _, disk = _pair(FACTORIES[0], data, tmp_path)
    path = tmp_path / "semantic.faiss"
    disk.save(path)
    disk.remove(ids[:10])
    real, raced = _ondisk.attach, []

    def attach_after_the_writer(*args):
        if not raced:
            raced.append(disk.save(path))  # the old lists file goes here
        return real(*args)

    monkeypatch.setattr(_ondisk, "attach", attach_after_the_writer)
    loaded = VectorIndex.load(path, use_gpu=False)
    assert raced and len(loaded) == len(ids) - 10
    _same(disk, loaded, q)
