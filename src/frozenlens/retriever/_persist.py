"""Saving and loading a :class:`~frozenlens.retriever.VectorIndex` (internal).

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
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import faiss
import numpy as np

from frozenlens.errors import IndexCorruptError, IndexInputError, VectorFileMismatchError
from frozenlens.retriever._stores import METRICS, IdMapStore, make_store

if TYPE_CHECKING:
    from frozenlens.retriever.vector_index import VectorIndex

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

    Opening checks magic, footer and every section CRC; any problem (including
    a missing file) raises :class:`IndexCorruptError` naming the path.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self._f: BinaryIO = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise IndexCorruptError(f"cannot open vector index {self.path}: {exc}") from exc
        try:
            self.meta, self._sections = self._read_footer()
            for name in self._sections:
                self._check_crc(name)
        except BaseException:
            self.close()
            raise

    def corrupt(self, why: str) -> IndexCorruptError:
        return IndexCorruptError(f"vector index {self.path} is corrupt: {why}")

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

    def read_index(self, name: str) -> faiss.Index:
        """Deserialize one FAISS index section (CPU)."""
        if name not in self._sections:
            raise self.corrupt(f"missing section {name!r}")
        try:
            return faiss.read_index(faiss.PyCallbackIOReader(self._chunks(name)))  # owning, downcast
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


# -- VectorIndex <-> container ------------------------------------------------------
# Sections: "main" (trained index) or "fallback" (the exact IDMap2 of an
# untrained one; the untrained real index is rebuilt from the factory string),
# plus "alive" (HNSW tombstone bitmap) when some vectors are dead.


def save_index(vi: VectorIndex, path: str | os.PathLike[str], *, owner: str | None = None) -> None:
    """Write ``vi`` (caller holds its lock) to ``path`` atomically; ``owner``
    (an opaque identity, e.g. of the index the file belongs to) is recorded."""
    store = vi._active
    meta = {"dim": vi.dim, "factory": vi.factory, "metric": vi.metric,
            "trained": vi.is_trained, "train_threshold": vi.train_threshold,
            "ef_search": vi.ef_search, "nprobe": vi.nprobe, "count": len(vi)}
    if owner is not None:
        meta["owner"] = owner
    sections = {"main" if vi.is_trained else "fallback": index_section(store.index)}
    if store.alive is not None:
        sections["alive"] = bytes_section(np.packbits(store.alive, bitorder="little").tobytes())
    write_atomic(path, meta, sections)


def load_index(cls: type[VectorIndex], path: str | os.PathLike[str], *,
               use_gpu: bool, owner: str | None = None) -> VectorIndex:
    """Read a ``VectorIndex`` written by :func:`save_index`.

    With ``owner``, a file recording another owner raises
    :class:`VectorFileMismatchError` (a file recording none is accepted).
    """
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
        except (KeyError, TypeError, ValueError) as exc:
            raise reader.corrupt(f"bad metadata ({exc})") from exc
        if metric not in METRICS:
            raise reader.corrupt(f"unknown metric {metric!r}")
        part = reader.read_index("main" if trained else "fallback")
        if part.d != dim:
            raise reader.corrupt(f"index dimension {part.d} != recorded {dim}")
        try:
            alive = None
            if reader.has("alive"):
                bits = np.frombuffer(reader.read_bytes("alive"), dtype=np.uint8)
                alive = np.unpackbits(bits, count=part.ntotal, bitorder="little").astype(bool)
            store = make_store(part, alive=alive)
            if not trained and not isinstance(store, IdMapStore):
                raise ValueError("the untrained fallback is not an IDMap2 index")
            vi = cls(dim, factory, metric, train_threshold=threshold, use_gpu=use_gpu,
                     main=store if trained else None,
                     fallback=None if trained else store)  # type: ignore[arg-type]
        except (IndexInputError, ValueError) as exc:
            raise reader.corrupt(str(exc)) from exc
        ids = vi.ids()
        if ids.size != count or np.any(ids[1:] == ids[:-1]):
            raise reader.corrupt(f"holds {ids.size} ids (or duplicates), recorded {count}")
    if ef_search is not None and vi.ef_search is not None:
        vi.ef_search = int(ef_search)
    if nprobe is not None and vi.nprobe is not None:
        vi.nprobe = int(nprobe)
    return vi
