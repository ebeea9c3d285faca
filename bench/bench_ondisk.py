#!/usr/bin/env python3
"""IVF inverted lists in RAM vs on disk (issue 14 §3): build/merge time, file sizes, RSS after load, QPS, recall.

Usage::

    PYTHONPATH=src nice -n 10 .venv/bin/python bench/bench_ondisk.py [--n 200000] [--factory IVF1024,SQ8]
        [--queries 256] [--timed 300] [--out results/bench_ondisk.json]

Data: ``bench_wide_vectors.synthetic`` at d = 512 (embedding-shaped, rounded to float16), as
``bench_index_types.py``. Both indexes are built through ``retriever.tuning.build`` with the same
training sample and the same shards (``--shard`` vectors each, merged with FAISS ``merge_from``); the
on-disk one merges its shards into inverted lists in a memory-mapped file (``lists_dir``). Each saved
index is then loaded in a fresh process, which reports its resident memory split into anonymous
memory (``RssAnon``: what the index really occupies) and mapped file pages (``RssFile``: the page
cache of the lists file, which the kernel can drop), right after the load and after the timed
queries (batch 1, one thread, the product's default ``nprobe``; ``--rounds`` probes per index in
alternating order, QPS = median). Recall@10 is against exact
search on the float16-rounded vectors; the two indexes must return identical ids.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_index_types import K, embedding_data  # noqa: E402
from common import log, markdown_table  # noqa: E402
from frozenlens.retriever.tuning import build, recall_at_k  # noqa: E402

DIM = 512

_PROBE = r"""
import json, sys, time
import numpy as np
from frozenlens.retriever import VectorIndex, threads

def status():
    out = {}
    for line in open("/proc/self/status"):
        if line.split(":")[0] in ("VmRSS", "RssAnon", "RssFile"):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out

path, qfile, timed = sys.argv[1], sys.argv[2], int(sys.argv[3])
q = np.load(qfile)
before = status()
start = time.perf_counter()
vi = VectorIndex.load(path, use_gpu=False)
load_s = time.perf_counter() - start
after_load = status()
with threads(1):
    for row in q[:5]:
        vi.search(row, 10)
    start = time.perf_counter()
    for row in q[:timed]:
        vi.search(row, 10)
    qps = timed / (time.perf_counter() - start)
ids = vi.search(q, 10)[1]
np.save(qfile + ".ids.npy", ids)
print(json.dumps({"load_s": load_s, "before": before, "after_load": after_load, "after_queries": status(),
                  "qps_batch1": qps, "on_disk": vi.lists_on_disk}))
"""


def probe(path: Path, qfile: Path, timed: int) -> tuple[dict[str, object], np.ndarray]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(path), str(qfile), str(timed)], capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": str(REPO / "src"), "OMP_WAIT_POLICY": "PASSIVE",
                                                      "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stdout), np.load(str(qfile) + ".ids.npy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--factory", default="IVF1024,SQ8")
    p.add_argument("--shard", type=int, default=65_536)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--timed", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3, help="fresh-process probes per index (QPS: median)")
    p.add_argument("--out", default=str(REPO / "results" / "bench_ondisk.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    _, q, _, chunks, truth = embedding_data(DIM, args.n, args.queries)
    log(f"n={args.n}: data and exact top-{K} in {time.perf_counter() - t0:.0f} s")
    rows, found, paths = [], {}, {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        np.save(tmp / "q.npy", q)
        for mode in ("RAM", "disk"):
            start = time.perf_counter()
            vi = build(args.factory, DIM, chunks, shard=args.shard, lists_dir=tmp if mode == "disk" else None)
            built = time.perf_counter() - start
            path = paths[mode] = tmp / f"{mode}.faiss"
            start = time.perf_counter()
            vi.save(path)
            saved = time.perf_counter() - start
            lists = sorted(tmp.glob(f"{mode}.faiss.*.ivfdata"))
            rows.append({"lists": mode, "factory": args.factory, "n": args.n, "nprobe": vi.nprobe,
                         "build_s": round(built, 1), "save_s": round(saved, 1),
                         "index_file_mb": round(path.stat().st_size / 2**20, 1),
                         "lists_file_mb": round(lists[0].stat().st_size / 2**20, 1) if lists else 0})
            del vi
        qps: dict[str, list[float]] = {"RAM": [], "disk": []}
        for i in range(args.rounds):  # fresh processes, alternating, so machine noise hits both alike
            for row in rows if i % 2 == 0 else rows[::-1]:
                mode = row["lists"]
                r, found[mode] = probe(paths[mode], tmp / "q.npy", args.timed)
                qps[mode].append(r["qps_batch1"])
                if "load_s" not in row:
                    row.update({
                        "load_s": round(r["load_s"], 2),
                        "anon_mb_after_load": round(r["after_load"]["RssAnon"] - r["before"]["RssAnon"], 1),
                        "file_mb_after_load": round(r["after_load"]["RssFile"] - r["before"]["RssFile"], 1),
                        "anon_mb_after_queries": round(r["after_queries"]["RssAnon"] - r["before"]["RssAnon"], 1),
                        "file_mb_after_queries": round(r["after_queries"]["RssFile"] - r["before"]["RssFile"], 1),
                        "recall@10": round(recall_at_k(found[mode], truth), 4)})
        for row in rows:
            row["qps_batch1_median"] = round(float(np.median(qps[row["lists"]])), 1)
            row["qps_batch1_runs"] = [round(v) for v in qps[row["lists"]]]
            log(f"  {row}")
    same = bool(np.array_equal(found["RAM"], found["disk"]))
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "identical_ids": same, "argv": sys.argv[1:]}, indent=2))
    cols = list(rows[0])
    print(markdown_table(cols, [[r[c] for c in cols] for r in rows]))
    print(f"identical ids RAM vs disk: {same}")


if __name__ == "__main__":
    main()
