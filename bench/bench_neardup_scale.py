"""Near-duplicate grouping at 100k photos: time of the batched k-NN pass and of the complete-link merge.

Vectors: clustered unit vectors shaped like the lite encoder's visual vectors (1280-d; cosines of
distinct photos calibrated on the real validation photos, see :func:`clustered`), plus planted
near-duplicates: 5 % of the photos get 1 to 3 copies at cosine ~0.9 to their original (small noise,
renormalised). The grouping runs exactly as ``Engine.near_duplicates`` does after reading the stored
vectors (:func:`frozenlens.engine.neardup.candidate_pairs` over the index's own FAISS search, then
:func:`~frozenlens.engine.neardup.complete_link`), on a real :class:`~frozenlens.retriever.VectorIndex`
of each factory asked for. Reported: build time (not part of grouping: the index exists already),
k-NN time, merge time, groups found, and pair precision/recall against the planted groups.

    PYTHONPATH=src python bench/bench_neardup_scale.py [--n 100000] [--factories "IVF1024,Flat;Flat"]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from frozenlens.engine.neardup import candidate_pairs, complete_link
from frozenlens.request import DUPLICATE_THRESHOLD
from frozenlens.retriever import VectorIndex


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(d: int, n: int, rng: np.random.Generator, clusters: int = 1000) -> np.ndarray:
    """float32 (n, d) unit vectors shaped like the lite encoder's visual vectors of distinct photos: a
    shared direction, a subject cluster and the photo's own part (variance shares 0.25 / 0.20 / 0.55),
    so two photos have cosine ~0.25 and two of one subject ~0.45 (measured on the real validation photos:
    mean 0.26, nearest other photo 0.19-0.56)."""
    mean, centres = _unit(rng, 1, d)[0], _unit(rng, clusters, d)
    which = rng.integers(0, clusters, n)
    x = np.empty((n, d), np.float32)
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        x[lo:hi] = 0.5 * mean + np.sqrt(0.2) * centres[which[lo:hi]] + np.sqrt(0.55) * _unit(rng, hi - lo, d)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, d) vectors and int64 (n,) true group labels (the original's row)."""
    rng = np.random.default_rng(seed)
    n_orig = int(n / 1.1)
    x = clustered(d, n_orig, rng)
    extra = n - n_orig
    owners = rng.choice(n_orig, max(1, extra // 2), replace=False)
    copies = np.concatenate([owners, rng.choice(owners, extra - owners.size)])[:extra]
    noise = rng.standard_normal((extra, d), dtype=np.float32)
    noise *= 0.45 / np.linalg.norm(noise, axis=1, keepdims=True)  # cosine ~ 1/sqrt(1 + 0.45^2) = 0.91
    dup = x[copies] + noise
    dup /= np.linalg.norm(dup, axis=1, keepdims=True)
    return np.concatenate([x, dup]).astype(np.float32), np.concatenate([np.arange(n_orig), copies])


def pair_set(groups: list[list[int]]) -> set[tuple[int, int]]:
    return {p for g in groups for p in itertools.combinations(sorted(g), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--factories", default="IVF1024,Flat;Flat", help="FAISS factory strings, separated by ;")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    x, label = planted(args.n, args.dim, args.seed)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    truth: dict[int, list[int]] = {}
    for i, g in zip(ids.tolist(), label.tolist(), strict=True):
        truth.setdefault(g, []).append(i)
    true_pairs = pair_set([g for g in truth.values() if len(g) > 1])
    print(f"{args.n} vectors, {args.dim}-d, {len(true_pairs)} planted near-duplicate pairs "
          f"(made in {time.perf_counter() - t0:.1f} s); threshold {DUPLICATE_THRESHOLD}")
    print("| factory | build s | k-NN pass s (CPU s) | merge s | groups | precision | recall |\n|---|---|---|---|---|---|---|")
    for factory in args.factories.split(";"):
        t = time.perf_counter()
        index = VectorIndex.create(args.dim, factory, use_gpu=False)
        for lo in range(0, args.n, 16384):
            index.add(ids[lo:lo + 16384], x[lo:lo + 16384])
        build = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        a, b, s = candidate_pairs(index, ids, x, DUPLICATE_THRESHOLD)
        knn, knn_cpu = time.perf_counter() - t, time.process_time() - cpu
        t = time.perf_counter()
        groups = complete_link(a, b, s, lambda group: x[np.asarray(group) - 1], DUPLICATE_THRESHOLD)
        merge = time.perf_counter() - t
        got = pair_set([g for g, _ in groups])
        tp = len(got & true_pairs)
        print(f"| {factory} | {build:.1f} | {knn:.1f} ({knn_cpu:.0f}) | {merge:.2f} | {len(groups)} | "
              f"{tp / max(len(got), 1):.4f} | {tp / max(len(true_pairs), 1):.4f} |", flush=True)


if __name__ == "__main__":
    main()
