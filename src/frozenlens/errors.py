"""Typed exceptions raised by FrozenLens library code.

Library code never prints or exits; it raises one of these. The CLI maps them
to one-line messages and exit codes (see :mod:`frozenlens.cli`).
"""

from __future__ import annotations


class FrozenLensError(Exception):
    """Base class of every error FrozenLens raises on purpose."""


class IndexNotFoundError(FrozenLensError):
    """The index directory does not exist or holds no FrozenLens index."""


class IndexLockedError(FrozenLensError):
    """Another process is already writing to this index directory."""


class EncoderMismatchError(FrozenLensError):
    """The index was built with a different encoder than the one requested."""


class UnknownEncoderError(FrozenLensError):
    """No encoder is registered under the requested name."""


class WeightsNotFoundError(FrozenLensError):
    """Model weights are neither packaged, cached nor downloadable."""


class SchemaVersionError(FrozenLensError):
    """The database schema is newer than this version of FrozenLens understands."""


class DecodeError(FrozenLensError):
    """An image file could not be decoded safely.

    ``reason`` is a short machine-friendly tag (``"truncated"``, ``"empty"``,
    ``"not-an-image"``, ``"too-many-pixels"``, ``"unreadable"``, ``"vanished"``,
    ``"unsupported"``, ``"corrupt"``, ``"too-large"``); the message is for
    people.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class QueryError(FrozenLensError):
    """A search request is invalid (empty query, bad filter, bad ``k`` ...)."""


class ImageNotFoundError(FrozenLensError):
    """No indexed image has the given id or path."""


class IndexCorruptError(FrozenLensError):
    """Index files exist but cannot be read or do not match the database."""


class ScanRootNotFoundError(FrozenLensError, FileNotFoundError):
    """A root given to the scanner does not exist (or is a dangling symlink).

    Also a :class:`FileNotFoundError`, so ``except FileNotFoundError`` works;
    ``filename`` holds the root as given.
    """


class FileFormatError(FrozenLensError):
    """An input file cannot be read or has a malformed line.

    ``path`` is the file and ``line`` the 1-based line number (``None`` when
    the whole file is at fault); both are also in the message.
    """

    def __init__(self, message: str, *, path: str, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class ManifestError(FileFormatError):
    """A caption manifest cannot be read or has a malformed line."""


class IndexInputError(FrozenLensError, ValueError):
    """Arguments given to the vector index are invalid.

    Raised for an unusable FAISS factory string or metric, vectors or ids of
    the wrong shape or dtype, non-finite values, negative ids, and ids that
    are already present. It is also a :class:`ValueError`.
    """


class EvalError(FrozenLensError, ValueError):
    """An evaluation request is invalid (unknown dataset format, a split the
    format does not have, a language no caption is written in, nothing left
    to evaluate ...). It is also a :class:`ValueError`."""


class DatasetError(FileFormatError):
    """An evaluation dataset cannot be read: a file is missing, or a line or
    record is malformed (``path``/``line`` as in :class:`FileFormatError`)."""


class RerankerError(FrozenLensError):
    """A reranker head cannot be loaded, trained or applied: missing or damaged
    files, a head trained for another encoder, or training data too small."""


class RerankerMismatchError(RerankerError, EncoderMismatchError):
    """The reranker head was trained on another encoder's embeddings."""


class FileAccessError(FrozenLensError):
    """The file of an indexed image may not be served (for example, a
    symlink leads out of the indexed folders)."""


class VectorFileMismatchError(IndexCorruptError):
    """A readable vector file that belongs to another index (its recorded
    index identity differs from this index's); it is rebuilt from the database."""


class DiskFullError(FrozenLensError):
    """The disk (or quota) ran out while writing the index. What was
    committed before is kept; the message says how much."""


class DatabaseDamagedError(FrozenLensError):
    """The index's SQLite database is damaged (truncated, overwritten, not a
    database at all). ``path`` is the database file and ``detail`` what SQLite
    reported; ``frozenlens doctor --repair`` salvages what is readable."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(
            f"the index database {path} is damaged ({detail}); "
            "`frozenlens doctor --repair` salvages what is readable"
        )
        self.path = path
        self.detail = detail


class DatabaseUnavailableError(FrozenLensError):
    """The index's database server (PostgreSQL ...) cannot be reached, refuses
    the connection, or its driver is not installed; nothing was changed."""


class IndexReadOnlyError(FrozenLensError):
    """The index lies on read-only media (or this account may not write it)
    and the operation needs to write: indexing, re-indexing, training a
    reranker into it, repairing it, or upgrading its schema."""


class EncoderConfigError(FrozenLensError, ValueError):
    """An encoder was asked for something its model cannot do: a block it
    does not have, an unknown option value, or a checkpoint of another shape."""


class DeviceUnavailableError(EncoderConfigError):
    """A device was asked for explicitly (``--device cuda``) but is not there (no CUDA device)."""


class RuntimeUnavailableError(EncoderConfigError):
    """An encoder runtime was asked for explicitly (``runtime="onnx"``) but cannot run here:
    ONNX Runtime (or, for ``onnx-int8``, the ``onnx`` package) is not installed, or the
    model cannot be exported. Without an explicit request the encoder uses torch instead."""


class CaptionTruncatedWarning(UserWarning):
    """A caption was cut to fit the text tower's context; the message names it."""


class RayUnavailableError(FrozenLensError):
    """``engine="ray"`` was asked for but Ray is not installed (``pip install
    'frozenlens[ray]'``), the cluster at ``address`` cannot be reached, or the
    Ray job failed (what was committed before stays; rerun to finish)."""


class QueryTermError(QueryError):
    """One term of a composed query is invalid: a bad weight or text, too many
    terms, an unknown photo id, a missing or unreadable photo (REST: 422)."""
