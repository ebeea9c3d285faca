"""Frozen image/text encoders, created by name.

Importing this package is cheap: the torch-based implementations are imported
only when :func:`create_encoder` builds one.
"""

from __future__ import annotations

from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings
from frozenlens.models.presets import ModelRow
from frozenlens.models.registry import create_encoder, encoder_names, list_models, register_encoder

__all__ = [
    "Encoder",
    "EncoderIdentity",
    "ImageEmbeddings",
    "ModelRow",
    "create_encoder",
    "encoder_names",
    "list_models",
    "register_encoder",
]
