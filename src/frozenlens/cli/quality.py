"""``frozenlens eval`` and ``frozenlens train-reranker``: measure and improve ranking quality.

Which encoder a head is trained for, the training options and their defaults,
and the evaluation hook of a head are the library's
(:mod:`frozenlens.reranker.command`, :mod:`frozenlens.reranker.options`).
"""

from __future__ import annotations

import argparse
import json

from .index import _weights
from .progress import StageBar, wanted


def _languages(text: str | None) -> list[str] | None:
    """``--languages en,fr`` as a list (``None``: all)."""
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def cmd_eval(args: argparse.Namespace, index_dir: str) -> int:
    from ..eval import eval_command
    from ..eval.report import to_markdown
    from ..models.presets import LITE

    encoder, options = args.encoder or LITE.name, _weights(args.weights)
    rerank = None
    if args.rerank:
        from ..reranker.command import eval_rerank_hook

        rerank = eval_rerank_hook(args.rerank, encoder, args.rerank_candidates, options)
    result = eval_command(
        args.dataset,
        args.fmt,
        encoder_name=encoder,
        image_root=args.image_root,
        split=args.split,
        languages=_languages(args.languages),
        out_dir=args.out,
        limit=args.limit,
        min_coverage=args.min_coverage,
        encoder_options=options,
        rerank=rerank,
    )
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else to_markdown(result))
    return 0


def cmd_train_reranker(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine
    from ..reranker.command import needs_index, train_command, training_encoder
    from ..reranker.options import TrainingData, TrainOptions

    options = TrainOptions(preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
                           hard_negatives=args.hard_negatives, lr=args.lr, seed=args.seed, device=args.device,
                           max_steps_per_epoch=args.max_steps_per_epoch)
    data = TrainingData(dataset=args.dataset, fmt=args.fmt, image_root=args.image_root, train_split=args.train_split,
                        val_split=args.val_split, languages=_languages(args.languages),
                        min_coverage=args.min_coverage, val_fraction=args.val_fraction)
    engine = Engine.open(index_dir) if needs_index(data, args.out, bool(args.index)) else None
    try:
        if engine is not None and not args.out:
            engine.require_writable("training a reranker into it")
        encoder = training_encoder(args.encoder, engine)
        out = args.out or str(engine.index_dir if engine is not None else index_dir)
        store = engine.store if engine is not None and data.dataset is None else None
        bar = StageBar() if wanted(args.no_progress) else None
        try:
            result = train_command(encoder, out, options, data, store=store, progress=bar, resume=not args.restart)
        finally:
            if bar:
                bar.close()
    finally:
        if engine is not None:
            engine.close()
    rep = result.report
    first, best = rep.val_first_stage, rep.val_reranked
    print(f"trained on {result.train_texts} captions ({result.val_texts} for validation) in {rep.seconds:.0f}s, "
          f"{rep.epochs_run} epochs (best {rep.best_epoch}); validation R@1 {first['r1']:.3f} -> {best['r1']:.3f}, "
          f"MRR {first['mrr']:.3f} -> {best['mrr']:.3f}")
    print(f"saved {result.path}")
    return 0
