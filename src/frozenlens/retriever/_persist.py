"""Saving and loading the contents of a :class:`~frozenlens.retriever.VectorIndex` (internal).

Depends on the stores (:mod:`._stores`) only, never on the index type: the
index hands over an :class:`IndexSnapshot` to save and is rebuilt from the one
:func:`load_index` returns.

One file, written atomically (temp file in the same directory, flush, fsync,
``os.replace``, fsync of the directory), so a crash leaves either the old file
or the new one at the target path, never a mixture::

    b"FLVIDX\\x00\\x01"                      8-byte head (magic + format 1)
    section bytes ...                         FAISS indexes / raw arrays
    footer                                    UTF-8 JSON: meta + section table
    footer length, footer crc32               uint64, uint32 little-endian
    b"FLVIEND1"                               8-byte tail

The section table maps a name to ``[offset, nbytes, crc32]``. FAISS indexes
are streamed through ``PyCallbackIOWriter``/``PyCallbackIOReader``, so saving
a multi-GB index does not need a second in-memory copy. Every CRC is checked
before FAISS parses anything, so a damaged file raises
:class:`~frozenlens.errors.IndexCorruptError` instead of crashing FAISS.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import struct
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import faiss
import numpy as np

from frozenlens.errors import IndexCorruptError, IndexInputError, VectorFileMismatchError
from frozenlens.retriever import _ondisk
from frozenlens.retriever._refine import AnyStore, RefinedStore, make_any_store
from frozenlens.retriever._stores import METRICS, IdMapStore

HEAD = b"FLVIDX\x00\x01"
TAIL = b"FLVIEND1"
_TRAILER = struct.Struct("<QI")  # footer length, footer crc32
_CHUNK = 1 << 20

#: writes one section by calling ``sink(chunk)`` any number of times
SectionWriter = Callable[[Callable[[bytes], None]], None]


def index_section(index: faiss.Index) -> SectionWriter:
    """A section holding one CPU FAISS index."""
    return lambda sink: faiss.write_index(index, faiss.PyCallbackIOWriter(sink))


def bytes_section(data: bytes) -> SectionWriter:
    """A section holding raw bytes."""
    return lambda sink: sink(data)


class _Sink:
    def __init__(self, f: BinaryIO) -> None:
        self.f, self.nbytes, self.crc = f, 0, 0

    def __call__(self, chunk: bytes) -> None:
        self.f.write(chunk)  # an OSError (e.g. ENOSPC) passes through FAISS unchanged
        self.nbytes += len(chunk)
        self.crc = zlib.crc32(chunk, self.crc)


def write_atomic(path: str | os.PathLike[str], meta: Mapping[str, Any],
                 sections: Mapping[str, SectionWriter]) -> None:
    """Write ``meta`` and ``sections`` to ``path`` atomically.

    On any error the temp file is removed and the previous file at ``path``
    (if any) is left untouched; the error (usually :class:`OSError`) propagates.
    """
    target = Path(path)
    parent = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(HEAD)
            table: dict[str, list[int]] = {}
            for name, write in sections.items():
                offset = f.tell()
                sink = _Sink(f)
                write(sink)
                table[name] = [offset, sink.nbytes, sink.crc]
            footer = json.dumps({"meta": dict(meta), "sections": table}).encode()
            f.write(footer)
            f.write(_TRAILER.pack(len(footer), zlib.crc32(footer)))
            f.write(TAIL)
            f.flush()
            os.fchmod(f.fileno(), _mode_for(target))
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(parent)


def _mode_for(target: Path) -> int:
    """Keep the permissions of the file being replaced (mkstemp makes 0600)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o644


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; best effort (not possible on every platform)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ContainerReader:
    """Reads a container written by :func:`write_atomic`; use as a context manager.

    Opening checks magic, footer and (unless ``check`` is false) every section
    CRC; any problem (including a missing file) raises :class:`IndexCorruptError`
    naming the path.
    """

    def __init__(self, path: str | os.PathLike[str], *, check: bool = True) -> None:
        self.path = str(path)
        try:
            self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise IndexCorruptError(f"cannot open vector index {self.path}: {exc}") from exc
        try:
            self.meta, self._sections = self._read_footer()
            for name in self._sections if check else ():
                self._check_crc(name)
        except BaseException:
            self.close()
            raise

    def corrupt(self, why: str) -> IndexCorruptError:
        return corrupt(self.path, why)

    def _read_footer(self) -> tuple[dict[str, Any], dict[str, tuple[int, int, int]]]:
        f = self._f
        size = f.seek(0, os.SEEK_END)
        tail_len = _TRAILER.size + len(TAIL)
        if size < len(HEAD) + tail_len:
            raise self.corrupt(f"only {size} bytes")
        f.seek(0)
        if f.read(len(HEAD)) != HEAD:
            raise self.corrupt("not a FrozenLens vector index (bad magic or format version)")
        f.seek(size - tail_len)
        footer_len, footer_crc = _TRAILER.unpack(f.read(_TRAILER.size))
        if f.read(len(TAIL)) != TAIL:
            raise self.corrupt("truncated (no end marker)")
        footer_start = size - tail_len - footer_len
        if footer_start < len(HEAD):
            raise self.corrupt("bad footer length")
        f.seek(footer_start)
        raw = f.read(footer_len)
        if zlib.crc32(raw) != footer_crc:
            raise self.corrupt("checksum mismatch in footer")
        try:
            footer = json.loads(raw.decode())
            meta = dict(footer["meta"])
            sections = {
                str(name): (int(o), int(n), int(c)) for name, (o, n, c) in footer["sections"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise self.corrupt(f"unreadable footer ({exc})") from exc
        for name, (offset, nbytes, _) in sections.items():
            if offset < len(HEAD) or nbytes < 0 or offset + nbytes > footer_start:
                raise self.corrupt(f"section {name!r} lies outside the file")
        return meta, sections

    def _chunks(self, name: str) -> Callable[[int], bytes]:
        offset, nbytes, _ = self._sections[name]
        self._f.seek(offset)
        left = nbytes

        def read(n: int) -> bytes:
            nonlocal left
            chunk = self._f.read(min(n, left))
            left -= len(chunk)
            return chunk

        return read

    def _check_crc(self, name: str) -> None:
        read = self._chunks(name)
        nbytes, crc, expected = self._sections[name][1], 0, self._sections[name][2]
        while nbytes:
            chunk = read(_CHUNK)
            if not chunk:
                raise self.corrupt(f"section {name!r} is truncated")
            crc = zlib.crc32(chunk, crc)
            nbytes -= len(chunk)
        if crc != expected:
            raise self.corrupt(f"checksum mismatch in section {name!r}")

    def has(self, name: str) -> bool:
        return name in self._sections

    def read_bytes(self, name: str) -> bytes:
        if name not in self._sections:
            raise self.corrupt(f"missing section {name!r}")
        return self._chunks(name)(self._sections[name][1])

    def read_index(self, name: str, flags: int = 0) -> faiss.Index:
        """Deserialize one FAISS index section (CPU); ``flags``: FAISS ``IO_FLAG_*``."""
        if name not in self._sections:
            raise self.corrupt(f"missing section {name!r}")
        try:
            return faiss.read_index(faiss.PyCallbackIOReader(self._chunks(name)), flags)  # owning, downcast
        except (RuntimeError, MemoryError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise self.corrupt(f"FAISS cannot read section {name!r} ({reason})") from exc

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


# -- index snapshot <-> container ---------------------------------------------------
# Sections: "main" (trained index) or "fallback" (the exact IDMap2 of an
# untrained one; the untrained real index is rebuilt from the factory string),
# plus "alive" (HNSW tombstone bitmap) when some vectors are dead. An IVF index
# whose lists are on disk (:mod:`._ondisk`) records its lists file in meta["lists"].


@dataclass(frozen=True)
class IndexSnapshot:
    """What one vector-index file holds: the searchable store and the facts to rebuild the index around it.

    ``store`` is the trained index (``trained``) or the exact IDMap2 fallback
    of a trainable factory that is not trained yet; ``count`` is the number of
    live ids. :class:`~frozenlens.retriever.VectorIndex` makes one to save and
    is rebuilt from one on load; this module never sees the index type itself.
    """

    dim: int
    factory: str
    metric: str
    trained: bool
    train_threshold: int
    ef_search: int | None
    nprobe: int | None
    count: int
    store: AnyStore
    #: re-scored candidates per result of a refined IVF index (None otherwise)
    k_factor: int | None = None


def corrupt(path: str | os.PathLike[str], why: str) -> IndexCorruptError:
    """The error for a damaged vector-index file at ``path``."""
    return IndexCorruptError(f"vector index {os.fspath(path)} is corrupt: {why}")


def save_index(snap: IndexSnapshot, path: str | os.PathLike[str], *, owner: str | None = None) -> None:
    """Write ``snap`` to ``path`` atomically (the caller keeps its store unchanged meanwhile);
    ``owner`` (an opaque identity, e.g. of the index the file belongs to) is recorded."""
    meta = {"dim": snap.dim, "factory": snap.factory, "metric": snap.metric,
            "trained": snap.trained, "train_threshold": snap.train_threshold,
            "ef_search": snap.ef_search, "nprobe": snap.nprobe, "count": snap.count,
            "k_factor": snap.k_factor}
    if owner is not None:
        meta["owner"] = owner
    store = snap.store
    if isinstance(store, RefinedStore):  # base IVF and id-keyed refinement codes (see _refine)
        sections = {"main": index_section(store.base.index), "refine": index_section(store.refine_map)}
    else:
        sections = {"main" if snap.trained else "fallback": index_section(store.index)}
    if store.alive is not None:
        sections["alive"] = bytes_section(np.packbits(store.alive, bitorder="little").tobytes())
    lists = _ondisk.save_lists(store.index, Path(path)) if snap.trained else None
    if lists is None:
        write_atomic(path, meta, sections)
        return
    _fsync_dir(lists.path.parent)  # the lists file's name is durable before the index file names it
    meta["lists"] = lists.meta
    previous = recorded_lists_file(path)
    try:
        write_atomic(path, meta, sections)
    except BaseException:
        lists.undo()
        raise
    lists.done()
    if previous is not None and previous != lists.path:
        previous.unlink(missing_ok=True)  # readers that mapped it keep their mapping


def recorded_lists_file(path: str | os.PathLike[str]) -> Path | None:
    """The lists file the index file at ``path`` names (None: none, or no readable file there)."""
    try:
        with ContainerReader(path, check=False) as reader:
            name = (reader.meta.get("lists") or {}).get("file")
    except (IndexCorruptError, AttributeError):
        return None
    return Path(path).with_name(name) if isinstance(name, str) and os.path.basename(name) == name else None


def load_index(path: str | os.PathLike[str], *, owner: str | None = None) -> IndexSnapshot:
    """Read an :class:`IndexSnapshot` written by :func:`save_index`.

    A missing or damaged file raises :class:`IndexCorruptError`; with ``owner``,
    a file recording another owner raises :class:`VectorFileMismatchError`
    (a file recording none is accepted). A missing lists file is looked for
    again in case a writer replaced the index meanwhile (its old lists file goes).
    """
    for _ in range(2):
        with contextlib.suppress(_ondisk.ListsFileMissing):
            return _load_once(path, owner)
    try:
        return _load_once(path, owner)
    except _ondisk.ListsFileMissing as exc:
        raise exc.error from None


def _load_once(path: str | os.PathLike[str], owner: str | None) -> IndexSnapshot:
    with ContainerReader(path) as reader:
        meta = reader.meta
        recorded = meta.get("owner")
        if owner is not None and recorded is not None and recorded != owner:
            raise VectorFileMismatchError(
                f"vector index {reader.path} belongs to another index (identity {recorded}, expected {owner})")
        try:
            dim, factory, metric = int(meta["dim"]), str(meta["factory"]), str(meta["metric"])
            trained, count = bool(meta["trained"]), int(meta["count"])
            threshold = int(meta["train_threshold"])
            ef_search, nprobe = meta.get("ef_search"), meta.get("nprobe")
            k_factor = meta.get("k_factor")
        except (KeyError, TypeError, ValueError) as exc:
            raise reader.corrupt(f"bad metadata ({exc})") from exc
        if metric not in METRICS:
            raise reader.corrupt(f"unknown metric {metric!r}")
        lists = meta.get("lists") if trained else None
        part = reader.read_index("main" if trained else "fallback",
                                 0 if lists is None else faiss.IO_FLAG_SKIP_IVF_DATA | faiss.IO_FLAG_READ_ONLY)
        if part.d != dim:
            raise reader.corrupt(f"index dimension {part.d} != recorded {dim}")
        if lists is not None:
            _ondisk.attach(part, Path(reader.path).parent, lists, reader.path)
        try:
            alive = None
            if reader.has("alive"):
                bits = np.frombuffer(reader.read_bytes("alive"), dtype=np.uint8)
                alive = np.unpackbits(bits, count=part.ntotal, bitorder="little").astype(bool)
            if reader.has("refine"):
                refine = reader.read_index("refine")
                if not isinstance(refine, faiss.IndexIDMap2) or refine.ntotal != part.ntotal or not k_factor:
                    raise ValueError("the refinement section does not match the IVF index")
                store: AnyStore = RefinedStore.from_parts(part, refine, int(k_factor))
            else:
                store = make_any_store(part, alive=alive)
            if not trained and not isinstance(store, IdMapStore):
                raise ValueError("the untrained fallback is not an IDMap2 index")
        except (IndexInputError, ValueError) as exc:
            raise reader.corrupt(str(exc)) from exc
    return IndexSnapshot(dim, factory, metric, trained, threshold,
                         None if ef_search is None else int(ef_search),
                         None if nprobe is None else int(nprobe), count, store,
                         None if k_factor is None else int(k_factor))
