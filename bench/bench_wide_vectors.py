#!/usr/bin/env python3
"""Wide FLAME vectors (H = 640 / 5120): FAISS factories, recall@10 vs exact fp32, bytes per photo.

Usage::

    .venv/bin/python bench/bench_wide_vectors.py [--quick] [--hnsw-all] [--no-real]
        [--n640 20000 100000] [--n5120 20000 50000] [--queries 256] [--timed 100]
        [--pca-train 10000] [--only Flat SQfp16 PCA ...] [--out results/bench_wide_vectors.json]

The default run takes 4-8 min on 2 cores (more while other jobs run) and ~5 GB of RAM at its peak.

Question (issue 13): FLAME's text tower gives H = 5120 (Mistral-Nemo, FLAME's
released model) or 640 (the packaged Gemma-3-270M). The store keeps every
vector as float16; the FAISS index of a space is built from a factory string
(``VectorIndex.create(dim, factory)``). Which factory keeps recall@10 against
exact fp32 search while storing wide vectors compactly?

Protocol:

* Data. Synthetic, seeded, shaped like embeddings: a global mean direction
  (the "cone" of real embeddings), 300 cluster centres of Zipf-like
  popularity, 10 sub-clusters per cluster and per-point noise, each part with
  a power-law spectrum (variance of latent axis j ~ j**-a) in a shared random
  orthonormal basis (two rounds of sign flips, a permutation and an orthonormal
  DCT), then L2-normalised. Queries are held-out points of the same
  distribution plus a further perturbation ("another view" of the same thing).
  The smaller n of a dim is a prefix of the larger, with the same queries.
  Optional real row: Gemma-3-270M FLAME hidden states (640-d, the SHORT
  prompt's facet token at the last stored block) cached by
  ``bench/flame_conse_quality.py`` under ``.cache/flame-quality/`` (skipped when
  absent), L2-normalised as the product does ("raw") and mean-centred first
  ("centred"); 256 of them are held out as queries.
* Every index gets the float16-rounded vectors, as the product feeds FAISS
  from its float16 store; the reference is exact search over the unrounded
  float32 vectors. recall@10 = |top-10 ∩ exact top-10| / 10, mean over the
  queries (float32, not rounded).
* Indexes are built through :class:`frozenlens.retriever.VectorIndex` (one
  ``add`` of all vectors; trainable factories train on at most 1,024 sampled
  vectors, as the product does; a PCA to more than 1,024 dimensions cannot
  train on those and the row says why). To explain the trainable rows, SQ8 and
  every PCA variant are also built in raw FAISS inside an ``IndexIDMap2`` like
  the product's, trained on ``--pca-train`` vectors: SQ8 on them directly, the
  PCA variants from one PCA per data set (numpy ``eigh``, a ``PCAMatrix`` cut to
  each d_out) with the SQ8 after it trained on them too. Those rows say
  ``faiss`` in the "via" column.
* Bytes per vector: (size of the file ``VectorIndex.save`` writes - size of
  the same index emptied) / n; raw rows the same with ``faiss.serialize_index``.
  The fixed part (PCA matrices, SQ ranges) is reported as "fixed MB". Bytes
  per photo adds the store's float16 blobs: semantic + visual + one caption
  vector + 4 region tokens = 7 x 2H bytes, plus the semantic and visual FAISS
  files (the caption space's file adds one more vector per caption).
* HNSW32 runs at the smallest n of each dim only (``--hnsw-all``: every n),
  HNSW32_SQfp16 at every n: building the graphs is the slow part here.
* Latency: one query at a time under ``threads(1)`` (as the engine searches),
  rounds interleaving all indexes of a data set; the median over ``--timed``
  queries and its ratio to Flat's in the same run (this machine is noisy: read
  the ratios, not the ms). Build time includes training.

Writes ``--out`` (JSON) and prints Markdown tables to stdout (progress on stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from scipy.fft import dct

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from common import log as _log  # noqa: E402
from common import markdown_table  # noqa: E402
from frozenlens.retriever import VectorIndex, threads  # noqa: E402

REAL_CACHE = REPO / ".cache" / "flame-quality"
_START = time.perf_counter()


def log(msg: str) -> None:
    _log(f"{time.perf_counter() - _START:6.0f} s  {msg}")

K = 10
#: float16 blobs the store keeps per photo, in vectors of H: semantic, visual, one caption, 4 region tokens
STORE_VECTORS_PER_PHOTO = 7

# synthetic generator: variance shares (sum 1) and spectrum exponents of its parts
MEAN_SHARE = 0.25
CLUSTERS, CLUSTER_SHARE, CLUSTER_ALPHA = 300, 0.30, 1.0
SUBS, SUB_SHARE, SUB_ALPHA = 10, 0.20, 0.8
NOISE_SHARE, NOISE_ALPHA = 0.25, 0.5
QUERY_SHARE = 0.10  # extra perturbation of a query, same spectrum as the noise


# ------------------------------------------------------------------- data
def _spectrum(d: int, alpha: float, share: float) -> np.ndarray:
    """float32 (d,) per-axis standard deviations with variance ~ j**-alpha summing to ``share``."""
    var = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    return np.sqrt(var / var.sum() * share).astype(np.float32)


class Rotation:
    """A random orthonormal map of R^d: (sign flips, permutation, orthonormal DCT-II) twice."""

    def __init__(self, d: int, rng: np.random.Generator) -> None:
        self.steps = [(rng.choice(np.array([-1.0, 1.0], np.float32), d), rng.permutation(d)) for _ in range(2)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for signs, perm in self.steps:
            x = dct((x * signs)[:, perm], type=2, norm="ortho", axis=1, workers=2)
        return x.astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def synthetic(d: int, n: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, d) database and (n_queries, d) queries, L2-normalised (module doc)."""
    rng = np.random.default_rng([seed, d])
    rot = Rotation(d, rng)
    mean = rng.standard_normal(d, dtype=np.float32)
    mean *= np.sqrt(MEAN_SHARE) / np.linalg.norm(mean)
    centres = rng.standard_normal((CLUSTERS, d), dtype=np.float32) * _spectrum(d, CLUSTER_ALPHA, CLUSTER_SHARE)
    subs = rng.standard_normal((CLUSTERS * SUBS, d), dtype=np.float32) * _spectrum(d, SUB_ALPHA, SUB_SHARE)
    noise_sd = _spectrum(d, NOISE_ALPHA, NOISE_SHARE)
    popularity = rng.lognormal(0.0, 1.0, CLUSTERS)
    popularity /= popularity.sum()
    total = n + n_queries
    cluster = rng.choice(CLUSTERS, total, p=popularity)
    sub = cluster * SUBS + rng.integers(0, SUBS, total)
    out = np.empty((total, d), np.float32)
    for lo in range(0, total, 4096):
        hi = min(total, lo + 4096)
        latent = mean + centres[cluster[lo:hi]] + subs[sub[lo:hi]]
        latent += rng.standard_normal((hi - lo, d), dtype=np.float32) * noise_sd
        if hi > n:  # held-out points become queries: perturb them further
            extra = rng.standard_normal((hi - lo, d), dtype=np.float32) * _spectrum(d, NOISE_ALPHA, QUERY_SHARE)
            latent[max(0, n - lo):] += extra[max(0, n - lo):]
        out[lo:hi] = _normalise(rot(latent))
    return out[:n], out[n:]


def real_gemma(n_queries: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """The cached Gemma-3-270M hidden states, as 'raw' and 'centred' data sets ({} if none cached)."""
    if not REAL_CACHE.is_dir():
        return {}
    parts, names = [], []
    for path in sorted(REAL_CACHE.glob("gemma-*.npz")):
        if path.name.endswith(".partial.npz") or ".tmp" in path.name:
            continue
        try:
            with np.load(path, allow_pickle=False) as z:
                h = z["hidden"] if "hidden" in z.files else None
        except (OSError, ValueError, KeyError) as exc:
            log(f"skipping {path.name}: {exc}")
            continue
        if h is None or h.ndim != 3 or h.shape[2] != 640 or h.shape[1] < 2:
            continue  # single-block files hold another block than the multi-block ones' last
        parts.append(h[:, -1, :])
        names.append(f"{path.name} {h.shape[0]}")
    if not parts:
        return {}
    x = np.concatenate(parts).astype(np.float32)
    x = x[np.linalg.norm(x, axis=1) > 0]
    x = np.unique(x, axis=0)  # the quick run's captions repeat in the full one
    x = x[np.random.default_rng(seed).permutation(len(x))]
    if len(x) < 4 * n_queries:
        return {}
    source = ", ".join(names)
    raw = _normalise(x)
    centred = _normalise(x - x[n_queries:].mean(axis=0))  # mean of the database part only
    return {"real Gemma raw": (raw[n_queries:], raw[:n_queries], source),
            "real Gemma centred": (centred[n_queries:], centred[:n_queries], source)}


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 inner-product top-(k+1) ids and scores, best first."""
    s = q @ x.T
    top = np.argpartition(-s, k + 1, axis=1)[:, : k + 1]
    ts = np.take_along_axis(s, top, axis=1)
    order = np.argsort(-ts, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(ts, order, axis=1)


def describe(x: np.ndarray, gt_scores: np.ndarray, pca: RawPca | None, seed: int) -> dict[str, float]:
    """What the data looks like: cosines, the 10th/11th gap, variance in the top d/4 and d/2 PCs
    (of the PCA's training vectors)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(x), (2, 2000))
    d = x.shape[1]
    sv2, total = (pca.eigenvalues.astype(np.float64), pca.total_variance) if pca else (np.full(d, np.nan), 1.0)
    return {
        "cos_random_pair": float(np.mean(np.sum(x[a] * x[b], axis=1))),
        "cos_query_top1": float(gt_scores[:, 0].mean()),
        "cos_query_top10": float(gt_scores[:, K - 1].mean()),
        "gap_10th_11th": float(np.median(gt_scores[:, K - 1] - gt_scores[:, K])),
        "var_top_d4": float(sv2[: d // 4].sum() / total),
        "var_top_d2": float(sv2[: d // 2].sum() / total),
    }


# ------------------------------------------------------------------- indexes
@dataclass
class Row:
    data: str
    dim: int
    n: int
    factory: str
    via: str
    build_s: float = float("nan")
    index_bytes_per_vector: float = float("nan")  # (file - fixed) / n
    fixed_bytes: float = float("nan")  # the file of the trained, empty index
    recall10: float = float("nan")
    recall1: float = float("nan")
    query_ms: float = float("nan")
    query_ratio: float = float("nan")
    error: str | None = None
    searcher: Any = field(default=None, repr=False)


def factories(d: int) -> list[str]:
    return ["Flat", "SQfp16", "SQ8", f"PCA{d // 2},SQ8", f"PCA{d // 4},Flat", f"PCA{d // 4},SQ8",
            "HNSW32", "HNSW32_SQfp16"]


def saved_size(vi: VectorIndex, tmp: Path) -> int:
    path = tmp / "index.flv"
    vi.save(path)
    size = path.stat().st_size
    path.unlink()
    return size


def wanted(factory: str, only: list[str] | None) -> bool:
    """``--only``: factory strings, or ``PCA`` for every PCA variant."""
    return only is None or factory in only or (factory.startswith("PCA") and "PCA" in only)


def build_vector_index(d: int, factory: str, x16: np.ndarray, ids: np.ndarray, tmp: Path) -> tuple[Any, float, int]:
    """A VectorIndex of ``factory`` holding ``x16``: (index, build seconds, file bytes)."""
    vi = VectorIndex.create(d, factory, use_gpu=False)
    t0 = time.perf_counter()
    vi.add(ids, x16)
    build = time.perf_counter() - t0
    if not vi.is_trained:
        raise RuntimeError(f"{factory} did not train")
    return vi, build, saved_size(vi, tmp)


class RawPca:
    """A PCA of ``train`` (numpy ``eigh``, its top ``max_out`` axes) cut to any d_out as a FAISS ``PCAMatrix``.

    Computed in numpy because ``PCAMatrix.train`` takes ~7x longer at d = 5120
    (170 s vs 24 s here); the matrices are the same up to the signs of the axes.
    """

    def __init__(self, train: np.ndarray, max_out: int) -> None:
        t0 = time.perf_counter()
        self.mean = train.mean(axis=0, dtype=np.float64).astype(np.float32)
        centred = train - self.mean
        cov = (centred.T @ centred) / len(train)
        values, vectors = np.linalg.eigh(cov)
        top = np.argsort(values)[::-1][:max_out]
        self.eigenvalues = np.ascontiguousarray(values[top], dtype=np.float32)
        self.total_variance = float(np.trace(cov, dtype=np.float64))
        self.axes = np.ascontiguousarray(vectors[:, top].T, dtype=np.float32)  # (max_out, d), rows = axes
        self.train_s = time.perf_counter() - t0
        self.n_train = len(train)

    def cut(self, d_out: int) -> faiss.PCAMatrix:
        d = self.axes.shape[1]
        p = faiss.PCAMatrix(d, d_out)
        faiss.copy_array_to_vector(self.mean, p.mean)
        faiss.copy_array_to_vector(self.eigenvalues, p.eigenvalues)
        faiss.copy_array_to_vector(self.axes[:d_out].ravel(), p.PCAMat)
        p.is_trained = True
        p.prepare_Ab()
        return p


@dataclass
class RawIndex:
    """A raw FAISS index and the SWIG objects it points into (kept alive with it)."""

    index: Any
    parts: tuple[Any, ...]


def build_raw(pca: RawPca, factory: str, x16: np.ndarray, ids: np.ndarray, n_train: int,
              ) -> tuple[RawIndex, float, int, int]:
    """``factory`` in raw FAISS inside an ``IndexIDMap2``: (index, build s, bytes, bytes when empty).

    ``PCA{k},<rest>`` takes the shared PCA; the rest (or the whole factory)
    trains on ``n_train`` of the vectors.
    """
    t0 = time.perf_counter()
    sample = x16[np.sort(np.random.default_rng(0).choice(len(x16), min(len(x16), n_train), replace=False))]
    parts: tuple[Any, ...]
    if factory.startswith("PCA"):
        head, rest = factory.split(",", 1)
        transform = pca.cut(int(head[3:]))
        inner = faiss.index_factory(transform.d_out, rest, faiss.METRIC_INNER_PRODUCT)
        if not inner.is_trained:
            inner.train(transform.apply(sample))
        base = faiss.IndexPreTransform(transform, inner)
        base.is_trained = True
        parts = (transform, inner, base)
    else:
        base = faiss.index_factory(x16.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        if not base.is_trained:
            base.train(sample)
        parts = (base,)
    index = faiss.IndexIDMap2(base)
    empty = faiss.serialize_index(index).size
    index.add_with_ids(x16, ids)
    build = time.perf_counter() - t0
    return RawIndex(index, parts), build, faiss.serialize_index(index).size, empty


def search(searcher: Any, q: np.ndarray, k: int) -> np.ndarray:
    if isinstance(searcher, VectorIndex):
        return searcher.search(q, k)[1]
    return searcher.index.search(q, k)[1]


def recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k].tolist()) & set(t[:k].tolist())) / k for f, t in zip(found, truth, strict=True)]))


def time_queries(rows: list[Row], q: np.ndarray, timed: int, rounds: int = 5) -> None:
    """Median single-query ms per row, the rows interleaved in ``rounds`` (order rotated each round)."""
    live = [r for r in rows if r.searcher is not None]
    samples: dict[int, list[float]] = {id(r): [] for r in live}
    per = max(1, timed // rounds)
    with threads(1):
        for r in live:  # warm-up
            search(r.searcher, q[:1], K)
        for rnd in range(rounds):
            batch = q[(rnd * per) % len(q):][:per]
            order = live[rnd % len(live):] + live[: rnd % len(live)]
            for r in order:
                for v in batch:
                    t0 = time.perf_counter()
                    search(r.searcher, v[None, :], K)
                    samples[id(r)].append((time.perf_counter() - t0) * 1000)
    flat = next((r for r in live if r.factory == "Flat" and r.via == "VectorIndex"), None)
    for r in live:
        r.query_ms = statistics.median(samples[id(r)])
    for r in live:
        r.query_ratio = r.query_ms / flat.query_ms if flat else float("nan")


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1]
    return text.split("failed: ", 1)[-1][:120]


def run_dataset(name: str, x: np.ndarray, q: np.ndarray, *, hnsw: bool, pca: RawPca | None, timed: int,
                tmp: Path, only: list[str] | None, failed: dict[tuple[int, str], str],
                ) -> tuple[list[Row], dict[str, float]]:
    """All factories on one data set. ``failed``: (dim, factory) -> why VectorIndex could not train it;
    training sees 1,024 vectors whatever n is, so a failure is not retried at a larger n of the same dim."""
    n, d = x.shape
    log(f"{name}: n={n:,} d={d}")
    truth, truth_scores = exact_top(x, q, K)
    desc = describe(x, truth_scores, pca, seed=1)
    sizes: dict[int, int] = {}
    x16 = x.astype(np.float16).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    rows: list[Row] = []
    for f in factories(d):
        if (f == "HNSW32" and not hnsw) or not wanted(f, only):
            continue
        row = Row(name, d, n, f, "VectorIndex")
        rows.append(row)
        if (d, f) in failed:
            row.error = failed[d, f]
        else:
            try:
                row.searcher, row.build_s, sizes[id(row)] = build_vector_index(d, f, x16, ids, tmp)
                log(f"  {f}: built in {row.build_s:.1f} s")
            except RuntimeError as exc:
                row.error = failed[d, f] = _reason(exc)
                log(f"  {f} via VectorIndex failed: {row.error}")
        if pca is not None and (f.startswith("PCA") or f == "SQ8"):  # the same trained on more vectors (module doc)
            what = "PCA" if f.startswith("PCA") else "SQ8"
            raw = Row(name, d, n, f, f"faiss, {what} trained on {min(n, pca.n_train):,}")
            raw.searcher, raw.build_s, size, raw.fixed_bytes = build_raw(pca, f, x16, ids, pca.n_train)
            raw.index_bytes_per_vector = (size - raw.fixed_bytes) / n
            rows.append(raw)
            log(f"  {f} (raw faiss): built in {raw.build_s:.1f} s")
    for r in rows:
        if r.searcher is not None:
            found = search(r.searcher, q, K)
            r.recall10 = recall(found, truth, K)
            r.recall1 = recall(found, truth, 1)
    time_queries(rows, q, timed)
    for r in rows:
        if isinstance(r.searcher, VectorIndex):  # the fixed part: the same index, emptied
            r.searcher.remove(ids)
            r.fixed_bytes = saved_size(r.searcher, tmp)
            r.index_bytes_per_vector = (sizes[id(r)] - r.fixed_bytes) / n
        r.searcher = None
    gc.collect()
    return rows, desc


# ------------------------------------------------------------------- report
def photo_bytes(rows: list[Row]) -> list[list[object]]:
    """Bytes per photo: the store's float16 blobs + semantic and visual FAISS files.

    Per H and factory, the synthetic row of the largest n it ran at; the fixed
    part of a file (PCA matrices, SQ ranges) is left out (see "fixed MB").
    """
    out: list[list[object]] = []
    synthetic = [r for r in rows if r.data.startswith("synthetic") and not np.isnan(r.index_bytes_per_vector)]
    for d in sorted({r.dim for r in synthetic}):
        store = STORE_VECTORS_PER_PHOTO * 2 * d
        flat = 4 * d + 8  # float32 + int64 id, as the Flat rows measure
        best: dict[tuple[str, str], Row] = {}
        for r in synthetic:
            if r.dim == d and ((r.factory, r.via) not in best or r.n > best[r.factory, r.via].n):
                best[r.factory, r.via] = r
        for r in best.values():
            faiss_b = 2 * r.index_bytes_per_vector
            total = store + faiss_b
            out.append([d, r.factory, r.via, r.n, store, round(faiss_b), round(total),
                        f"{total / (store + 2 * flat):.2f}×", f"{total * 1e6 / 2**30:.1f}"])
    return out


def _json_number(v: object) -> object:
    """NaN (not measured) as null: strict JSON has no NaN."""
    return None if isinstance(v, float) and np.isnan(v) else v


def machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return (f"{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, {len(os.sched_getaffinity(0))} cores ({cpu}), "
            f"faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), numpy {np.__version__}, "
            f"load average {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n640", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--n5120", type=int, nargs="+", default=[20_000, 50_000])
    ap.add_argument("--queries", type=int, default=256, help="queries for recall (>= 200)")
    ap.add_argument("--timed", type=int, default=100, help="single queries timed per index")
    ap.add_argument("--pca-train", type=int, default=10_000, help="vectors the raw-FAISS PCA trains on")
    ap.add_argument("--hnsw-all", action="store_true",
                    help="HNSW32 at every n (default: the smallest n per dim; HNSW32_SQfp16 runs at every n)")
    ap.add_argument("--no-real", action="store_true", help="skip the cached Gemma-3-270M vectors")
    ap.add_argument("--only", nargs="+", help="factories to run (PCA = all PCA variants; default: all)")
    ap.add_argument("--quick", action="store_true", help="n = 5,000 per dim (a smoke test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench_wide_vectors.json")
    args = ap.parse_args()
    if args.quick:
        args.n640, args.n5120 = [5_000], [5_000]
    need_pca = wanted("PCA", args.only) or wanted("SQ8", args.only)
    failed: dict[tuple[int, str], str] = {}
    started = time.perf_counter()
    header = machine()
    log(header)
    rows: list[Row] = []
    described: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-wide-") as tmpdir:
        tmp = Path(tmpdir)
        if not args.no_real:
            for name, (x, q, source) in real_gemma(args.queries, args.seed).items():
                pca = RawPca(x[: args.pca_train], x.shape[1] // 2) if need_pca else None
                got, desc = run_dataset(name, x, q, hnsw=True, pca=pca, timed=args.timed, tmp=tmp, only=args.only,
                                        failed=failed)
                rows += got
                described[name] = {**desc, "n": len(x), "dim": x.shape[1], "source": source}
        for d, sizes in ((640, sorted(args.n640)), (5120, sorted(args.n5120))):
            t0 = time.perf_counter()
            x_all, q = synthetic(d, max(sizes), args.queries, args.seed)
            log(f"synthetic d={d}: {len(x_all):,} vectors in {time.perf_counter() - t0:.1f} s")
            pca = RawPca(x_all[: args.pca_train], d // 2) if need_pca else None
            if pca:
                log(f"  PCA {d}x{d} trained on {pca.n_train:,} in {pca.train_s:.1f} s")
            for n in sizes:
                name = f"synthetic {d}"
                got, desc = run_dataset(name, x_all[:n], q, hnsw=args.hnsw_all or n == sizes[0], pca=pca,
                                        timed=args.timed, tmp=tmp, only=args.only,
                                        failed=failed)
                rows += got
                described[f"{name} n={n}"] = {**desc, "n": n, "dim": d}
            del x_all, pca
            gc.collect()
    elapsed = time.perf_counter() - started

    text = [f"Machine: {header}; wall time {elapsed / 60:.1f} min\n"]
    text.append("### Data\n\n" + markdown_table(
        ["data set", "n", "dim", "cos random pair", "cos query-top1", "cos query-10th", "median gap 10th-11th",
         "variance in top d/4 PCs", "top d/2 PCs"],
        [[k, v["n"], v["dim"], v["cos_random_pair"], v["cos_query_top1"], v["cos_query_top10"],
          f"{v['gap_10th_11th']:.4f}", f"{v['var_top_d4']:.2f}", f"{v['var_top_d2']:.2f}"]
         for k, v in described.items()]))
    text.append(f"### Recall@10 vs exact fp32, index bytes, build and query time ({args.queries} queries)\n\n"
                + markdown_table(
        ["data", "n", "factory", "via", "recall@10", "recall@1", "index B/vector", "fixed MB", "build s",
         "query ms (batch 1)", "÷ Flat"],
        [[r.data, r.n, r.factory, r.via, "fails: " + r.error, "n/a", "n/a", "n/a", "n/a", "n/a", "n/a"]
         if r.error is not None else
         [r.data, r.n, r.factory, r.via, f"{r.recall10:.4f}", f"{r.recall1:.3f}", round(r.index_bytes_per_vector),
          f"{r.fixed_bytes / 1e6:.2f}", r.build_s, r.query_ms, f"{r.query_ratio:.2f}×"] for r in rows]))
    text.append("### Bytes per photo (store: 7 float16 vectors of H; FAISS: semantic + visual)\n\n" + markdown_table(
        ["H", "factory", "via", "measured at n", "store B", "FAISS B", "total B", "÷ Flat",
         "GiB per 1M photos"], photo_bytes(rows)))
    print("\n\n".join(text))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "question": "issue 13: compact storage of wide FLAME vectors: recall@10 vs exact fp32 and bytes per photo",
        "machine": header, "wall_s": round(elapsed, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "generator": {"mean_share": MEAN_SHARE, "clusters": [CLUSTERS, CLUSTER_SHARE, CLUSTER_ALPHA],
                      "subclusters": [SUBS, SUB_SHARE, SUB_ALPHA], "noise": [NOISE_SHARE, NOISE_ALPHA],
                      "query_perturbation_share": QUERY_SHARE},
        "data": {name: {k: _json_number(v) for k, v in desc.items()} for name, desc in described.items()},
        "rows": [{k: _json_number(v) for k, v in asdict(r).items() if k != "searcher"} for r in rows],
        "photo_bytes": [dict(zip(["H", "factory", "via", "n", "store_B", "faiss_B", "total_B", "ratio_flat",
                                  "GiB_per_1M"],
                                 r, strict=True)) for r in photo_bytes(rows)],
    }, indent=1, allow_nan=False) + "\n")
    log(f"wrote {args.out} in {elapsed:.0f} s")


if __name__ == "__main__":
    main()
