"""Same-run A/B of a benchmark against an earlier commit (no regression beyond noise?).

The benchmark script of THIS checkout is the harness; only the code under test
changes: each run gets ``PYTHONPATH=<tree>/src``, where the base tree is a git
worktree of ``--base`` made under ``.cache/ab/``. Runs alternate (base, new,
new, base, ...) so drift of a noisy machine hits both sides alike, and the
ratio new/base is reported per round and as the median.

    .venv/bin/python bench/ab_previous.py query --base f3a37c3 --rounds 2
    .venv/bin/python bench/ab_previous.py serve --base f3a37c3 --rounds 2 -- --n 100000 --image-clients 0

``query`` compares ``bench_query.py``'s p50 per factory; ``serve`` compares
``bench_serve.py``'s text-query req/s, p50 and p99 per index (and its errors).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIVER = """
import json, sys
sys.path.insert(0, {bench!r})
import {module} as bench
result = bench.main({args!r})
keep = {{k: result[k] for k in ("p50", "summary", "ok") if k in result}}
with open({out!r}, "w") as f:
    json.dump(keep, f)
"""

DEFAULT_ARGS = {
    "query": ["--queries", "210", "--filter-queries", "20", "--no-conse-recall", "--no-single-thread"],
    "serve": ["--clients", "20", "--duration", "30", "--image-clients", "0", "--ab-segments", "0"],
}


def worktree(rev: str) -> Path:
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout.strip()
    path = REPO / ".cache" / "ab" / sha
    if not (path / "src").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "worktree", "add", "--detach", str(path), sha], cwd=REPO, check=True,
                       capture_output=True)
    return path


def run_once(bench: str, tree: Path, args: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    code = DRIVER.format(bench=str(REPO / "bench"), module=f"bench_{bench}", args=args, out=out)
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
    try:
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


def metrics(bench: str, result: dict) -> dict[str, float]:
    if bench == "query":
        return {f"p50 ms {factory}": float(v) for factory, v in result["p50"].items()}
    out: dict[str, float] = {}
    for name, s in result["summary"].items():
        out[f"req/s {name}"] = s["req_s"]
        out[f"p50 ms {name}"] = s["p50_ms"]
        out[f"p99 ms {name}"] = s["p99_ms"]
        out[f"errors {name}"] = s["errors"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", choices=sorted(DEFAULT_ARGS))
    ap.add_argument("--base", default="HEAD~1", help="the earlier commit (default HEAD~1)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of (base, new) runs (default 2)")
    ap.add_argument("rest", nargs="*", help="after --: arguments for the benchmark (replace the defaults)")
    args = ap.parse_args(argv)
    bench_args = args.rest or DEFAULT_ARGS[args.bench]
    base, new = worktree(args.base), REPO
    rows: list[tuple[int, str, dict[str, float]]] = []
    for r in range(args.rounds):
        order = [("base", base), ("new", new)] if r % 2 == 0 else [("new", new), ("base", base)]
        for label, tree in order:
            print(f"== round {r + 1}: {label} ({tree})", flush=True)
            rows.append((r, label, metrics(args.bench, run_once(args.bench, tree, bench_args))))
    keys = list(rows[0][2])
    print(f"\nA/B of bench_{args.bench}.py {' '.join(bench_args)}: base {args.base} vs the working tree")
    print(f"{'metric':32} " + " ".join(f"{'r' + str(r + 1) + ' base':>10} {'r' + str(r + 1) + ' new':>10} {'ratio':>6}"
                                       for r in range(args.rounds)) + f" {'median ratio':>12}")
    for key in keys:
        cells, ratios = [], []
        for r in range(args.rounds):
            b = next(m[key] for rr, lab, m in rows if rr == r and lab == "base")
            n = next(m[key] for rr, lab, m in rows if rr == r and lab == "new")
            ratio = n / b if b else float("nan")
            ratios.append(ratio)
            cells.append(f"{b:10.1f} {n:10.1f} {ratio:6.2f}")
        print(f"{key:32} " + " ".join(cells) + f" {statistics.median(ratios):12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
