"""The REST API under load: ``frozenlens serve --no-ui`` with concurrent HTTP clients.

A real server runs in its own process (``python -m frozenlens serve --no-ui
--port 0``, ``OMP_WAIT_POLICY=PASSIVE`` like the CLI sets it), the clients run
in this process: ``--clients`` asyncio tasks sharing one ``httpx.AsyncClient``
limited to that many connections, each sending ``GET /api/v1/search?q=...&k=10``
back to back for ``--duration`` seconds, with queries drawn in turn from
``bench/queries.py`` (30 concepts × 7 languages). Every response is counted:
non-200 answers and client exceptions (timeouts, resets) separately.

Indexes:

- the real KPhotoAlbum demo archive (24 photos, captions), copied to and
  indexed in ``.cache/bench/serve-kpa/`` (incrementally: later runs only check
  it);
- with ``--n N`` (0 = skip) a synthetic N-image ``Flat`` index, built and
  cached by ``bench_query.build_index`` (the same index ``bench_query.py --n N``
  uses).

Reported per index, in one run:

- the load test: requests, non-200s, exceptions, throughput, latency
  p50/p90/p99/max as the clients see it, the server's own ``took_ms`` (the
  engine's time inside the lock; runs before 2026-12-01 20:20 included the
  wait for the lock), and
  the CPU the server and the clients used;
- for comparison, the same queries one at a time: one HTTP client
  (sequential, keep-alive) interleaved query by query with ``Engine.search``
  called in this process on the same index while the server is idle — so
  the HTTP overhead and the queueing under load are ratios within one run;
- the image-query route (``POST /api/v1/search/image``, multipart upload of a
  KPhotoAlbum photo, 800×600 JPEG) one at a time vs in process
  (``decode_upload`` + ``Engine.search``), and under ``--image-clients``
  concurrent clients for ``--image-duration`` seconds.

The server serializes engine calls with a lock (``ServerState.engine``), so
with C clients a request waits for about C-1 others: latency under load is
mostly queueing, and throughput is bounded by 1 / (time of one search).

    .venv/bin/python bench/bench_serve.py                 # 20 clients × 30 s, KPhotoAlbum + 100k synthetic
    .venv/bin/python bench/bench_serve.py --quick --n 10000   # 5 clients × 5 s, smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import CACHE, REPO, log, print_table, summarize, verdict
from queries import all_queries

KPA_PHOTO = "skagen.jpg"  # the image query (800×600 JPEG)
SERVER_START_TIMEOUT_S = 600.0


# ------------------------------------------------------------------ indexes
def testdata_dir() -> Path:
    return Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))


def kpa_index(encoder) -> tuple[Path, Path]:
    """(index dir, photo folder): the KPhotoAlbum archive indexed in ``.cache/bench/serve-kpa-<code>/``."""
    from frozenlens.engine import Engine

    src = testdata_dir() / "kphotoalbum"
    if not (src / "captions.jsonl").exists():
        raise SystemExit(f"KPhotoAlbum test photos missing in {src}: run `python scripts/fetch_test_data.py`")
    from bench_query import _db_fingerprint

    # one index per store code (bench/ab_previous.py runs this harness over two trees, and
    # newer code migrates an index's schema, which older code then refuses)
    root = CACHE / f"serve-kpa-{_db_fingerprint()}"
    photos, index = root / "photos", root / "index"
    if not photos.is_dir():
        tmp = root / "photos.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, photos)
    with Engine.open(index, create=True, encoder=encoder) as engine:
        report = engine.index([photos], captions=photos / "captions.jsonl")
    log(f"KPhotoAlbum index {index}: {report.new} new, {report.skipped} unchanged, {report.failed} failed")
    return index, photos


# ------------------------------------------------------------------- server
@dataclass
class Server:
    """A ``frozenlens serve`` child process."""

    proc: subprocess.Popen
    url: str
    _ticks: float = field(default_factory=lambda: float(os.sysconf("SC_CLK_TCK")))

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the server process used so far (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()  # after "pid (comm)"
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(index_dir: Path, concurrency: int | None = None) -> Server:
    """Start ``frozenlens serve --no-ui --port 0`` on ``index_dir``; returns once it listens."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "frozenlens", "serve", "--index", str(index_dir), "--host", "127.0.0.1",
           "--port", "0", "--no-ui", *(["--concurrency", str(concurrency)] if concurrency else [])]
    log(f"starting {' '.join(cmd[1:])}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # the server's stdout, line by line, to the queue (then to our stderr)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="serve-stdout", daemon=True).start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            raise SystemExit(f"the server exited with code {proc.wait()} before listening")
        log(f"  server: {line.rstrip()}")
        if line.startswith("FrozenLens serving") and " at http://" in line:
            url = line.split(" at ", 1)[1].split()[0].rstrip("/")
            return Server(proc, url)
    proc.kill()
    raise SystemExit(f"the server did not start listening within {SERVER_START_TIMEOUT_S:.0f} s")


# ------------------------------------------------------------------- load
@dataclass
class LoadResult:
    """What one load phase saw (latencies in ms, of the 200 answers)."""

    clients: int
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    took_ms: list[float] = field(default_factory=list)
    non_200: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latency_ms) + sum(self.non_200.values()) + sum(self.exceptions.values())

    @property
    def ok(self) -> bool:
        return not self.non_200 and not self.exceptions and bool(self.latency_ms)


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _load(url: str, clients: int, duration: float, send: Callable, n_items: int) -> LoadResult:
    """``clients`` tasks calling ``send(client, item_index)`` back to back for ``duration`` s."""
    import httpx

    res = LoadResult(clients)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(300.0)) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    r = await send(client, i % n_items)
                except Exception as exc:  # noqa: BLE001 - every failure is counted, by type
                    res.exceptions[type(exc).__name__] += 1
                else:
                    if r.status_code == 200:
                        res.latency_ms.append((time.perf_counter() - t0) * 1000)
                        res.took_ms.append(float(r.json()["took_ms"]))
                    else:
                        res.non_200[r.status_code] += 1
                i += clients

        await asyncio.gather(*(worker(w) for w in range(clients)))
        res.seconds = time.perf_counter() - start  # until the last request started before the deadline ended
    return res


def run_load(server: Server, clients: int, duration: float, send: Callable, n_items: int) -> LoadResult:
    cpu0, self0 = server.cpu_seconds(), _cpu_self()
    res = asyncio.run(_load(server.url, clients, duration, send, n_items))
    res.server_cpu_s = server.cpu_seconds() - cpu0
    res.client_cpu_s = _cpu_self() - self0
    return res


# ------------------------------------------------------------ one at a time
def sequential(server: Server, engine, texts: list[str], photo: bytes, image_reps: int) -> dict[str, list[float]]:
    """Each query once over HTTP (one keep-alive client) and once in process, interleaved (ms)."""
    import httpx

    try:
        from frozenlens.server.settings import Limits
        from frozenlens.server.uploads import decode_upload
    except ModuleNotFoundError:  # code before issue 12 (bench/ab_previous.py runs this harness over it)
        from frozenlens.api.settings import Limits  # type: ignore[no-redef]
        from frozenlens.api.uploads import decode_upload  # type: ignore[no-redef]

    lim = Limits()
    out: dict[str, list[float]] = {k: [] for k in ("http", "took", "engine", "img_http", "img_took", "img_engine")}
    with httpx.Client(base_url=server.url, timeout=300.0) as client:

        def http_text(q: str) -> None:
            t0 = time.perf_counter()
            r = client.get("/api/v1/search", params={"q": q, "k": 10})
            out["http"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            out["took"].append(float(r.json()["took_ms"]))

        def local_text(q: str) -> None:
            t0 = time.perf_counter()
            engine.search(q, k=10)
            out["engine"].append((time.perf_counter() - t0) * 1000)

        def http_image() -> None:
            t0 = time.perf_counter()
            r = client.post("/api/v1/search/image", files={"file": (KPA_PHOTO, photo, "image/jpeg")}, data={"k": "10"})
            out["img_http"].append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            out["img_took"].append(float(r.json()["took_ms"]))

        def local_image() -> None:
            t0 = time.perf_counter()
            engine.search(decode_upload(photo, lim.max_upload_bytes, lim.max_upload_pixels), k=10)
            out["img_engine"].append((time.perf_counter() - t0) * 1000)

        for i, q in enumerate(texts):
            pair = (http_text, local_text) if i % 2 == 0 else (local_text, http_text)
            for fn in pair:
                fn(q)
        for i in range(image_reps):
            pair = (http_image, local_image) if i % 2 == 0 else (local_image, http_image)
            for fn in pair:
                fn()
    return out


# --------------------------------------------------------------------- main
@dataclass
class ConfigResult:
    name: str
    images: int
    text: LoadResult
    image: LoadResult | None
    seq: dict[str, list[float]]
    server_rss_mb: float
    startup_s: float
    ab: dict[str, LoadResult] | None = None  # text load: "default" concurrency vs "one" (--concurrency 1)


def bench_config(name: str, index_dir: Path, encoder, texts: list[str], load_texts: list[str],
                 photo: bytes, args: argparse.Namespace) -> ConfigResult:
    """Start a server on ``index_dir``; time ``texts`` one at a time, then load it with ``load_texts``."""
    import httpx

    from frozenlens.engine import Engine

    t0 = time.perf_counter()
    server = start_server(index_dir)
    engine = Engine.open(index_dir, encoder=encoder)
    try:
        with httpx.Client(base_url=server.url, timeout=300.0) as client:  # loads the index and the models
            health = client.get("/api/v1/health").json()
            for q in texts[:5]:
                client.get("/api/v1/search", params={"q": q, "k": 10}).raise_for_status()
            client.post("/api/v1/search/image", files={"file": (KPA_PHOTO, photo, "image/jpeg")},
                        data={"k": "10"}).raise_for_status()
            images = int(client.get("/api/v1/stats").json()["images"])
        startup = time.perf_counter() - t0
        log(f"{name}: server up and warm in {startup:.1f} s ({images:,} images, health {health})")
        engine.spaces  # noqa: B018 - load FAISS before timing
        for q in texts[:5]:
            engine.search(q, k=10)

        log(f"{name}: {len(texts)} queries one at a time, HTTP and in process interleaved")
        seq = sequential(server, engine, texts, photo, args.image_reps)

        def send_text(client, i: int):
            return client.get("/api/v1/search", params={"q": load_texts[i], "k": 10})

        def send_image(client, i: int):
            return client.post("/api/v1/search/image", files={"file": (KPA_PHOTO, photo, "image/jpeg")},
                               data={"k": "10"})

        log(f"{name}: GET /api/v1/search, {args.clients} clients for {args.duration:g} s "
            f"(load average {os.getloadavg()[0]:.1f})")
        text = run_load(server, args.clients, args.duration, send_text, len(load_texts))
        log(f"  {text.requests} requests, {len(text.latency_ms)} OK, non-200 {dict(text.non_200)}, "
            f"exceptions {dict(text.exceptions)}")
        image = None
        if args.image_clients > 0 and args.image_duration > 0:
            log(f"{name}: POST /api/v1/search/image, {args.image_clients} clients for {args.image_duration:g} s")
            image = run_load(server, args.image_clients, args.image_duration, send_image, 1)
            log(f"  {image.requests} requests, {len(image.latency_ms)} OK, non-200 {dict(image.non_200)}, "
                f"exceptions {dict(image.exceptions)}")
        rss = server.peak_rss_mb()
        ab = compare_concurrency(server, index_dir, send_text, len(load_texts), args) if args.ab_segments else None
    finally:
        engine.close()
        server.stop()
    return ConfigResult(name, images, text, image, seq, rss, startup, ab)


def compare_concurrency(server: Server, index_dir: Path, send: Callable, n_items: int,
                        args: argparse.Namespace) -> dict[str, LoadResult]:
    """The same text load on this server (default concurrency: one search per core) and on a
    second one started with ``--concurrency 1`` (searches one at a time), in alternating
    segments so that machine noise hits both alike."""
    one = start_server(index_dir, concurrency=1)
    try:
        one_url = one.url
        import httpx

        with httpx.Client(base_url=one_url, timeout=300.0) as c:  # warm it up like the first
            for i in range(5):
                send(c, i).raise_for_status()
        parts: dict[str, list[LoadResult]] = {"default": [], "one": []}
        seg = args.duration / args.ab_segments
        log(f"  concurrency A/B: {args.ab_segments} × ({seg:g} s default, {seg:g} s --concurrency 1), "
            f"{args.clients} clients")
        for _ in range(args.ab_segments):
            parts["default"].append(run_load(server, args.clients, seg, send, n_items))
            parts["one"].append(run_load(one, args.clients, seg, send, n_items))
    finally:
        one.stop()
    return {k: merge(v) for k, v in parts.items()}


def merge(parts: list[LoadResult]) -> LoadResult:
    out = LoadResult(parts[0].clients)
    for p in parts:
        out.seconds += p.seconds
        out.latency_ms += p.latency_ms
        out.took_ms += p.took_ms
        out.non_200.update(p.non_200)
        out.exceptions.update(p.exceptions)
        out.server_cpu_s += p.server_cpu_s
        out.client_cpu_s += p.client_cpu_s
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20, help="concurrent text-query clients (default 20)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of text-query load (default 30)")
    ap.add_argument("--queries", type=int, default=210, help="queries timed one at a time (default: all 210)")
    ap.add_argument("--image-clients", type=int, default=4, help="concurrent image-query clients (0 = skip)")
    ap.add_argument("--image-duration", type=float, default=10.0, help="seconds of image-query load")
    ap.add_argument("--image-reps", type=int, default=20, help="image queries timed one at a time")
    ap.add_argument("--n", type=int, default=100_000, help="synthetic images in the second index (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ab-segments", type=int, default=3,
                    help="concurrency A/B: alternating segments of the text load, default vs --concurrency 1 "
                    "(0 = skip)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 5 clients × 5 s, 42 queries, 2 image clients × 3 s, 6 image queries")
    args = ap.parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.queries = 5, 5.0, 42
        args.image_clients, args.image_duration, args.image_reps = 2, 3.0, 6
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server (the CLI) has it; before torch loads

    from frozenlens.models import create_encoder

    log("loading the lite encoder")
    encoder = create_encoder("lite", cache_dir=common.model_cache_dir())
    queries = all_queries()
    texts = [t for _, t in (queries * (args.queries // len(queries) + 1))[: args.queries]]
    load_texts = [t for _, t in queries]

    kpa_dir, photos = kpa_index(encoder)
    photo = (photos / KPA_PHOTO).read_bytes()
    plan = [("KPhotoAlbum, 24 photos", kpa_dir)]
    if args.n > 0:
        from bench_query import build_index

        syn_dir, _ = build_index(encoder, args.n, "Flat", seed=args.seed, caption_fraction=0.10)
        plan.append((f"synthetic, {args.n:,} images (Flat)", syn_dir))

    load_before = os.getloadavg()
    results = [bench_config(name, d, encoder, texts, load_texts, photo, args) for name, d in plan]
    load_after = os.getloadavg()

    tables: list[str] = []
    rows = []
    for r in results:
        t = r.text
        s, took = summarize(t.latency_ms), summarize(t.took_ms)
        rows.append((
            r.name, t.requests, sum(t.non_200.values()), sum(t.exceptions.values()), len(t.latency_ms) / t.seconds,
            s.p50, s.p90, s.p99, s.max, took.p50, t.server_cpu_s / t.seconds, t.client_cpu_s / t.seconds,
        ))
    tables.append(print_table(
        f"GET /api/v1/search?q=…&k=10, {args.clients} concurrent clients for {args.duration:g} s "
        f"(latency in ms as the clients see it)",
        ["index", "requests", "non-200", "exceptions", "req/s", "p50", "p90", "p99", "max",
         "server took_ms p50 (engine time)", "server CPU (cores)", "client CPU (cores)"],
        rows,
    ))

    rows = []
    for r in results:
        http, eng, took = summarize(r.seq["http"]), summarize(r.seq["engine"]), summarize(r.seq["took"])
        load = summarize(r.text.latency_ms)
        ceiling = 1000.0 / eng.mean  # req/s if the server did nothing but back-to-back Engine.search
        rows.append((
            r.name, eng.n, eng.p50, eng.p99, took.p50, http.p50, http.p99, http.p50 - eng.p50,
            f"{http.p50 / eng.p50:.2f}×", f"{load.p50 / eng.p50:.1f}×",
            f"{(len(r.text.latency_ms) / r.text.seconds) / ceiling:.2f}",
        ))
    tables.append(print_table(
        "The same queries one at a time: in-process Engine.search vs one HTTP client, interleaved (ms)",
        ["index", "queries", "Engine.search p50", "Engine.search p99", "server took_ms p50", "HTTP p50", "HTTP p99",
         "HTTP overhead p50 (ms)", "HTTP ÷ in-process (p50)", f"{args.clients} clients ÷ in-process (p50)",
         "req/s under load ÷ 1/mean Engine.search"],
        rows,
    ))

    rows = []
    for r in results:
        http, eng = summarize(r.seq["img_http"]), summarize(r.seq["img_engine"])
        if r.image is not None:
            im = r.image
            s = summarize(im.latency_ms)
            load = (f"{im.clients} × {args.image_duration:g} s", im.requests, sum(im.non_200.values()),
                    sum(im.exceptions.values()), len(im.latency_ms) / im.seconds, s.p50, s.p99, s.max)
        else:
            load = ("skipped", 0, 0, 0, float("nan"), float("nan"), float("nan"), float("nan"))
        rows.append((r.name, eng.p50, http.p50, f"{http.p50 / eng.p50:.2f}×", *load))
    tables.append(print_table(
        f"POST /api/v1/search/image (multipart {KPA_PHOTO}, {len(photo) / 1024:.0f} KiB, k=10): one at a time "
        f"({args.image_reps} each, interleaved) and under load (ms)",
        ["index", "in process p50 (decode_upload + Engine.search)", "HTTP p50", "HTTP ÷ in-process",
         "load", "requests", "non-200", "exceptions", "req/s", "p50", "p99", "max"],
        rows,
    ))

    rows = []
    for r in results:
        if r.ab is None:
            continue
        d, o = r.ab["default"], r.ab["one"]
        sd, so = summarize(d.latency_ms), summarize(o.latency_ms)
        rd, ro = len(d.latency_ms) / d.seconds, len(o.latency_ms) / o.seconds
        rows.append((r.name, rd, ro, f"{rd / ro:.2f}×", sd.p50, so.p50, sd.p99, so.p99,
                     d.server_cpu_s / d.seconds, o.server_cpu_s / o.seconds,
                     sum(d.non_200.values()) + sum(d.exceptions.values()) + sum(o.non_200.values())
                     + sum(o.exceptions.values())))
    if rows:
        tables.append(print_table(
            f"Searches at once: default (one per core, {len(os.sched_getaffinity(0))}) vs --concurrency 1, "
            f"{args.clients} clients, alternating segments ({args.ab_segments} × {args.duration / args.ab_segments:g} s each; ms)",
            ["index", "req/s default", "req/s one at a time", "ratio", "p50 default", "p50 one", "p99 default",
             "p99 one", "server CPU default (cores)", "server CPU one (cores)", "errors"],
            rows,
        ))

    rows = [(r.name, f"{r.images:,}", r.startup_s, r.server_rss_mb) for r in results]
    tables.append(print_table(
        "Server process",
        ["index", "images", "start + warm-up (s)", "peak RSS (MiB)"],
        rows,
    ))

    target = f"{args.clients} concurrent clients for {args.duration:g} s → zero errors"
    rows = []
    for r in results:
        detail = f"{r.text.requests:,} requests, non-200 {dict(r.text.non_200) or 0}, exceptions {dict(r.text.exceptions) or 0}"
        if r.image is not None:
            detail += f"; image route {r.image.requests:,} requests, non-200 {dict(r.image.non_200) or 0}, " \
                      f"exceptions {dict(r.image.exceptions) or 0}"
        rows.append((f"{target} ({r.name})", detail, verdict(r.text.ok and (r.image is None or r.image.ok))))
    tables.append(print_table("Load target", ["target", "measured", "verdict"], rows))
    print(f"{common.machine_line()}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"(1-min); server and clients share the {len(os.sched_getaffinity(0))} cores.", flush=True)
    summary = {
        r.name: {
            "req_s": len(r.text.latency_ms) / r.text.seconds if r.text.seconds else 0.0,
            "p50_ms": summarize(r.text.latency_ms).p50 if r.text.latency_ms else None,
            "p99_ms": summarize(r.text.latency_ms).p99 if r.text.latency_ms else None,
            "errors": sum(r.text.non_200.values()) + sum(r.text.exceptions.values()),
        }
        for r in results
    }
    return {"tables": tables, "summary": summary,
            "ok": all(r.text.ok and (r.image is None or r.image.ok) for r in results)}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
