#!/usr/bin/env python3
"""``Engine.search`` p50 over N synthetic photos with the ``auto`` index, unfiltered and filtered (SQLite).

Usage::

    PYTHONPATH=src .venv/bin/python bench/bench_engine_auto.py [--n 100000] [--queries 60]

Rows are written through the store's own batched path (``Store.batch`` -> ``BatchWriter.add_image``, 256 per
transaction): semantic vectors from the embedding-shaped generator of ``bench/bench_wide_vectors.py`` (512-d),
random visual vectors, one of 8 cameras and a date one minute apart per photo. The index is created with
``factory="auto"`` for the packaged ``lite`` encoder, so text queries are encoded for real (USE-multilingual, the
query embedding is part of the latency). Filters: a date range holding ~10 % of the photos, a camera (1 of 8).
Prints p50 / p90 latency in ms per kind of query.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))  # tests.pg: the loopback PostgreSQL server of the tests

from bench_wide_vectors import synthetic  # noqa: E402
from common import log, percentile  # noqa: E402
from frozenlens.engine import Engine  # noqa: E402
from frozenlens.engine.index_type import policy_of  # noqa: E402
from frozenlens.store import PhotoFields  # noqa: E402
from frozenlens.types import SearchFilters  # noqa: E402

CAMERAS = [("Canon", "EOS 5D"), ("Nikon", "D750"), ("Sony", "A7"), ("Fujifilm", "X-T3"), ("Olympus", "E-M5"),
           ("Panasonic", "GH5"), ("Pentax", "K-1"), ("Leica", "Q2")]
QUERIES = ["a dog on the beach", "Sonnenuntergang am Meer", "un chat sur un canapé", "montañas con nieve",
           "a red car in the city", "bambini che giocano", "a bowl of soup", "kwiaty w ogrodzie"]


def populate(engine: Engine, n: int, visual_dim: int) -> float:
    start = time.perf_counter()
    x, _ = synthetic(512, n, 1, seed=0)
    rng = np.random.default_rng(1)
    t0 = dt.datetime(2020, 1, 1)
    for lo in range(0, n, 256):
        with engine.store.batch() as w:
            for i in range(lo, min(n, lo + 256)):
                vis = rng.standard_normal(visual_dim).astype(np.float32)
                make, model = CAMERAS[i % len(CAMERAS)]
                w.add_image(path=f"/archive/{i // 1000:04d}/IMG_{i:07d}.jpg", size=3_000_000 + i,
                            mtime_ns=1_600_000_000 * 10**9 + i, content_hash=f"{i:064x}", semantic=x[i],
                            visual=vis / np.linalg.norm(vis),
                            fields=PhotoFields(format="JPEG", width=4000, height=3000,
                                               taken_at=t0 + dt.timedelta(minutes=i), taken_at_source="exif",
                                               camera_make=make, camera_model=model),
                            labels=[], captions=[], caption_sig="s", tokens=None)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--adapt", action="store_true",
                   help="build and tune the semantic space as `auto` decides for n (what `frozenlens index` does "
                        "after a run); the visual space, which text queries never read, is left as written")
    p.add_argument("--dir", type=Path, default=None,
                   help="keep the index here and reuse it on later runs (populated and adapted once; SQLite only)")
    p.add_argument("--postgres", action="store_true",
                   help="metadata in a throw-away PostgreSQL server on loopback (tests/pg.py), not SQLite")
    args = p.parse_args()
    if args.dir is not None and args.postgres:
        sys.exit("--dir keeps SQLite indexes only")
    with contextlib.ExitStack() as stack:
        url = None
        if args.postgres:
            from tests.pg import PgServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                sys.exit("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): `make postgres`")
            server = PgServer(bindir)
            server.start()
            stack.callback(server.stop)
            url = server.create_database()
        root = args.dir if args.dir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ready = root / f".ready-{args.n}{'-adapted' if args.adapt else ''}"
        engine = stack.enter_context(Engine.open(root / "ix", create=True, factory="auto", database_url=url))
        run(engine, args, reuse=ready.exists())
        ready.touch()


def run(engine: Engine, args: argparse.Namespace, *, reuse: bool = False) -> None:
    if not reuse:
        took = populate(engine, args.n, engine.identity.visual_dim)
        log(f"wrote {args.n} rows in {took:.0f} s")
    start = time.perf_counter()
    engine.sync()
    log(f"loaded the spaces in {time.perf_counter() - start:.0f} s: {engine.spaces['semantic']!r}")
    if args.adapt and not reuse:
        start = time.perf_counter()
        tuned = engine.spaces.adapt(engine.store, "auto", policy_of(engine.store.get_meta()), only=("semantic",))
        engine.spaces.save()
        log(f"built and tuned the semantic space in {time.perf_counter() - start:.0f} s: "
            f"{engine.spaces['semantic']!r} {tuned}")
    t0 = dt.datetime(2020, 1, 1)
    span = dt.timedelta(minutes=args.n // 10)
    kinds = {"unfiltered": None,
             "date range (~10 %)": SearchFilters(after=t0 + span, before=t0 + 2 * span),
             "camera (1 of 8)": SearchFilters(camera="nikon")}
    engine.search(QUERIES[0], k=10)  # loads the encoder
    for name, filters in kinds.items():
        times = []
        for i in range(args.queries):
            s = time.perf_counter()
            hits = engine.search(QUERIES[i % len(QUERIES)] + f" {i}", k=10, filters=filters)
            times.append((time.perf_counter() - s) * 1000)
            assert len(hits) == 10
        backend = "postgresql" if args.postgres else "sqlite"
        print(f"{name:20s} n={args.n} {backend}: p50 {percentile(times, 50):.1f} ms, p90 {percentile(times, 90):.1f} ms")


if __name__ == "__main__":
    main()
