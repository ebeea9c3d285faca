#!/usr/bin/env python3
"""Issue 14 §4/§5 on a GPU machine: FAISS at 1 M vectors on GPU vs CPU, and bf16 ViT-B/32 images/s.

One prepared script for a machine with an NVIDIA GPU and the ``gpu`` extra installed (README,
"Scaling up: FAISS on a GPU"; docs/benchmarks.md, "The prepared GPU check"). Budget: under 8
minutes on one H200 with the default sizes. Without a GPU each part is skipped with a message
(``--smoke`` runs both parts at tiny sizes on the CPU instead, standing in for the GPU, so the
script is proven to run; ``tests/unit/test_gpu_check.py`` runs it).

**Part 1, FAISS** (``--n`` 1 M × ``--dim`` 512, the seeded embedding-shaped generator of
``bench/bench_wide_vectors.py`` as in ``bench/bench_index_types.py``, rounded to float16 as the
product stores vectors). For ``Flat`` and the product's IVF-PQ factory without the re-ranking
suffix (``retriever.choice.ivfpq_factory`` minus ``Refine(SQfp16)``: the re-ranked tier is
searched on the CPU by design, ``VectorIndex._gpu_searcher``):

- ``product``: built once through ``retriever.tuning.build`` (on the CPU: the product trains and
  adds there), saved, then loaded twice with ``VectorIndex.load(use_gpu=False)`` and
  ``use_gpu=True``; the first GPU search copies the index to the GPU (``gpu_copy_s``);
- ``native``: the same factory built on the GPU with ``faiss.index_cpu_to_gpu`` of the empty
  index, trained on a sample of the product's size and filled there (``build_s``);
- ``CAGRA``: only when ``faiss`` has ``GpuIndexCagra`` (the ``faiss-gpu-cuvs`` wheels).

For each: recall@10 against exact search, recall@10 of the GPU results against the CPU index's
results (how exact the GPU copy is), QPS at batch 1 (``--timed`` queries one by one; the CPU on
one thread, as the engine searches) and at batch 256. IVF indexes are searched at the product's
default ``nprobe`` on both sides (no tuning: the same knob, so the two are comparable).

**Part 2, the image encoder**: ``openclip`` ViT-B/32 with random weights (the forward cost does not
depend on the weight values; no download) wrapped by the product's ``OpenClipEncoder`` with
``device="cuda", precision="bf16"``; (a) the encoder alone, ``embed_prepared`` on prepared
batches (bf16 and fp32), and (b) the product's indexer: ``Engine.index`` over a folder of
generated JPEGs, decoding in its CPU thread pool a few batches ahead of the forward pass on the
GPU; images/s = encoded / seconds of the run (the SQLite writes and the FAISS add included).

Output: a Markdown table per part on stdout, JSON to ``--out`` (default ``$OUT/gpu_check.json``
when ``$OUT`` is set, else ``results/gpu_check.json``)::

    PYTHONPATH=src python bench/gpu_check.py                 # on the GPU machine
    PYTHONPATH=src python bench/gpu_check.py --smoke --out /tmp/g.json   # anywhere, ~15 s
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from bench_index_types import K, embedding_data  # noqa: E402
from common import jpeg_folder, log, markdown_table  # noqa: E402
from frozenlens.retriever import VectorIndex, threads  # noqa: E402
from frozenlens.retriever.choice import REFINE, ivfpq_factory  # noqa: E402
from frozenlens.retriever.tuning import build, recall_at_k  # noqa: E402

#: sizes of --smoke: small enough for a unit test on 2 CPU cores
SMOKE = {"n": 10_000, "dim": 64, "queries": 32, "timed": 20, "images": 4, "image_w": 320, "image_h": 240,
         "encode_batch": 2, "encode_repeats": 1, "model": "ViT-S-32", "ivf_factory": "IVF64,PQ8"}


def gpu_count() -> int:
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def qps(search: Callable[[np.ndarray], object], q: np.ndarray, batch: int, count: int, *, one_thread: bool) -> float:
    """Queries per second: ``count`` queries one by one (batch 1) or one call of ``batch`` queries."""
    if batch == 1:
        def run() -> float:
            search(q[:2])
            seconds, _ = timed(lambda: [search(q[i : i + 1]) for i in range(count)])
            return count / seconds

        if one_thread:
            with threads(1):
                return run()
        return run()
    search(q[:batch])
    seconds, _ = timed(lambda: search(q[:batch]))
    return batch / seconds


# ------------------------------------------------------------------ part 1: FAISS
def faiss_part(args: argparse.Namespace, gpu: bool, tmp: Path) -> list[dict[str, object]]:
    t0 = time.perf_counter()
    x, q, _, chunks, truth = embedding_data(args.dim, args.n, args.queries)
    log(f"faiss: {args.n} x {args.dim} data and exact top-{K} of {len(q)} queries in {time.perf_counter() - t0:.0f} s")
    res = faiss.StandardGpuResources() if gpu else None
    rows: list[dict[str, object]] = []
    ivf = args.ivf_factory or ivfpq_factory(args.n, args.dim).removesuffix(REFINE)
    # the GPU-native IVF-PQ before the product's CPU build (the slowest step), in case --budget-s runs out
    plan = (("Flat", "Flat", product_row), ("Flat", "Flat", native_row), ("IVF-PQ", ivf, native_row),
            ("IVF-PQ", ivf, product_row))
    for name, factory, fn in plan:
        how = "product" if fn is product_row else "native"
        row: dict[str, object] = {"type": name, "factory": factory, "path": how, "n": args.n}
        if time.perf_counter() - args.started > args.budget_s:
            row["skipped"] = f"over the --budget-s {args.budget_s} s"
            rows.append(row)
            continue
        try:
            row.update(fn(factory, args, x, q, truth, chunks, gpu, res, tmp))
        except Exception as exc:  # noqa: BLE001 - one failing path must not lose the others' figures
            row["error"] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
        log(f"  {row}")
        rows.append(row)
    if gpu:
        row = {"type": "CAGRA", "factory": "GpuIndexCagra", "path": "native", "n": args.n}
        if not hasattr(faiss, "GpuIndexCagra"):
            row["skipped"] = "this faiss has no GpuIndexCagra (CAGRA needs the faiss-gpu-cuvs wheels)"
        elif time.perf_counter() - args.started > args.budget_s:
            row["skipped"] = f"over the --budget-s {args.budget_s} s"
        else:
            try:
                row.update(cagra_row(args, x, q, truth, res))
            except Exception as exc:  # noqa: BLE001 - reported in its row
                row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {row}")
        rows.append(row)
    return rows


def product_row(factory: str, args: argparse.Namespace, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
                chunks: Callable[[], object], gpu: bool, res: object, tmp: Path) -> dict[str, object]:
    """Built by ``retriever.tuning.build``, searched by ``VectorIndex`` loaded with and without ``use_gpu``."""
    build_s, vi = timed(lambda: build(factory, args.dim, chunks))
    path = tmp / "product.faiss"
    vi.save(path)  # type: ignore[attr-defined]
    del vi
    cpu = VectorIndex.load(path, use_gpu=False)
    # without a GPU (--smoke) a second CPU copy stands in, so every line below runs
    dev = VectorIndex.load(path, use_gpu=gpu)
    path.unlink()
    copy_s, _ = timed(lambda: dev.search(q[:1], K))
    found_cpu = cpu.search(q, K)[1]
    found_dev = dev.search(q, K)[1]
    row: dict[str, object] = {
        "build_s": round(build_s, 1), "trained": cpu.is_trained, "nprobe": cpu.nprobe,
        "on_gpu": dev.on_gpu, "gpu_copy_s": round(copy_s, 2) if gpu else None,
        "recall_cpu": round(recall_at_k(found_cpu, truth), 4),
        "recall_gpu": round(recall_at_k(found_dev, truth), 4),
        "gpu_vs_cpu": round(recall_at_k(found_dev, found_cpu), 4),
        "qps1_cpu": round(qps(lambda b: cpu.search(b, K), q, 1, args.timed, one_thread=True), 1),
        "qps256_cpu": round(qps(lambda b: cpu.search(b, K), q, 256, args.timed, one_thread=False), 1),
        "qps1_gpu": round(qps(lambda b: dev.search(b, K), q, 1, args.timed, one_thread=not gpu), 1),
        "qps256_gpu": round(qps(lambda b: dev.search(b, K), q, 256, args.timed, one_thread=False), 1),
    }
    if gpu and not dev.on_gpu:
        row["note"] = "VectorIndex stayed on the CPU (see the warning logged above)"
    return row


def native_row(factory: str, args: argparse.Namespace, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
               chunks: Callable[[], object], gpu: bool, res: object, tmp: Path) -> dict[str, object]:
    """The same factory built and searched on the GPU by FAISS itself (``index_cpu_to_gpu``).

    An OPQ prefix is left out here: FAISS trains it on the CPU only (the product row has it).
    Default cloner options, as the product's replica: float32 PQ lookup tables (FAISS needs
    float16 ones only above 16,384 = sub-quantizers x 2^bits; PQ64 x 8 bits is exactly that).
    """
    factory = ",".join(part for part in factory.split(",") if not part.startswith("OPQ"))
    empty = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.try_extract_index_ivf(empty)
    ivf = faiss.downcast_index(ivf) if ivf is not None else None
    if ivf is not None:
        # set before the copy (a GPU index is no IndexIVF to reach later); the copies carry it
        ivf.nprobe = VectorIndex.create(args.dim, factory, use_gpu=False).nprobe
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False  # as the product does: unused, and it triples PQ training
    sample_size = VectorIndex.create(args.dim, factory, use_gpu=False).train_sample_size
    sample = x[np.sort(np.random.default_rng(0).choice(args.n, min(args.n, sample_size), replace=False))]

    # without a GPU (--smoke) a CPU clone stands in for the GPU copy, so every line below runs
    def to_device(index: faiss.Index) -> faiss.Index:
        return faiss.index_cpu_to_gpu(res, 0, index) if gpu else faiss.clone_index(index)

    def make() -> faiss.Index:
        g = to_device(empty)
        if not g.is_trained:
            g.train(sample)
        g.add(x)
        return g

    build_s, g = timed(make)
    found = g.search(q, K)[1]  # type: ignore[attr-defined]
    cpu = faiss.index_gpu_to_cpu(g) if gpu else faiss.clone_index(g)
    found_cpu = cpu.search(q, K)[1]
    return {
        "factory": factory, "build_s": round(build_s, 1), "on_gpu": gpu,
        "nprobe": getattr(faiss.try_extract_index_ivf(cpu), "nprobe", None),
        "recall_cpu": round(recall_at_k(found_cpu, truth), 4),
        "recall_gpu": round(recall_at_k(found, truth), 4),
        "gpu_vs_cpu": round(recall_at_k(found, found_cpu), 4),
        "qps1_gpu": round(qps(lambda b: g.search(b, K), q, 1, args.timed, one_thread=False), 1),  # type: ignore[attr-defined]
        "qps256_gpu": round(qps(lambda b: g.search(b, K), q, 256, args.timed, one_thread=False), 1),  # type: ignore[attr-defined]
    }


def cagra_row(args: argparse.Namespace, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
              res: object) -> dict[str, object]:
    cfg = faiss.GpuIndexCagraConfig()
    cfg.graph_degree, cfg.intermediate_graph_degree = 32, 64
    index = faiss.GpuIndexCagra(res, args.dim, faiss.METRIC_INNER_PRODUCT, cfg)
    build_s, _ = timed(lambda: index.train(x))
    found = index.search(q, K)[1]
    return {"build_s": round(build_s, 1), "on_gpu": True, "recall_gpu": round(recall_at_k(found, truth), 4),
            "qps1_gpu": round(qps(lambda b: index.search(b, K), q, 1, args.timed, one_thread=False), 1),
            "qps256_gpu": round(qps(lambda b: index.search(b, K), q, 256, args.timed, one_thread=False), 1)}


# ------------------------------------------------------------ part 2: the encoder
def encoder_part(args: argparse.Namespace, cuda: bool, tmp: Path) -> list[dict[str, object]]:
    import open_clip
    import torch

    from frozenlens.engine import Engine
    from frozenlens.models.loading import built_model
    from frozenlens.models.openclip import OpenClipEncoder

    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None, force_quick_gelu=True).to(device)
    loaded = built_model(model, open_clip.get_tokenizer(args.model), name=f"openclip:{args.model}-random",
                         version="random")
    rows: list[dict[str, object]] = []
    # one set of weights, two encoders: the product's one constructor, torch runtime (not ONNX on a CPU)
    encoders = {precision: OpenClipEncoder(loaded, device=device, precision=precision,  # type: ignore[arg-type]
                                           image_batch_size=args.encode_batch, runtime="torch")
                for precision in ("bf16", "fp32")}
    size = encoders["bf16"].input_size
    batch = np.random.default_rng(0).integers(0, 256, (args.encode_batch, size, size, 3), dtype=np.uint8)
    for precision, enc in encoders.items():
        enc.embed_prepared(batch)  # warm-up (cuDNN/cuBLAS plans, autocast caches)
        if cuda:
            torch.cuda.synchronize()
        seconds, out = timed(lambda enc=enc: [enc.embed_prepared(batch) for _ in range(args.encode_repeats)])
        rows.append({"what": f"{args.model} encoder only, {precision}", "device": device, "batch": args.encode_batch,
                     "images": args.encode_batch * args.encode_repeats,
                     "images_per_s": round(args.encode_batch * args.encode_repeats / seconds, 1)})
        log(f"  {rows[-1]}")
    a = encoders["bf16"].embed_prepared(batch[:4]).semantic
    b = encoders["fp32"].embed_prepared(batch[:4]).semantic
    rows[0]["cosine_vs_fp32"] = round(float(np.min(np.sum(a * b, axis=1))), 5)
    del encoders["fp32"]

    if args.photos:  # real photos: the first --images of the folder, copied (links outside the root are skipped)
        folder = tmp / "photos"
        folder.mkdir()
        picked = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        for p in picked[: args.images]:
            shutil.copyfile(p, folder / p.name)
        source = f"{min(len(picked), args.images)} photos of {args.photos}"
    else:  # generated once into .cache/bench (bench/common.py), reused by later runs
        folder = jpeg_folder(args.images, args.image_w, args.image_h, quality=90, log=log)
        source = f"{args.images} generated JPEGs {args.image_w}x{args.image_h}"
    with Engine.open(tmp / "index", encoder=encoders["bf16"], create=True, factory="Flat") as engine:
        report = engine.index([str(folder)], batch_size=args.encode_batch, workers=args.workers)
    rows.append({"what": f"{args.model} Engine.index (decode on CPU threads, bf16 forward)", "device": device,
                 "batch": args.encode_batch, "images": report.encoded, "failed": report.failed,
                 "workers": args.workers or "default", "seconds": round(report.seconds, 2),
                 "images_per_s": round(report.encoded / report.seconds, 1) if report.seconds else None,
                 "photos": source})
    log(f"  {rows[-1]}")
    return rows


# ------------------------------------------------------------------------ main
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (stands in for the GPU)")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--timed", type=int, default=100, help="queries timed one by one (batch 1)")
    p.add_argument("--ivf-factory", default=None, help="default: the product's IVF-PQ factory for --n, --dim "
                   "without the re-ranking suffix")
    p.add_argument("--model", default="ViT-B-32", help="open_clip architecture (random weights)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="start no further FAISS row after this many seconds (the encoder part still runs)")
    p.add_argument("--images", type=int, default=3000, help="JPEGs indexed by Engine.index")
    p.add_argument("--photos", default=None, help="index photos of this folder instead of generated JPEGs")
    p.add_argument("--image-w", type=int, default=1280)
    p.add_argument("--image-h", type=int, default=960)
    p.add_argument("--encode-batch", type=int, default=256)
    p.add_argument("--encode-repeats", type=int, default=20)
    p.add_argument("--workers", type=int, default=None, help="decode threads (default: the product's)")
    p.add_argument("--only", choices=("faiss", "encoder"), default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.started = time.perf_counter()
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.out is None:
        out = os.environ.get("OUT")
        args.out = str(Path(out) / "gpu_check.json") if out else str(REPO / "results" / "gpu_check.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    gpus, cuda = gpu_count(), torch_cuda()
    env = {"faiss": faiss.__version__, "faiss_gpus": gpus, "torch_cuda": cuda, "smoke": args.smoke,
           "python": platform.python_version(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}
    if cuda:
        import torch

        env["gpu"] = torch.cuda.get_device_name(0)
    log(f"{env}")
    result: dict[str, object] = {"env": env}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        # the encoder part first: about a minute, and a slow FAISS build cannot take its time
        for part, have, what in (("encoder", cuda, "torch sees no CUDA device"),
                                 ("faiss", gpus > 0, "FAISS sees no GPU (is the gpu extra's faiss-gpu installed "
                                  "in place of faiss-cpu? README 'Scaling up: FAISS on a GPU')")):
            if args.only and part != args.only:
                continue
            if not have and not args.smoke:
                log(f"skipping the {part} part: {what}")
                result[part] = {"skipped": what}
                continue
            t0 = time.perf_counter()
            tmp = Path(d) / part
            tmp.mkdir()
            run = faiss_part if part == "faiss" else encoder_part
            try:
                result[part] = {"rows": run(args, have, tmp), "seconds": round(time.perf_counter() - t0, 1)}
            except Exception as exc:  # noqa: BLE001 - a one-shot GPU run keeps the other part's figures
                log(traceback.format_exc())
                result[part] = {"error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = round(time.perf_counter() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(report(result))
    log(f"wrote {args.out} ({result['seconds']} s)")
    return 1 if any(isinstance(v, dict) and "error" in v for v in result.values()) else 0


FAISS_COLS = ["type", "factory", "path", "n", "build_s", "nprobe", "on_gpu", "gpu_copy_s", "recall_cpu", "recall_gpu",
              "gpu_vs_cpu", "qps1_cpu", "qps1_gpu", "qps256_cpu", "qps256_gpu", "note"]
ENCODER_COLS = ["what", "device", "batch", "images", "images_per_s", "cosine_vs_fp32", "seconds", "photos", "note"]


def report(result: dict[str, object]) -> str:
    """Markdown tables of ``result`` (one per part; a skipped part is one line)."""
    lines = []
    for part, cols in (("faiss", FAISS_COLS), ("encoder", ENCODER_COLS)):
        got = result.get(part)
        if not isinstance(got, dict):
            continue
        if "rows" not in got:
            lines.append(f"{part}: " + (f"skipped ({got['skipped']})" if "skipped" in got else f"failed: {got['error']}")
                         + "\n")
            continue
        table = [[r.get(c, "") for c in cols[:-1]] + [r.get("error") or r.get("skipped") or r.get("note", "")]
                 for r in got["rows"]]
        lines.append(f"### {part} ({got['seconds']} s)\n\n{markdown_table(cols, table)}\n")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
