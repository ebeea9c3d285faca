"""``frozenlens train-reranker`` as a library function: data in, head on disk.

The CLI parses arguments and draws the progress bar; everything else is here:
which encoder a head is trained for (:func:`training_encoder`), whether the
index is needed (:func:`needs_index`), loading the data
(:func:`load_training_data`), training (:func:`train_command`), and the
evaluation harness's hook for a trained head (:func:`eval_rerank_hook`). The options
and their defaults are :mod:`frozenlens.reranker.options`'.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from frozenlens.errors import QueryError, RerankerError
from frozenlens.models.base import Encoder, EncoderIdentity
from frozenlens.models.presets import LITE
from frozenlens.progress import ProgressCallback, ignore_progress
from frozenlens.reranker.options import TrainingData, TrainOptions

if TYPE_CHECKING:
    from frozenlens.reranker.head import Reranker
    from frozenlens.reranker.train import TrainingSet, TrainReport
    from frozenlens.store import Store

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "reranker.train.pt"


@dataclass(frozen=True)
class TrainedHead:
    head: Reranker
    report: TrainReport
    path: Path  # the head's config file
    train_texts: int
    val_texts: int


def needs_index(data: TrainingData, out_dir: str | os.PathLike[str] | None, index_named: bool) -> bool:
    """Whether training opens the index: to read its captions (no dataset), to save
    the head into it (no ``out_dir``), or because the user named it (its encoder then decides)."""
    return data.dataset is None or not out_dir or index_named


class IndexEncoder(Protocol):
    """What :func:`training_encoder` needs of an open index (an :class:`~frozenlens.engine.Engine`)."""

    @property
    def identity(self) -> EncoderIdentity: ...

    @property
    def encoder(self) -> Encoder: ...


def training_encoder(requested: str | None, index: IndexEncoder | None = None) -> Encoder:
    """The encoder a head is trained for.

    With an index, its encoder (a head scores that encoder's embeddings):
    :class:`QueryError` when ``requested`` names another (checked before the
    model loads). Without one, ``requested``, by default the packaged ``lite``
    encoder.
    """
    if index is not None:
        name = index.identity.name
        if requested and requested != name:
            raise QueryError(f"the index uses encoder {name}; a head for it must use it too")
        return index.encoder
    from frozenlens.models.registry import create_encoder

    return create_encoder(requested or LITE.name)


def load_training_data(
    encoder: Encoder,
    data: TrainingData,
    *,
    store: Store | None = None,
    seed: int = 0,
    progress: ProgressCallback = ignore_progress,
) -> tuple[TrainingSet, TrainingSet]:
    """(train, val) from a dataset file (its two splits) or, without one, from ``store``'s captions."""
    from frozenlens.reranker.data import from_eval_dataset, from_store

    if data.dataset is None:
        if store is None:
            raise RerankerError("give a dataset or an index with captions to train on")
        return from_store(store, encoder, val_fraction=data.val_fraction, seed=seed, languages=data.languages)
    from frozenlens.eval.datasets import load_dataset

    train_ds = load_dataset(data.dataset, data.fmt, image_root=data.image_root, split=data.train_split)
    val_ds = load_dataset(data.dataset, data.fmt, image_root=data.image_root, split=data.val_split)
    langs = list(data.languages) if data.languages is not None else train_ds.languages(data.min_coverage)
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
    data: TrainingData | None = None,
    *,
    store: Store | None = None,
    progress: ProgressCallback | None = None,
    resume: bool = True,
) -> TrainedHead:
    """Load data (see :func:`load_training_data`), train, save the head into ``out_dir``.

    A checkpoint ``reranker.train.pt`` in ``out_dir`` makes an interrupted
    run resumable (``resume=False`` starts afresh).
    """
    from frozenlens.reranker.train import train_reranker

    report_cb = progress or ignore_progress
    train, val = load_training_data(encoder, data or TrainingData(), store=store, seed=options.seed,
                                    progress=report_cb)
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


def eval_rerank_hook(
    head_dir: str | os.PathLike[str],
    encoder_name: str,
    candidates: int,
    encoder_options: dict[str, object] | None = None,
) -> Callable[..., Any]:
    """The evaluation harness's rerank hook (:func:`frozenlens.reranker.data.eval_hook`) for the
    head in ``head_dir``, with the encoder ``encoder_name`` (the head refuses another encoder's
    embeddings: :class:`RerankerError`)."""
    from frozenlens.models.registry import create_encoder
    from frozenlens.reranker.data import eval_hook
    from frozenlens.reranker.head import Reranker

    head = Reranker.load(head_dir)
    return eval_hook(head, create_encoder(encoder_name, **(encoder_options or {})), candidates)
