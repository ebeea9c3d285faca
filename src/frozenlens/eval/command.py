"""``frozenlens eval`` as a pure function: read a dataset, evaluate, write a report.

The CLI parses arguments, builds a progress bar and calls
:func:`eval_command`; everything else happens here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from frozenlens.eval.datasets import load_dataset
from frozenlens.eval.report import write_report
from frozenlens.eval.runner import DEFAULT_BATCH_SIZE, Reranker, evaluate
from frozenlens.eval.types import EvalResult
from frozenlens.progress import ProgressCallback

__all__ = ["eval_command"]

log = logging.getLogger(__name__)


def eval_command(
    dataset_path: str | os.PathLike[str],
    fmt: str,
    *,
    encoder_name: str,
    image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
    languages: Sequence[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    progress: ProgressCallback | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    min_coverage: float = 0.0,
    rerank: Reranker | None = None,
    encoder_options: dict[str, object] | None = None,
) -> EvalResult:
    """Evaluate the encoder ``encoder_name`` on a dataset file.

    ``fmt``: ``manifest``/``jsonl``, ``karpathy``/``flickr30k``/``coco``,
    ``xm3600``/``crossmodal3600``, ``urban1k`` or ``docci`` (see
    :mod:`frozenlens.eval.datasets`). ``split=None`` takes the format's default
    (``test`` for Karpathy and DOCCI, everything for a manifest). ``limit``
    keeps the first N images (after the split). ``languages=None`` evaluates
    every language with captions on at least ``min_coverage`` (a fraction,
    default 0: any) of the images — Tux Paint has a few languages on a
    handful of stamps only, whose image→text numbers mean little. With
    ``out_dir``, ``results.md`` and ``results.json`` are written there. The
    result's ``extra`` records the format, the split tags of the evaluated
    images, the limit and the dataset path.

    Raises :class:`~frozenlens.errors.EvalError`,
    :class:`~frozenlens.errors.DatasetError` or
    :class:`~frozenlens.errors.UnknownEncoderError` (all FrozenLensError).
    """
    from frozenlens.models import create_encoder  # heavy imports only when run

    dataset = load_dataset(dataset_path, fmt, image_root=image_root, split=split)
    if limit is not None:
        dataset = dataset.head(limit)
    encoder = create_encoder(encoder_name, **(encoder_options or {}))
    result = evaluate(
        dataset, encoder, languages=languages, batch_size=batch_size, progress=progress,
        rerank=rerank, min_coverage=min_coverage,
    )
    result = replace(result, extra={
        "format": fmt,
        "splits": {str(tag): n for tag, n in dataset.splits().items()},
        "limit": limit,
        "dataset_path": str(Path(dataset_path).resolve()),
    })
    if out_dir is not None:
        md, js = write_report(result, out_dir)
        log.info("wrote %s and %s", md, js)
    return result
