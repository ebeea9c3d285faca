#!/usr/bin/env python3
"""Index types on embedding-shaped 512-d vectors: build time, bytes/vector, QPS, recall@10, tuned knobs.

Usage::

    PYTHONPATH=src .venv/bin/python bench/bench_index_types.py [--n 100000 1000000] [--queries 256]
        [--only Flat SQfp16 HNSW32 IVFPQ auto] [--skip-hnsw-above 200000] [--out results/bench_index_types.json]

Data: the seeded generator of ``bench/bench_wide_vectors.py`` (``synthetic``) at d = 512: a global
mean direction (the "cone" of real embeddings), 300 cluster centres of log-normal popularity, 10
sub-clusters each and per-point noise, every part with a power-law spectrum in a shared random
orthonormal basis (clustered AND anisotropic, not uniform), L2-normalised and rounded to float16
as the product stores them. Queries: held-out points of the same distribution, perturbed further.

Per index type, built through the product's own path (``retriever.tuning.build``: a trainable
factory trains on a random sample of all vectors): build time (s), bytes per vector (saved file /
n), QPS at batch 1 (one thread, ``--timed`` queries one by one) and at batch 256 (all threads),
recall@10 against exact inner-product search, and for HNSW / IVF the ``efSearch`` / ``nprobe``
that ``retriever.tuning.tune`` picks for target recall@10 >= 0.95 (the product's held-out
queries; for IVF-PQ with exact re-ranking also ``k_factor``), with recall on the benchmark's
own queries at that value. "auto" is what
``recommend_factory`` picks for n with the default policy (no memory limit) and under a 256 MB
budget. Absolute times drift +-40 % run to run on these machines; compare within a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_wide_vectors import synthetic  # noqa: E402
from common import log, markdown_table  # noqa: E402
from frozenlens.retriever import AutoPolicy, VectorIndex, recommend_factory, threads  # noqa: E402
from frozenlens.retriever.choice import ivfpq_factory  # noqa: E402
from frozenlens.retriever.tuning import build, exact_top_k, recall_at_k, tune  # noqa: E402

DIM = 512
K = 10


def chunks_of(ids: np.ndarray, x: np.ndarray, size: int = 65536):
    return lambda: ((ids[i : i + size], x[i : i + size]) for i in range(0, len(ids), size))


def embedding_data(dim: int, n: int, queries: int, *, fresh: bool = False):
    """The benchmarks' data: ``n`` seeded embedding-shaped vectors rounded to float16 as the product stores
    them, ``queries`` held-out queries, ids 0..n-1, the chunk source the builders read, and exact top-K ids.
    ``fresh``: the queries are further draws of the stored vectors' own distribution (not perturbed further;
    the stored vectors then differ from ``fresh=False``'s). Returns (x, q, ids, chunks, truth)."""
    if fresh:
        x, _ = synthetic(dim, n + queries, 0, seed=0)
        x, q = x[:n], x[n:]
    else:
        x, q = synthetic(dim, n, queries, seed=0)
    x = x.astype(np.float16).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    chunks = chunks_of(ids, x)
    return x, q, ids, chunks, exact_top_k(q, chunks, K)


def factories(n: int) -> dict[str, str]:
    return {
        "Flat": "Flat",
        "SQfp16": "SQfp16",
        "HNSW32": "HNSW32",
        "IVFPQ": ivfpq_factory(n, DIM),
        "auto": recommend_factory(n, DIM),
        "auto@256MB": recommend_factory(n, DIM, AutoPolicy(256 << 20)),
    }


def qps(vi: VectorIndex, q: np.ndarray, batch: int, timed: int) -> float:
    if batch == 1:
        with threads(1):
            vi.search(q[:5], K)
            start = time.perf_counter()
            for row in q[:timed]:
                vi.search(row, K)
            return timed / (time.perf_counter() - start)
    start = time.perf_counter()
    vi.search(q[:batch], K)
    return batch / (time.perf_counter() - start)


def run(n: int, args: argparse.Namespace, tmp: Path) -> list[dict[str, object]]:
    t0 = time.perf_counter()
    x, q, ids, chunks, truth = embedding_data(DIM, n, args.queries)
    log(f"n={n}: data and exact top-{K} in {time.perf_counter() - t0:.0f} s")
    rows: list[dict[str, object]] = []
    done: dict[str, dict[str, object]] = {}
    policy = AutoPolicy(1 << 40, target_recall=0.95, queries=args.queries)
    for name, factory in factories(n).items():
        if args.only and name not in args.only:
            continue
        if factory in done:
            rows.append({**done[factory], "type": name})
            continue
        if factory.startswith("HNSW") and n > args.skip_hnsw_above:
            rows.append({"type": name, "factory": factory, "n": n, "skipped": f"n > {args.skip_hnsw_above}"})
            continue
        start = time.perf_counter()
        vi = build(factory, DIM, chunks)
        built = time.perf_counter() - start
        path = tmp / f"{name}.faiss"
        vi.save(path)
        row: dict[str, object] = {"type": name, "factory": factory, "n": n, "build_s": round(built, 1),
                                  "bytes_per_vector": round(path.stat().st_size / n, 1)}
        path.unlink()
        if vi.nprobe is not None or vi.ef_search is not None:
            start = time.perf_counter()
            t = tune(vi, chunks, policy)
            row.update(knob=t.knob, tuned=t.value, k_factor=t.k_factor, tune_recall_heldout=t.recall,
                       reached=t.reached, tune_s=round(time.perf_counter() - start, 1))
        row["recall@10"] = round(recall_at_k(vi.search(q, K)[1], truth), 4)
        row["qps_batch1"] = round(qps(vi, q, 1, args.timed), 1)
        row["qps_batch256"] = round(qps(vi, q, 256, args.timed), 1)
        log(f"  {row}")
        rows.append(row)
        done[factory] = row
        del vi
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--timed", type=int, default=200)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--skip-hnsw-above", type=int, default=200_000)
    p.add_argument("--out", default=str(REPO / "results" / "bench_index_types.json"))
    args = p.parse_args()
    log(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    all_rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as d:
        for n in args.n:
            all_rows += run(n, args, Path(d))
            Path(args.out).write_text(json.dumps({"rows": all_rows, "argv": sys.argv[1:]}, indent=2))
    cols = ["type", "factory", "n", "build_s", "bytes_per_vector", "qps_batch1", "qps_batch256", "recall@10",
            "knob", "tuned", "k_factor", "tune_recall_heldout"]
    print(markdown_table(cols, [[r.get(c, r.get("skipped", "")) if c != "type" else r[c] for c in cols]
                                for r in all_rows]))


if __name__ == "__main__":
    main()
