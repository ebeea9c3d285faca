#!/usr/bin/env python3
"""Does the tuner's target recall carry over to fresh queries? Old (noise) vs new (leave-one-out) held-out queries.

Usage::

    PYTHONPATH=src .venv/bin/python bench/bench_tuning.py [--n 100000 300000] [--only IVFPQ IVFSQ8 HNSW32]
        [--fresh 2000] [--seeds 0 1 2] [--out results/bench_tuning.json]

Data: ``bench_index_types.embedding_data(..., fresh=True)`` -- the clustered, anisotropic 512-d generator, float16
as stored, and ``--fresh`` further draws of the *same* distribution as queries (not perturbed further), with their
exact top-10. Per index type the index is built once through ``retriever.tuning.build``, then tuned by
``retriever.tuning.tune`` to recall@10 >= 0.95 three ways, each with ``--seeds`` tuning seeds (256 queries each):

* ``noise``: the old held-out queries (stored vectors moved by Gaussian noise of the median nearest-neighbour
  distance, the truth over all stored vectors; the code that was in ``tuning.held_out_queries``), target on the mean;
* ``loo mean``: leave-one-out queries (``tuning.leave_one_out``), target on the mean (``z = 0``);
* ``loo lb``: leave-one-out, target on the one-sided 95 % lower bound (the product's default).

For each: the knob values kept, the tuner's own recall, recall@10 on the fresh queries (and its standard error),
and QPS at batch 1 (one thread); ``--data test32``: the unit test's 32-d isotropic clusters and index types
instead; with ``--curve``, recall@10 at every knob value on each kind of query.
Absolute times drift +-40 % run to run on these machines.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))  # tests.unit.test_retriever.clustered for --data test32

from bench_index_types import DIM, K, chunks_of, embedding_data, qps  # noqa: E402
from common import log, markdown_table  # noqa: E402
from frozenlens.retriever import AutoPolicy  # noqa: E402
from frozenlens.retriever.choice import ivfpq_factory  # noqa: E402
from frozenlens.retriever.tuning import HeldOut, build, exact_top_k, leave_one_out, pick, recalls, tune, without  # noqa: E402


def noise_held_out(chunks, n: int, count: int, k: int, dim: int, seed: int) -> HeldOut:
    """The old method (``tuning.held_out_queries`` before leave-one-out): stored vectors moved by Gaussian noise
    whose norm is the median nearest-neighbour distance, truth = exact top-k over all stored vectors."""
    rng = np.random.default_rng(seed)
    q = pick(chunks, np.sort(rng.choice(n, size=min(count, n), replace=False)), dim)
    d, _ = exact_top_k(np.ascontiguousarray(q), chunks, 2, "ip", with_scores=True)
    second = d[:, 1][np.isfinite(d[:, 1])]
    radius = float(np.median(np.sqrt(np.maximum(2 - 2 * second, 0))))
    q = q + rng.standard_normal(q.shape).astype(np.float32) * (max(radius, 1e-3) / np.sqrt(dim))
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q = np.ascontiguousarray(q, dtype=np.float32)
    return HeldOut(q, exact_top_k(q, chunks, k), None)


def factories(n: int, dim: int) -> dict[str, str]:
    if dim != DIM:  # the unit test's data set and index types (tests/unit/test_tuning_fresh.py)
        return {"IVF-Flat": "IVF256,Flat", "HNSW32": "HNSW32", "IVFPQ": "IVF64,PQ8,Refine(SQfp16)"}
    nlist = int(ivfpq_factory(n, DIM).split(",IVF")[1].split(",")[0])
    return {"IVFSQ8": f"IVF{nlist},SQ8", "HNSW32": "HNSW32", "IVFPQ": ivfpq_factory(n, DIM)}


def data_set(kind: str, n: int, fresh: int):
    """(dim, stored vectors' chunk source, fresh queries, their exact top-K): ``embedding`` (512-d, the
    benchmarks' generator) or ``test32`` (the unit test's: 32-d, 200 isotropic clusters, noise 2.0, seed 5)."""
    if kind == "embedding":
        _, q, _, chunks, truth = embedding_data(DIM, n, fresh, fresh=True)
        return DIM, chunks, q, truth
    from tests.unit.test_retriever import clustered

    both = clustered(5, n + fresh, 32, centres=200, noise=2.0).astype(np.float16).astype(np.float32)
    chunks = chunks_of(np.arange(n, dtype=np.int64), both[:n])
    q = np.ascontiguousarray(both[n:])
    return 32, chunks, q, exact_top_k(q, chunks, K)


def curve(vi, probes: dict[str, HeldOut], fresh: HeldOut) -> list[dict[str, object]]:
    """Recall@10 per knob value (k_factor as tuned) on each kind of query; ``loo plain``: leave-one-out
    searched on the graph as it is (the query's own node reachable), to show why graphs need unlinking."""
    knob = "nprobe" if vi.nprobe is not None else "ef_search"
    kept = getattr(vi, knob)
    loo = probes["loo"]
    out = []
    for v in [1 << i for i in range(13)]:
        if v > (vi.nlist if knob == "nprobe" else 4096):
            break
        setattr(vi, knob, v)
        found = vi.search(loo.queries, K + 1)[1]
        plain = recalls(without(found, found == loo.own[:, None], K), loo.truth)
        out.append({knob: v, "noise": round(float(probes["noise"].recalls(vi).mean()), 4),
                    "loo": round(float(loo.recalls(vi).mean()), 4), "loo plain": round(float(plain.mean()), 4),
                    "fresh": round(float(fresh.recalls(vi).mean()), 4)})
    setattr(vi, knob, kept)
    return out


def run(n: int, args: argparse.Namespace, done: list[dict[str, object]]) -> list[dict[str, object]]:
    t0 = time.perf_counter()
    dim, chunks, fresh, truth = data_set(args.data, n, args.fresh)
    log(f"n={n}: data and exact top-{K} of {args.fresh} fresh queries in {time.perf_counter() - t0:.0f} s")
    fresh_probe = HeldOut(fresh, truth, None)
    policy = AutoPolicy(1 << 40, target_recall=0.95, queries=args.queries)
    rows: list[dict[str, object]] = []
    for name, factory in factories(n, dim).items():
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        vi = build(factory, dim, chunks)
        built = round(time.perf_counter() - start, 1)
        log(f"  {factory}: built in {built} s")
        for seed in args.seeds:
            probes = {"noise": noise_held_out(chunks, n, args.queries, K, dim, seed),
                      "loo": leave_one_out(chunks, n, args.queries, K, dim, seed)}
            for method, probe, z in (("noise", probes["noise"], 0.0), ("loo mean", probes["loo"], 0.0),
                                     ("loo lb", probes["loo"], None)):
                t = tune(vi, chunks, policy, held_out=probe, **({} if z is None else {"z": z}))
                per_query = fresh_probe.recalls(vi)
                row = {"n": n, "type": name, "factory": factory, "build_s": built, "seed": seed, "method": method,
                       "knob": t.knob, "value": t.value, "k_factor": t.k_factor, "tuner_recall": t.recall,
                       "tuner_low": t.recall_low, "fresh_recall": round(float(per_query.mean()), 4),
                       "fresh_se": round(float(per_query.std(ddof=1) / np.sqrt(per_query.size)), 4),
                       "qps_batch1": round(qps(vi, fresh, 1, args.timed), 1)}
                log(f"    {row}")
                rows.append(row)
        if args.curve:
            rows.append({"n": n, "type": name, "factory": factory, "curve": curve(vi, probes, fresh_probe)})
            log(f"    curve {rows[-1]['curve']}")
        del vi
        save(done + rows, args)
    return rows


def save(rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=2))


def summary(rows: list[dict[str, object]]) -> list[list[object]]:
    """One line per (n, type, method): the knob values per seed, tuner and fresh recall (mean, min over seeds)."""
    out = []
    keys = dict.fromkeys((r["n"], r["type"], r["method"]) for r in rows)
    for key in keys:
        part = [r for r in rows if (r["n"], r["type"], r["method"]) == key]
        knobs = " / ".join(f"{r['value']}" + (f"×{r['k_factor']}" if r["k_factor"] else "") for r in part)
        fresh = [float(r["fresh_recall"]) for r in part]  # type: ignore[arg-type]
        out.append([f"{key[0] // 1000} k", key[1], key[2], f"{part[0]['knob']} {knobs}",
                    f"{np.mean([r['tuner_recall'] for r in part]):.3f}", f"{np.mean(fresh):.3f}", f"{min(fresh):.3f}",
                    f"{np.mean([r['qps_batch1'] for r in part]):.0f}"])
    return out


def curve_table(row: dict[str, object]) -> str:
    """One ``--curve`` result as a Markdown table: a line per kind of query, a column per knob value."""
    points: list[dict[str, float]] = row["curve"]  # type: ignore[assignment]
    knob = "nprobe" if "nprobe" in points[0] else "ef_search"
    head = [f"{row['n'] // 1000} k {row['type']}: {knob}"] + [str(int(p[knob])) for p in points]  # type: ignore[operator]
    return markdown_table(head, [[kind] + [f"{p[kind]:.3f}" for p in points]
                                 for kind in ("noise", "loo", "loo plain", "fresh")]) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000])
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--data", choices=("embedding", "test32"), default="embedding")
    p.add_argument("--fresh", type=int, default=2000)
    p.add_argument("--queries", type=int, default=256, help="held-out queries per tuning (AutoPolicy.queries)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--timed", type=int, default=300)
    p.add_argument("--curve", action="store_true", help="also recall per knob value on each kind of query")
    p.add_argument("--out", default=str(REPO / "results" / "bench_tuning.json"))
    args = p.parse_args()
    log(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads")
    rows: list[dict[str, object]] = []
    for n in args.n:
        rows += run(n, args, rows)
    for c in (r for r in rows if "curve" in r):
        print(curve_table(c))
    rows = [r for r in rows if "curve" not in r]
    print(markdown_table(["n", "type", "held-out queries", "kept (per seed)", "tuner recall", "fresh recall",
                          "fresh min", "QPS batch 1"], summary(rows)))


if __name__ == "__main__":
    main()
