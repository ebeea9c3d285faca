"""On-disk cache of artefacts derived from model weights (class-name embeddings, tokenizer state ...).

Derived artefacts cost seconds to compute and never change while the weights
and the code that derives them stay the same, so a fresh process should pay
for them once. This module is the one place that writes and reads them:

- a **key** (:func:`artifact_key`) hashes everything an artefact depends on:
  a digest of the weights' bytes (:func:`file_digest`), the deriving code's
  format version, options; changed weights give another key, hence another file;
- a **file** holds a header (magic, format, the key, payload length, SHA-256
  of the payload) and the payload; it is written atomically (temporary file
  in the same directory, ``fsync``, ``os.replace``), so readers see either the
  old file or the whole new one;
- a **read** checks all of the header against the file: a truncated, stale
  (other key or format) or corrupt file is reported, never trusted, and
  :meth:`ArtifactCache.get_or_build` then rebuilds and rewrites it.

Payloads are bytes (read back as a ``memoryview``, no copy);
:func:`array_bytes` / :func:`bytes_array` convert one numpy array
(``np.save`` format, no pickle; read back as a read-only view),
:func:`pack_arrays` / :func:`unpack_arrays` several named ones. The cache is shared by threads and
processes: nothing in an :class:`ArtifactCache` changes after construction,
and two writers of one key write the same bytes (the last rename wins).

The directory is :func:`default_cache_dir` unless one is given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: version of the file layout below; part of every key
CACHE_FORMAT = 1
_MAGIC = b"FLARTF\x00\x01"
# magic (8) | format u32 | key length u32 | payload length u64 | sha256 (32) | key | payload
_HEAD = struct.Struct("<8sIIQ32s")


class CacheEntryError(ValueError):
    """A cache file that cannot be trusted (truncated, corrupt, other key or format)."""


def default_cache_dir() -> Path:
    """``$FROZENLENS_CACHE``, else ``$XDG_CACHE_HOME/frozenlens``, else ``~/.cache/frozenlens``."""
    env = os.environ.get("FROZENLENS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "frozenlens"
    return Path.home() / ".cache" / "frozenlens"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, memoised in this process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = _sha256_file(path)
    return _DIGESTS[key]


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def artifact_key(*parts: object) -> str:
    """A 32-hex-digit key of JSON-able ``parts`` (weights digests, code version, options) and the file format."""
    blob = json.dumps([CACHE_FORMAT, *parts], sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:32]


def array_bytes(arr: np.ndarray) -> bytes:
    """A numpy array as ``.npy`` bytes (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def bytes_array(payload: bytes | memoryview) -> np.ndarray:
    """The inverse of :func:`array_bytes`, a read-only view of ``payload`` (no copy);
    ``CacheEntryError`` if the bytes are no ``.npy`` array of a plain dtype."""
    view = memoryview(payload)
    head = io.BytesIO(view[:65536])
    try:
        version = np.lib.format.read_magic(head)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(head)
    except (OSError, ValueError, EOFError) as exc:
        raise CacheEntryError(f"not a numpy array: {exc}") from exc
    if dtype.hasobject:
        raise CacheEntryError("numpy array of Python objects")
    count = int(np.prod(shape, dtype=np.int64))
    if len(view) - head.tell() != count * dtype.itemsize:
        raise CacheEntryError("numpy array: size does not match its header")
    arr = np.frombuffer(view, dtype=dtype, count=count, offset=head.tell())
    return arr.reshape(shape, order="F" if fortran else "C")


def pack_arrays(arrays: dict[str, np.ndarray], extra: dict[str, object] | None = None) -> bytes:
    """Named arrays (and JSON-able ``extra`` values) in one payload: a JSON index, then the ``.npy`` blobs."""
    blobs = {k: array_bytes(v) for k, v in arrays.items()}
    index, offset = {}, 0
    for k, b in blobs.items():
        index[k] = [offset, len(b)]
        offset += len(b)
    head = json.dumps({"arrays": index, "extra": extra or {}}).encode("utf-8")
    return struct.pack("<I", len(head)) + head + b"".join(blobs.values())


def unpack_arrays(payload: bytes | memoryview) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """The inverse of :func:`pack_arrays`: read-only views into ``payload`` (no copy), and the extra values."""
    view = memoryview(payload)
    try:
        (n,) = struct.unpack_from("<I", view)
        head = json.loads(bytes(view[4 : 4 + n]))
        base = 4 + n
        arrays = {k: bytes_array(view[base + o : base + o + size]) for k, (o, size) in head["arrays"].items()}
        extra = dict(head["extra"])
    except (struct.error, ValueError, TypeError, KeyError) as exc:
        raise CacheEntryError(f"not a packed array payload: {exc}") from exc
    return arrays, extra


def encode_entry(key: str, payload: bytes) -> bytes:
    """The bytes of a cache file holding ``payload`` under ``key``."""
    kb = key.encode("ascii")
    head = _HEAD.pack(_MAGIC, CACHE_FORMAT, len(kb), len(payload), hashlib.sha256(payload).digest())
    return head + kb + payload


def decode_entry(data: bytes, key: str) -> memoryview:
    """The payload of a cache file's bytes ``data``, checked against ``key``; else ``CacheEntryError``."""
    if len(data) < _HEAD.size:
        raise CacheEntryError(f"truncated header ({len(data)} bytes)")
    magic, fmt, klen, plen, digest = _HEAD.unpack_from(data)
    if magic != _MAGIC or fmt != CACHE_FORMAT:
        raise CacheEntryError("not a FrozenLens cache file of this format")
    if len(data) != _HEAD.size + klen + plen:
        raise CacheEntryError(f"size {len(data)} != {_HEAD.size + klen + plen} (truncated or appended to)")
    if data[_HEAD.size : _HEAD.size + klen] != key.encode("ascii"):
        raise CacheEntryError("written for another key")
    payload = memoryview(data)[_HEAD.size + klen :]  # no copy of a large payload
    if hashlib.sha256(payload).digest() != digest:
        raise CacheEntryError("checksum mismatch")
    return payload


class ArtifactCache:
    """Derived artefacts in one directory, one file per (name, key).

    Args:
        root: the directory (default :func:`default_cache_dir`); created on first write.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, name: str, key: str) -> Path:
        """Where the artefact ``name`` with ``key`` lives."""
        if not name or "/" in name or os.sep in name:
            raise ValueError(f"invalid artefact name {name!r}")
        return self.root / f"{name}-{key}.fla"

    def read(self, name: str, key: str) -> memoryview:
        """The stored payload; ``FileNotFoundError`` if absent, ``CacheEntryError`` if not trustworthy."""
        return decode_entry(self.path(name, key).read_bytes(), key)

    def write(self, name: str, key: str, payload: bytes) -> Path | None:
        """Store atomically; returns the path, or ``None`` (logged) when the directory is not writable."""
        path = self.path(name, key)
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(encode_entry(key, payload))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
            return path
        except OSError as exc:
            logger.warning("cannot write cache file %s: %s", path, exc)
            return None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def file_digest(self, path: Path) -> str:
        """SHA-256 of a (large) file's bytes, remembered in the cache under its full ``stat`` signature.

        The entry's key is the resolved path, device, inode, size, modification and
        status-change times (``st_ctime_ns`` cannot be set back by a user): any write
        to the file, a replacement or a truncation gives another key, and the file is
        hashed again. Saves a fresh process from hashing a few hundred MB of weights
        or graph on every start (bit rot below the file system is not detected).
        """
        st = path.stat()
        key = artifact_key("file-digest", str(path.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                           st.st_ctime_ns)
        try:
            digest = bytes(self.read("file-digest", key)).decode("ascii")
            if len(digest) == 64:
                return digest
        except (OSError, ValueError):
            pass
        digest = _sha256_file(path)  # not the in-process memo: that one trusts (size, mtime) only
        self.write("file-digest", key, digest.encode("ascii"))
        return digest

    def get_or_build(
        self,
        name: str,
        key: str,
        build: Callable[[], bytes],
        check: Callable[[memoryview], object] | None = None,
    ) -> tuple[memoryview, bool]:
        """(payload, hit): the stored payload if it is intact and ``check`` accepts it, else ``build()``'s, stored.

        ``check`` raises ``ValueError`` (e.g. ``CacheEntryError``) for a payload
        that is intact but unusable (wrong shape). A bad file is logged and replaced.
        """
        path = self.path(name, key)
        try:
            payload = self.read(name, key)
            if check is not None:
                check(payload)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            logger.warning("cache file %s is unusable (%s); rebuilding it", path, exc)
        else:
            return payload, True
        payload = build()
        self.write(name, key, payload)
        return memoryview(payload), False


__all__ = [
    "CACHE_FORMAT",
    "ArtifactCache",
    "CacheEntryError",
    "array_bytes",
    "artifact_key",
    "bytes_array",
    "decode_entry",
    "default_cache_dir",
    "encode_entry",
    "file_digest",
    "pack_arrays",
    "unpack_arrays",
]
