"""Training a FrEVL head on (text, image) pairs with mined hard negatives.

Data: a :class:`TrainingSet` — texts as token sequences, images as token
sequences, and per text the set of images it describes. Builders for the
index's own captions, the evaluation harness's datasets and category sets
live in :mod:`frozenlens.reranker.data`.

Each step takes B texts; for each, one positive image, ``hard_negatives``
images sampled from the text's top-``hard_pool`` first-stage (cosine)
non-matching images — the retriever's real confusions — and up to
``in_batch`` other texts' positives (in-batch negatives). Loss:

    listwise softmax cross-entropy over [positive, negatives] of the scaled
    head scores  +  align_weight * symmetric InfoNCE of the projected global
    embeddings of the B matching pairs  (+ AdamW weight decay)

AdamW with linear warm-up then cosine decay; after every epoch the head
reranks each validation text's top-``candidates`` first-stage images and the
mean reciprocal rank (MRR) selects the best epoch; training stops after
``patience`` epochs without improvement and returns the best weights. Seeds
fix sampling and initialisation; a checkpoint written after every epoch (temp
file + ``os.replace``) lets an interrupted run continue where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from frozenlens.errors import RerankerError
from frozenlens.models.base import EncoderIdentity
from frozenlens.progress import Progress, ProgressCallback, ignore_progress
from frozenlens.reranker.features import ImageTokens, TextTokens, pair_batch
from frozenlens.reranker.head import Reranker
from frozenlens.reranker.model import FusionHead, preset_config
from frozenlens.reranker.options import TrainOptions  # owned by options (torch-free); used here

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSet:
    """texts (T rows) against images (I rows); ``positives[t]`` int64 array of
    the images text t describes (at least one)."""

    texts: TextTokens
    langs: tuple[str | None, ...]
    images: ImageTokens
    positives: tuple[np.ndarray, ...]

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.langs) == len(self.positives)):
            raise RerankerError("texts, languages and positives differ in length")
        if any(p.size == 0 for p in self.positives):
            raise RerankerError("every training text needs at least one positive image")

    def __len__(self) -> int:
        return len(self.texts)

    def first_stage(self, rows: np.ndarray | None = None) -> np.ndarray:
        """float32 (T', I) cosine scores of texts ``rows`` (default all) against all images."""
        g = self.texts.global_ if rows is None else self.texts.global_[rows]
        return g @ self.images.semantic.T


@dataclass
class TrainReport:
    epochs_run: int = 0
    best_epoch: int = 0
    steps: int = 0
    resumed_from_epoch: int = 0
    seconds: float = 0.0
    val_first_stage: dict[str, float] = field(default_factory=dict)
    val_reranked: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ranking_metrics(scores: np.ndarray, positives: tuple[np.ndarray, ...] | list[np.ndarray],
                    candidates: int) -> dict[str, float]:
    """Rerank-style metrics of a (T, I) score matrix: R@1, R@5, R@10 and MRR
    of the first positive, ties broken pessimistically."""
    ranks = np.empty(len(positives), np.float64)
    for t, pos in enumerate(positives):
        s = scores[t]
        best = s[pos].max()
        wrong = np.ones(s.shape[0], bool)
        wrong[pos] = False
        ranks[t] = 1 + int(np.count_nonzero(s[wrong] >= best))
    return {"r1": float(np.mean(ranks <= 1)), "r5": float(np.mean(ranks <= 5)),
            "r10": float(np.mean(ranks <= 10)), "mrr": float(np.mean(1.0 / ranks)),
            "candidates": float(candidates)}


def rerank_matrix(head: Reranker, data: TrainingSet, candidates: int, rows: np.ndarray | None = None) -> np.ndarray:
    """(T', I) scores: each text's top-``candidates`` first-stage images get the
    head's score, the others keep their cosine minus 1000 (stay below, in order)."""
    rows = np.arange(len(data)) if rows is None else rows
    first = data.first_stage(rows)  # (T', I)
    k = min(candidates, first.shape[1])
    top = np.argpartition(-first, k - 1, axis=1)[:, :k]  # (T', k)
    t_idx = np.repeat(rows, k)
    scores = head.score_pairs(data.texts, t_idx, data.images, top.reshape(-1)).reshape(len(rows), k)
    out = first - 1000.0
    np.put_along_axis(out, top, scores, axis=1)
    return out


class _Sampler:
    """Draws training lists: [positive, hard negatives..., in-batch negatives...]."""

    def __init__(self, data: TrainingSet, opts: TrainOptions) -> None:
        self.data = data
        self.opts = opts
        n_images = len(data.images)
        pool = min(opts.hard_pool, max(1, n_images - 1))
        self.hard = np.zeros((len(data), pool), np.int64)
        for s in range(0, len(data), 1024):
            rows = np.arange(s, min(s + 1024, len(data)))
            first = data.first_stage(rows)
            for j, t in enumerate(rows):
                first[j, data.positives[t]] = -np.inf
            take = min(pool, first.shape[1])
            top = np.argpartition(-first, take - 1, axis=1)[:, :take]
            order = np.argsort(-np.take_along_axis(first, top, axis=1), axis=1)
            self.hard[rows] = np.take_along_axis(top, order, axis=1)
        self.pos_sets = [set(p.tolist()) for p in data.positives]

    def lists(self, texts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """int64 (B, 1 + H + N) image indices per text; column 0 = positive."""
        o = self.opts
        width = 1 + o.hard_negatives + o.in_batch
        positives = np.array([rng.choice(self.data.positives[t]) for t in texts], np.int64)
        out = np.empty((len(texts), width), np.int64)
        n_images = len(self.data.images)
        for b, t in enumerate(texts):
            pool = self.hard[t]
            # favour the strongest confusions: sample with weight 1/sqrt(rank)
            w = 1.0 / np.sqrt(np.arange(1, pool.size + 1))
            h = rng.choice(pool, size=min(o.hard_negatives, pool.size), replace=False, p=w / w.sum())
            others = [int(p) for p in positives if int(p) not in self.pos_sets[t]]
            ib = rng.permutation(others)[: o.in_batch] if others else np.zeros(0, np.int64)
            row = [int(positives[b]), *h.tolist(), *list(ib)]
            while len(row) < width:  # tiny datasets: random non-positive fill
                c = int(rng.integers(n_images))
                if c not in self.pos_sets[t] or len(self.pos_sets[t]) >= n_images:
                    row.append(c)
            out[b] = row[:width]
        return out


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_reranker(
    train: TrainingSet,
    val: TrainingSet,
    identity: EncoderIdentity,
    options: TrainOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> tuple[Reranker, TrainReport]:
    """Train a head (see module doc) → (best head on CPU in eval mode, report).

    ``checkpoint``: file for the per-epoch training state; an existing one with
    the same options is resumed, and it is deleted after a completed run.
    """
    opts = options or TrainOptions()
    report_cb = progress or ignore_progress
    if len(train) < 2 or len(val) < 1:
        raise RerankerError(f"too little data: {len(train)} training and {len(val)} validation texts")
    if len(train.images) < 2:
        raise RerankerError("training needs at least 2 images")
    started = time.perf_counter()
    device = _device(opts.device)
    torch.manual_seed(opts.seed)
    rng = np.random.default_rng(opts.seed)
    config = preset_config(opts.preset, dim=identity.dim, visual_dim=identity.visual_dim,
                           encoder=identity.as_dict(), **opts.overrides)
    model = FusionHead(config).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "slots" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "slots" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opts.learning_rate(),
    )
    steps_per_epoch = math.ceil(len(train) / opts.batch_size)
    if opts.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, opts.max_steps_per_epoch)
    total_steps = steps_per_epoch * opts.epochs
    warmup = max(1, int(opts.warmup * total_steps))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    report = TrainReport()
    head = Reranker(model)
    first_val = ranking_metrics(rerank_matrix_first_stage(val), val.positives, opts.candidates)
    report.val_first_stage = first_val
    best_score, best_state, start_epoch, stale = -1.0, None, 0, 0

    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        with contextlib.suppress(OSError):
            _checkpoint_tmp(ckpt).unlink()  # half-written by a killed run
    fingerprint = {"options": asdict(opts), "config": config.as_dict(), "n_train": len(train), "n_val": len(val)}
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]
            torch.set_rng_state(state["torch_rng"])
            best_score, best_state, stale = state["best_score"], state["best_state"], state["stale"]
            start_epoch = report.resumed_from_epoch = state["epoch"]
            report.history, report.best_epoch, report.steps = state["history"], state["best_epoch"], state["steps"]
            log.info("resuming reranker training from %s after epoch %d", ckpt, start_epoch)
        else:
            log.warning("checkpoint %s is for other data or options; starting afresh", ckpt)

    sampler = _Sampler(train, opts)
    for epoch in range(start_epoch, opts.epochs):
        if stale >= opts.patience:
            break
        model.train()
        order = rng.permutation(len(train))[: steps_per_epoch * opts.batch_size]
        losses = []
        for step in range(steps_per_epoch):
            texts = order[step * opts.batch_size : (step + 1) * opts.batch_size]
            if texts.size == 0:
                break
            lists = sampler.lists(texts, rng)  # (B, N)
            b, n = lists.shape
            batch = pair_batch(train.texts, np.repeat(texts, n), train.images, lists.reshape(-1), device)
            scores = model(batch).reshape(b, n)  # (B, N)
            logits = scores * model.logit_scale.exp().clamp(max=100)
            loss = F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=device))
            if opts.align_weight > 0 and b > 1:
                pos = pair_batch(train.texts, texts, train.images, lists[:, 0], device)
                align = model.alignment_logits(pos)  # (B, B)
                # texts sharing a positive image are not negatives of each other: mask them
                same = torch.from_numpy(lists[:, 0][:, None] == lists[:, 0][None, :]).to(device)
                align = align.masked_fill(same & ~torch.eye(b, dtype=torch.bool, device=device), -1e4)
                target = torch.arange(b, device=device)
                loss = loss + opts.align_weight * 0.5 * (F.cross_entropy(align, target) + F.cross_entropy(align.T, target))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            report.steps += 1
            report_cb(Progress(stage=f"train epoch {epoch + 1}/{opts.epochs}", done=step + 1, total=steps_per_epoch))
        model.eval()
        val_metrics = ranking_metrics(rerank_matrix(head, val, opts.candidates), val.positives, opts.candidates)
        report.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
                               **{f"val_{k}": v for k, v in val_metrics.items() if k != "candidates"}})
        log.info("epoch %d: loss %.4f, val R@1 %.3f MRR %.3f (first stage R@1 %.3f)", epoch + 1,
                 report.history[-1]["loss"], val_metrics["r1"], val_metrics["mrr"], first_val["r1"])
        if val_metrics["mrr"] > best_score + 1e-6:
            best_score, stale, report.best_epoch = val_metrics["mrr"], 0, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        report.epochs_run = epoch + 1
        if ckpt is not None:
            _save_checkpoint(ckpt, {
                "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "best_score": best_score, "best_state": best_state,
                "stale": stale, "epoch": epoch + 1, "history": report.history,
                "best_epoch": report.best_epoch, "steps": report.steps,
            })
    if best_state is None:
        raise RerankerError("training ran no epoch")
    model = model.cpu()
    model.load_state_dict(best_state)
    model.eval()
    head = Reranker(model)
    report.val_reranked = ranking_metrics(rerank_matrix(head, val, opts.candidates), val.positives, opts.candidates)
    report.seconds = time.perf_counter() - started
    head.summary = {"train_texts": len(train), "train_images": len(train.images), "val_texts": len(val),
                    "options": {k: v for k, v in asdict(opts).items() if k != "device"},
                    "report": {k: v for k, v in report.as_dict().items() if k != "history"}}
    if ckpt is not None:
        with contextlib.suppress(OSError):
            ckpt.unlink()
    return head, report


def rerank_matrix_first_stage(data: TrainingSet) -> np.ndarray:
    return data.first_stage()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _checkpoint_tmp(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _checkpoint_tmp(path: Path) -> Path:
    """The temp file a checkpoint is written to before ``os.replace``; one left by
    a killed run is removed when the next run starts."""
    return path.with_name(path.name + ".tmp")
