"""The ``openclip:`` towers on ONNX Runtime: ``OpenClipEncoder(..., runtime="onnx" | "onnx-int8")``.

Both towers of a loaded open_clip model are exported once (on first use of
each, never per call) and kept as :class:`~frozenlens.models.onnx_runtime.OnnxGraph`
files keyed by a digest of the weights, the model's identity, the
preprocessing and the versions of open_clip and torch:

- the **text graph**: int64 token ids (b, ctx) → float32 (b, dim) (not normalised);
- the **image graph**: uint8 (b, S, S, 3) → float32 (b, dim) and, for ViTs
  with region tokens, float32 (b, G*G, dim); the scaling to [0, 1] and the
  mean/std normalisation are part of the graph, so an image batch goes to
  ONNX Runtime as decoded, without torch.

:class:`OnnxTowers` holds the two graphs of one encoder; sessions are built
under the graph's lock on the first call of their tower (a text search
builds no image session).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from frozenlens.models.artifact_cache import ArtifactCache, file_digest
from frozenlens.models.onnx_runtime import OnnxGraph, export_onnx

#: what int8 quantises in the transformer towers (the linear layers: almost all of the weights)
INT8_OPS = ("MatMul", "Gemm")
#: images per ONNX Runtime call of an image graph: a ViT-B/32 session peaked at 0.85 GB with 32 images a
#: call and 0.51 GB with 8, at the same images/s within noise (``bench/bench_onnx_export.py``).
IMAGE_MICRO_BATCH = 8


def run_image_graph(graph: OnnxGraph, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (b, S, S, 3) → (pooled float32 (b, dim), region tokens float32 (b, G*G, dim) or None), run in
    micro-batches of :data:`IMAGE_MICRO_BATCH`; not normalised."""
    pooled, cells = [], []
    for start in range(0, batch.shape[0], IMAGE_MICRO_BATCH):
        part = np.ascontiguousarray(batch[start : start + IMAGE_MICRO_BATCH], dtype=np.uint8)
        out = graph.run({"pixels": part})
        pooled.append(out[0])
        if len(out) > 1:
            cells.append(out[1])
    return np.concatenate(pooled), (np.concatenate(cells) if cells else None)


def model_digest(model: Any) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes), for models built in memory."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class OnnxTowers:
    """The text and image graphs of one open_clip model.

    Args:
        model: the open_clip model (eval mode, on the CPU); exported when a graph is not in the cache.
        key_parts: JSON-able facts the graphs depend on (weights digest, identity, preprocessing, versions).
        mean, std: the image normalisation (3 floats each); ``with_tokens``: export the ViT region tokens.
        tokens_fn: the encoder's ``(visual, x) → (pooled, cells)`` of the region-token path.
        example_tokens: int64 (b, ctx) token ids of two texts, the text export's example input.
    """

    def __init__(self, cache: ArtifactCache, model: Any, key_parts: list[object], *, input_size: int,
                 mean: tuple[float, ...], std: tuple[float, ...], visual_with_tokens: Any,
                 tokens_fn: Callable[[Any, Any], tuple[Any, Any]], example_tokens: Any, int8: bool,
                 threads: int) -> None:
        def export_text(dest: Path, data: Path) -> None:
            export_onnx(text_tower(model), (example_tokens,), ("tokens",), ("text",), dest, data)

        def export_image(dest: Path, data: Path) -> None:
            import torch

            example = torch.zeros(2, input_size, input_size, 3, dtype=torch.uint8)
            tower = _image_tower(model, mean, std, visual_with_tokens, tokens_fn)
            outputs = ("image", "cells") if visual_with_tokens is not None else ("image",)
            export_onnx(tower, (example,), ("pixels",), outputs, dest, data)

        ops = INT8_OPS if int8 else None
        self.text = OnnxGraph(cache, "openclip-text", key_parts, export_text, int8=int8, int8_ops=ops,
                              threads=threads, prepack=False)  # queries: one text at a time
        self.image = OnnxGraph(cache, "openclip-image", [*key_parts, visual_with_tokens is not None],
                               export_image, int8=int8, int8_ops=ops, threads=threads)

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """int64 (b, ctx) → float32 (b, dim), not normalised."""
        return self.text.run({"tokens": np.ascontiguousarray(tokens, dtype=np.int64)})[0]

    def encode_pixels(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """uint8 (b, S, S, 3) → (pooled float32 (b, dim), region tokens float32 (b, G*G, dim) or None)."""
        return run_image_graph(self.image, batch)


def onnx_towers(encoder: Any, loaded: Any, tokens_fn: Callable[[Any, Any], tuple[Any, Any]]) -> OnnxTowers:
    """The :class:`OnnxTowers` of an :class:`~frozenlens.models.openclip.OpenClipEncoder` (CPU, fp32 model)
    built from ``loaded`` (a :class:`~frozenlens.models.loading.LoadedModel`); no session is built yet."""
    import torch

    cfg = encoder.preprocess_cfg
    digests = [file_digest(f) for f in loaded.files] if loaded.files else [model_digest(encoder.model)]
    key_parts: list[object] = [
        digests, loaded.identity.name, loaded.identity.version, cfg, encoder.max_text_tokens,
        _dist_version("open_clip_torch"), _dist_version("torch"),
    ]
    with encoder._tokenizer_lock:
        example = encoder.tokenizer(["a dog", "a photo of a cat on a sofa"])
    return OnnxTowers(
        ArtifactCache(), encoder.model, key_parts, input_size=encoder.input_size, mean=cfg["mean"], std=cfg["std"],
        visual_with_tokens=encoder._visual_with_tokens, tokens_fn=tokens_fn, example_tokens=example,
        int8=encoder.runtime == "onnx-int8", threads=torch.get_num_threads(),
    )


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


def text_tower(model: Any) -> Any:
    """A module: token ids (b, ctx) → the text embedding (b, dim)."""
    import torch

    class TextTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.clip.encode_text(tokens)

    return TextTower().eval()


def _image_tower(model: Any, mean: tuple[float, ...], std: tuple[float, ...], visual_with_tokens: Any,
                 tokens_fn: Callable[[Any, Any], tuple[Any, Any]]) -> Any:
    """A module: uint8 (b, S, S, 3) → the image embedding (b, dim) [, region tokens (b, G*G, dim)]."""
    import torch

    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model
            self.with_tokens = visual_with_tokens
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

        def forward(self, pixels: torch.Tensor) -> Any:
            x = pixels.permute(0, 3, 1, 2).float() / 255.0  # (b, 3, S, S) in [0, 1]
            x = (x - self.mean) / self.std
            if self.with_tokens is not None:
                return tokens_fn(self.with_tokens, x)  # (b, dim), (b, G*G, dim)
            return self.clip.encode_image(x)

    return ImageTower().eval()


__all__ = ["IMAGE_MICRO_BATCH", "INT8_OPS", "OnnxTowers", "model_digest", "onnx_towers", "run_image_graph", "text_tower"]
