"""Latency of the FrEVL reranker: rescoring the top-100 candidates on 2 CPU cores.

The heads have RANDOM weights: a freshly initialised, seeded ``FusionHead`` at
each preset of :mod:`frozenlens.reranker.model` (``cpu``, ~0.9 M parameters,
and ``paper``, ~68 M). Latency does not depend on the weight values. Torch
runs on 2 threads. Everything is warmed up first. The three steps run one
after the other in one process, and within a step the variants it compares
are interleaved:

1. **head only**: ``Reranker.score`` of one query (1 global + 5 unit tokens)
   against 100 candidates (a 512-d global vector, a 1280-d visual vector and 4
   region tokens of 512-d each). The inputs are seeded random unit vectors.
   This step runs without text encoding between the calls (see step 2).
2. **rerank step, as search runs it**: ``Engine._rerank_scores`` on a real
   index. It embeds the query's unit tokens with the real ``lite`` text tower
   (``encode_texts_with_units``), reads the 100 candidates' vectors and region
   tokens from SQLite (``Store.vectors`` twice, ``Store.tokens``), then runs
   the head. Each of these parts is also timed on its own. The candidates are
   the query's first-stage top 100.
3. **end to end**: ``Engine.search(q, k=10, rerank=False)`` (first stage only)
   against ``Engine.search(q, k=10)`` with the head saved in the index
   directory (reranked), once per preset. The ratio reranked / first stage
   comes from the same run.

The index is built like the query benchmark's (:mod:`bench_query`): ``--n``
synthetic images (default 100,000) written through ``Store.batch`` /
``BatchWriter.add_image``, with seeded random vectors and 10 % of the images
captioned. Each image also gets 4 random region tokens, stored as fp16 the
way the indexer stores them. The exact ``Flat`` FAISS files are built by the
engine's reconcile. The index is cached in ``.cache/bench/``, keyed by a hash
of the store/retriever/spaces source. The heads are saved into it for step 3
and removed at the end.

The queries are the English, German, French and Japanese sentences of
``queries.py`` (2-8 words; Japanese text has no spaces, so it is cut into
two-character units).

Experiments: the cpu head with 1 torch thread (interleaved), and steps 1-3
with the cpu head in fresh processes with half the repetitions, run after the
main measurements (not interleaved with them):

- started with ``OMP_WAIT_POLICY=PASSIVE``, which the CLI sets;
- with the lite text tower on 1 BLAS thread (``create_encoder("lite",
  threads=1)``). By default it uses 2 BLAS threads for more than 8 texts
  (``_FEW_TEXTS``; it was 4 before 2026-12-01), and a query with its units
  is 3-8 texts;
- both of the above;
- with torch imported before FAISS. The main process imports FAISS first,
  as ``frozenlens search`` and ``from frozenlens.engine import Engine`` do.

Target (issue): p50 <= 25 ms to rerank the top-100 with the ``cpu`` preset
on 2 cores.

    .venv/bin/python bench/bench_rerank.py            # ~3 min on 2 quiet cores; the first run also builds the index (~65 s)
    .venv/bin/python bench/bench_rerank.py --quick    # 10,000 images, 50 / 5 repetitions: a smoke test, ~1.5 min

On a loaded machine, 2-thread torch collapses and a default run can take close to an hour.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from bench_query import _fingerprint, _insert_writer
from common import CACHE, Timer, log, print_table, summarize, verdict
from queries import all_queries

TARGET_P50_MS = 25.0
CANDIDATES = 100
THREADS = 2
LANGS = ("en", "de", "fr", "ja")
HEAD_UNITS = 5  # step 1: 1 global + 5 unit tokens
DIM, VISUAL_DIM = 512, 1280
QUICK = {"n": 10_000, "reps": 50, "paper_reps": 5}


# ------------------------------------------------------------------ inputs
def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape, dtype=np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic_inputs(seed: int, n_regions: int):
    """One query (1 global + HEAD_UNITS unit tokens) and CANDIDATES images, seeded unit vectors."""
    from frozenlens.reranker.features import ImageTokens, TextTokens

    rng = np.random.default_rng([seed, 11])
    tok = _unit(rng, 1, 1 + HEAD_UNITS, DIM)  # (1, M, dim)
    text = TextTokens(tok[:, 0].copy(), tok, np.ones(tok.shape[:2], bool))
    images = ImageTokens.build(_unit(rng, CANDIDATES, DIM), _unit(rng, CANDIDATES, VISUAL_DIM),
                               _unit(rng, CANDIDATES, n_regions, DIM))
    return text, images


def make_head(preset: str, encoder, seed: int):
    """An untrained (randomly initialised, seeded) head of ``preset`` for ``encoder``."""
    import torch

    from frozenlens.reranker.head import Reranker
    from frozenlens.reranker.model import FusionHead, preset_config

    ident = encoder.identity
    torch.manual_seed(seed)
    cfg = preset_config(preset, dim=ident.dim, visual_dim=ident.visual_dim, encoder=ident.as_dict())
    head = Reranker(FusionHead(cfg), {"bench": "random weights"})
    head.model.eval()
    return head


def counted_gflop(head, text, images) -> float:
    """GFLOP of one ``head.score`` call (torch's FLOP counter: matmuls and attention, 2 FLOP per MAC)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as fc:
            head.score(text, images)
        return fc.get_total_flops() / 1e9
    except Exception as exc:  # noqa: BLE001 - an optional column
        log(f"FLOP counting failed: {exc}")
        return float("nan")


# ------------------------------------------------------------------ index
def _index_fingerprint() -> str:
    return _fingerprint("store/*.py", "retriever/*.py")


def _insert(store, n: int, seed: int, caption_fraction: float, class_names: list[str], n_regions: int,
            chunk: int = 2000) -> None:
    """bench_query's synthetic rows plus ``n_regions`` random region tokens per image."""
    _insert_writer(store, n, seed, caption_fraction, class_names, chunk, n_regions=n_regions)


def build_index(encoder, n: int, *, seed: int, caption_fraction: float, rebuild: bool = False) -> tuple[Path, dict]:
    """A cached Flat index directory with ``n`` synthetic images and their region tokens."""
    from frozenlens.engine import Engine
    from frozenlens.errors import FrozenLensError

    stem = f"rerank-n{n}-s{seed}-c{caption_fraction:g}-"
    index_dir = CACHE / f"{stem}{_index_fingerprint()}"
    for old in CACHE.glob(f"{stem}*"):  # built by older store/retriever code
        if old != index_dir and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    done = index_dir / "bench-build.json"
    if done.exists() and not rebuild:
        engine = Engine.open(index_dir, encoder=encoder)
        try:
            _ = engine.spaces  # loads the FAISS files
            log(f"reusing cached index {index_dir}")
            return index_dir, {**json.loads(done.read_text()), "cached": True}
        except FrozenLensError as exc:
            log(f"cached index unusable ({exc}); rebuilding")
        finally:
            engine.close()
    shutil.rmtree(index_dir, ignore_errors=True)
    log(f"building a Flat index of {n:,} synthetic images with region tokens in {index_dir}")
    engine = Engine.open(index_dir, create=True, encoder=encoder, factory="Flat")
    try:
        with Timer() as t_sql:
            _insert(engine.store, n, seed, caption_fraction, encoder.class_names, encoder.image_tokens)
        log(f"  rows inserted in {t_sql.seconds:.1f} s")
    finally:
        engine.close()
    engine = Engine.open(index_dir, encoder=encoder)
    try:
        with Timer() as t_faiss:
            spaces = engine.spaces  # reconcile: adds every vector from the database
            spaces.save()
        log(f"  FAISS spaces built and saved in {t_faiss.seconds:.1f} s: {spaces.sizes()}")
    finally:
        engine.close()
    info = {"sql_insert": t_sql.seconds, "faiss_build": t_faiss.seconds,
            "bytes_on_disk": float(sum(p.stat().st_size for p in index_dir.iterdir() if p.is_file()))}
    done.write_text(json.dumps(info))
    return index_dir, {**info, "cached": False}


def remove_head(index_dir: Path) -> None:
    from frozenlens.reranker import CONFIG_NAME, WEIGHTS_NAME

    for name in (CONFIG_NAME, WEIGHTS_NAME):
        (index_dir / name).unlink(missing_ok=True)


# --------------------------------------------------------------- measuring
def _queries() -> list[tuple[str, str]]:
    return [(lang, text) for lang, text in all_queries() if lang in LANGS]


def prepared_queries(engine, texts: list[str]) -> list[tuple[str, str | None, np.ndarray, list[int]]]:
    """(text, detected language, query vector, first-stage top-CANDIDATES ids) per query, as search computes them."""
    from frozenlens.indexer.language import detect_language

    out = []
    for text in texts:
        lang = detect_language(text)
        q = engine.encoder.encode_texts_in([text], lang)[0]
        ids = [h.id for h in engine.search(text, k=CANDIDATES, rerank=False)]
        out.append((text, lang, q, ids))
    return out


def step_parts(engine, head, text: str, lang: str | None, ids: list[int]) -> dict[str, float]:
    """The pieces of ``Engine._rerank_scores`` timed one by one, in ms."""
    from frozenlens.reranker.features import ImageTokens, encode_texts_with_units

    dim, vdim, n_tok = engine.identity.dim, engine.identity.visual_dim, engine.encoder.image_tokens
    with Timer() as t_text:
        query = encode_texts_with_units(engine.encoder, [text], [lang])
    with Timer() as t_sql:
        images = ImageTokens.from_store(engine.store, ids, dim, vdim, n_tok)
    with Timer() as t_head:
        head.score(query, images)
    if not images.mask.all():
        raise RuntimeError("some candidates have no region tokens: the index was not built with them")
    return {"text": t_text.ms, "sql": t_sql.ms, "head": t_head.ms, "units": float(query.mask.sum() - 1)}


def time_variant(engine, head, kind: str, threads: int, text_in, images_in, query: tuple | None) -> float:
    """ms of one call: ``kind`` "head" (step 1, synthetic inputs) or "step" (step 2,
    ``Engine._rerank_scores`` for ``query`` = (text, lang, vector, ids)), torch on ``threads``."""
    import torch

    before = torch.get_num_threads()
    if threads != before:
        torch.set_num_threads(threads)
    try:
        with Timer() as t:
            if kind == "head":
                head.score(text_in, images_in)
            else:
                text, lang, q, ids = query
                engine._rerank_scores(head, text, lang, q, ids)
    finally:
        if threads != before:
            torch.set_num_threads(before)
    return t.ms


def _variants(prefix: str, one_thread: bool) -> list[tuple[str, int]]:
    return [(f"{prefix}_cpu", THREADS)] + ([(f"{prefix}_cpu_t1", 1)] if one_thread else [])


def measure_head(heads: dict, text_in, images_in, reps: int, paper_reps: int, one_thread: bool) -> dict[str, list]:
    """Step 1, in a block of its own. Text encoding between the calls would leave
    OpenBLAS threads spinning and slow the head; that cost belongs to step 2 and is
    measured there. The cpu variants alternate order. The paper head runs on
    ``paper_reps`` repetitions spread over the block."""
    lat: dict[str, list] = {"head_cpu": [], "head_cpu_t1": [], "head_paper": []}
    variants = _variants("head", one_thread)
    every = max(1, reps // paper_reps)
    for i in range(reps):
        for key, threads in variants if i % 2 == 0 else variants[::-1]:
            lat[key].append(time_variant(None, heads["cpu"], "head", threads, text_in, images_in, None))
        if "paper" in heads and i % every == 0 and len(lat["head_paper"]) < paper_reps:
            lat["head_paper"].append(time_variant(None, heads["paper"], "head", THREADS, text_in, images_in, None))
    return lat


def measure_step(engine, heads: dict, prepared: list, reps: int, paper_reps: int, one_thread: bool) -> dict[str, list]:
    """Step 2, one query per repetition (cycling through ``prepared``): the whole
    step for each cpu variant (order alternating), then its parts one by one; the
    paper head on ``paper_reps`` repetitions spread over the block."""
    lat: dict[str, list] = {"step_cpu": [], "step_cpu_t1": [], "step_paper": [], "parts_cpu": []}
    variants = _variants("step", one_thread)
    every = max(1, reps // paper_reps)
    for i in range(reps):
        query = prepared[i % len(prepared)]
        for key, threads in variants if i % 2 == 0 else variants[::-1]:
            lat[key].append(time_variant(engine, heads["cpu"], "step", threads, None, None, query))
        lat["parts_cpu"].append(step_parts(engine, heads["cpu"], query[0], query[1], query[3]))
        if "paper" in heads and i % every == 0 and len(lat["step_paper"]) < paper_reps:
            lat["step_paper"].append(time_variant(engine, heads["paper"], "step", THREADS, None, None, query))
    return lat


def measure_search(engine, head, prepared: list, reps: int) -> tuple[list[float], list[float]]:
    """Step 3 with ``head`` saved in the index directory: (first stage ms, reranked ms), interleaved."""
    head.save(engine.index_dir)
    for text, *_ in prepared[:3]:  # warm-up; the first reranked search loads the head
        engine.search(text, k=10)
        engine.search(text, k=10, rerank=False)
    lat: dict[bool, list[float]] = {False: [], True: []}
    for i in range(reps):
        text = prepared[i % len(prepared)][0]
        for reranked in ((False, True) if i % 2 == 0 else (True, False)):
            with Timer() as t:
                hits = engine.search(text, k=10) if reranked else engine.search(text, k=10, rerank=False)
            if not hits or hits[0].reranked != reranked:
                raise RuntimeError(f"Engine.search(rerank={'default' if reranked else False}) "
                                   f"{'did not use' if reranked else 'used'} the head")
            lat[reranked].append(t.ms)
    return lat[False], lat[True]


# ------------------------------------------------- experiment processes
#: (label, extra environment, extra arguments) of the fresh-process experiments
PROCESS_EXPERIMENTS: tuple[tuple[str, dict[str, str], list[str]], ...] = (
    ("OMP_WAIT_POLICY=PASSIVE (the CLI's setting)", {"OMP_WAIT_POLICY": "PASSIVE"}, []),
    ("text tower on 1 BLAS thread", {}, ["--text-threads", "1"]),
    ("PASSIVE + text tower on 1 BLAS thread", {"OMP_WAIT_POLICY": "PASSIVE"}, ["--text-threads", "1"]),
    ("torch imported before FAISS", {}, ["--torch-first"]),
)


def child_reps(args: argparse.Namespace) -> int:
    """Repetitions in each experiment process: half the main ones (keeps the default run short)."""
    return max(1, args.reps // 2)


def run_child(args: argparse.Namespace, env: dict[str, str], extra: list[str]) -> dict[str, list]:
    """Steps 1-3 with the cpu head in a fresh process (environment variables such as
    OMP_WAIT_POLICY must be set before the OpenMP runtime starts). It runs after the
    main measurements and is not interleaved with them."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--n", str(args.n), "--reps", str(child_reps(args)),
           "--seed", str(args.seed), "--caption-fraction", str(args.caption_fraction), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def openmp_shared() -> bool:
    """True when FAISS's OpenMP thread setting also changes torch's (one runtime)."""
    import faiss
    import torch

    before_t, before_f = torch.get_num_threads(), faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1 if before_t != 1 else 2)
    shared = torch.get_num_threads() != before_t
    faiss.omp_set_num_threads(before_f)
    torch.set_num_threads(before_t)
    return shared


def _setup(args: argparse.Namespace):  # -> (encoder, index_dir, build info)
    # FAISS is imported before torch, as `frozenlens search` and `from frozenlens.engine
    # import Engine` do. With torch's OpenMP runtime loaded first, FAISS's
    # omp_set_num_threads binds to it and Engine's faiss_threads(1) also sets torch to
    # 1 thread (see docs/benchmarks.md, "Reranker latency").
    if args.torch_first:  # experiment: the other order
        import torch
    import frozenlens.engine  # noqa: F401, I001 - deliberately before torch
    import torch

    from frozenlens.models import create_encoder

    log("loading the lite encoder")
    options = {"threads": args.text_threads} if args.text_threads else {}
    encoder = create_encoder("lite", cache_dir=common.model_cache_dir(), **options)
    torch.set_num_threads(THREADS)  # after the encoder, which sets the process-wide count itself
    log(f"torch and FAISS share one OpenMP runtime: {'yes' if openmp_shared() else 'no'}")
    index_dir, info = build_index(encoder, args.n, seed=args.seed, caption_fraction=args.caption_fraction,
                                  rebuild=args.rebuild and not args.child)
    return encoder, index_dir, info


def _warm_up(engine, heads: dict, text_in, images_in, prepared: list) -> None:
    for _ in range(10):
        heads["cpu"].score(text_in, images_in)
    if "paper" in heads:
        for _ in range(2):
            heads["paper"].score(text_in, images_in)
    for query in prepared[:8]:
        for threads in (THREADS, 1):
            time_variant(None, heads["cpu"], "head", threads, text_in, images_in, None)
            time_variant(engine, heads["cpu"], "step", threads, None, None, query)
        step_parts(engine, heads["cpu"], query[0], query[1], query[3])


def _child(args: argparse.Namespace) -> None:
    encoder, index_dir, _ = _setup(args)  # first: it fixes the import order
    from frozenlens.engine import Engine

    heads = {"cpu": make_head("cpu", encoder, args.seed)}
    text_in, images_in = synthetic_inputs(args.seed, encoder.image_tokens)
    with Engine.open(index_dir, encoder=encoder) as engine:
        _ = engine.spaces
        prepared = prepared_queries(engine, [t for _, t in _queries()])
        _warm_up(engine, heads, text_in, images_in, prepared)
        out = measure_head(heads, text_in, images_in, args.reps, 1, one_thread=False)
        out.update(measure_step(engine, heads, prepared, args.reps, 1, one_thread=False))
        try:
            out["search_first"], out["search_cpu"] = measure_search(engine, heads["cpu"], prepared, args.reps)
        finally:
            remove_head(index_dir)
    keys = ("head_cpu", "step_cpu", "parts_cpu", "search_first", "search_cpu")
    print("RESULT " + json.dumps({k: out[k] for k in keys}), flush=True)


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="images in the test index (default 100,000)")
    ap.add_argument("--reps", type=int, default=200, help="timed repetitions per cpu-head variant (default 200)")
    ap.add_argument("--paper-reps", type=int, default=20, help="timed repetitions per paper-head variant (default 20)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: --n {QUICK['n']:,} --reps {QUICK['reps']} --paper-reps {QUICK['paper_reps']}")
    ap.add_argument("--caption-fraction", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rebuild", action="store_true", help="ignore the cached index")
    ap.add_argument("--no-paper", dest="paper", action="store_false", help="skip the paper preset")
    ap.add_argument("--no-one-thread", dest="one_thread", action="store_false",
                    help="skip the 1-torch-thread experiment")
    ap.add_argument("--no-processes", dest="processes", action="store_false",
                    help="skip the fresh-process experiments (OMP_WAIT_POLICY=PASSIVE; text tower on 1 BLAS thread)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--text-threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.reps, args.paper_reps = QUICK["n"], QUICK["reps"], QUICK["paper_reps"]
    if args.n < CANDIDATES or args.reps < 1 or args.paper_reps < 1:
        ap.error(f"--n must be >= {CANDIDATES}, --reps and --paper-reps >= 1")
    if args.child:
        _child(args)
        return {}

    from frozenlens.engine import Engine
    from frozenlens.reranker.model import count_parameters

    t_start = time.perf_counter()
    encoder, index_dir, build = _setup(args)
    heads = {"cpu": make_head("cpu", encoder, args.seed)}
    if args.paper:
        heads["paper"] = make_head("paper", encoder, args.seed)
    params = {p: count_parameters(h.model) for p, h in heads.items()}
    text_in, images_in = synthetic_inputs(args.seed, encoder.image_tokens)
    flops = {p: counted_gflop(h, text_in, images_in) for p, h in heads.items()}
    queries = _queries()
    engine = Engine.open(index_dir, encoder=encoder)
    try:
        _ = engine.spaces  # load the FAISS files before timing
        log(f"preparing {len(queries)} queries ({', '.join(LANGS)}): language, vector, first-stage top {CANDIDATES}")
        prepared = prepared_queries(engine, [t for _, t in queries])
        _warm_up(engine, heads, text_in, images_in, prepared)
        load_before = os.getloadavg()[0]
        paper_reps = args.paper_reps if args.paper else 0
        log(f"step 1: head only, {args.reps} repetitions (cpu head), {paper_reps} (paper head); "
            f"load average {load_before:.1f}")
        lat = measure_head(heads, text_in, images_in, args.reps, args.paper_reps, args.one_thread)
        log(f"step 2: Engine._rerank_scores, {args.reps} queries (cpu head), {paper_reps} (paper head)")
        lat.update(measure_step(engine, heads, prepared, args.reps, args.paper_reps, args.one_thread))
        log(f"  head only p50: cpu {summarize(lat['head_cpu']).p50:.1f} ms"
            + (f", paper {summarize(lat['head_paper']).p50:.0f} ms" if args.paper else "")
            + f"; rerank step cpu p50 {summarize(lat['step_cpu']).p50:.1f} ms")
        log(f"step 3: Engine.search, {args.reps} queries with the cpu head saved in the index")
        search = {"cpu": measure_search(engine, heads["cpu"], prepared, args.reps)}
        if args.paper:
            log(f"step 3: {args.paper_reps} queries with the paper head saved in the index")
            search["paper"] = measure_search(engine, heads["paper"], prepared, args.paper_reps)
        load_after = os.getloadavg()[0]
    finally:
        remove_head(index_dir)
        engine.close()
    log(f"main process done in {time.perf_counter() - t_start:.0f} s")
    children: dict[str, dict[str, list]] = {}
    if args.processes:
        for label, env, extra in PROCESS_EXPERIMENTS:
            log(f"experiment: steps 1-3 (cpu head) in a fresh process: {label}")
            children[label] = run_child(args, env, extra)
            log(f"  rerank step p50 {summarize(children[label]['step_cpu']).p50:.1f} ms")

    log(f"all measurements done in {time.perf_counter() - t_start:.0f} s")

    # ------------------------------------------------------------ tables
    tables: list[str] = []
    nan = float("nan")
    target = f"{TARGET_P50_MS:.0f} ms"

    def row(measure: str, preset: str, samples: list[float], check: bool = False) -> tuple:
        s = summarize(samples)
        vs = ("≤ " if s.p50 <= TARGET_P50_MS else "> ") + target if check else ""
        m = params[preset]["total"] / 1e6 if preset in params else nan
        return (measure, preset, m, s.n, s.p50, s.p90, s.p99, vs)

    rows = [row("(1) head only: Reranker.score, 100 candidates", "cpu", lat["head_cpu"], True)]
    if args.paper:
        rows.append(row("(1) head only", "paper", lat["head_paper"]))
    rows.append(row("(2) rerank step: Engine._rerank_scores (text units + SQL gather + head)", "cpu",
                    lat["step_cpu"], True))
    if args.paper:
        rows.append(row("(2) rerank step", "paper", lat["step_paper"]))
    for preset, (first, reranked) in search.items():
        rows += [row(f"(3) Engine.search k=10, first stage only (rerank=False), paired with {preset}", "none", first),
                 row("(3) Engine.search k=10, reranked (head saved in the index)", preset, reranked)]
    if args.one_thread:
        rows += [row("(1) head only, 1 torch thread (experiment)", "cpu", lat["head_cpu_t1"], True),
                 row("(2) rerank step, 1 torch thread (experiment)", "cpu", lat["step_cpu_t1"], True)]
    for label, res in children.items():
        rows += [row(f"(1) head only, {label} (experiment)", "cpu", res["head_cpu"], True),
                 row(f"(2) rerank step, {label} (experiment)", "cpu", res["step_cpu"], True),
                 row(f"(3) search, first stage only, {label} (experiment)", "none", res["search_first"]),
                 row(f"(3) search, reranked, {label} (experiment)", "cpu", res["search_cpu"])]
    tables.append(print_table(
        f"Reranker latency, top-{CANDIDATES} candidates, torch on {THREADS} threads, index of {args.n:,} images "
        f"(ms; load average {load_before:.1f} before, {load_after:.1f} after the main process)",
        ["measure", "head", "parameters (M)", "reps", "p50", "p90", "p99", "p50 vs target"],
        rows,
    ))

    runs = [("main process", lat["parts_cpu"], lat["step_cpu"])]
    runs += [(f"{label} (experiment)", res["parts_cpu"], res["step_cpu"]) for label, res in children.items()]
    p_rows = []
    for name, parts, whole in runs:
        m = {k: float(np.mean([p[k] for p in parts])) for k in ("text", "sql", "head", "units")}
        p_rows.append((name, m["units"], m["text"], m["sql"], m["head"], m["text"] + m["sql"] + m["head"],
                       summarize(whole).mean, summarize(whole).p50))
    tables.append(print_table(
        f"Where the rerank step's time goes, cpu head: mean ms of its parts, timed one by one after the whole "
        f"step for the same query ({len(lat['parts_cpu'])} queries)",
        ["process", "units per query", "text units (encode_texts_with_units)",
         f"SQL gather (vectors ×2 + tokens, {CANDIDATES} ids)", "head (Reranker.score)", "sum of the parts",
         "step timed whole, mean", "step timed whole, p50"],
        p_rows,
    ))

    e2e = []
    pairs = [(preset, *search[preset]) for preset in search]
    pairs += [(f"cpu, {label} (experiment)", res["search_first"], res["search_cpu"]) for label, res in children.items()]
    for name, first, reranked in pairs:
        f, r = summarize(first), summarize(reranked)
        e2e.append((name, f.n, f.p50, r.p50, f"{r.p50 / f.p50:.2f}×", f.p99, r.p99, f"{r.p99 / f.p99:.2f}×",
                    r.p50 - f.p50))
    tables.append(print_table(
        f"End to end: Engine.search(q, k=10) over {args.n:,} images, reranked vs first stage only "
        "(same queries, interleaved; ms)",
        ["head", "queries", "first stage p50", "reranked p50", "p50 ratio", "first stage p99", "reranked p99",
         "p99 ratio", "added p50"],
        e2e,
    ))

    h_rows = []
    for preset in heads:
        p50 = summarize(lat[f"head_{preset}"]).p50
        h_rows.append((preset, params[preset]["total"] / 1e6, params[preset]["cross_attention_blocks"] / 1e6,
                       flops[preset], p50, flops[preset] / (p50 / 1000), f"{p50 / summarize(lat['head_cpu']).p50:.0f}×"))
    tables.append(print_table(
        f"The heads (random weights; 1 query × {CANDIDATES} candidates, {1 + HEAD_UNITS} text and "
        f"{2 + encoder.image_tokens} image tokens per pair)",
        ["preset", "parameters (M)", "cross-attention blocks (M)", "GFLOP per call (counted)", "head p50 ms",
         "GFLOP/s at p50", "p50 ÷ cpu"],
        h_rows,
    ))

    head_s, step_s = summarize(lat["head_cpu"]), summarize(lat["step_cpu"])
    ok_head, ok_step = head_s.p50 <= TARGET_P50_MS, step_s.p50 <= TARGET_P50_MS
    t_rows = [(f"(1) head only, cpu preset, top-{CANDIDATES}: p50 ≤ {target}",
               f"{head_s.p50:.1f} ms (p99 {head_s.p99:.1f})", verdict(ok_head)),
              (f"(2) full rerank step, cpu preset, top-{CANDIDATES}: p50 ≤ {target}",
               f"{step_s.p50:.1f} ms (p99 {step_s.p99:.1f})", verdict(ok_step))]
    for label, res in children.items():
        s = summarize(res["step_cpu"])
        t_rows.append((f"(experiment) (2) with {label}", f"{s.p50:.1f} ms (p99 {s.p99:.1f})",
                       verdict(s.p50 <= TARGET_P50_MS)))
    tables.append(print_table("Reranker target", ["target", "measured", "verdict"], t_rows))

    f_cpu, r_cpu = (summarize(x) for x in search["cpu"])
    summary = (f"cpu head: head only p50 {head_s.p50:.1f} ms, rerank step p50 {step_s.p50:.1f} ms "
               f"(target ≤ {target}: {verdict(ok_head)} / {verdict(ok_step)}); "
               f"Engine.search p50 {f_cpu.p50:.1f} ms first stage → {r_cpu.p50:.1f} ms reranked "
               f"({r_cpu.p50 / f_cpu.p50:.2f}×)")
    if args.paper:
        f_pp, r_pp = (summarize(x) for x in search["paper"])
        summary += (f"; paper head: head only p50 {summarize(lat['head_paper']).p50:.0f} ms, "
                    f"search {r_pp.p50 / f_pp.p50:.0f}× the first stage")
    print(summary + ".", flush=True)
    built = ("cached" if build["cached"]
             else f"built this run: {build['sql_insert']:.0f} s SQL + {build['faiss_build']:.0f} s FAISS")
    print(
        "\nWhat this measures: wall-clock ms per query, one query at a time, torch on "
        f"{THREADS} threads, after a warm-up. (1) is the head alone on seeded random inputs. (2) is what "
        "search adds to rerank: the query's unit tokens embedded by the lite text tower, the candidates' "
        "vectors and region tokens read from SQLite, and the head. (3) is the whole Engine.search "
        f"(k=10). Its first stage is text encoding, Flat FAISS over {args.n:,} vectors plus the caption space, "
        f"and SQL. Index: {args.n:,} synthetic images, 10 % captioned, {encoder.image_tokens} random region "
        f"tokens each ({built}). The heads have random weights, which do not change latency. Queries: "
        f"{len(queries)} sentences in {', '.join(LANGS)}. The paper head runs on {paper_reps} of the "
        "repetitions, so its p99 is close to its maximum.",
        flush=True,
    )
    return {"tables": tables, "head_p50": head_s.p50, "step_p50": step_s.p50}


if __name__ == "__main__":
    main()
