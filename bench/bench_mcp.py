"""The MCP server's overhead: one text search at a time through ``frozenlens mcp`` vs the engine.

The KPhotoAlbum demo archive is indexed once (``bench_serve.kpa_index``,
cached in ``.cache/bench/``). Two real servers run in their own processes:
``python -m frozenlens mcp`` over stdio and ``python -m frozenlens mcp --http
--port 0`` (streamable HTTP on 127.0.0.1); each is driven by the MCP SDK's
own ``ClientSession``. Queries come from ``bench/queries.py`` (30 concepts × 7
languages), ``k=10``; the three paths run interleaved query by query (engine
in this process, stdio, HTTP) so machine noise hits them alike, and the
table reports latency percentiles and each transport's p50 as a ratio of
the engine's, measured in the same run.

    .venv/bin/python bench/bench_mcp.py              # 2 rounds of the 210 queries
    .venv/bin/python bench/bench_mcp.py --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import kpa_index
from common import REPO, log, print_table, summarize
from queries import all_queries


def server_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
            "OMP_WAIT_POLICY": "PASSIVE"}


async def run(index: Path, rounds: int) -> dict[str, list[float]]:
    from mcp import ClientSession, StdioServerParameters, stdio_client
    from mcp.client.streamable_http import streamable_http_client

    from frozenlens.engine import Engine

    proc = subprocess.Popen([sys.executable, "-m", "frozenlens", "mcp", "--http", "--port", "0", "--index", str(index)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=server_env())
    try:
        m = re.search(r"at (http://\S+/mcp)", proc.stdout.readline())
        if not m:
            raise SystemExit("the HTTP MCP server did not start")
        params = StdioServerParameters(command=sys.executable, args=["-m", "frozenlens", "mcp", "--index", str(index)],
                                       env=server_env())
        times: dict[str, list[float]] = {"engine (in process)": [], "MCP stdio": [], "MCP streamable HTTP": []}
        with Engine.open(index) as engine:
            async with (stdio_client(params) as (r1, w1), ClientSession(r1, w1) as stdio,
                        streamable_http_client(m.group(1)) as (r2, w2, *_), ClientSession(r2, w2) as http):
                await stdio.initialize()
                await http.initialize()
                for session in (stdio, http):  # load the encoder in each server before timing
                    await session.call_tool("search", {"query": "warm up", "k": 10})
                engine.search("warm up", k=10)
                queries = [text for _, text in all_queries()] * rounds
                log(f"{len(queries)} queries through each path")
                for text in queries:
                    t0 = time.perf_counter()
                    engine.search(text, k=10)
                    times["engine (in process)"].append((time.perf_counter() - t0) * 1000)
                    for name, session in (("MCP stdio", stdio), ("MCP streamable HTTP", http)):
                        t0 = time.perf_counter()
                        result = await session.call_tool("search", {"query": text, "k": 10})
                        times[name].append((time.perf_counter() - t0) * 1000)
                        if result.is_error or len(result.structured_content["hits"]) != 10:
                            raise SystemExit(f"{name}: unexpected answer for {text!r}: {result.content}")
        return times
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="times each of the 210 queries is sent (default 2)")
    args = ap.parse_args()
    from frozenlens.models import create_encoder

    index, _ = kpa_index(create_encoder("lite"))
    times = asyncio.run(run(index, args.rounds))
    base = summarize(times["engine (in process)"]).p50
    rows = []
    for name, values in times.items():
        s = summarize(values)
        rows.append([name, s.n, s.p50, s.p90, s.p99, s.max, s.p50 / base])
    print_table("One text search at a time, k=10, KPhotoAlbum (24 photos), lite encoder: latency in ms",
                ["path", "queries", "p50", "p90", "p99", "max", "p50 / engine p50"], rows)


if __name__ == "__main__":
    main()
