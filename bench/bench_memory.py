"""Peak memory while indexing: does RSS stay flat as the collection grows?

Each measurement runs in a fresh subprocess (``--child N``): load the lite
encoder, record RSS, reset the peak (``/proc/self/clear_refs``), then
``Engine.open(tmp, create=True, encoder=enc).index([folder of N JPEGs])`` and
record the peak RSS (VmHWM). The model's own footprint varies by tens of MB
from process to process, so the verdict compares the *increment* of
``index()`` (its peak minus the RSS after model load) between the sizes. Sizes alternate (small, large, large, small, ...)
over ``--repeat`` rounds; medians are reported.

The claim checked: "memory stays flat: no growth with collection size beyond
the index itself". The in-memory FAISS spaces hold float32 vectors, 512 + 1280
dims = 7,168 bytes per image, so 750 extra images may add ~5.4 MB; anything
beyond that (outside a ±10 MB RSS noise band) is growth with collection size.

    .venv/bin/python bench/bench_memory.py --sizes 250,1000
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
from common import CACHE, log, median, print_table, verdict

WIDTH, HEIGHT = 640, 480
BYTES_PER_IMAGE_FAISS = (512 + 1280) * 4
NOISE_MB = 10.0


def child(n: int, trace: bool = False) -> None:
    """Index ``n`` cached small JPEGs into a fresh index; print one JSON line.

    With ``trace``, Python-heap allocations made during ``index()`` are traced
    (tracemalloc: deterministic, but blind to native memory such as FAISS,
    torch and Pillow buffers, and it inflates RSS, so it runs separately)."""
    import time
    import tracemalloc

    from frozenlens.engine import Engine
    from frozenlens.models import create_encoder

    folder = common.jpeg_folder(n, WIDTH, HEIGHT, quality=85)
    start_rss = common.current_rss_mb()
    encoder = create_encoder("lite", cache_dir=common.model_cache_dir())
    loaded_rss = common.current_rss_mb()
    peak_after_load = common.peak_rss_mb()
    reset_ok = common.reset_peak_rss()
    tmp_root = CACHE / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    index_dir = Path(tempfile.mkdtemp(prefix="mem-", dir=tmp_root))
    try:
        t0 = time.perf_counter()
        scan_done: list[int] = []

        def on_progress(p) -> None:
            if trace and p.stage == "scan" and p.total is not None and not scan_done:
                scan_done.append(tracemalloc.get_traced_memory()[0])

        with Engine.open(index_dir, create=True, encoder=encoder) as engine:
            engine.spaces  # noqa: B018 - open (empty) FAISS spaces before tracing starts
            if trace:
                tracemalloc.start()
            report = engine.index([folder], progress=on_progress)
            py_peak = tracemalloc.get_traced_memory()[1] if trace else 0
            if trace:
                tracemalloc.stop()
            sizes = engine.spaces.sizes()
        seconds = time.perf_counter() - t0
        peak_index = common.peak_rss_mb()
        out = {
            "n": n,
            "encoded": report.encoded,
            "failed": report.failed,
            "vectors": sizes,
            "seconds": seconds,
            "rss_start_mb": start_rss,
            "rss_after_load_mb": loaded_rss,
            "peak_after_load_mb": peak_after_load,
            "peak_rss_mb": max(peak_index, peak_after_load) if reset_ok else peak_index,
            "peak_during_index_mb": peak_index if reset_ok else float("nan"),
            "rss_end_mb": common.current_rss_mb(),
        }
        out["index_increment_mb"] = out["peak_during_index_mb"] - loaded_rss
        if trace:
            out["py_peak_mb"] = py_peak / 2**20
            out["py_after_scan_mb"] = (scan_done[0] if scan_done else 0) / 2**20
    finally:
        shutil.rmtree(index_dir, ignore_errors=True)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(n: int, trace: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), *(["--trace"] if trace else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child for n={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="250,1000", help="two collection sizes, small,large (default 250,1000)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of (small, large); medians reported")
    ap.add_argument("--no-trace", dest="trace", action="store_false",
                    help="skip the extra tracemalloc run per size (Python-heap growth per photo)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        child(args.child, trace=args.trace)
        return {}
    small, large = (int(s) for s in args.sizes.split(","))
    for n in (small, large):  # generate outside the measured children
        common.jpeg_folder(n, WIDTH, HEIGHT, quality=85, log=log)

    results: dict[int, list[dict]] = {small: [], large: []}
    for r in range(args.repeat):
        order = (small, large) if r % 2 == 0 else (large, small)
        for n in order:
            log(f"round {r + 1}/{args.repeat}: indexing {n} photos of {WIDTH}×{HEIGHT} in a fresh process")
            res = run_child(n)
            if res["encoded"] != n or res["failed"]:
                raise RuntimeError(f"indexing went wrong: {res}")
            results[n].append(res)
            log(f"  peak RSS {res['peak_rss_mb']:.0f} MB (during indexing {res['peak_during_index_mb']:.0f} MB), "
                f"{res['seconds']:.1f} s")

    def med(n: int, key: str) -> float:
        return median(r[key] for r in results[n])

    rows = []
    for n in (small, large):
        rows.append((
            n, med(n, "rss_after_load_mb"), med(n, "peak_during_index_mb"), med(n, "index_increment_mb"),
            med(n, "peak_rss_mb"), med(n, "rss_end_mb"), med(n, "seconds"),
        ))
    extra = large - small
    faiss_mb = extra * BYTES_PER_IMAGE_FAISS / 2**20
    diff_peak = med(large, "peak_rss_mb") - med(small, "peak_rss_mb")
    diff_incr = med(large, "index_increment_mb") - med(small, "index_increment_mb")
    # the verdict uses the increment over the loaded model, which removes the
    # process-to-process spread of the model's own footprint
    beyond = diff_incr - faiss_mb
    spread = max(max(r["index_increment_mb"] for r in results[n]) - min(r["index_increment_mb"] for r in results[n])
                 for n in (small, large))
    band = max(NOISE_MB, spread)
    flat = beyond <= band
    traced: dict[int, dict] = {}
    if args.trace:
        for n in (small, large):
            log(f"tracemalloc run: indexing {n} photos in a fresh process")
            traced[n] = run_child(n, trace=True)
    tables = [
        print_table(
            f"Peak RSS while indexing {WIDTH}×{HEIGHT} JPEGs, fresh process each (MiB, median of {args.repeat})",
            ["photos", "RSS after model load", "peak during index()", "index() increment (peak − loaded)",
             "peak RSS (VmHWM)", "RSS at end", "index() seconds"],
            rows,
        ),
        print_table(
            f"Growth from {small} to {large} photos",
            ["quantity", "MiB"],
            [
                ("difference of peak RSS", diff_peak),
                ("difference of index() increment (peak − RSS after model load)", diff_incr),
                (f"expected: FAISS vectors of {extra} images × {BYTES_PER_IMAGE_FAISS:,} B", faiss_mb),
                ("growth beyond the index (increment difference − FAISS)", beyond),
                ("… per extra image (KiB)", beyond * 1024 / extra),
                (f"spread of the index() increment between runs of the same size (repeat {args.repeat})", spread),
            ],
        ),
    ]
    if traced:
        d_peak = traced[large]["py_peak_mb"] - traced[small]["py_peak_mb"]
        d_scan = traced[large]["py_after_scan_mb"] - traced[small]["py_after_scan_mb"]
        tables.append(print_table(
            "Python heap during index() (tracemalloc, separate runs; native FAISS/torch/Pillow memory not included)",
            ["quantity", f"{small} photos (MiB)", f"{large} photos (MiB)", "per extra photo (KiB)"],
            [
                ("traced peak during index()", traced[small]["py_peak_mb"], traced[large]["py_peak_mb"],
                 d_peak * 1024 / extra),
                ("traced when the scan finished (work list built)", traced[small]["py_after_scan_mb"],
                 traced[large]["py_after_scan_mb"], d_scan * 1024 / extra),
            ],
        ))
    tables.append(print_table(
        "Memory target",
        ["claim", "measured", "verdict"],
        [(f"flat: growth beyond the index within the noise band (max of {NOISE_MB:.0f} MiB and the run-to-run spread, "
          f"here {band:.0f} MiB)", f"{beyond:+.1f} MiB for {extra} extra photos", verdict(flat))],
    ))
    print(f"peak RSS {med(small, 'peak_rss_mb'):.0f} MiB at {small} photos vs {med(large, 'peak_rss_mb'):.0f} MiB at "
          f"{large}: {diff_peak:+.1f} MiB; index() increment {diff_incr:+.1f} MiB, of which ~{faiss_mb:.1f} MiB are FAISS vectors → "
          f"{'flat' if flat else 'NOT flat'} ({beyond:+.1f} MiB beyond the index).", flush=True)
    return {"tables": tables, "results": results, "beyond_mb": beyond}


if __name__ == "__main__":
    main()
