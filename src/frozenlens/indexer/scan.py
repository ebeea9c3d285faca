"""Recursive, loop-safe discovery of image files and their caption sidecars.

:func:`scan` walks one or more roots with :func:`os.scandir` and yields one
:class:`FileEntry` per image file, in a deterministic order: roots in the
order given; inside a directory, its image files sorted by name first, then
its subdirectories sorted by name (depth first).

Rules:

- Symlinks (to directories or files) are followed only while their target
  stays inside the roots the caller named (``links="inside"``, the default):
  the scan never leaves the folders it was given unless asked. A link whose
  symlink-resolved target lies outside every root is skipped and reported as
  a :class:`ScanProblem` with reason ``"outside-roots"`` (so the run's
  summary can say what was skipped and why). ``links="all"`` follows every
  link (``frozenlens index --follow-links``); ``links="none"`` skips every
  link. A directory is never walked twice: the scanner remembers the
  ``(st_dev, st_ino)`` of every directory it entered, which ends symlink
  loops and also skips a second path to an already walked directory. Paths
  are reported as reached (``os.path.abspath``), never symlink-resolved.
- Names starting with ``"."`` (hidden directories, and hidden files such as
  macOS ``._photo.jpg`` resource forks) are skipped unless
  ``include_hidden=True``. A root itself is never skipped for its name.
- A directory holding a file named :data:`INDEX_MARKER`
  (``.frozenlens-index``) is a FrozenLens index directory: it and everything
  below it are skipped, so an index stored inside a photo root is not indexed.
- Problems that are a fact of life in a big archive (a directory that cannot
  be listed, a file deleted between listing and ``stat``, a dangling symlink)
  are passed to ``on_problem`` as a :class:`ScanProblem` and skipped; they
  never raise. Only a missing root raises :class:`ScanRootNotFoundError`.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from frozenlens.errors import ScanRootNotFoundError
from frozenlens.paths import to_text
from frozenlens.types import MARKER

__all__ = [
    "IMAGE_EXTENSIONS",
    "INDEX_MARKER",
    "OPTIONAL_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "FileEntry",
    "ScanProblem",
    "SidecarRef",
    "image_extensions",
    "scan",
]

log = logging.getLogger(__name__)

#: Extensions (lower case, no dot) that Pillow always decodes.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"}
)

#: Extensions that are images only when a decoder for them is available.
OPTIONAL_EXTENSIONS: frozenset[str] = frozenset({"heic", "heif", "avif"})

#: Sidecar extensions looked for beside each image (lower case, no dot).
SIDECAR_EXTENSIONS: tuple[str, ...] = ("txt", "json", "xmp")

#: A directory containing a file of this name (an index directory) is skipped with its subtree.
INDEX_MARKER = MARKER

#: How :func:`scan` treats symlinks: follow those that stay inside the roots
#: (default), follow all of them, or none.
LINK_MODES: tuple[str, ...] = ("inside", "all", "none")


@dataclass(frozen=True)
class SidecarRef:
    """A caption sidecar file found beside an image (``stat`` at scan time)."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class FileEntry:
    """One image file found by :func:`scan`.

    ``path`` is absolute (``os.path.abspath``) but not symlink-resolved;
    ``size`` and ``mtime_ns`` come from ``stat`` following symlinks;
    ``sidecars`` are sorted by path.
    """

    path: str
    size: int
    mtime_ns: int
    sidecars: tuple[SidecarRef, ...] = ()


@dataclass(frozen=True)
class ScanProblem:
    """Something the scanner skipped.

    ``reason`` is one of ``"unreadable"`` (cannot list or stat, e.g.
    permission denied), ``"vanished"`` (deleted between listing and stat) or
    ``"broken-symlink"``.
    """

    path: str
    reason: str
    message: str


@functools.cache
def _optional_extensions_available() -> frozenset[str]:
    """Optional extensions whose decoder exists (looked up once, lazily)."""
    found: set[str] = set()
    if importlib.util.find_spec("pillow_heif") is not None:
        found |= {"heic", "heif"}
    avif = importlib.util.find_spec("pillow_avif") is not None
    if not avif:
        from PIL import features  # deferred: keep module import cheap

        avif = bool(features.check_module("avif"))
    if avif:
        found.add("avif")
    return frozenset(found)


def image_extensions() -> frozenset[str]:
    """All extensions :func:`scan` treats as images by default.

    :data:`IMAGE_EXTENSIONS` plus ``heic``/``heif`` when ``pillow_heif`` is
    installed and ``avif`` when ``pillow_avif`` is installed or Pillow has
    built-in AVIF support. Checked on first call, not at import.
    """
    return IMAGE_EXTENSIONS | _optional_extensions_available()


def _normalise_extensions(extensions: Iterable[str]) -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in extensions)


def _ext_of(name: str) -> str:
    return os.path.splitext(name)[1][1:].lower()


def _sidecar_names(image_name: str) -> tuple[str, ...]:
    """Lower-cased sidecar names for ``image_name`` (``photo.jpg``)."""
    lower = image_name.lower()
    stem = os.path.splitext(lower)[0]
    names: list[str] = []
    for ext in SIDECAR_EXTENSIONS:
        names += [f"{lower}.{ext}", f"{stem}.{ext}"]
    return tuple(names)


def _index_by_lower_name(listing: list[os.DirEntry[str]]) -> dict[str, list[os.DirEntry[str]]]:
    """Directory entries grouped by lower-cased name (for sidecar lookup)."""
    index: dict[str, list[os.DirEntry[str]]] = {}
    for e in listing:
        index.setdefault(e.name.lower(), []).append(e)
    return index


def _is_within(path: str, root: str) -> bool:
    """``path`` is ``root`` or lies below it (both absolute, symlink-resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def scan(
    roots: Sequence[str | os.PathLike[str]],
    *,
    extensions: Iterable[str] | None = None,
    links: str = "inside",
    include_hidden: bool = False,
    on_problem: Callable[[ScanProblem], None] | None = None,
) -> Iterator[FileEntry]:
    """Yield every image file below ``roots`` (see the module docstring).

    ``extensions`` (with or without dots, any case) replaces
    :func:`image_extensions`. ``links`` (one of :data:`LINK_MODES`) says
    which symlinks are followed (see the module docstring). A root that is a
    file is yielded if its extension matches (sidecars beside it are
    attached); a root that is itself a symlink is always followed.

    Raises :class:`~frozenlens.errors.ScanRootNotFoundError` (before
    yielding anything) if a root does not exist; problems below a root go to
    ``on_problem`` (default: logged) and never raise.
    """
    if links not in LINK_MODES:
        raise ValueError(f"links must be one of {LINK_MODES}, not {links!r}")
    exts = image_extensions() if extensions is None else _normalise_extensions(extensions)
    report = on_problem if on_problem is not None else _log_problem
    abs_roots: list[str] = []
    for root in roots:
        path = os.path.abspath(os.fspath(root))
        if not os.path.exists(path):
            raise ScanRootNotFoundError(2, "scan root does not exist", os.fspath(root))
        abs_roots.append(path)
    return _scan(abs_roots, exts, links, include_hidden, report)


def _log_problem(problem: ScanProblem) -> None:
    log.warning("skipped %s (%s): %s", to_text(problem.path), problem.reason, problem.message)


def _scan(
    roots: list[str],
    exts: frozenset[str],
    links: str,
    include_hidden: bool,
    report: Callable[[ScanProblem], None],
) -> Iterator[FileEntry]:
    # the folders the scan may not leave (links="inside"), symlink-resolved
    inside = tuple(os.path.realpath(r) for r in roots if os.path.isdir(r))
    walker = _Walker(exts, links, inside, include_hidden, report)
    # A directory is walked once (by inode), so walks alone never yield a path
    # twice; only a root that is a file can repeat one. Remember yielded paths
    # only then, so that scan memory stays flat in the number of files.
    walker.track = any(not os.path.isdir(r) for r in roots)
    for root in roots:
        if os.path.isdir(root):
            yield from walker.walk(root)
        else:
            yield from walker.single_file(root)


class _Walker:
    """State of one :func:`scan` call: options and visited directories."""

    def __init__(
        self,
        exts: frozenset[str],
        links: str,
        inside: tuple[str, ...],
        include_hidden: bool,
        report: Callable[[ScanProblem], None],
    ) -> None:
        self.exts = exts
        self.links = links
        self.inside = inside
        self.include_hidden = include_hidden
        self.report = report
        self.visited: set[tuple[int, int]] = set()
        self.yielded: set[str] = set()
        self.track = True  # record yielded paths (see _scan)

    def single_file(self, path: str) -> Iterator[FileEntry]:
        """A root that is a file: yield it if it is an image."""
        if _ext_of(path) not in self.exts or path in self.yielded:
            return
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            self.report(ScanProblem(path, "vanished", str(exc)))
            return
        except OSError as exc:
            self.report(ScanProblem(path, "unreadable", str(exc)))
            return
        if not stat.S_ISREG(st.st_mode):
            return
        parent = os.path.dirname(path)
        sidecars: tuple[SidecarRef, ...] = ()
        listing = self._list(parent, report_errors=False)
        if listing is not None:
            sidecars = self._sidecars(os.path.basename(path), _index_by_lower_name(listing))
        self.yielded.add(path)
        yield FileEntry(path, st.st_size, st.st_mtime_ns, sidecars)

    def walk(self, root: str) -> Iterator[FileEntry]:
        """Depth-first walk of ``root``: files of a directory, then its subdirs."""
        stack: list[str] = [root]
        while stack:
            directory = stack.pop()
            if not self._enter(directory):
                continue
            listing = self._list(directory, report_errors=True)
            if listing is None:
                continue
            listing.sort(key=lambda e: e.name)
            if any(e.name == INDEX_MARKER for e in listing):
                log.info("skipping FrozenLens index directory %s", to_text(directory))
                continue
            by_name = _index_by_lower_name(listing)
            subdirs: list[str] = []
            for e in listing:
                if not self.include_hidden and _is_hidden(e.name):
                    continue
                if e.is_symlink() and not self._follow(e):
                    continue
                kind = self._kind(e)
                if kind == "dir":
                    subdirs.append(e.path)
                elif kind == "file" and _ext_of(e.name) in self.exts:
                    entry = self._file_entry(e, by_name)
                    if entry is not None:
                        yield entry
            # reversed so that the smallest name is popped (walked) first
            stack.extend(reversed([os.path.abspath(p) for p in subdirs]))

    def _follow(self, e: os.DirEntry[str], *, report: bool = True) -> bool:
        """Whether the symlink ``e`` may be followed under :attr:`links`; a
        link leading outside the roots is reported (``"outside-roots"``)."""
        if self.links != "inside":
            return self.links == "all"
        target = os.path.realpath(e.path)
        if any(_is_within(target, root) for root in self.inside):
            return True
        try:
            os.stat(e.path)
        except OSError:  # dangling: _kind reports it as a broken symlink
            return True
        if report and (e.is_dir() or _ext_of(e.name) in self.exts):
            self.report(ScanProblem(os.path.abspath(e.path), "outside-roots",
                                    "symlink leads outside the indexed folders; not followed (--follow-links follows it)"))
        return False

    def _enter(self, directory: str) -> bool:
        """Mark ``directory`` visited; False if it was already (or cannot stat)."""
        try:
            st = os.stat(directory)
        except FileNotFoundError as exc:
            self.report(ScanProblem(directory, "vanished", str(exc)))
            return False
        except OSError as exc:
            self.report(ScanProblem(directory, "unreadable", str(exc)))
            return False
        key = (st.st_dev, st.st_ino)
        if key in self.visited:
            log.debug("already walked %s (symlink loop or second path)", to_text(directory))
            return False
        self.visited.add(key)
        return True

    def _list(self, directory: str, *, report_errors: bool) -> list[os.DirEntry[str]] | None:
        try:
            with os.scandir(directory) as it:
                return list(it)
        except FileNotFoundError as exc:
            if report_errors:
                self.report(ScanProblem(directory, "vanished", str(exc)))
        except OSError as exc:
            if report_errors:
                self.report(ScanProblem(directory, "unreadable", str(exc)))
        return None

    def _kind(self, e: os.DirEntry[str]) -> str | None:
        """``"dir"``, ``"file"`` or None (other, or reported as a problem)."""
        try:
            if e.is_dir():
                return "dir"
            if e.is_file():
                return "file"
            if e.is_symlink() and _ext_of(e.name) in self.exts:
                # is_dir/is_file follow symlinks: both False means dangling
                self.report(ScanProblem(os.path.abspath(e.path), "broken-symlink",
                                        "symlink target does not exist"))
        except OSError as exc:
            self.report(ScanProblem(os.path.abspath(e.path), "unreadable", str(exc)))
        return None

    def _file_entry(
        self, e: os.DirEntry[str], by_name: dict[str, list[os.DirEntry[str]]]
    ) -> FileEntry | None:
        path = os.path.abspath(e.path)
        if path in self.yielded:
            return None
        try:
            st = e.stat()
        except FileNotFoundError as exc:
            self.report(ScanProblem(path, "vanished", str(exc)))
            return None
        except OSError as exc:
            self.report(ScanProblem(path, "unreadable", str(exc)))
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if self.track:
            self.yielded.add(path)
        return FileEntry(path, st.st_size, st.st_mtime_ns, self._sidecars(e.name, by_name))

    def _sidecars(
        self, image_name: str, by_name: dict[str, list[os.DirEntry[str]]]
    ) -> tuple[SidecarRef, ...]:
        refs: dict[str, SidecarRef] = {}
        candidates = [e for name in _sidecar_names(image_name) for e in by_name.get(name, ())]
        for e in candidates:
            if e.is_symlink() and not self._follow(e, report=False):
                continue
            path = os.path.abspath(e.path)
            try:
                st = e.stat()
            except OSError as exc:  # vanished or unreadable: no sidecar then
                log.debug("sidecar %s skipped: %s", to_text(path), exc)
                continue
            if stat.S_ISREG(st.st_mode):
                refs[path] = SidecarRef(path, st.st_size, st.st_mtime_ns)
        return tuple(refs[p] for p in sorted(refs))
