"""Metadata write rate: SQLite vs PostgreSQL (issue 14), in one run.

Inserts ``--n`` image rows with their float16 vectors (semantic 512-d,
visual ``--visual-dim``; one caption every ``--caption-every`` images) into a
fresh database of each back end, ``--batches`` images per transaction (the
indexer's default is 32), through the store's real write path
(``Store.batch`` → ``BatchWriter.add_image``: ids assigned by the writer, new
rows buffered and inserted with one Core ``insert()`` per table per batch).
For reference, the same rows are also written one ``INSERT`` per row (the
write path before issue 14; at the first batch size only). Rates are rows/s (image rows; the vector,
caption and chunk rows ride along), medians of ``--repeat`` interleaved runs;
the ratios are what to compare (the machine is noisy).

PostgreSQL: ``--pg-url postgresql+psycopg://...`` (an empty database: the
benchmark creates FrozenLens's tables in it and drops them after each run), or by default a throw-away server started like the test
suite's (tests/pg.py: loopback, ``fsync=off``; SQLite runs with its usual
WAL + ``synchronous=NORMAL``, which does not sync on commit either).

    .venv/bin/python bench/bench_store_backends.py --n 10000 --batches 32,256
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import common  # noqa: E402
from common import Timer, log, median, print_table  # noqa: E402
from frozenlens.store import CaptionVector, PhotoFields, Store  # noqa: E402
from frozenlens.store.schema import INDEXED, CaptionChunkRow, CaptionRow, ImageRow, VectorRow  # noqa: E402
from frozenlens.store.writer import to_blob  # noqa: E402


def make_rows(n: int, visual_dim: int, caption_every: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    taken = dt.datetime(2020, 1, 1)
    rows = []
    for i in range(n):
        sem = rng.standard_normal(512).astype(np.float32)
        vis = rng.standard_normal(visual_dim).astype(np.float32)
        caps = []
        if caption_every and i % caption_every == 0:
            cap = rng.standard_normal(512).astype(np.float32)
            caps.append(CaptionVector(f"photo number {i} at the sea", "en", "manifest", cap / np.linalg.norm(cap)))
        rows.append({
            "path": f"/archive/{i // 1000:04d}/IMG_{i:07d}.jpg", "size": 3_000_000 + i, "mtime_ns": 1_600_000_000 * 10**9 + i,
            "content_hash": f"{i:064x}", "semantic": sem / np.linalg.norm(sem), "visual": vis / np.linalg.norm(vis),
            "fields": PhotoFields(format="JPEG", width=4000, height=3000, taken_at=taken + dt.timedelta(minutes=i),
                                  taken_at_source="exif", camera_make="Canon", camera_model="Canon EOS 5D"),
            "labels": [("seashore", 0.7), ("sandbar", 0.2)], "captions": caps,
        })
    return rows


def write_batched(store: Store, rows: list[dict], batch: int) -> None:
    """The store's write path."""
    for start in range(0, len(rows), batch):
        with store.batch() as w:
            for r in rows[start : start + batch]:
                w.add_image(**r, caption_sig="s", tokens=None)


def write_row_at_a_time(store: Store, rows: list[dict], batch: int) -> None:
    """The same rows, one INSERT per row and table (ids as the writer assigns them)."""
    import json

    image_id = caption_id = 0
    now = dt.datetime(2024, 1, 1)
    for start in range(0, len(rows), batch):
        with store.engine.begin() as c:
            for r in rows[start : start + batch]:
                image_id += 1
                c.execute(ImageRow.__table__.insert().values(
                    id=image_id, path=r["path"], size=r["size"], mtime_ns=r["mtime_ns"], content_hash=r["content_hash"],
                    status=INDEXED, **r["fields"].as_columns(), camera="Canon EOS 5D", labels=json.dumps(r["labels"]),
                    caption_sig="s", updated_at=now))
                c.execute(VectorRow.__table__.insert().values(
                    image_id=image_id, semantic=to_blob(r["semantic"]), visual=to_blob(r["visual"]), tokens=None))
                for cap in r["captions"]:
                    caption_id += 1
                    c.execute(CaptionRow.__table__.insert().values(
                        id=caption_id, image_id=image_id, lang=cap.lang, text=cap.text, source=cap.source,
                        vector=to_blob(cap.vector)))
                    c.execute(CaptionChunkRow.__table__.insert().values(
                        id=caption_id, caption_id=caption_id, position=0, text=cap.text, n_tokens=None,
                        vector=to_blob(cap.vector)))


class Databases:
    """Fresh, empty databases of each back end."""

    def __init__(self, tmp: Path, pg_url: str | None) -> None:
        self.tmp = tmp
        self.server = None
        self.pg_base = pg_url
        if pg_url is None:
            from tests.pg import PgServer, find_bindir

            bindir = find_bindir()
            if bindir is None:
                sys.exit("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin): `make postgres`, or pass --pg-url")
            self.server = PgServer(bindir)
            self.server.start()

    def fresh(self, backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{self.tmp / f'{uuid.uuid4().hex}.db'}"
        if self.server is not None:
            return self.server.create_database()
        return self.pg_base  # a given database: emptied between runs by the caller

    def release(self, backend: str, url: str, store: Store) -> None:
        if backend == "postgresql" and self.server is None:  # a given database: drop the tables made here
            from frozenlens.store.schema import Base

            with store.engine.begin() as c:
                Base.metadata.drop_all(c)
        store.close()
        if backend == "postgresql" and self.server is not None:
            self.server.drop_database(url)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="image rows per run")
    ap.add_argument("--batches", default="32,256", help="images per transaction (the indexer's default: 32)")
    ap.add_argument("--visual-dim", type=int, default=1280)
    ap.add_argument("--caption-every", type=int, default=4, help="one caption per this many images (0: none)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--naive-n", type=int, default=3000, help="rows of the one-INSERT-per-row reference runs")
    ap.add_argument("--pg-url", default=None, help="an empty PostgreSQL database (default: start a throw-away server)")
    args = ap.parse_args()

    print(common.machine_line())
    batches = [int(b) for b in args.batches.split(",")]
    rows = make_rows(args.n, args.visual_dim, args.caption_every)
    naive = ("one INSERT per row", batches[0])
    runs = {(f"store, {b} per transaction", b): (write_batched, rows) for b in batches}
    runs[naive] = (write_row_at_a_time, rows[: args.naive_n])
    rates: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="fl-bench-store-") as tmp:
        dbs = Databases(Path(tmp), args.pg_url)
        try:
            for rep in range(args.repeat):
                for (name, batch), (fn, data) in runs.items():
                    for backend in ("sqlite", "postgresql"):  # interleaved
                        url = dbs.fresh(backend)
                        store = Store.open(url)
                        with Timer() as t:
                            fn(store, data, batch)
                        assert store.counts()["images"] == len(data)
                        dbs.release(backend, url, store)
                        rate = len(data) / t.seconds
                        rates.setdefault((backend, name), []).append(rate)
                        log(f"rep {rep + 1}: {backend:10s} {name:28s} {rate:10,.0f} rows/s")
        finally:
            dbs.close()

    med = {k: median(v) for k, v in rates.items()}
    table = []
    for name, _ in runs:
        s, p = med[("sqlite", name)], med[("postgresql", name)]
        table.append([name, len(runs[(name, _)][1]), s, p, f"{p / s:.2f}×"])
    first = f"store, {batches[0]} per transaction"
    table.append([f"{first} / one INSERT per row", "", f"{med[('sqlite', first)] / med[('sqlite', naive[0])]:.2f}×",
                  f"{med[('postgresql', first)] / med[('postgresql', naive[0])]:.2f}×", ""])
    print_table(
        f"Image rows/s with float16 vectors (512 + {args.visual_dim}-d, a caption every {args.caption_every}), "
        f"median of {args.repeat}",
        ["write path", "rows", "SQLite rows/s", "PostgreSQL rows/s", "PostgreSQL / SQLite"],
        table,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
