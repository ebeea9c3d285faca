"""The ``lite`` image tower (EfficientNet-Lite0) on ONNX Runtime: ``LiteEncoder(runtime="onnx" | "onnx-int8")``.

The network — input float32 (b, 3, 224, 224) in [-1, 1], outputs the pooled
features (b, 1280), the logits (b, 1000) and the 2x2 region logits
(b, 4, 1000) — is exported once and kept as an
:class:`~frozenlens.models.onnx_runtime.OnnxGraph` keyed by the digest of the
weights file and of the network's code (``efficientnet_lite.py``), so a
later process loads no torch network at all for its image side. The int8
variant quantises the classifier only (``MatMul``/``Gemm``): with the
convolutions quantised too, image vectors fell to cosine 0.70 of fp32 and
ran slower (see docs/benchmarks.md for both).

:class:`OnnxNet` takes and returns numpy arrays
(:func:`frozenlens.models.lite_forward.forward` feeds it), so an ``onnx``
:class:`~frozenlens.models.lite.LiteEncoder` embeds images without torch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from frozenlens.errors import RuntimeUnavailableError
from frozenlens.models.artifact_cache import ArtifactCache, file_digest
from frozenlens.models.onnx_runtime import OnnxGraph, export_onnx

if TYPE_CHECKING:
    import torch

_INPUTS = ("x",)
_OUTPUTS = ("features", "logits", "cells")
_INT8_OPS = ("MatMul", "Gemm")


class OnnxNet:
    """The EfficientNet-Lite network as an ONNX Runtime session: numpy in, numpy out (no torch)."""

    def __init__(self, graph: OnnxGraph) -> None:
        self.graph = graph

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 (b, 3, 224, 224) → (features (b, 1280), logits (b, 1000), cells (b, 4, 1000)). Thread-safe."""
        feats = self.graph.run({"x": np.ascontiguousarray(x, dtype=np.float32)})
        return feats[0], feats[1], feats[2]


def _exportable(net: object) -> object:
    """``net``'s forward with the grid pooling spelt out (the exporter cannot size an adaptive pool
    of a dynamic batch): at 224 px the 7 x 7 map's 2 x 2 adaptive cells are rows/columns 0-3 and 3-6."""
    import torch

    if getattr(net, "grid", None) != 2:
        raise RuntimeUnavailableError("the lite ONNX export spells out a 2 x 2 region grid only")

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            fmap = self.net.forward_map(x)  # (B, 1280, 7, 7)
            feats = fmap.mean(dim=(2, 3))  # (B, 1280)
            cells = torch.stack([fmap[:, :, r : r + 4, c : c + 4].mean(dim=(2, 3))
                                 for r in (0, 3) for c in (0, 3)], dim=1)  # (B, 4, 1280), row-major
            return feats, self.net._fc(feats), self.net._fc(cells)

    return Exported().eval()


def lite_graph(cache: ArtifactCache, weights: Path | None, *, int8: bool, micro_batch: int, threads: int) -> OnnxGraph:
    """The :class:`OnnxGraph` of EfficientNet-Lite0 with ``weights`` (default: the packaged file)."""

    def export(dest: Path, data: Path) -> None:
        import torch

        from frozenlens.models.efficientnet_lite import load_efficientnet_lite0

        example = torch.zeros(max(2, micro_batch), 3, 224, 224)
        export_onnx(_exportable(load_efficientnet_lite0(weights)), (example,), _INPUTS, _OUTPUTS, dest, data)

    return OnnxGraph(cache, "lite-image", _key_parts(weights), export, int8=int8,
                     int8_ops=_INT8_OPS if int8 else None, threads=threads)


def lite_onnx_net(cache: ArtifactCache, weights: Path | None, *, int8: bool, micro_batch: int,
                  threads: int) -> OnnxNet:
    """An :class:`OnnxNet` whose session is built now (from the cache, or exported and stored)."""
    net = OnnxNet(lite_graph(cache, weights, int8=int8, micro_batch=micro_batch, threads=threads))
    net.graph.session()
    return net


def _key_parts(weights: Path | None) -> list[object]:
    """Digests of the weights file and of the network's code (no torch import)."""
    if weights is None:
        from frozenlens.models.lite_weights import default_weights_path

        weights = default_weights_path(0)
    spec = importlib.util.find_spec("frozenlens.models.efficientnet_lite")
    assert spec is not None and spec.origin is not None
    return [file_digest(Path(weights)), file_digest(Path(spec.origin)), _version("torch")]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


__all__ = ["OnnxNet", "lite_graph", "lite_onnx_net"]
