#!/usr/bin/env python3
"""Issue 16 goal 1 at the issue's size: a fresh ``frozenlens search`` on 10,000-photo indexes, ``lite`` and ``openclip:``.

Usage (after ``bench/bench_cold.py``, whose 1024x768 indexes and artefact cache it reuses)::

    PYTHONPATH=src .venv/bin/python bench/bench_search_10k.py [--rows 10000] [--repeats 5]
        [--frozenlens-src DIR]   # the same --frozenlens-src bench_cold.py ran with

Indexing 10,000 real photos with the ``openclip:`` ViT-B/32 takes ~20 min on 2 cores, so each index
of ``bench_cold.py`` (200 real photos, encoded by the real encoder) is copied and topped up to
``--rows`` photos with synthetic rows (``bench_engine_auto.populate``: embedding-shaped unit vectors and
plausible metadata through the store's batch writer), reconciled into the FAISS spaces and saved — the files a real 10,000-photo index holds, with other vector values (which a search's cost
does not depend on). Then ``search "..." -k 10`` runs ``--repeats`` times per encoder as a fresh
process under ``unshare --net`` and ``/usr/bin/time -v``, the two encoders interleaved, with the
same environment and artefact cache as ``bench_cold.py``. Prints median / min wall time and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from bench_cold import QUERY, WORK, base_env, sandbox, timed  # noqa: E402
from common import log, machine_line, print_table  # noqa: E402

TOP_UP = r"""
import sys
sys.path.insert(0, sys.argv[3])
from bench_engine_auto import populate
from frozenlens.engine import Engine
with Engine.open(sys.argv[1]) as engine:
    populate(engine, int(sys.argv[2]) - engine.stats().images, engine.identity.visual_dim)
    spaces = engine.sync().load_all()  # every space reconciled with the new rows, as a writer holds them
    spaces.save()
    print(engine.stats().images)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frozenlens-src", type=Path, default=REPO / "src")
    args = ap.parse_args()
    src = args.frozenlens_src.resolve()
    cache = WORK / f"fl-cache-{hashlib.sha256(str(src).encode()).hexdigest()[:12]}"
    env = base_env(PYTHONPATH=str(src), FROZENLENS_CACHE=str(cache))
    net = sandbox()
    print(machine_line())
    indexes = {}
    for name in ("lite", "openclip"):
        made = WORK / f"run-fl-{name}-1024x768"
        if not (made / "frozenlens.db").exists():
            raise SystemExit(f"{made} is missing: run bench/bench_cold.py first")
        big = WORK / f"search-{args.rows}-{name}"
        shutil.rmtree(big, ignore_errors=True)
        shutil.copytree(made, big)
        out = subprocess.run([sys.executable, "-c", TOP_UP, str(big), str(args.rows), str(REPO / "bench")],
                             env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-3000:])
        log(f"{name}: {out.stdout.strip()} photos in {big}")
        indexes[name] = big
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in indexes}
    cmd = [sys.executable, "-m", "frozenlens", "search", QUERY, "-k", "10", "--index"]
    for big in indexes.values():  # untimed: the page cache as for any later search
        timed([*cmd, str(big)], env, WORK, net)
    for _ in range(args.repeats):
        for name, big in indexes.items():
            wall, rss, _ = timed([*cmd, str(big)], env, WORK, net)
            runs[name].append((wall, rss))
    rows = [[f"FrozenLens {name}", f"{statistics.median(w for w, _ in r):.2f}", f"{min(w for w, _ in r):.2f}",
             f"{max(g for _, g in r):.2f}"] for name, r in runs.items()]
    print_table(f"Fresh `frozenlens search` on {args.rows:,}-photo indexes ({args.repeats} runs each, interleaved; "
                f"started {dt.datetime.now():%Y-%m-%d %H:%M})", ["", "median wall, s", "min wall, s", "peak RSS, GB"],
                rows)


if __name__ == "__main__":
    main()
