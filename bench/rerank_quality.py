#!/usr/bin/env python3
"""Does the FrEVL head improve the first-stage ranking? Held-out proof, several seeds.

Usage::

    python bench/rerank_quality.py [--seeds 0 1 2] [--datasets tuxpaint fashion]
        [--variants full no-cross concat len1] [--out results/rerank] [--quick]

Protocol (see docs/quality.md, "Reranker"):

* **Tux Paint** (``scripts/fetch_tuxpaint.py``): train on the ``train`` split
  (637 stamps), select the epoch on ``val`` (69), report on ``test`` (79
  stamps never seen in training), the 16 languages of the ``lite`` text
  tower. Text→image R@1/5/10 per language, first stage vs reranked (top-100
  first-stage candidates rescored; with 79 test images that is all of them).
* **Fashion-MNIST** (``scripts/fetch_fashion_mnist.py``): category retrieval.
  Train on set-A phrasings of the 10 class names in 15 languages against
  90 % of the 6,000 train images, validate on the other 10 %, report on the
  2,000 test images with the held-out set-B phrasings: P@1, P@10, mAP@100.
* Every variant is trained once per seed; tables give mean ± standard
  deviation over seeds (sample sd, n-1) and the seed-to-seed range of the gain.

Image embeddings are computed once per dataset with the real ``lite``
encoder and cached under ``.cache/bench/rerank/``. Writes ``results.md`` and
``results.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

# two torch processes with spinning OpenMP workers on 2 cores slow each other ~10x
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from frozenlens.eval.categories import evaluate_categories, load_fashion_mnist  # noqa: E402
from frozenlens.eval.datasets import load_dataset  # noqa: E402
from frozenlens.eval.runner import embed_image_files, evaluate  # noqa: E402
from frozenlens.models import create_encoder  # noqa: E402
from frozenlens.models.base import ImageEmbeddings  # noqa: E402
from frozenlens.reranker.data import eval_hook, from_categories, from_eval_dataset, split_by_image  # noqa: E402
from frozenlens.reranker.train import TrainOptions, train_reranker  # noqa: E402

DATA = Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))
CACHE = REPO / ".cache" / "bench" / "rerank"
TEXT_TOWER_LANGS = ["ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-Hant"]

#: variant name → RerankerConfig overrides (the ablations of the FrEVL paper, plus ours)
VARIANTS: dict[str, dict[str, object]] = {
    "full": {},
    "no-cross": {"cross_attention": False},
    "concat": {"fusion": "concat"},
    "len1": {"use_tokens": False},
    "no-visual": {"use_visual": False},
}

log = logging.getLogger("rerank_quality")


def cached_embeddings(encoder, paths: list[Path], key: str) -> ImageEmbeddings:
    digest = hashlib.sha256(json.dumps([encoder.identity.as_dict(), [str(p) for p in paths]]).encode()).hexdigest()[:16]
    f = CACHE / f"{key}-{digest}.npz"
    if f.is_file():
        z = np.load(f)
        return ImageEmbeddings(z["semantic"], z["visual"], None, z["tokens"])
    t0 = time.perf_counter()
    emb = embed_image_files(encoder, paths)
    log.info("embedded %d images of %s in %.0fs", len(paths), key, time.perf_counter() - t0)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(f, semantic=emb.semantic, visual=emb.visual, tokens=emb.tokens)
    return emb


def mean_sd(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def fmt(xs: list[float]) -> str:
    m, s = mean_sd(xs)
    return f"{100 * m:.1f} ± {100 * s:.1f}" if len(xs) > 1 else f"{100 * m:.1f}"


# ----------------------------------------------------------------- Tux Paint
def run_tuxpaint(encoder, seeds: list[int], variants: list[str], opts: dict) -> dict:
    manifest = DATA / "tuxpaint" / "dataset" / "manifest.jsonl"
    sets = {s: load_dataset(manifest, "manifest", split=s) for s in ("train", "val", "test")}
    emb = {s: cached_embeddings(encoder, [im.path for im in d.images], f"tuxpaint-{s}") for s, d in sets.items()}
    langs = [x for x in TEXT_TOWER_LANGS if x in sets["test"].languages(0.5)]
    train = from_eval_dataset(sets["train"], encoder, languages=langs, images=emb["train"])
    val = from_eval_dataset(sets["val"], encoder, languages=langs, images=emb["val"])
    first = evaluate(sets["test"], encoder, languages=langs, images=emb["test"])
    out: dict = {"languages": langs, "n_train_texts": len(train), "n_val_texts": len(val),
                 "n_test_images": len(sets["test"]),
                 "first_stage": {r.language: r.metrics.to_dict() for r in first.per_language},
                 "first_stage_mean": first.mean.to_dict(), "runs": {}}
    for variant in variants:
        for seed in seeds:
            t0 = time.perf_counter()
            options = TrainOptions(seed=seed, overrides=dict(VARIANTS[variant]), **opts)
            head, report = train_reranker(train, val, encoder.identity, options)
            result = evaluate(sets["test"], encoder, languages=langs, images=emb["test"],
                              rerank=eval_hook(head, encoder, 100))
            out["runs"][f"{variant}/{seed}"] = {
                "per_language": {r.language: r.metrics.to_dict() for r in result.per_language},
                "mean": result.mean.to_dict(), "best_epoch": report.best_epoch, "epochs_run": report.epochs_run,
                "val_first": report.val_first_stage, "val_reranked": report.val_reranked,
                "seconds": time.perf_counter() - t0,
            }
            log.info("tuxpaint %s seed %d: test mean T2I R@1 %.3f -> %.3f (%.0fs)", variant, seed,
                     first.mean.t2i_r1, result.mean.t2i_r1, time.perf_counter() - t0)
    return out


# ------------------------------------------------------------- Fashion-MNIST
def run_fashion(encoder, seeds: list[int], variants: list[str], opts: dict, per_class: int | None) -> dict:
    root = DATA / "fashion-mnist"
    train_all = load_fashion_mnist(root, "train")
    test = load_fashion_mnist(root, "test")
    if per_class:
        train_all, test = train_all.head(per_class), test.head(max(20, per_class // 3))
    emb_train = cached_embeddings(encoder, list(train_all.paths), f"fashion-train-{len(train_all)}")
    emb_test = cached_embeddings(encoder, list(test.paths), f"fashion-test-{len(test)}")
    is_val = split_by_image(range(len(train_all)), 0.1, seed=0)
    langs = train_all.languages()

    def part(mask: np.ndarray):
        idx = np.flatnonzero(mask)
        sub = train_all.subset(idx)
        sub_emb = ImageEmbeddings(emb_train.semantic[idx], emb_train.visual[idx], None, emb_train.tokens[idx])
        return from_categories(sub, encoder, phrasing_set="A", languages=langs, images=sub_emb)

    train, val = part(~is_val), part(is_val)
    first = evaluate_categories(test, encoder, languages=langs, phrasing_set="B", images=emb_test)
    out: dict = {"languages": langs, "n_train_images": len(train.images), "n_val_images": len(val.images),
                 "n_test_images": len(test), "first_stage": first.as_dict(), "runs": {}}
    for variant in variants:
        for seed in seeds:
            t0 = time.perf_counter()
            options = TrainOptions(seed=seed, overrides=dict(VARIANTS[variant]), **opts)
            head, report = train_reranker(train, val, encoder.identity, options)
            result = evaluate_categories(test, encoder, languages=langs, phrasing_set="B", images=emb_test,
                                         rerank=eval_hook(head, encoder, 100))
            out["runs"][f"{variant}/{seed}"] = {"result": result.as_dict(), "best_epoch": report.best_epoch,
                                               "val_first": report.val_first_stage,
                                               "val_reranked": report.val_reranked,
                                               "seconds": time.perf_counter() - t0}
            log.info("fashion %s seed %d: test P@1 %.3f -> %.3f (%.0fs)", variant, seed, first.mean.r1,
                     result.mean.r1, time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------ report
def tux_markdown(res: dict, seeds: list[int], variants: list[str]) -> str:
    lines = ["### Tux Paint stamps — test split (text→image, %)", "",
             f"{res['n_train_texts']} training captions, {res['n_val_texts']} validation captions, "
             f"{res['n_test_images']} test images; seeds {seeds}; mean ± sd over seeds.", "",
             "| language | first R@1 | reranked R@1 | first R@5 | reranked R@5 | first R@10 | reranked R@10 |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    runs = [res["runs"][f"full/{s}"] for s in seeds if f"full/{s}" in res["runs"]]
    for lang in [*res["languages"], "mean"]:
        f = res["first_stage_mean"] if lang == "mean" else res["first_stage"][lang]
        r = [run["mean"] if lang == "mean" else run["per_language"][lang] for run in runs]
        cells = []
        for k in ("t2i_r1", "t2i_r5", "t2i_r10"):
            cells += [f"{100 * f[k]:.1f}", fmt([x[k] for x in r]) if r else "—"]
        name = f"**mean ({len(res['languages'])})**" if lang == "mean" else lang
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if runs:
        gains = [run["mean"]["t2i_r1"] - res["first_stage_mean"]["t2i_r1"] for run in runs]
        per_seed = [run["mean"]["t2i_r1"] for run in runs]
        lines += ["", f"Mean R@1 gain {fmt(gains)} points (per seed: "
                  + ", ".join(f"{100 * g:+.1f}" for g in gains)
                  + f"); seed-to-seed spread of reranked mean R@1: sd {100 * mean_sd(per_seed)[1]:.1f}, "
                  f"range {100 * (max(per_seed) - min(per_seed)):.1f} points."]
    lines += ["", "Ablations (mean over languages, ± sd over seeds):", "",
              "| variant | R@1 | R@5 | R@10 | gain R@1 |", "|---|--:|--:|--:|--:|",
              f"| first stage only | {100 * res['first_stage_mean']['t2i_r1']:.1f} | "
              f"{100 * res['first_stage_mean']['t2i_r5']:.1f} | {100 * res['first_stage_mean']['t2i_r10']:.1f} | — |"]
    for v in variants:
        r = [res["runs"][f"{v}/{s}"]["mean"] for s in seeds if f"{v}/{s}" in res["runs"]]
        if r:
            gain = [x["t2i_r1"] - res["first_stage_mean"]["t2i_r1"] for x in r]
            lines.append(f"| {v} | {fmt([x['t2i_r1'] for x in r])} | {fmt([x['t2i_r5'] for x in r])} | "
                         f"{fmt([x['t2i_r10'] for x in r])} | {fmt(gain)} |")
    return "\n".join(lines)


def fashion_markdown(res: dict, seeds: list[int], variants: list[str]) -> str:
    first = res["first_stage"]
    lines = ["### Fashion-MNIST category retrieval — test images, held-out phrasings (%)", "",
             f"{res['n_train_images']} training / {res['n_val_images']} validation / {res['n_test_images']} test "
             f"images; {len(res['languages'])} languages; seeds {seeds}; mean ± sd over seeds.", "",
             "| language | first P@1 | reranked P@1 | first P@10 | reranked P@10 | first mAP@100 | reranked mAP@100 |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    runs = [res["runs"][f"full/{s}"]["result"] for s in seeds if f"full/{s}" in res["runs"]]

    def per_lang(doc: dict, lang: str) -> dict:
        if lang == "mean":
            return doc["mean"]
        return next(x for x in doc["languages"] if x["language"] == lang)

    for lang in [*res["languages"], "mean"]:
        f = per_lang(first, lang)
        r = [per_lang(run, lang) for run in runs]
        cells = []
        for k in ("p1", "p10", "map100"):
            cells += [f"{100 * f[k]:.1f}", fmt([x[k] for x in r]) if r else "—"]
        lines.append(f"| {'**mean**' if lang == 'mean' else lang} | " + " | ".join(cells) + " |")
    lines += ["", "Ablations (mean over languages):", "", "| variant | P@1 | P@10 | mAP@100 |", "|---|--:|--:|--:|",
              f"| first stage only | {100 * first['mean']['p1']:.1f} | {100 * first['mean']['p10']:.1f} | "
              f"{100 * first['mean']['map100']:.1f} |"]
    for v in variants:
        r = [res["runs"][f"{v}/{s}"]["result"]["mean"] for s in seeds if f"{v}/{s}" in res["runs"]]
        if r:
            lines.append(f"| {v} | {fmt([x['p1'] for x in r])} | {fmt([x['p10'] for x in r])} | "
                         f"{fmt([x['map100'] for x in r])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["tuxpaint", "fashion"], choices=["tuxpaint", "fashion"])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=None,
                    help="seeds for variants other than 'full' (default: --seeds)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--steps-per-epoch", type=int, default=100)
    ap.add_argument("--out", default=str(REPO / "results" / "rerank"))
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs, small Fashion subset (smoke test)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("frozenlens.eval.runner").setLevel(logging.WARNING)
    if args.quick:
        args.seeds, args.epochs, args.steps_per_epoch = args.seeds[:1], 2, 20
    opts = {"epochs": args.epochs, "max_steps_per_epoch": args.steps_per_epoch}
    encoder = create_encoder("lite")
    results: dict = {"options": {**opts, "seeds": args.seeds, "variants": args.variants}, "encoder": encoder.identity.as_dict()}
    md = ["## Reranker quality (`python bench/rerank_quality.py`)", ""]
    abl_seeds = args.ablation_seeds or args.seeds

    def run_all(fn, *extra):
        full = fn(encoder, args.seeds, ["full"], opts, *extra)
        others = [v for v in args.variants if v != "full"]
        if others:
            more = fn(encoder, abl_seeds, others, opts, *extra)
            full["runs"].update(more["runs"])
        return full

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def write() -> None:  # after each dataset, so a long run leaves its finished part behind
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        (out / "results.md").write_text("\n".join(md) + "\n", encoding="utf-8")

    if "tuxpaint" in args.datasets:
        results["tuxpaint"] = run_all(run_tuxpaint)
        md += [tux_markdown(results["tuxpaint"], args.seeds, args.variants), ""]
        write()
    if "fashion" in args.datasets:
        results["fashion"] = run_all(run_fashion, 60 if args.quick else None)
        md += [fashion_markdown(results["fashion"], args.seeds, args.variants), ""]
        write()
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
