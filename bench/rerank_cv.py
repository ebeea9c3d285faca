#!/usr/bin/env python3
"""Does the FrEVL head improve R@1 on unseen stamps? k-fold cross-validation by Tux Paint stamp.

Usage::

    python bench/rerank_cv.py run [--folds 0 1 2 3 4] [--variants full len1] [--seeds 0] [--threads 1]
                                  [--extra emoji]
    python bench/rerank_cv.py report          # tables from whatever units have finished

Protocol (docs/quality.md, "Reranker: k-fold cross-validation (issue 15 §2)"):

* All 785 stamps (train + val + test of ``scripts/fetch_tuxpaint.py``) pooled
  and dealt into ``--k`` folds by a seeded hash of the stamp's file name
  (:func:`frozenlens.eval.folds.kfold`); every caption of a stamp, in every
  language, goes with it. Fold f's test stamps are never trained on in fold f.
* Inside a fold, the other stamps are split again by an independent hash
  (:func:`frozenlens.eval.folds.holdout`, 10 %): the held-out part chooses the
  epoch (early stopping on MRR), the rest trains. Nothing is chosen on test folds.
* Test: the fold's stamps form the gallery; each caption in the 16 languages
  of the ``lite`` text tower is a query; first stage = ``lite`` cosine,
  reranked = top-100 first-stage candidates rescored by the head.
* One *unit* = (variant, fold, seed): trained and tested once, written to
  ``--out/units/`` as soon as it finishes (a cut run reports what completed;
  a rerun skips finished units). Per-query ranks are kept, so the report can
  pool queries across folds.

``--extra emoji`` adds every emoji of :mod:`frozenlens.eval.emoji` (rendered
from Debian's colour emoji font, short names from CLDR in the same 16
languages; ``make emoji-data``) to each fold's *training* stamps; the
held-out stamps that choose the epoch and the test stamps are unchanged. Its
units are named ``<variant>+emoji``, so the report compares them with the
plain variant fold by fold.

Training options are those of ``bench/rerank_quality.py`` (12 epochs of at
most 100 steps, patience 3); the image embeddings are its cached ones
(``.cache/bench/rerank/``), the variants its :data:`VARIANTS`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

# rerank_quality first: it sets OMP_WAIT_POLICY and puts src/ on the path
sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_quality as rq
from frozenlens.eval.datasets import load_dataset
from frozenlens.eval.folds import holdout, kfold
from frozenlens.eval.metrics import t2i_ranks
from frozenlens.eval.runner import RerankInput, evaluate, texts_of
from frozenlens.eval.types import EvalDataset
from frozenlens.models.base import ImageEmbeddings
from frozenlens.reranker.data import eval_hook, from_eval_dataset, normalise_caption
from frozenlens.reranker.train import TrainOptions, train_reranker

K = 5
#: the first stage of every unit: lite version 2 (ConSE alone), as in the runs reported in docs/quality.md.
#: Not version 3: its projector was trained on the Tux Paint train stamps, which the folds pool with the
#: others, so its first stage would have seen most test folds' stamps (measured: held-out R@1 0.66).
LITE = {"projection": 0.0}
FOLD_SEED = 15  # fixed before any run; changing it changes every fold
VAL_SEED = 1015
VAL_FRACTION = 0.1
log = logging.getLogger("rerank_cv")


def pooled() -> tuple[EvalDataset, ImageEmbeddings]:
    """All Tux Paint stamps (train, val, test in that order) and their cached ``lite`` embeddings."""
    manifest = rq.DATA / "tuxpaint" / "dataset" / "manifest.jsonl"
    encoder = rq.create_encoder("lite", **LITE)
    images, parts = [], []
    for split in ("train", "val", "test"):
        d = load_dataset(manifest, "manifest", split=split)
        images += d.images
        parts.append(rq.cached_embeddings(encoder, [im.path for im in d.images], f"tuxpaint-{split}"))
    emb = ImageEmbeddings(np.concatenate([p.semantic for p in parts]), np.concatenate([p.visual for p in parts]),
                          None, np.concatenate([p.tokens for p in parts]))
    return EvalDataset("tuxpaint", tuple(images)), emb


def subset(ds: EvalDataset, emb: ImageEmbeddings, idx: np.ndarray, name: str) -> tuple[EvalDataset, ImageEmbeddings]:
    return (EvalDataset(name, tuple(ds.images[i] for i in idx)),
            ImageEmbeddings(emb.semantic[idx], emb.visual[idx], None, emb.tokens[idx]))


def parts(keys: list[str], fold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test) stamps of ``fold``."""
    folds = kfold(keys, K, FOLD_SEED)
    is_val = holdout(keys, VAL_FRACTION, VAL_SEED)
    test = folds == fold
    return np.flatnonzero(~test & ~is_val), np.flatnonzero(~test & is_val), np.flatnonzero(test)


def extra_data(name: str) -> tuple[EvalDataset, ImageEmbeddings]:
    """An extra training set (all its images) and its cached ``lite`` embeddings."""
    if name != "emoji":
        raise ValueError(f"unknown extra training set {name!r}")
    from frozenlens.eval.emoji import convert_emoji

    ds = load_dataset(convert_emoji(rq.DATA / "emoji"), "manifest")
    return ds, rq.cached_embeddings(rq.create_encoder("lite", **LITE), [im.path for im in ds.images], "emoji")


def joined(parts: list[tuple[EvalDataset, ImageEmbeddings]], name: str) -> tuple[EvalDataset, ImageEmbeddings]:
    """Several (dataset, embeddings) pairs as one."""
    return (EvalDataset(name, tuple(im for d, _ in parts for im in d.images)),
            ImageEmbeddings(*(np.concatenate([getattr(e, f) for _, e in parts]) for f in ("semantic", "visual")),
                            None, np.concatenate([e.tokens for _, e in parts])))


def ranks_of(ds: EvalDataset, emb: ImageEmbeddings, encoder, langs: list[str], hook=None) -> dict[str, list[int]]:
    """Per language, the 1-based T2I rank of every caption's own stamp (pessimistic ties)."""
    seen: dict[str, np.ndarray] = {}

    def capture(request: RerankInput) -> np.ndarray:
        out = hook(request) if hook is not None else request.scores
        seen[request.language] = np.asarray(out, np.float32)
        return out

    evaluate(ds, encoder, languages=langs, images=emb, rerank=capture)
    return {lang: t2i_ranks(seen[lang], texts_of(ds, lang)[1]).tolist() for lang in langs}


def shared_caption_flags(ds: EvalDataset, lang: str) -> list[bool]:
    """True for each caption written word for word on another stamp of the same gallery."""
    texts, owners = texts_of(ds, lang)
    stamps: dict[str, set[int]] = {}
    for t, o in zip(texts, owners, strict=True):
        stamps.setdefault(normalise_caption(t), set()).add(int(o))
    return [len(stamps[normalise_caption(t)]) > 1 for t in texts]


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    units = Path(args.out) / "units"
    units.mkdir(parents=True, exist_ok=True)
    ds, emb = pooled()
    encoder = rq.create_encoder("lite", **LITE)
    keys = [im.key for im in ds.images]
    langs = [x for x in rq.TEXT_TOWER_LANGS if x in ds.languages(0.5)]
    opts = {"epochs": args.epochs, "max_steps_per_epoch": args.steps_per_epoch}
    extras = [extra_data(name) for name in args.extra]
    suffix = "".join(f"+{name}" for name in args.extra)
    for fold in args.folds:
        tr, va, te = parts(keys, fold)
        test_ds, test_emb = subset(ds, emb, te, f"tuxpaint-fold{fold}")
        first_file = units / f"first-f{fold}.json"
        if not first_file.is_file():
            doc = {"fold": fold, "n_train": len(tr), "n_val": len(va), "n_test": len(te), "languages": langs,
                   "stamps": {lang: [test_ds.images[o].key for o in texts_of(test_ds, lang)[1]] for lang in langs},
                   "shared": {lang: shared_caption_flags(test_ds, lang) for lang in langs},
                   "ranks": ranks_of(test_ds, test_emb, encoder, langs)}
            first_file.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        train = val = None
        for variant in args.variants:
            for seed in args.seeds:
                f = units / f"{variant}{suffix}-f{fold}-s{seed}.json"
                if f.is_file():
                    continue
                if train is None:
                    train_ds, train_emb = joined([subset(ds, emb, tr, "train"), *extras], "train")
                    val_ds, val_emb = subset(ds, emb, va, "val")
                    train = from_eval_dataset(train_ds, encoder, languages=langs, images=train_emb)
                    val = from_eval_dataset(val_ds, encoder, languages=langs, images=val_emb)
                t0 = time.perf_counter()
                options = TrainOptions(seed=seed, overrides=dict(rq.VARIANTS[variant]), **opts)
                head, report = train_reranker(train, val, encoder.identity, options)
                trained = time.perf_counter() - t0
                ranks = ranks_of(test_ds, test_emb, encoder, langs, eval_hook(head, encoder, 100))
                doc = {"variant": variant + suffix, "fold": fold, "seed": seed, "ranks": ranks,
                       "best_epoch": report.best_epoch, "epochs_run": report.epochs_run, "history": report.history,
                       "train_seconds": trained, "seconds": time.perf_counter() - t0, "threads": args.threads}
                tmp = f.with_suffix(".tmp")
                tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
                tmp.replace(f)
                r1 = np.mean([np.mean(np.asarray(v) <= 1) for v in ranks.values()])
                log.info("fold %d %s seed %d: R@1 %.3f, best epoch %d/%d, %.0fs", fold, variant, seed, r1,
                         report.best_epoch, report.epochs_run, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["run", "report"])
    ap.add_argument("--folds", type=int, nargs="+", default=list(range(K)))
    ap.add_argument("--variants", nargs="+", default=["full"], choices=list(rq.VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--extra", nargs="*", default=[], choices=["emoji"],
                    help="extra training data added to every fold's training stamps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--out", default=str(rq.REPO / "results" / "rerank-cv"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("frozenlens.eval.runner").setLevel(logging.WARNING)
    if args.mode == "run":
        run(args)
        return 0
    from rerank_cv_report import write_report

    print(write_report(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
