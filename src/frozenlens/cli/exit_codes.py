"""Exit codes of the ``frozenlens`` command, and the one mapping from errors to them.

0 ok, 1 a FrozenLens error (one line on stderr, no traceback), 2 bad usage
(argparse), 3 the index is locked by another indexing run, 4 the disk is
full, 5 the index database is damaged (``frozenlens doctor``), 6 the index is
read-only and the command needs to write, 130 interrupted.
"""

from __future__ import annotations

from ..errors import DatabaseDamagedError, DiskFullError, IndexLockedError, IndexReadOnlyError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
#: exit code of a run stopped by a full disk (what was committed is kept)
EXIT_DISK_FULL = 4
#: exit codes of a damaged index database and of a write to a read-only index
EXIT_DAMAGED, EXIT_READ_ONLY = 5, 6
EXIT_INTERRUPTED = 130


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ended a command (:data:`EXIT_ERROR` for any FrozenLens error
    without its own code)."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    for cls, code in ((IndexLockedError, EXIT_LOCKED), (DiskFullError, EXIT_DISK_FULL),
                      (DatabaseDamagedError, EXIT_DAMAGED), (IndexReadOnlyError, EXIT_READ_ONLY)):
        if isinstance(exc, cls):
            return code
    return EXIT_ERROR


def error_line(exc: BaseException, index_dir: str) -> str:
    """The one line a command prints on stderr for ``exc`` (``frozenlens: ...``)."""
    if isinstance(exc, KeyboardInterrupt):
        return "frozenlens: interrupted"
    if isinstance(exc, DatabaseDamagedError):
        return (f"frozenlens: the index database {exc.path} is damaged ({exc.detail}); "
                f"run `frozenlens doctor --repair --index {index_dir}` to salvage what is readable")
    return f"frozenlens: {exc}"
