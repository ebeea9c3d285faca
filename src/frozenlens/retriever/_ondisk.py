"""IVF inverted lists in a memory-mapped file (internal): FAISS ``OnDiskInvertedLists``.

An IVF index (IVF-Flat/SQ/PQ, under OPQ or not, with or without the
``Refine(SQfp16)`` re-ranking of :mod:`._refine`) can keep its inverted lists
-- the codes and ids, nearly all of its bytes -- in a file that FAISS maps into
memory, so the index can be larger than RAM (what ``faiss.contrib.ondisk``
does). What stays in RAM: the coarse quantizer, the OPQ matrix, the direct map
(id -> list, offset), and the refinement codes of a refined index.

**Files.** A saved index ``semantic.faiss`` names its lists file
``semantic.faiss.<token>.ivfdata`` (a new random token per save) with its
size and CRC-32. The lists file holds every list contiguously (codes, then
ids, FAISS's own layout with capacity = size) and ends with ``FLLISTS1`` and
the token. :func:`save_lists` writes it completely (temp file, fsync, rename),
then :mod:`._persist` fsyncs the directory, renames the index file that names it into place, then
:mod:`._persist` removes the lists file the index file named before. A crash
in between leaves the old index file and its old lists file, plus an
unreferenced new lists file that nothing trusts (the writer removes it, see
``VectorSpaces.remove_stale_files``). Loading (:func:`attach`) checks the
size and the token before FAISS maps anything, so a missing, truncated or
foreign lists file raises :class:`IndexCorruptError` /
:class:`VectorFileMismatchError`, never a FAISS crash (a truncated mapping
would be a SIGBUS); the CRC is recorded, not re-read at load (it would read
the whole file).

**Copy-on-write.** A loaded lists file is mapped read-only and never written:
readers of other processes may have it mapped. The first change (add, remove,
merge) copies the lists to a *working file* (``.lists.<pid>.<token>.work``,
next to the lists file or, where that directory is read-only, in the temp
directory) mapped read-write; saving writes a fresh lists file from it and
drops it. A working file whose process is gone is a crash leftover.

**FAISS prints.** ``OnDiskInvertedLists`` printf's ``resizing <file> to N
bytes`` to stdout whenever a working file grows, which would corrupt a
``--json`` output. Lists files are therefore written here, never grown by
FAISS, and every change of a working file runs in :func:`quiet_stdout`,
which points file descriptor 1 at ``/dev/null`` for its duration (under one
process-wide lock; anything another thread writes to fd 1 meanwhile is lost
too -- changes happen in the single writer, not while results are printed).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from frozenlens.errors import IndexCorruptError, IndexInputError, VectorFileMismatchError

SUFFIX = ".ivfdata"
WORK_SUFFIX = ".work"
_MAGIC = b"FLLISTS1"
_TRAILER = len(_MAGIC) + 8
_ID_BYTES = 8
_CHUNK = 1 << 24
#: FAISS's prefetch threads per search (default 32): it starts and joins them on every query, which cost
#: 6x the batch-1 QPS with the lists in the page cache (docs/benchmarks.md); faults read pages as needed
PREFETCH_THREADS = 0
_stdout_lock = threading.RLock()  # re-entered when both sides of a merge are on disk


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Discard what native code writes to file descriptor 1 inside the block (see module doc)."""
    with _stdout_lock:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stdout.flush()
        try:
            saved = os.dup(1)
        except OSError:  # no fd 1 (a daemon): nothing to keep clean
            yield
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, 1)
            finally:
                os.close(null)
            try:
                yield
            finally:
                ctypes.CDLL(None).fflush(None)  # C stdio buffers go to /dev/null, not later to fd 1
                os.dup2(saved, 1)
        finally:
            os.close(saved)


def ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index inside ``index`` (a view), or None."""
    return faiss.try_extract_index_ivf(index)


def disk_lists(ivf: faiss.IndexIVF | None) -> faiss.OnDiskInvertedLists | None:
    """The on-disk lists of ``ivf`` (a view), or None when they are in RAM (or there is no IVF)."""
    if ivf is None:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


def _sizes(lists: faiss.InvertedLists) -> np.ndarray:
    return np.array([lists.list_size(i) for i in range(lists.nlist)], dtype=np.uint64)


def _write_lists(lists: faiss.InvertedLists, path: Path, token: bytes | None) -> tuple[np.ndarray, int, int]:
    """Write ``lists`` contiguously to a new file ``path`` (fsynced); with ``token``, the trailer too.
    Returns (sizes uint64 (nlist,), bytes of list data, crc32 of the whole file)."""
    sizes, code_size, crc, total = _sizes(lists), int(lists.code_size), 0, 0
    with open(path, "xb") as f:
        def put(data: bytes) -> None:
            nonlocal crc
            f.write(data)
            crc = zlib.crc32(data, crc)

        for i in np.nonzero(sizes)[0].tolist():
            n = int(sizes[i])
            codes, ids = lists.get_codes(i), lists.get_ids(i)
            try:
                put(faiss.rev_swig_ptr(codes, n * code_size).tobytes())
                put(faiss.rev_swig_ptr(ids, n).tobytes())
            finally:
                lists.release_codes(i, codes)
                lists.release_ids(i, ids)
            total += n * (code_size + _ID_BYTES)
        if token is not None:
            put(_MAGIC + token)
        f.flush()
        os.fsync(f.fileno())
    return sizes, total, crc


def _mapped(nlist: int, code_size: int, path: Path, sizes: np.ndarray, total: int, *,
            writable: bool) -> faiss.OnDiskInvertedLists:
    """An owning ``OnDiskInvertedLists`` over the contiguous lists in ``path``."""
    od = faiss.OnDiskInvertedLists(nlist, code_size, str(path))
    od.set_all_lists_sizes(faiss.swig_ptr(np.ascontiguousarray(sizes, dtype=np.uint64)))
    od.totsize = total
    od.read_only = not writable
    od.prefetch_nthread = PREFETCH_THREADS
    if total:
        od.do_mmap()
    return od


def _swap(ivf: faiss.IndexIVF, new: faiss.InvertedLists) -> faiss.InvertedLists:
    """Put ``new`` (owning proxy) into ``ivf``; returns the previous lists as an owning proxy."""
    old = faiss.downcast_InvertedLists(ivf.invlists)
    if ivf.own_invlists:
        old.this.acquire()
    ivf.own_invlists = False
    new.this.disown()
    ivf.replace_invlists(new, True)
    return old


def _drop(lists: faiss.InvertedLists) -> None:
    """Free lists swapped out by :func:`_swap` (unmaps an on-disk file) and remove a working file."""
    path = Path(lists.filename) if isinstance(lists, faiss.OnDiskInvertedLists) else None
    del lists
    if path is not None and path.name.endswith(WORK_SUFFIX):
        path.unlink(missing_ok=True)


def _work_path(directory: Path) -> Path:
    return directory / f".lists.{os.getpid()}.{secrets.token_hex(8)}{WORK_SUFFIX}"


def move_to_disk(ivf: faiss.IndexIVF, directory: Path) -> None:
    """Move the lists of ``ivf`` into a new working file in ``directory`` (read-write mapped)."""
    if disk_lists(ivf) is not None and not disk_lists(ivf).read_only:
        return
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if not isinstance(lists, (faiss.ArrayInvertedLists, faiss.OnDiskInvertedLists)):
        raise IndexInputError(f"cannot put {type(lists).__name__} inverted lists on disk")
    work = _work_path(directory)
    try:
        sizes, total, _ = _write_lists(lists, work, None)
        od = _mapped(int(ivf.nlist), int(ivf.code_size), work, sizes, total, writable=True)
    except BaseException:
        work.unlink(missing_ok=True)
        raise
    _drop(_swap(ivf, od))


def make_writable(ivf: faiss.IndexIVF) -> None:
    """Copy read-only mapped lists to a working file before a change (copy-on-write; module doc)."""
    od = disk_lists(ivf)
    if od is None or not od.read_only:
        return
    try:
        move_to_disk(ivf, Path(od.filename).parent)
    except OSError as exc:  # a read-only index directory (a reader that reconciles): the temp directory
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        move_to_disk(ivf, Path(tempfile.gettempdir()))


@contextlib.contextmanager
def changing(index: faiss.Index) -> Iterator[None]:
    """Around any change of ``index``: copy-on-write its on-disk lists and silence FAISS's prints."""
    ivf = ivf_of(index)
    if disk_lists(ivf) is None:
        yield
        return
    make_writable(ivf)
    with quiet_stdout():
        yield


# -- saving and loading ----------------------------------------------------------


def lists_name(target: Path, token: str) -> str:
    return f"{target.name}.{token}{SUFFIX}"


@dataclass
class SavedLists:
    """A lists file written for ``target`` and mapped into the index; :meth:`done` or :meth:`undo` next."""

    ivf: Any
    old: Any
    meta: dict[str, Any]
    path: Path

    def done(self) -> None:
        """The index file naming the new lists is in place: free the old lists (a working file goes;
        the caller removes the lists file the index file named before)."""
        old, self.old = self.old, None
        _drop(old)

    def undo(self) -> None:
        """Writing the index file failed: the index maps its old lists again; the new file goes."""
        od = _swap(self.ivf, self.old)
        self.old = None
        del od
        self.path.unlink(missing_ok=True)


def save_lists(index: faiss.Index, target: Path) -> SavedLists | None:
    """Write the on-disk lists of ``index`` to a new lists file for index file ``target`` and map it
    (None when the lists are in RAM). The caller writes the index file with ``meta`` next."""
    ivf = ivf_of(index)
    od = disk_lists(ivf)
    if od is None:
        return None
    token = secrets.token_hex(8)
    final = target.with_name(lists_name(target, token))
    tmp = target.with_name(f".{final.name}.tmp")
    try:
        sizes, total, crc = _write_lists(od, tmp, bytes.fromhex(token))
        os.replace(tmp, final)  # the caller fsyncs the directory before an index file names it
        new = _mapped(int(ivf.nlist), int(ivf.code_size), final, sizes, total, writable=False)
    except BaseException:
        tmp.unlink(missing_ok=True)
        final.unlink(missing_ok=True)
        raise
    meta = {"file": final.name, "size": total + _TRAILER, "crc32": crc, "token": token}
    return SavedLists(ivf, _swap(ivf, new), meta, final)


def attach(index: faiss.Index, directory: Path, meta: Any, where: str) -> None:
    """Map the lists file ``meta`` names (in ``directory``) into ``index``, read with
    ``IO_FLAG_SKIP_IVF_DATA``; checks it first (module doc). ``where``: the index file, for errors."""
    def corrupt(why: str) -> IndexCorruptError:
        return IndexCorruptError(f"vector index {where} is corrupt: {why}")

    try:
        name, size, token = str(meta["file"]), int(meta["size"]), bytes.fromhex(str(meta["token"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise corrupt(f"bad lists-file record ({exc})") from exc
    ivf = ivf_of(index)
    od = disk_lists(ivf)
    if od is None or os.path.basename(name) != name or len(token) != 8:
        raise corrupt("the lists-file record does not match the index")
    path = directory / name
    try:
        with open(path, "rb") as f:
            actual = f.seek(0, os.SEEK_END)
            f.seek(max(0, actual - _TRAILER))
            trailer = f.read(_TRAILER)
    except FileNotFoundError:
        raise ListsFileMissing(corrupt(f"its lists file {name} is missing")) from None
    except OSError as exc:
        raise corrupt(f"cannot read its lists file {name} ({exc})") from exc
    if actual != size or int(od.totsize) + _TRAILER != size:
        raise corrupt(f"its lists file {name} has {actual} bytes, recorded {size} (truncated?)")
    if trailer != _MAGIC + token:
        raise VectorFileMismatchError(f"vector index {where}: lists file {name} belongs to another save")
    if int(od.nlist) != int(ivf.nlist) or int(od.code_size) != int(ivf.code_size):
        raise corrupt("the lists record does not match the IVF index")
    od.filename = str(path)
    od.read_only = True
    od.prefetch_nthread = PREFETCH_THREADS
    if od.totsize:
        try:
            od.do_mmap()
        except RuntimeError as exc:
            raise corrupt(f"cannot map its lists file {name} ({str(exc).strip().splitlines()[-1]})") from exc
    if int(od.compute_ntotal()) != int(ivf.ntotal):
        raise corrupt("the lists file holds another number of vectors than the index")


class ListsFileMissing(Exception):
    """The lists file is gone: maybe a writer replaced the index meanwhile (the loader retries)."""

    def __init__(self, error: IndexCorruptError) -> None:
        super().__init__(str(error))
        self.error = error


def lists_files(directory: Path) -> Iterator[Path]:
    """Lists files and working files in ``directory`` (for stale-file cleaning)."""
    yield from directory.glob(f"*{SUFFIX}")
    yield from directory.glob(f".*{SUFFIX}.tmp")
    for work in directory.glob(f".lists.*{WORK_SUFFIX}"):
        if not _pid_alive(work.name.split(".")[2]):
            yield work


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True

