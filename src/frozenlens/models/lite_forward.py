"""The ``lite`` image side's arithmetic after the network: ConSE, labels, and one forward pass per runtime.

Everything here works on numpy arrays. The ONNX Runtime network
(:class:`~frozenlens.models.lite_onnx.OnnxNet`) takes and returns numpy, so an
``onnx`` :class:`~frozenlens.models.lite.LiteEncoder` embeds images without
importing torch (torch costs ~1–2 s to import and ~0.3 GB of memory); the torch
runtimes (the reference) convert their outputs and share the same ConSE.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of float32 (n, C) logits / ``temperature``."""
    z = logits / np.float32(temperature)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit length (norms clamped at 1e-12, as torch's ``normalize``)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), np.float32(1e-12))


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, indices) of the ``k`` largest entries of each row, largest first."""
    k = min(k, probs.shape[1])
    idx = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(probs, idx, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(idx, order, axis=1)


def conse_embed(logits: np.ndarray, class_emb: np.ndarray, top_t: int, temperature: float) -> np.ndarray:
    """ConSE: logits float32 (n, C), class_emb float32 (C, d) unit rows → float32 (n, d) unit rows.

    The softmax (at ``temperature``) of the ``top_t`` most likely classes, renormalised, weighs their
    class-name embeddings.
    """
    logits = np.asarray(logits, dtype=np.float32)
    weights, idx = top_k(softmax(logits, temperature), top_t)  # (n, T)
    weights = weights / weights.sum(axis=1, keepdims=True)
    vecs = np.einsum("nt,ntd->nd", weights, np.asarray(class_emb, dtype=np.float32)[idx])  # (n, d)
    return unit_rows(vecs)


def forward(net: Any, batch: np.ndarray, *, runtime: str, micro_batch: int) -> tuple[np.ndarray, ...]:
    """uint8 (n, 224, 224, 3) → numpy (features (n, 1280), logits (n, 1000), region logits (n, G*G, 1000)).

    Pixels are scaled to [-1, 1] ((x / 255 - 0.5) / 0.5). ONNX runtimes: numpy only. Torch runtimes:
    ``net`` is the torch module (channels_last memory for ``jit`` / ``channels_last``).
    """
    parts: list[tuple[np.ndarray, ...]] = []
    if runtime in ("onnx", "onnx-int8"):
        for start in range(0, batch.shape[0], micro_batch):
            x = batch[start : start + micro_batch].transpose(0, 3, 1, 2).astype(np.float32, order="C")  # NCHW
            x *= np.float32(2.0 / 255.0)
            x -= np.float32(1.0)
            parts.append(tuple(net(x)))
    else:
        import torch

        with torch.inference_mode():
            # NHWC memory viewed as NCHW is exactly the channels_last layout
            x = torch.from_numpy(batch).permute(0, 3, 1, 2)  # (n, 3, 224, 224) uint8
            if runtime == "eager":
                x = x.contiguous()
            x = x.float().mul_(2.0 / 255.0).sub_(1.0)
            for start in range(0, batch.shape[0], micro_batch):
                parts.append(tuple(t.numpy() for t in net(x[start : start + micro_batch])))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


__all__ = ["conse_embed", "forward", "softmax", "top_k", "unit_rows"]
