"""open_clip's eval image preprocessing with PIL only (no torch): shared by the ``openclip:`` encoders.

:func:`prepare_image` runs in decoder threads; the normalisation (mean/std) happens in the model's
forward pass or its exported graph.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from frozenlens.models.base import ImageEmbeddings


def prepare_image(
    image: Image.Image,
    size: int,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    fill_color: int = 0,
) -> np.ndarray:
    """open_clip's eval resize/crop with PIL only → uint8 (size, size, 3). Thread-safe.

    shortest: shorter side → size, centre-crop; squash: resize to size×size;
    longest: longer side → size, centre-pad with ``fill_color``.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
    w, h = image.size
    if resize_mode == "squash":
        image = image.resize((size, size), resample)
    elif resize_mode == "longest":
        ratio = max(h / size, w / size)
        nw, nh = max(1, round(w / ratio)), max(1, round(h / ratio))
        image = image.resize((nw, nh), resample)
        if (nw, nh) != (size, size):
            canvas = Image.new("RGB", (max(nw, size), max(nh, size)), (fill_color,) * 3)
            canvas.paste(image, (max(size - nw, 0) // 2, max(size - nh, 0) // 2))
            image = canvas
            w, h = image.size
            top, left = round((h - size) / 2.0), round((w - size) / 2.0)
            image = image.crop((left, top, left + size, top + size))
    elif resize_mode == "shortest":
        # torchvision Resize(int): shorter side → size, longer side truncated
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        image = image.resize((nw, nh), resample)
        top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
        image = image.crop((left, top, left + size, top + size))
    else:
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    return np.array(image, dtype=np.uint8)  # (size, size, 3)


def checked_pixels(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` as a uint8 (n, size, size, 3) array; ``ValueError`` for anything else."""
    batch = np.asarray(batch)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
        raise ValueError(f"expected uint8 (n, {size}, {size}, 3), got {batch.dtype} {batch.shape}")
    return batch


def no_images(dim: int) -> ImageEmbeddings:
    """The embeddings of an empty batch (semantic = visual, no labels)."""
    empty = np.zeros((0, dim), np.float32)
    return ImageEmbeddings(semantic=empty, visual=empty.copy(), labels=None)


__all__ = ["checked_pixels", "no_images", "prepare_image"]
