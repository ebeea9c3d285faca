"""Indexing memory vs collection size: does the scan stream (§3 of issue 14)?

Before the streaming scan, ``Indexer.run`` listed every file to do before
hashing the first one (≈ 0.8 KiB per file). This benchmark indexes folders of
N **empty** ``.jpg`` files (each becomes a ``failed: empty`` row: the scan,
the per-file bookkeeping and the commits run, no pixel is decoded, so what
grows with N is the indexer's own memory) in fresh processes, and reports the
growth of the peak RSS of ``index()`` per file between two sizes:

    growth per file = (peak increment at N_large − at N_small) / (N_large − N_small)

``--base REV`` also runs the same children against the code of another
commit (``git archive REV src`` into ``.cache/bench/scanmem-src/REV``; no
worktree), so before/after come from the same run.

    .venv/bin/python bench/bench_scan_memory.py --sizes 20000,200000 --base adf6faf
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import CACHE, REPO, log, print_table

PER_DIR = 1000


def empty_folder(n: int) -> Path:
    """``n`` empty .jpg files, 1,000 per subfolder (cached)."""
    root = CACHE / f"empty-{n}"
    done = root / ".done"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for i in range(n):
        d = root / f"d{i // PER_DIR:05d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        (d / f"p{i:07d}.jpg").touch()
    done.touch()
    return root


def child(n: int) -> None:
    import time

    from frozenlens.engine import Engine
    from frozenlens.models import create_encoder

    folder = empty_folder(n)
    encoder = create_encoder("lite", cache_dir=common.model_cache_dir())
    tmp_root = CACHE / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    index_dir = Path(tempfile.mkdtemp(prefix="scanmem-", dir=tmp_root))
    try:
        with Engine.open(index_dir, create=True, encoder=encoder) as engine:
            engine.spaces  # noqa: B018 - open the (empty) FAISS spaces first
            loaded = common.current_rss_mb()
            reset_ok = common.reset_peak_rss()
            t0 = time.perf_counter()
            report = engine.index([folder])
            seconds = time.perf_counter() - t0
            peak = common.peak_rss_mb()
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    out = {"n": n, "scanned": report.scanned, "failed": report.failed, "seconds": seconds,
           "rss_before_mb": loaded, "peak_mb": peak, "increment_mb": peak - loaded if reset_ok else float("nan")}
    print("RESULT " + json.dumps(out), flush=True)


def base_src(rev: str) -> Path:
    dest = CACHE / "scanmem-src" / rev
    if not (dest / "src").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "src"


def run_child(n: int, src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(n)],
                          capture_output=True, text=True, check=False, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child n={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20000,200000", help="small,large (default 20000,200000)")
    ap.add_argument("--base", help="also measure the code of this git revision (before/after in one run)")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_scan_memory.json"))
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args.child)
        return {}
    small, large = (int(s) for s in args.sizes.split(","))
    for n in (small, large):
        log(f"making {n} empty files")
        empty_folder(n)
    trees = {"this tree": REPO / "src"}
    if args.base:
        trees = {f"base {args.base}": base_src(args.base), **trees}
    results: dict[str, dict[int, dict]] = {}
    for name, src in trees.items():
        results[name] = {}
        for n in (small, large):
            log(f"{name}: indexing {n} empty files in a fresh process")
            res = run_child(n, src)
            if res["scanned"] != n or res["failed"] != n:
                raise RuntimeError(f"unexpected report: {res}")
            results[name][n] = res
            log(f"  peak increment {res['increment_mb']:.1f} MB, {res['seconds']:.1f} s")
    rows = []
    summary: dict[str, float] = {}
    for name, by_n in results.items():
        growth = (by_n[large]["increment_mb"] - by_n[small]["increment_mb"]) * 2**20 / (large - small)
        summary[name] = growth
        rows.append([name, f"{by_n[small]['increment_mb']:.1f}", f"{by_n[large]['increment_mb']:.1f}",
                     f"{growth:.0f}", f"{growth * 1e6 / 2**30:.2f}"])
    print_table(f"peak RSS of index() over N empty files ({small:,} vs {large:,})",
                ["code", f"MB at {small:,}", f"MB at {large:,}", "bytes / file", "GiB per 1 M files"], rows)
    out = {"sizes": [small, large], "results": {k: {str(n): r for n, r in v.items()} for k, v in results.items()},
           "bytes_per_file": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
