"""Reading, hashing and decoding one file of an indexing run.

The per-file steps both engines share (the local thread pool of
:mod:`.pipeline` and the Ray tasks of :mod:`.ray_engine`), so that a bad file
fails with the same reason and message whichever engine read it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import stat

from PIL import Image

from ..errors import DecodeError
from ..paths import to_text
from ..store import PhotoFields
from .decode import DecodeLimits, decode_bytes
from .scan import FileEntry

log = logging.getLogger(__name__)


def hash_bytes(data: bytes) -> str:
    """BLAKE2b-128 of a file's bytes, hex (the content hash of the index)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_regular_file(path: str) -> bytes:
    """Read a whole file; refuses anything that is not a regular file (a FIFO
    swapped in after the scan must not block the run)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DecodeError("not-an-image", "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def read_checked(entry: FileEntry, limits: DecodeLimits) -> bytes:
    """The bytes of ``entry``; every way of not getting them is a :class:`DecodeError`
    (``too-large``, ``vanished``, ``unreadable``, ``not-an-image``)."""
    try:
        if entry.size > limits.max_file_bytes:
            raise DecodeError("too-large", f"file is {entry.size} bytes, over the limit")
        return read_regular_file(entry.path)
    except FileNotFoundError:
        raise DecodeError("vanished", "file disappeared during indexing") from None
    except PermissionError as exc:
        raise DecodeError("unreadable", f"permission denied: {exc.strerror}") from None
    except OSError as exc:
        raise DecodeError("unreadable", str(exc)) from None


def decode_photo(
    entry: FileEntry, data: bytes, draft_size: int, limits: DecodeLimits
) -> tuple[Image.Image, PhotoFields]:
    """Decode ``data`` (RGB, upright, reduced towards ``draft_size``) and its
    metadata; the capture time falls back to the file's mtime. Raises
    :class:`DecodeError` for bad files (other exceptions: see :func:`failure_of`)."""
    decoded = decode_bytes(data, draft_size=draft_size, limits=limits, name=os.path.basename(entry.path))
    md = decoded.metadata
    taken_at, source = md.taken_at, "exif"
    if taken_at is None:
        taken_at, source = dt.datetime.fromtimestamp(entry.mtime_ns / 1e9), "mtime"
    return decoded.image, PhotoFields.copy_from(md, taken_at=taken_at, taken_at_source=source)


def failure_of(exc: Exception, path: str) -> tuple[str, str]:
    """(reason, message) recorded for a file whose decoding or preparing raised ``exc``."""
    if isinstance(exc, DecodeError):
        return exc.reason, str(exc)
    log.warning("unexpected error decoding %s", to_text(path), exc_info=exc)
    return "corrupt", f"{type(exc).__name__}: {exc}"
