"""Retrieval evaluation harness: how well does an encoder find images by captions?

- :mod:`~frozenlens.eval.types`    — :class:`EvalDataset`/:class:`EvalImage` in, :class:`EvalResult` out
- :mod:`~frozenlens.eval.datasets` — readers: FrozenLens manifest, Karpathy (Flickr30k/COCO),
  Crossmodal-3600, Urban-1k, DOCCI
- :mod:`~frozenlens.eval.metrics`  — R@1/5/10, mean/median rank both ways (numpy)
- :mod:`~frozenlens.eval.runner`   — :func:`evaluate` (exact brute force, optional rerank hook)
- :mod:`~frozenlens.eval.report`   — Markdown and JSON
- :mod:`~frozenlens.eval.command`  — :func:`eval_command`, the body of ``frozenlens eval``
- :mod:`~frozenlens.eval.tuxpaint` — Debian's Tux Paint stamps → a multilingual test set

Importing this package does not import torch or load a model.
"""

from __future__ import annotations

from frozenlens.eval.command import eval_command
from frozenlens.eval.datasets import (
    format_names,
    load_dataset,
    read_docci,
    read_karpathy,
    read_manifest,
    read_urban1k,
    read_xm3600,
)
from frozenlens.eval.metrics import RetrievalMetrics, retrieval_metrics
from frozenlens.eval.report import to_json, to_markdown, write_report
from frozenlens.eval.runner import Reranker, RerankInput, evaluate
from frozenlens.eval.tuxpaint import convert_tuxpaint
from frozenlens.eval.types import EvalDataset, EvalImage, EvalResult, LanguageResult

__all__ = [
    "EvalDataset",
    "EvalImage",
    "EvalResult",
    "LanguageResult",
    "RerankInput",
    "Reranker",
    "RetrievalMetrics",
    "convert_tuxpaint",
    "eval_command",
    "evaluate",
    "format_names",
    "load_dataset",
    "read_docci",
    "read_karpathy",
    "read_manifest",
    "read_urban1k",
    "read_xm3600",
    "retrieval_metrics",
    "to_json",
    "to_markdown",
    "write_report",
]
