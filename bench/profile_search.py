"""Engine.search under cProfile: function-call counts (deterministic) and ms/query (noisy).

For A/B checks of the query path where timings on a noisy 2-core machine
cannot settle a few-millisecond question: the number of Python function calls
per query does not depend on machine load. Run it once per code version:

    PYTHONPATH=.cache/ab/<base>/src .venv/bin/python bench/profile_search.py
    .venv/bin/python bench/profile_search.py

Uses bench_query's cached 100k-image Flat index (built on first use).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_query
import common
from queries import all_queries


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--top", type=int, default=20, help="functions to list by own time")
    args = ap.parse_args(argv)

    from frozenlens.engine import Engine
    from frozenlens.models import create_encoder

    encoder = create_encoder("lite", cache_dir=common.model_cache_dir())
    index_dir, _ = bench_query.build_index(encoder, 100_000, "Flat", seed=0, caption_fraction=0.1)
    texts = [t for _, t in all_queries()][: args.queries]
    with Engine.open(index_dir, encoder=encoder) as engine:
        for t in texts[:10]:
            engine.search(t, k=10)  # warm-up
        ms = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            for t in texts:
                engine.search(t, k=10)
            ms.append((time.perf_counter() - t0) / len(texts) * 1000)
        prof = cProfile.Profile()
        prof.enable()
        for t in texts:
            engine.search(t, k=10)
        prof.disable()
    stats = pstats.Stats(prof)
    calls = int(stats.total_calls)  # type: ignore[attr-defined]
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
    print(out.getvalue())
    print(f"ms/query per round: {', '.join(f'{x:.1f}' for x in ms)}")
    print(f"function calls per query: {calls / len(texts):,.0f}")
    return {"ms_per_query": ms, "calls_per_query": calls / len(texts)}


if __name__ == "__main__":
    main()
