"""Run every FrozenLens benchmark with moderate defaults and print all tables.

Each benchmark runs in its own fresh process (thread settings and memory of
one cannot leak into the next); progress goes to stderr, the Markdown tables
are printed again together at the end and saved to
``.cache/bench/results-<timestamp>.md``. On 2 quiet cores: ~8 minutes with
warm caches, ~14 minutes the first time (synthetic photos and the 100k-image
indexes are generated and cached); much longer when other jobs load the
machine (the reranker benchmark alone then takes up to an hour).

    make bench            # or: .venv/bin/python bench/run_all.py
    .venv/bin/python bench/run_all.py --quick     # small sizes, a smoke test (~5 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CACHE  # noqa: E402

FULL = {
    "indexing": ["--n", "200", "--repeat", "2", "--variants"],
    "query": ["--n", "100000", "--queries", "210", "--filter-queries", "40"],
    "memory": ["--sizes", "250,1000", "--repeat", "2"],
    "rerank": ["--n", "100000", "--reps", "200", "--paper-reps", "20"],
    "serve": ["--n", "100000", "--clients", "20", "--duration", "30"],
}
QUICK = {
    "indexing": ["--n", "64", "--repeat", "1", "--naive-n", "32", "--decode-n", "8", "--encoder-batches", "2"],
    "query": ["--n", "10000", "--queries", "42", "--filter-queries", "10", "--no-conse-recall"],
    "memory": ["--sizes", "100,400", "--repeat", "1"],
    "rerank": ["--n", "10000", "--reps", "50", "--paper-reps", "5"],
    "serve": ["--quick", "--n", "10000"],
}


def run(name: str, args: list[str]) -> tuple[str, float, int]:
    """Run bench_<name>.py in a fresh process; returns (its stdout, seconds, exit code)."""
    cmd = [sys.executable, str(HERE / f"bench_{name}.py"), *args]
    print(f"\n[run_all] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    print(proc.stdout, flush=True)
    print(f"[run_all] {name}: {seconds:.0f} s, exit {proc.returncode}", file=sys.stderr, flush=True)
    return proc.stdout, seconds, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke test of every benchmark")
    ap.add_argument("--only", choices=sorted(FULL), action="append", help="run only these benchmarks")
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    names = args.only or list(plan)

    sys.path.insert(0, str(HERE))
    import common

    header = f"FrozenLens benchmarks, {common.machine_line()}, load average {os.getloadavg()[0]:.1f} at start"
    outputs: list[tuple[str, str, float, int]] = []
    t0 = time.perf_counter()
    for name in names:
        out, seconds, rc = run(name, plan[name])
        outputs.append((name, out, seconds, rc))
    total = time.perf_counter() - t0

    lines = [f"# {header}", ""]
    for name, out, seconds, rc in outputs:
        status = "" if rc == 0 else f" — FAILED (exit {rc})"
        lines.append(f"## bench_{name}.py {' '.join(plan[name])} ({seconds:.0f} s){status}")
        lines.append(out.strip())
        lines.append("")
    lines.append(f"Total {total / 60:.1f} min; load average at end {os.getloadavg()[0]:.1f}.")
    report = "\n".join(lines)
    print("\n" + "=" * 80 + "\n" + report)
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"results-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text(report + "\n", encoding="utf-8")
    print(f"\n[run_all] saved {path}", file=sys.stderr)
    return 0 if all(rc == 0 for *_, rc in outputs) else 1


if __name__ == "__main__":
    sys.exit(main())
