"""Metadata store (SQLAlchemy): images, captions, vectors, index manifest."""

from .records import CaptionVector, ChunkVector, Delta, FileState, ImageRecord, PhotoFields
from .schema import DUPLICATE, FAILED, INDEXED
from .store import Store
from .writer import BatchWriter

__all__ = [
    "DUPLICATE",
    "FAILED",
    "INDEXED",
    "BatchWriter",
    "CaptionVector",
    "ChunkVector",
    "Delta",
    "FileState",
    "ImageRecord",
    "PhotoFields",
    "Store",
]
