"""Tables of ``bench/rerank_cv.py``: pooled and per-fold recall, the R@1 gain's intervals, per language,
shared captions, and the head chosen by the rule fixed before the run.

Reads ``<out>/units/*.json`` (whatever has finished) and writes ``<out>/results.md`` and ``results.json``.

Statistics (all recalls are macro averages over the languages, as in every
FrozenLens table):

* **pooled**: the queries of all completed folds together (each stamp is a
  test stamp in exactly one fold), per-query hits averaged over the seeds run.
* **t over folds** (the primary interval): one gain per fold (seeds averaged
  inside the fold, since a fold's seeds share its test stamps), 95 % Student-t
  over the folds (4 degrees of freedom with 5 folds). It includes the
  training's randomness (each fold trains its own heads on other data) and the
  test sampling; it is wide because it has few units.
* **bootstrap over stamps**: 2,000 resamples of the test stamps (each with its
  captions in every language), percentile interval. It treats the trained heads
  as fixed, so it shows the test-sampling uncertainty only.

Choice of the default head (fixed before the run): among the variants run on
all folds, the highest mean R@1 gain (pooled); any variant whose paired
per-fold difference to it has a 95 % t-interval containing zero is tied, and
of the tied the cheapest at query time (:data:`COST_ORDER`) is chosen.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from frozenlens.eval.intervals import cluster_bootstrap, macro_mean, t_interval

#: cheapest first: length-1 sequences, then no cross-attention, then one token fewer, then the fusion MLP's width
COST_ORDER = ["len1", "no-cross", "no-visual", "concat", "full"]
TARGET_POINTS = 5.0


def cost_key(variant: str) -> tuple[int, str]:
    """Sort key: the head's cost, then its training data (``full+emoji`` after ``full``)."""
    return COST_ORDER.index(variant.split("+")[0]), variant


def _load(out: Path) -> tuple[dict[int, dict], dict[str, dict[int, dict[int, dict]]]]:
    firsts: dict[int, dict] = {}
    runs: dict[str, dict[int, dict[int, dict]]] = {}
    for f in sorted((out / "units").glob("*.json")):
        doc = json.loads(f.read_text(encoding="utf-8"))
        if f.name.startswith("first-"):
            firsts[doc["fold"]] = doc
        else:
            runs.setdefault(doc["variant"], {}).setdefault(doc["fold"], {})[doc["seed"]] = doc
    return firsts, runs


class Queries:
    """Flat per-query arrays over a set of folds: stamp (cluster), language, fold, shared flag, first-stage rank."""

    def __init__(self, firsts: dict[int, dict], folds: list[int]) -> None:
        stamp, lang, fold, shared, rank = [], [], [], [], []
        for f in folds:
            d = firsts[f]
            for lg in d["languages"]:
                stamp += d["stamps"][lg]
                lang += [lg] * len(d["ranks"][lg])
                fold += [f] * len(d["ranks"][lg])
                shared += d["shared"][lg]
                rank += d["ranks"][lg]
        ids = {k: i for i, k in enumerate(dict.fromkeys(stamp))}
        self.stamp = np.array([ids[s] for s in stamp], np.int64)
        self.lang, self.fold = np.array(lang), np.array(fold)
        self.shared, self.first = np.array(shared, bool), np.array(rank, np.int64)
        self.folds = folds

    def hits(self, runs: dict[int, dict[int, dict]], k: int) -> np.ndarray:
        """float (Q,): share of the seeds (run in each query's fold) that rank its stamp within k."""
        out = []
        for f in self.folds:
            seeds = list(runs[f].values())
            for lg in seeds[0]["ranks"]:
                out.append(np.mean([np.asarray(s["ranks"][lg]) <= k for s in seeds], axis=0))
        return np.concatenate(out).astype(np.float64)

    def recall(self, hits: np.ndarray, mask: np.ndarray | None = None) -> float:
        m = np.ones(hits.size, bool) if mask is None else mask
        return 100 * macro_mean(hits[m], self.stamp[m], self.lang[m])


def _pct(x: float) -> str:
    return f"{x:.1f}"


def _ci(m: float, lo: float, hi: float) -> str:
    return f"{m:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def analyse(out: Path) -> dict:
    firsts, runs = _load(out)
    res: dict = {"folds": {f: {k: firsts[f][k] for k in ("n_train", "n_val", "n_test")} for f in sorted(firsts)},
                 "variants": {}}
    for v, by_fold in runs.items():
        folds = sorted(f for f in by_fold if f in firsts)
        if not folds:
            continue
        q = Queries(firsts, folds)
        first = {k: (q.first <= k).astype(np.float64) for k in (1, 5, 10)}
        rer = {k: q.hits({f: by_fold[f] for f in folds}, k) for k in (1, 5, 10)}
        gain = 100 * (rer[1] - first[1])
        per_fold = []
        for f in folds:
            m = q.fold == f
            per_fold.append({"fold": f, "seeds": sorted(by_fold[f]), "queries": int(m.sum()),
                             **{f"first_r{k}": q.recall(first[k], m) for k in (1, 5, 10)},
                             **{f"reranked_r{k}": q.recall(rer[k], m) for k in (1, 5, 10)},
                             "best_epochs": [by_fold[f][s]["best_epoch"] for s in sorted(by_fold[f])],
                             "seconds": [round(by_fold[f][s]["seconds"]) for s in sorted(by_fold[f])]})
        fold_gains = [p["reranked_r1"] - p["first_r1"] for p in per_fold]
        doc = {"folds": folds, "per_fold": per_fold, "fold_gains": fold_gains,
               **{f"first_r{k}": q.recall(first[k]) for k in (1, 5, 10)},
               **{f"reranked_r{k}": q.recall(rer[k]) for k in (1, 5, 10)},
               "gain_bootstrap": cluster_bootstrap(gain, q.stamp, q.lang, seed=0),
               "gain_t": t_interval(fold_gains) if len(folds) > 1 else None,
               "per_language": {}, "queries": int(q.stamp.size), "shared_queries": int(q.shared.sum()),
               "seconds": sum(u["seconds"] for fr in by_fold.values() for u in fr.values())}
        for lg in dict.fromkeys(q.lang.tolist()):
            m = q.lang == lg
            doc["per_language"][lg] = {"first_r1": 100 * first[1][m].mean(), "reranked_r1": 100 * rer[1][m].mean(),
                                       "gain": cluster_bootstrap(gain[m], q.stamp[m], q.lang[m], seed=0)}
        ns = ~q.shared
        doc["shared"] = {"first_all": q.recall(first[1]), "reranked_all": q.recall(rer[1]),
                         "first_unshared": q.recall(first[1], ns), "reranked_unshared": q.recall(rer[1], ns),
                         "first_shared": q.recall(first[1], q.shared), "reranked_shared": q.recall(rer[1], q.shared),
                         "gain_unshared": cluster_bootstrap(gain[ns], q.stamp[ns], q.lang[ns], seed=0)}
        res["variants"][v] = doc
    res["choice"] = choose(res["variants"], len(firsts))
    return res


def choose(variants: dict[str, dict], k: int) -> dict:
    """The rule in the module doc, applied to the variants that ran on all ``k`` folds."""
    eligible = {v: d for v, d in variants.items() if len(d["folds"]) == k and k > 1}
    if not eligible:
        return {"chosen": None, "why": "no variant has run on every fold"}
    gains = {v: d["gain_bootstrap"][0] for v, d in eligible.items()}
    best = max(gains, key=lambda v: gains[v])
    tied, diffs = [best], {}
    for v, d in eligible.items():
        if v == best:
            continue
        diff = t_interval(np.subtract(eligible[best]["fold_gains"], d["fold_gains"]))
        diffs[v] = diff
        if diff[1] <= 0 <= diff[2]:
            tied.append(v)
    chosen = min(tied, key=cost_key)
    return {"chosen": chosen, "best": best, "tied": tied, "paired_diff_to_best": diffs}


def markdown(res: dict) -> str:
    lines = ["### Tux Paint, 5-fold cross-validation by stamp (text→image, %, macro over languages)", ""]
    folds = res["folds"]
    lines += ["| fold | train stamps | val stamps | test stamps |", "|--:|--:|--:|--:|"]
    lines += [f"| {f} | {d['n_train']} | {d['n_val']} | {d['n_test']} |" for f, d in folds.items()]
    lines += ["", "**All variants, pooled over their folds** (gain = reranked − first-stage R@1 in points; "
              "t: 95 % t-interval over folds, seeds averaged in a fold; bootstrap: 95 % over test stamps):", "",
              "| variant | folds × seeds | first R@1 | R@1 | R@5 | R@10 | gain R@1, t over folds | "
              "gain R@1, bootstrap | gain R@5 | gain R@10 | run time (units) |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for v in sorted(res["variants"], key=cost_key):
        d = res["variants"][v]
        t = d["gain_t"]
        seeds = sorted({s for p in d["per_fold"] for s in p["seeds"]})
        lines.append(
            f"| {v} | {len(d['folds'])} × {seeds} | {_pct(d['first_r1'])} | {_pct(d['reranked_r1'])} | "
            f"{_pct(d['reranked_r5'])} | {_pct(d['reranked_r10'])} | {_ci(*t) if t else '—'} | "
            f"{_ci(*d['gain_bootstrap'])} | {d['reranked_r5'] - d['first_r5']:+.1f} | "
            f"{d['reranked_r10'] - d['first_r10']:+.1f} | {d['seconds'] / 60:.0f} min |")
    for v in sorted(res["variants"], key=cost_key):
        d = res["variants"][v]
        lines += ["", f"**{v}: per fold**", "",
                  "| fold | seeds | queries | first R@1 | R@1 | first R@5 | R@5 | first R@10 | R@10 | gain R@1 | "
                  "best epochs | s/unit |", "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|---|"]
        for p in d["per_fold"]:
            lines.append(f"| {p['fold']} | {p['seeds']} | {p['queries']} | " + " | ".join(
                f"{_pct(p[f'first_r{k}'])} | {_pct(p[f'reranked_r{k}'])}" for k in (1, 5, 10))
                + f" | {p['reranked_r1'] - p['first_r1']:+.1f} | {p['best_epochs']} | {p['seconds']} |")
        lines.append(f"| **pooled** | | {d['queries']} | " + " | ".join(
            f"{_pct(d[f'first_r{k}'])} | {_pct(d[f'reranked_r{k}'])}" for k in (1, 5, 10))
            + f" | {d['reranked_r1'] - d['first_r1']:+.1f} | | |")
    for v in sorted(res["variants"], key=cost_key):
        d = res["variants"][v]
        lines += ["", f"**{v}: per language** (pooled over folds {d['folds']}; 95 % bootstrap over stamps)", "",
                  "| language | first R@1 | R@1 | gain |", "|---|--:|--:|--:|"]
        for lg, x in d["per_language"].items():
            lines.append(f"| {lg} | {_pct(x['first_r1'])} | {_pct(x['reranked_r1'])} | {_ci(*x['gain'])} |")
    lines += ["", "**Captions shared word for word by several stamps of the same test fold** (same language; "
              "no reranker can tell those stamps apart):", "",
              "| variant | shared queries | R@1 first → reranked, all | without shared | "
              "gain without shared (bootstrap) | shared only |", "|---|--:|--:|--:|--:|--:|"]
    for v in sorted(res["variants"], key=cost_key):
        d, s = res["variants"][v], res["variants"][v]["shared"]
        lines.append(f"| {v} | {d['shared_queries']} of {d['queries']} | {_pct(s['first_all'])} → "
                     f"{_pct(s['reranked_all'])} | {_pct(s['first_unshared'])} → {_pct(s['reranked_unshared'])} | "
                     f"{_ci(*s['gain_unshared'])} | {_pct(s['first_shared'])} → {_pct(s['reranked_shared'])} |")
    c = res["choice"]
    lines += ["", "**Choice of the default head** (rule fixed before the run: highest mean R@1 gain; a variant whose "
              "paired per-fold difference to it has a 95 % t-interval containing 0 is tied; the cheapest tied wins): "
              + (f"best `{c['best']}`; tied {c['tied']}; **chosen `{c['chosen']}`**. Paired differences best − "
                 "variant (points, t over folds): "
                 + ", ".join(f"{v} {_ci(*x)}" for v, x in c["paired_diff_to_best"].items())
                 if c["chosen"] else c["why"])]
    if c["chosen"]:
        d = res["variants"][c["chosen"]]
        t = d["gain_t"]
        met = d["gain_bootstrap"][0] >= TARGET_POINTS and t[1] > 0
        lines += ["", f"Target (reranked R@1 ≥ first stage + {TARGET_POINTS:.0f} points, interval excluding 0): "
                  f"{'**met**' if met else '**not met**'} for `{c['chosen']}` (gain {d['gain_bootstrap'][0]:+.1f}, "
                  f"t over folds [{t[1]:+.1f}, {t[2]:+.1f}])."]
    return "\n".join(lines)


def write_report(out: Path) -> str:
    res = analyse(out)
    md = markdown(res)
    (out / "results.json").write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    (out / "results.md").write_text(md + "\n", encoding="utf-8")
    return md
