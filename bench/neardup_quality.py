"""Precision and recall of near-duplicate grouping (``frozenlens duplicates``) on real photos.

Protocol (docs/quality.md, "Near-duplicate groups"): ``tests/neardup_set.py`` turns real photos
(the KPhotoAlbum demo and the package sample photos, split by photo into *validation* and *test*)
into originals plus 7 variants each (resized 1/2 and 1/4, JPEG q25, 5 % and 10 % crops, mirrored,
a shifted brighter "burst" frame). Same-subject photos (``donna``/``donna_2``, ...) are different
originals: grouping them is an error. Each split is indexed with the real ``lite`` encoder; the
grouping (``Engine.near_duplicates``) is scored by pairs: precision = correct grouped pairs / grouped
pairs, recall = correct grouped pairs / true pairs.

The threshold is chosen on validation only (highest F1; ties: the higher threshold) and the test
split is scored at :data:`frozenlens.request.DUPLICATE_THRESHOLD` (the shipped default) and at the
threshold chosen here; single-link grouping (plain union-find over the same pairs) is shown beside
the complete-link rule for comparison.

    PYTHONPATH=src python bench/neardup_quality.py [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import testdata_dir  # noqa: E402
from tests.neardup_set import make_set, pair_scores  # noqa: E402

GRID = [round(t, 2) for t in np.arange(0.50, 0.96, 0.01)]


def single_link(engine, threshold: float) -> list[list[int]]:
    """Union-find over the same candidate pairs, no complete-link check (the chaining baseline)."""
    from frozenlens.engine.neardup import candidate_pairs

    index = engine.sync()["visual"]
    ids = index.ids()
    a, b, _ = candidate_pairs(index, ids, engine.store.vectors("visual", ids.tolist(), engine.identity.visual_dim),
                              threshold)
    parent = {int(i): int(i) for i in ids}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        parent[find(x)] = find(y)
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def score(engine, labels: dict[str, str], threshold: float, rule: str = "complete") -> dict[str, float]:
    if rule == "complete":
        groups = [list(g.members) + [c for c, _ in g.copies] for g in engine.near_duplicates(threshold)]
    else:
        groups = single_link(engine, threshold)
    paths = {r.id: r.path for r in engine.store.images([i for g in groups for i in g]).values()}
    return pair_scores([[paths[i] for i in g] for g in groups], labels)


def same_subject(engine, labels: dict[str, str]) -> float:
    """The highest visual cosine between two different originals of one subject (``donna``/``donna_2``...)."""
    index = engine.sync()["visual"]
    records = engine.store.images(index.ids().tolist())
    originals = {Path(r.path).stem: i for i, r in records.items() if "__" not in Path(r.path).stem}
    vec = {n: engine.store.vectors("visual", [i], engine.identity.visual_dim)[0] for n, i in originals.items()}
    subject = {n: n.rstrip("0123456789").rstrip("_") for n in originals}
    pairs = [(x, y) for x in originals for y in originals if x < y and subject[x] == subject[y]]
    return max((float(vec[x] @ vec[y]) for x, y in pairs), default=float("nan"))


def build(split: str, root: Path):
    from frozenlens.engine import Engine

    folder = root / split
    shutil.rmtree(folder, ignore_errors=True)
    labels = make_set(testdata_dir(), split, folder / "photos")
    engine = Engine.open(folder / "index", create=True)
    engine.index([folder / "photos"])
    return engine, labels


def main() -> None:
    from frozenlens.request import DUPLICATE_THRESHOLD

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / ".cache" / "bench" / "neardup")
    args = ap.parse_args()
    val, val_labels = build("validation", args.out)
    sweep = [(t, score(val, val_labels, t)) for t in GRID]
    top = max(round(r["f1"], 6) for _, r in sweep)
    plateau = [t for t, r in sweep if round(r["f1"], 6) == top]
    best_t = round((min(plateau) + max(plateau)) / 2, 2)  # the middle of the best-F1 range: farthest from both edges
    best = dict(sweep)[min(GRID, key=lambda t: abs(t - best_t))]
    print(f"validation: {len(val_labels)} files from {len(set(val_labels.values()))} photos")
    print("| threshold | precision | recall | F1 |\n|---|---|---|---|")
    for t, r in sweep:
        if round(t * 100) % 5 == 0 or t == best_t:
            print(f"| {t:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    print(f"best F1 {top:.3f} from {min(plateau):.2f} to {max(plateau):.2f}; chosen (its middle): {best_t:.2f} "
          f"(F1 {best['f1']:.3f}); shipped default: {DUPLICATE_THRESHOLD:.2f}")
    print(f"same-subject originals, highest cosine: {same_subject(val, val_labels):.3f}")
    test, test_labels = build("test", args.out)
    print(f"\ntest: {len(test_labels)} files from {len(set(test_labels.values()))} photos")
    print("| rule | threshold | precision | recall | F1 | grouped pairs | true pairs |\n|---|---|---|---|---|---|---|")
    for rule in ("complete", "single"):
        for t in sorted({DUPLICATE_THRESHOLD, best_t, 0.5, 0.8}):
            r = score(test, test_labels, t, rule)
            print(f"| {rule}-link | {t:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} "
                  f"| {r['pairs_found']} | {r['pairs_true']} |")
    print(f"same-subject originals, highest cosine: {same_subject(test, test_labels):.3f}")


if __name__ == "__main__":
    main()
