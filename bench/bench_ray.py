"""Ray vs local indexing on this machine, and a projection to 100 M / 1 B photos.

Measured (fresh processes, the same synthetic JPEG folders for both engines):

- ``index()`` wall time of the local engine and of ``engine="ray"`` (Ray
  started inside the run, in a loopback-only network namespace: ``unshare``,
  root) at two folder sizes; per-image cost = slope between the sizes,
  fixed cost (startup: Ray, actors loading the model) = intercept;
- the Ray driver's own time per image (``Indexer._commit``: caption embedding
  and the database transaction; image embeddings arrive precomputed), the
  part a bigger cluster cannot take off the single driver;
- single-core decode cost per image (read + hash + decode + prepare, the
  code of :mod:`frozenlens.indexer.fileio`) on the bench folder's photos
  and on a 12-MP JPEG (with the ``draft`` DCT downscale the decoders use).

Projection (``--photos``, ``--gpus``): each GPU worker encodes at
``--mfu`` × the H100 bf16 ceiling of FACTS.md's cost model (ViT-B/32
8.8 GFLOP/img, ViT-L/14 162 GFLOP/img at 790 TFLOP/s) and is fed by
``--cores-per-gpu`` CPU cores decoding 12-MP JPEGs at the measured rate; the
cluster rate is capped by the drivers' rate (one index has one writer; the
projection counts the index shards, each with its own driver, that keep the
GPUs busy). Prices are an input
(``--gpu-hour-usd``, ``--core-hour-usd``), not a measurement.

    .venv/bin/python bench/bench_ray.py --sizes 24,120

Writes ``results/bench_ray.json`` and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import CACHE, REPO, log, print_table

WIDTH, HEIGHT = 1600, 1200
NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
H100_FLOPS = 790e12
MODELS = {"ViT-B/32": 8.8e9, "ViT-L/14": 162e9}


def child(engine: str, n: int) -> None:
    """Index the n-photo folder into a fresh index with ``engine``; one JSON line."""
    from frozenlens.engine import Engine
    from frozenlens.indexer.pipeline import Indexer

    folder = common.jpeg_folder(n, WIDTH, HEIGHT, quality=90)
    commit_s = [0.0]
    original = Indexer._commit

    def timed(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            commit_s[0] += time.perf_counter() - t

    Indexer._commit = timed  # this benchmark process only
    tmp = Path(tempfile.mkdtemp(prefix="raybench-", dir=CACHE))
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        with Engine.open(tmp / "index", create=True, encoder="lite") as eng:
            _ = eng.encoder  # the driver's model load is the same for both engines: not timed below
            t1, cpu1 = time.perf_counter(), time.process_time()
            report = eng.index([folder], engine=engine)
            t2, cpu2 = time.perf_counter(), time.process_time()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + json.dumps({"engine": engine, "n": n, "encoded": report.encoded, "failed": report.failed,
                                  "open_s": t1 - t0, "index_s": t2 - t1, "commit_s": commit_s[0],
                                  "cpu_s": cpu2 - cpu1, "open_cpu_s": cpu1 - cpu0}), flush=True)


def run_child(engine: str, n: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, str(n)]
    if engine == "ray":
        cmd = [*NAMESPACE, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": tmp,
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=1800)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"{engine} child n={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def decode_costs() -> dict[str, float]:
    """Single-thread seconds per image: read+hash+decode+prepare, bench photo and a 12-MP JPEG."""
    from frozenlens.indexer.decode import DecodeLimits
    from frozenlens.indexer.fileio import decode_photo, hash_bytes, read_checked
    from frozenlens.indexer.scan import scan
    from frozenlens.models.lite import LiteEncoder, resize_center_crop

    limits = DecodeLimits()
    out = {}
    big = CACHE / "raybench-12mp"
    big.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        p = big / f"img_{i}.jpg"
        if not p.exists():
            p.write_bytes(common.synthetic_jpeg(i, 4000, 3000, quality=90))
    for name, folder in (("bench_photo", common.jpeg_folder(24, WIDTH, HEIGHT, quality=90)), ("jpeg_12mp", big)):
        entries = list(scan([folder]))
        t = time.perf_counter()
        for e in entries:
            data = read_checked(e, limits)
            hash_bytes(data)
            image, _ = decode_photo(e, data, LiteEncoder.draft_size, limits)
            resize_center_crop(image)  # the lite encoder's prepare
        out[name] = (time.perf_counter() - t) / len(entries)
    return out


def projection(per_image: dict[str, float], args: argparse.Namespace) -> list[dict]:
    """Wall time and cost per (model, photos, GPUs): each GPU worker at min(GPU rate, its decode
    cores' rate); one driver handles at most 1 / driver_s images/s, so the collection is split
    into as many shards (each its own driver and index, searched or merged later) as keep the
    GPUs busy; the wall time with one driver is shown beside it."""
    decode_rate_core = 1.0 / per_image["decode_12mp_s"]
    driver_rate = 1.0 / per_image["driver_s"]
    rows = []
    for model, flops in MODELS.items():
        gpu_rate = args.mfu * H100_FLOPS / flops
        worker_rate = min(gpu_rate, args.cores_per_gpu * decode_rate_core)
        for photos in args.photos:
            for gpus in args.gpus:
                drivers = max(1, -(-int(gpus * worker_rate) // int(driver_rate)))
                rate = min(gpus * worker_rate, drivers * driver_rate)
                hours = photos / rate / 3600
                one_driver_hours = photos / min(gpus * worker_rate, driver_rate) / 3600
                gpu_hours = gpus * hours
                core_hours = gpus * args.cores_per_gpu * hours
                rows.append({
                    "model": model, "photos": photos, "gpus": gpus, "drivers": drivers, "gpu_img_s": gpu_rate,
                    "cores_to_feed_gpu": gpu_rate * per_image["decode_12mp_s"], "worker_img_s": worker_rate,
                    "bound": "driver" if gpus * worker_rate > rate else ("gpu" if gpu_rate <= worker_rate else "decode"),
                    "img_s": rate, "hours": hours, "one_driver_hours": one_driver_hours, "gpu_hours": gpu_hours,
                    "core_hours": core_hours, "usd": gpu_hours * args.gpu_hour_usd + core_hours * args.core_hour_usd,
                })
    return rows


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="24,120", help="two folder sizes, small,large (default 24,120)")
    ap.add_argument("--photos", type=lambda s: [int(float(x)) for x in s.split(",")], default=[100_000_000, 1_000_000_000])
    ap.add_argument("--gpus", type=lambda s: [int(x) for x in s.split(",")], default=[8, 64, 512])
    ap.add_argument("--mfu", type=float, default=0.4, help="fraction of the H100 bf16 ceiling reached (assumption)")
    ap.add_argument("--cores-per-gpu", type=int, default=16, help="decode cores beside each GPU (assumption)")
    ap.add_argument("--reuse", action="store_true", help="recompute the tables from --out's measurements")
    ap.add_argument("--gpu-hour-usd", type=float, default=2.5, help="price per GPU-hour (input, not measured)")
    ap.add_argument("--core-hour-usd", type=float, default=0.04, help="price per CPU core-hour (input)")
    ap.add_argument("--out", default=str(REPO / "results" / "bench_ray.json"))
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return {}
    small, large = (int(s) for s in args.sizes.split(","))
    if args.reuse:
        saved = json.loads(Path(args.out).read_text())
        small, large = saved["sizes"]
    else:
        for n in (small, large):
            common.jpeg_folder(n, WIDTH, HEIGHT, quality=90, log=log)
    runs: dict[str, dict[int, dict]] = {"local": {}, "ray": {}}
    if args.reuse:
        runs = {e: {int(n): r for n, r in v.items()} for e, v in saved["runs"].items()}
    for n in () if args.reuse else (small, large):  # interleaved so that drift hits both engines alike
        for engine in ("local", "ray"):
            log(f"{engine}: indexing {n} photos of {WIDTH}×{HEIGHT}")
            r = run_child(engine, n)
            if r["encoded"] != n:
                raise RuntimeError(f"indexing went wrong: {r}")
            runs[engine][n] = r
            log(f"  index() {r['index_s']:.1f} s ({n / r['index_s']:.1f} img/s), driver commits {r['commit_s']:.1f} s")
    fit = {}
    for engine, by_n in runs.items():
        slope = (by_n[large]["index_s"] - by_n[small]["index_s"]) / (large - small)
        fit[engine] = {"per_image_s": slope, "fixed_s": by_n[small]["index_s"] - slope * small,
                       "img_s_large": large / by_n[large]["index_s"]}
    costs = ({"bench_photo": saved["per_image"]["decode_bench_photo_s"], "jpeg_12mp": saved["per_image"]["decode_12mp_s"]}
             if args.reuse else decode_costs())
    per_image = {"decode_bench_photo_s": costs["bench_photo"], "decode_12mp_s": costs["jpeg_12mp"],
                 "driver_s": (runs["ray"][large]["cpu_s"] - runs["ray"][small]["cpu_s"]) / (large - small),
                 "driver_commit_s": runs["ray"][large]["commit_s"] / large}
    proj = projection(per_image, args)

    print_table(f"index() of {small} and {large} synthetic {WIDTH}×{HEIGHT} JPEGs on this machine (lite encoder)",
                ["engine", f"s at {small}", f"s at {large}", f"img/s at {large}", "per image (ms, slope)",
                 "fixed (s, intercept)"],
                [[e, f"{runs[e][small]['index_s']:.1f}", f"{runs[e][large]['index_s']:.1f}",
                  f"{fit[e]['img_s_large']:.1f}", f"{fit[e]['per_image_s'] * 1e3:.0f}", f"{fit[e]['fixed_s']:.1f}"]
                 for e in ("local", "ray")])
    print_table("measured per-image costs (one core)", ["what", "ms"], [
        [f"read+hash+decode+prepare, {WIDTH}×{HEIGHT} bench photo", f"{per_image['decode_bench_photo_s'] * 1e3:.1f}"],
        ["read+hash+decode (draft)+prepare, 12-MP JPEG", f"{per_image['decode_12mp_s'] * 1e3:.1f}"],
        ["Ray driver: CPU per image (slope of its process time: unpickle, classify, commit)",
         f"{per_image['driver_s'] * 1e3:.2f}"],
        ["  of which Indexer._commit (captions + DB transaction)", f"{per_image['driver_commit_s'] * 1e3:.2f}"],
    ])
    print_table(
        f"projection: 12-MP JPEGs, H100 at {args.mfu:.0%} of bf16 peak, {args.cores_per_gpu} decode cores per GPU, "
        f"drivers (index shards) to keep the GPUs busy; ${args.gpu_hour_usd}/GPU-h, ${args.core_hour_usd}/core-h (inputs)",
        ["model", "photos", "GPUs", "drivers", "cores to feed 1 GPU", "img/s", "bound by", "wall (h)",
         "wall, 1 driver (h)", "GPU-hours", "cost (USD)"],
        [[r["model"], f"{r['photos']:.0e}", r["gpus"], r["drivers"], f"{r['cores_to_feed_gpu']:,.0f}",
          f"{r['img_s']:,.0f}", r["bound"], f"{r['hours']:,.1f}", f"{r['one_driver_hours']:,.1f}",
          f"{r['gpu_hours']:,.0f}", f"{r['usd']:,.0f}"] for r in proj],
    )
    out = {"sizes": [small, large], "photo": [WIDTH, HEIGHT], "runs": {e: {str(n): r for n, r in v.items()} for e, v in runs.items()},
           "fit": fit, "per_image": per_image, "assumptions": {k: getattr(args, k) for k in
           ("mfu", "cores_per_gpu", "gpu_hour_usd", "core_hour_usd")}, "projection": proj}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
