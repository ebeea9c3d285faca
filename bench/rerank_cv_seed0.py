"""The cross-validation's variants compared on seed 0 only (the ablations ran one seed; `full` and
`len1` three): per variant, the R@1/R@5/R@10 gain over the first stage, as the mean over folds of the
macro over languages, with a 95 % t-interval over the 5 folds (docs/quality.md).

    .venv/bin/python bench/rerank_cv_seed0.py [--out results/rerank-cv]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from frozenlens.eval.intervals import t_interval

VARIANTS = ("full", "len1", "concat", "no-cross", "no-visual")


def macro(ranks: dict[str, list[int]], k: int) -> float:
    return 100 * float(np.mean([np.mean(np.asarray(v) <= k) for v in ranks.values()]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "results" / "rerank-cv"))
    units = Path(ap.parse_args(argv).out) / "units"
    first = {f: json.loads((units / f"first-f{f}.json").read_text())["ranks"] for f in range(5)}
    print("| variant | folds | gain R@1, t over folds | gain R@5 | gain R@10 | gain R@1 per fold |")
    print("|---|--:|--:|--:|--:|---|")
    for v in VARIANTS:
        docs = {f: json.loads(p.read_text()) for f in range(5) if (p := units / f"{v}-f{f}-s0.json").is_file()}
        if len(docs) < 2:
            continue
        gains = {k: np.array([macro(d["ranks"], k) - macro(first[f], k) for f, d in docs.items()]) for k in (1, 5, 10)}
        g = gains[1]
        mean, low, high = t_interval(g)
        print(f"| `{v}` | {len(g)} | {mean:+.1f} [{low:+.1f}, {high:+.1f}] | "
              f"{gains[5].mean():+.1f} | {gains[10].mean():+.1f} | {', '.join(f'{x:+.1f}' for x in g)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
