"""``frozenlens train-reranker`` as a library function: data in, head on disk.

The CLI parses arguments and draws the progress bar; everything else is here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from frozenlens.errors import RerankerError
from frozenlens.models.base import Encoder
from frozenlens.progress import ProgressCallback, ignore_progress
from frozenlens.reranker.head import Reranker
from frozenlens.reranker.train import (
    TrainingSet,
    TrainOptions,
    TrainReport,
    train_reranker,
)

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "reranker.train.pt"


@dataclass(frozen=True)
class TrainedHead:
    head: Reranker
    report: TrainReport
    path: Path  # the head's config file
    train_texts: int
    val_texts: int


def load_training_data(
    encoder: Encoder,
    *,
    store=None,
    dataset: str | os.PathLike[str] | None = None,
    fmt: str = "manifest",
    image_root: str | os.PathLike[str] | None = None,
    train_split: str = "train",
    val_split: str = "val",
    languages: Sequence[str] | None = None,
    min_coverage: float = 0.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: ProgressCallback = ignore_progress,
) -> tuple[TrainingSet, TrainingSet]:
    """(train, val) from a dataset file (its two splits) or from an index's captions."""
    from frozenlens.reranker.data import from_eval_dataset, from_store

    if dataset is None:
        if store is None:
            raise RerankerError("give a dataset or an index with captions to train on")
        return from_store(store, encoder, val_fraction=val_fraction, seed=seed, languages=languages)
    from frozenlens.eval.datasets import load_dataset

    train_ds = load_dataset(dataset, fmt, image_root=image_root, split=train_split)
    val_ds = load_dataset(dataset, fmt, image_root=image_root, split=val_split)
    langs = list(languages) if languages is not None else train_ds.languages(min_coverage)
    if not langs:
        raise RerankerError("no language has enough captions to train on")
    train = from_eval_dataset(train_ds, encoder, languages=langs, progress=progress)
    val = from_eval_dataset(val_ds, encoder, languages=[x for x in langs if x in val_ds.languages()] or None,
                            progress=progress)
    return train, val


def train_command(
    encoder: Encoder,
    out_dir: str | os.PathLike[str],
    options: TrainOptions,
    *,
    progress: ProgressCallback | None = None,
    resume: bool = True,
    **data_args: object,
) -> TrainedHead:
    """Load data (see :func:`load_training_data`), train, save the head into ``out_dir``.

    A checkpoint ``reranker.train.pt`` in ``out_dir`` makes an interrupted
    run resumable (``resume=False`` starts afresh).
    """
    report_cb = progress or ignore_progress
    train, val = load_training_data(encoder, progress=report_cb, seed=options.seed, **data_args)  # type: ignore[arg-type]
    log.info("training on %d texts / %d images, validating on %d texts / %d images",
             len(train), len(train.images), len(val), len(val.images))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    if not resume and ckpt.exists():
        ckpt.unlink()
    head, report = train_reranker(train, val, encoder.identity, options, progress=report_cb, checkpoint=ckpt)
    path = head.save(out)
    return TrainedHead(head, report, path, len(train), len(val))
