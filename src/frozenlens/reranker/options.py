"""The reranker's torch-free facts: head size presets, training options and their defaults.

Importing this module imports neither torch nor numpy, so the command line
(``frozenlens train-reranker --help``), the server and documentation can read
the preset names and default values from their one owner:
:data:`PRESETS` (used by :func:`frozenlens.reranker.model.preset_config`),
:class:`TrainOptions` (how :func:`frozenlens.reranker.train.train_reranker`
trains) and :class:`TrainingData` (what :func:`frozenlens.reranker.command.train_command`
trains on).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: architecture presets (``dim``/``visual_dim``/``encoder`` come from the encoder)
PRESETS: dict[str, dict[str, Any]] = {
    # sized to meet p50 <= 25 ms for 100 candidates on 2 CPU cores
    "cpu": {"d_model": 128, "layers": 2, "heads": 4, "ffn_mult": 2, "mlp_hidden": 128, "self_attention": False},
    # the published size: 512-d, 4 layers, 8 heads, ~68 M parameters, most of
    # them in the cross-attention blocks (the paper does not give every width;
    # the feed-forward and MLP widths here are chosen to land on its count)
    "paper": {"d_model": 512, "layers": 4, "heads": 8, "ffn_mult": 11, "mlp_hidden": 6144, "self_attention": False},
}
#: the preset a head gets unless asked otherwise
DEFAULT_PRESET = "cpu"


@dataclass(frozen=True)
class TrainOptions:
    """How a head is trained (see :mod:`frozenlens.reranker.train` for the loss and schedule).

    preset: a :data:`PRESETS` name; epochs: most epochs (early stopping may end
    sooner, after ``patience`` epochs without a better validation MRR);
    batch_size: texts per step; hard_negatives: mined negatives per text, drawn
    from its top-``hard_pool`` first-stage non-matches; in_batch: other texts'
    positives used as negatives; lr: peak learning rate (``None``: by preset,
    see :meth:`learning_rate`); candidates: K', first-stage candidates reranked
    in validation; max_steps_per_epoch: cap on the steps of an epoch;
    device: a torch device name, or ``"auto"`` (cuda when present, else cpu);
    overrides: :class:`~frozenlens.reranker.model.RerankerConfig` fields (ablations).
    """

    preset: str = DEFAULT_PRESET
    epochs: int = 12
    batch_size: int = 32
    hard_negatives: int = 7
    hard_pool: int = 30
    in_batch: int = 4
    lr: float | None = None  # default: 1e-3 for "cpu", 2e-4 for bigger presets
    weight_decay: float = 0.01
    align_weight: float = 0.1
    warmup: float = 0.05  # fraction of all steps
    patience: int = 3
    candidates: int = 100  # K': first-stage candidates reranked in validation
    max_steps_per_epoch: int | None = None
    seed: int = 0
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # RerankerConfig fields (ablations)

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (1e-3 if self.preset == "cpu" else 2e-4)


@dataclass(frozen=True)
class TrainingData:
    """What a head is trained on: a dataset's two splits, or (``dataset=None``) an index's captions.

    dataset / fmt / image_root: a dataset file or folder in an evaluation
    format (:func:`frozenlens.eval.datasets.load_dataset`); train_split /
    val_split: its splits; languages: language tags to use (``None``: every
    language captioning at least ``min_coverage`` of the training images);
    val_fraction: with an index's captions, the fraction of images held out
    for validation.
    """

    dataset: str | os.PathLike[str] | None = None
    fmt: str = "manifest"
    image_root: str | os.PathLike[str] | None = None
    train_split: str = "train"
    val_split: str = "val"
    languages: Sequence[str] | None = None
    min_coverage: float = 0.0
    val_fraction: float = 0.1


__all__ = ["DEFAULT_PRESET", "PRESETS", "TrainOptions", "TrainingData"]
