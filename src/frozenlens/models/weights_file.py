"""The one check that a named weights file exists (torch-free, so an encoder can run it before loading anything)."""

from __future__ import annotations

from pathlib import Path

from frozenlens.errors import WeightsNotFoundError


def require_weights_file(path: Path, what: str = "EfficientNet-Lite0") -> Path:
    """``path`` if it is a file, else :class:`WeightsNotFoundError` naming it (and ``what`` it should hold)."""
    if not path.is_file():
        raise WeightsNotFoundError(f"{what} weights file not found: {path}")
    return path


__all__ = ["require_weights_file"]
