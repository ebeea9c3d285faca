"""Serving an indexed photo's pixels: cached thumbnails and safe file access.

Library code for the web UI and the REST API (no HTTP here):

* :func:`thumbnail` decodes a photo once with the indexer's hardened decoder
  and caches a small WebP (longest side :data:`THUMB_SIZE`) under
  ``<index>/thumbnails/``. The cache key includes the photo's content hash,
  so an edited photo gets a new thumbnail; writes go to a temp file then
  ``os.replace`` (concurrent requests never see half a file). A read-only
  index (:attr:`frozenlens.engine.Engine.read_only`) keeps serving the
  thumbnails cached in it and makes the missing ones in a private per-user
  cache outside it (:func:`private_cache_dir`).
* :func:`served_file` decides whether the original file of an indexed image
  may be handed out: files are only ever found through an image id (never a
  client-supplied path), and the symlink-resolved file must lie inside one of
  the index's roots (the folders that were indexed). A symlink that leads
  out of the indexed roots is refused with :class:`FileAccessError`.
* :class:`PhotoFiles` applies both to one open index: it finds photos by
  integer id only and serves the engine's ``thumbnail``/``thumbnails``/
  ``image_file``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import DecodeError, FileAccessError, FrozenLensError, ImageNotFoundError
from ..store import DUPLICATE, INDEXED, ImageRecord, Store
from .index_dir import indexed_roots

log = logging.getLogger(__name__)

THUMB_SIZE = 256
THUMB_DIR = "thumbnails"
THUMB_QUALITY = 80

#: media types of the formats the decoder admits (Pillow format name → MIME)
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heif",
    "AVIF": "image/avif",
}


def thumbnail_path(index_dir: Path, image_id: int, content_hash: str | None, size: int = THUMB_SIZE) -> Path:
    """Where the thumbnail of image ``image_id`` (at this content) is cached."""
    tag = (content_hash or "nohash")[:16]
    return index_dir / THUMB_DIR / f"{image_id % 256:02x}" / f"{image_id}-{tag}-{size}.webp"


def thumbnail(
    index_dir: Path, image_id: int, path: str, content_hash: str | None, size: int = THUMB_SIZE,
    *, read_only: bool = False,
) -> Path:
    """The cached WebP thumbnail of an indexed photo, made on first request.

    ``read_only``: the index cannot be written; a thumbnail not cached in it
    is made in :func:`private_cache_dir` instead.
    Raises :class:`DecodeError` when the photo can no longer be decoded and
    :class:`ImageNotFoundError` when its file is gone.
    """
    from ..indexer.decode import decode_file

    out = thumbnail_path(index_dir, image_id, content_hash, size)
    if out.exists():
        return out
    if read_only:
        out = thumbnail_path(private_cache_dir(index_dir), image_id, content_hash, size)
        if out.exists():
            return out
    try:
        image = decode_file(path, draft_size=size).image
    except DecodeError as exc:
        if exc.reason == "vanished":
            raise ImageNotFoundError(f"the file of image {image_id} is gone") from exc
        raise
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".thumb-", suffix=".webp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fp:
            image.save(fp, "WEBP", quality=THUMB_QUALITY, method=4)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def private_cache_dir(index_dir: Path) -> Path:
    """This user's own thumbnail cache for the read-only index at ``index_dir``:
    ``$XDG_CACHE_HOME/frozenlens/read-only/<key>`` (``~/.cache`` by default),
    else ``<temp>/frozenlens-<uid>/<key>`` when the home cache cannot be
    written (owned by this user, closed to others; refused otherwise)."""
    key = hashlib.sha256(os.fsencode(os.path.abspath(index_dir))).hexdigest()[:20]
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "frozenlens" / "read-only"
    private = Path(tempfile.gettempdir()) / f"frozenlens-{os.getuid()}"
    for base in (home, private):
        try:
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            st = base.stat()
            if base == private and (st.st_uid != os.getuid() or st.st_mode & 0o077):
                continue  # made by someone else, or open to others: not ours to fill
            if os.access(base, os.W_OK):
                return base / key
        except OSError:
            continue
    raise FileAccessError("the index is read-only and no private thumbnail cache can be written")


def prune_thumbnails(index_dir: Path, live: dict[int, str | None]) -> int:
    """Delete cached thumbnails of images that are gone or whose content
    changed (``live``: image id → content hash). Returns how many were removed."""
    root = index_dir / THUMB_DIR
    if not root.is_dir():
        return 0
    removed = 0
    for path in root.glob("*/*.webp"):
        parts = path.name[: -len(".webp")].split("-")  # id-hash-size
        try:
            image_id, size = int(parts[0]), int(parts[-1])
        except ValueError:
            continue
        if image_id not in live or thumbnail_path(index_dir, image_id, live[image_id], size) != path:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def resolved_inside(path: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]]) -> Path | None:
    """``path`` with every symlink resolved, when that is one of ``roots`` (also
    resolved) or lies inside one of them; else ``None``. The one containment
    check for files served, uploads read and folders indexed by the server."""
    text = os.fspath(path)
    if "\x00" in text:
        return None
    real = os.path.realpath(text)
    for root in roots:
        real_root = os.path.realpath(root)
        if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
            return Path(real)
    return None


def served_file(path: str, roots: list[str] | None) -> Path:
    """The real (symlink-resolved) file to serve for an indexed photo at ``path``.

    ``roots`` are the indexed folders (or files). The resolved file must be
    one of them or lie inside one of them (roots resolved too). When the index
    predates recorded roots (``None``), only a path without any symlink in it
    is served. Raises :class:`ImageNotFoundError` when the file is gone and
    :class:`FileAccessError` when it may not be served.
    """
    absolute = os.path.abspath(path)
    real = os.path.realpath(absolute)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise ImageNotFoundError(f"the file of this image is gone: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise FileAccessError("not a regular file")
    if roots is None:
        if real != absolute:
            raise FileAccessError("the file is reached through a symlink and the index records no roots")
        return Path(real)
    inside = resolved_inside(real, roots)
    if inside is None:
        raise FileAccessError("the file lies outside the indexed folders (a symlink leads out of them)")
    return inside


def media_type(fmt: str | None) -> str:
    """The MIME type to serve a photo of Pillow format ``fmt`` with."""
    return MEDIA_TYPES.get((fmt or "").upper(), "application/octet-stream")


@dataclass(frozen=True)
class PhotoFiles:
    """Thumbnails and original files of the photos of one open index, by image id.

    index_dir: the index directory (thumbnails are cached in it).
    read_only: the index cannot be written (see :func:`thumbnail`).
    """

    index_dir: Path
    store: Store
    read_only: bool = False

    def record(self, image_id: int) -> ImageRecord:
        """The record of an indexed photo by integer id only (never a path), else :class:`ImageNotFoundError`."""
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise ImageNotFoundError(f"image ids are integers, not {image_id!r}")
        record = self.store.images([image_id]).get(image_id)
        if record is None or record.status not in (INDEXED, DUPLICATE):
            raise ImageNotFoundError(f"no indexed image {image_id}")
        return record

    def thumbnail(self, image_id: int, size: int = THUMB_SIZE) -> Path:
        """The cached thumbnail of one photo (errors as in :meth:`frozenlens.engine.Engine.thumbnail`)."""
        return self._thumbnail(self.record(image_id), indexed_roots(self.store), size)

    def thumbnails(self, image_ids: Sequence[int], size: int = THUMB_SIZE) -> dict[int, Path]:
        """Thumbnails of several photos with one lookup; those that cannot be had are left out (logged)."""
        records, roots, out = self.store.images(image_ids), indexed_roots(self.store), {}
        for i in image_ids:
            record = records.get(i)
            try:
                if record is None or record.status not in (INDEXED, DUPLICATE):
                    raise ImageNotFoundError(f"no indexed image {i}")
                out[i] = self._thumbnail(record, roots, size)
            except FrozenLensError as exc:
                log.info("no thumbnail for image %s: %s", i, exc)
        return out

    def original(self, image_id: int) -> tuple[Path, str]:
        """(real path, media type) of a photo's original file, for serving (see :func:`served_file`)."""
        record = self.record(image_id)
        return served_file(record.path, indexed_roots(self.store)), media_type(record.format)

    def _thumbnail(self, record: ImageRecord, roots: list[str] | None, size: int) -> Path:
        real = served_file(record.path, roots)
        return thumbnail(self.index_dir, record.id, str(real), record.content_hash, size, read_only=self.read_only)
