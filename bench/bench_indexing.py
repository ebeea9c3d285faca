"""Indexing throughput on a folder of synthetic 12-megapixel JPEGs.

Compares, in one run (interleaved, ``--repeat`` times, medians reported):

(a) pipeline  — ``Engine.open(tmp, create=True, encoder=enc).index([folder])``,
    a fresh index each time, images/s = encoded / wall seconds of ``index()``
    (model load excluded: the encoder is created once and injected);
(b) encoder alone — ``encoder.embed_prepared`` on pre-decoded uint8 batches
    of 32: the ceiling the pipeline could reach if decoding were free;
(c) naive — one thread: PIL open, full-size decode, bicubic resize (shorter
    side 256) + centre crop 224 without ``Image.draft``, then an eager NCHW
    EfficientNet-Lite0 (no channels_last, no trace/freeze, no micro-batching)
    at batch 32.

Also reported: single-thread decode(+prepare) rates with and without the DCT
draft, and the CPU-budget bound of the pipeline on this many cores, so the
bottleneck is visible.

Targets: pipeline >= 0.80 x encoder alone, pipeline >= 3 x naive.

    .venv/bin/python bench/bench_indexing.py --n 200 --repeat 3
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import CACHE, Timer, log, median, print_table, verdict

TARGET_VS_ENCODER = 0.80
TARGET_VS_NAIVE = 3.0


# ---------------------------------------------------------------- variants
def make_encoder():
    from frozenlens.models import create_encoder

    return create_encoder("lite", cache_dir=common.model_cache_dir())


def run_pipeline(encoder, folder: Path, workers: int | None = None,
                 torch_threads: int | None = None) -> tuple[float, int, float]:
    """(images/s, encoded, seconds) for one fresh index of ``folder``.

    ``torch_threads`` temporarily changes torch's (process-wide) intra-op
    thread count for this run only (an experiment; the engine's default is
    the encoder's own setting)."""
    import torch

    from frozenlens.engine import Engine

    saved = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)

    tmp_root = CACHE / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    index_dir = Path(tempfile.mkdtemp(prefix="idx-", dir=tmp_root))
    try:
        engine = Engine.open(index_dir, create=True, encoder=encoder)
        try:
            with Timer() as t:
                report = engine.index([folder], workers=workers)
        finally:
            engine.close()
        if report.failed or report.encoded == 0:
            raise RuntimeError(f"pipeline run went wrong: {report}")
        return report.encoded / t.seconds, report.encoded, t.seconds
    finally:
        torch.set_num_threads(saved)
        shutil.rmtree(index_dir, ignore_errors=True)


def prepared_batches(encoder, files: list[Path], batch: int = 32) -> list[np.ndarray]:
    """Decode (with draft) + prepare ``files`` once → uint8 batches (batch, 224, 224, 3)."""
    from frozenlens.indexer.decode import decode_file

    arrays = [encoder.prepare(decode_file(p, draft_size=encoder.draft_size).image) for p in files]
    return [np.stack(arrays[i : i + batch]) for i in range(0, len(arrays) - batch + 1, batch)]


def run_encoder_alone(encoder, batches: list[np.ndarray], torch_threads: int | None = None) -> float:
    """images/s of ``embed_prepared`` over ``batches`` (one untimed warm-up batch first)."""
    import torch

    saved = torch.get_num_threads()
    if torch_threads:
        torch.set_num_threads(torch_threads)
    try:
        encoder.embed_prepared(batches[0])
        n = 0
        with Timer() as t:
            for b in batches:
                encoder.embed_prepared(b)
                n += len(b)
    finally:
        torch.set_num_threads(saved)
    return n / t.seconds


def naive_model():
    """EfficientNet-Lite0 exactly as loaded from the checkpoint: eager, NCHW, float32."""
    from frozenlens.models.efficientnet_lite import load_efficientnet_lite0

    return load_efficientnet_lite0()


def naive_preprocess(path: Path) -> np.ndarray:
    """Full-size decode, shorter side → 256 bicubic, centre crop 224 → float32 (3, 224, 224) in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")  # full 12-MP decode
    w, h = im.size
    s = 256 / min(w, h)
    im = im.resize((max(256, round(w * s)), max(256, round(h * s))), Image.Resampling.BICUBIC)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    x = np.asarray(im, dtype=np.float32) / 255.0  # (224, 224, 3)
    return ((x - 0.5) / 0.5).transpose(2, 0, 1)  # (3, 224, 224)


def run_naive(model, files: list[Path], batch: int = 32) -> float:
    """images/s of the naive sequential loop over ``files``."""
    import torch

    with Timer() as t, torch.no_grad():
        for i in range(0, len(files), batch):
            x = torch.from_numpy(np.stack([naive_preprocess(p) for p in files[i : i + batch]]))  # (B, 3, 224, 224)
            feats, logits = model(x)
            torch.nn.functional.normalize(feats, dim=1)
            torch.softmax(logits, dim=1)
    return len(files) / t.seconds


def run_decode(encoder, files: list[Path], draft: bool, prepare: bool) -> float:
    """Single-thread images/s of ``decode_file`` (+ ``encoder.prepare``)."""
    from frozenlens.indexer.decode import decode_file

    size = encoder.draft_size if draft else None
    with Timer() as t:
        for p in files:
            img = decode_file(p, draft_size=size).image
            if prepare:
                encoder.prepare(img)
    return len(files) / t.seconds


def run_passive_child(n: int, encoder_batches: int) -> dict[str, float]:
    """Pipeline + encoder alone in a fresh process started with OMP_WAIT_POLICY=PASSIVE
    (OpenMP threads sleep instead of spinning while they wait; it must be set
    before the OpenMP runtime starts, hence a new process)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--n", str(n),
           "--encoder-batches", str(encoder_batches)]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"passive child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def _child(args: argparse.Namespace) -> None:
    folder = common.jpeg_folder(args.n)
    files = sorted(folder.iterdir())
    encoder = make_encoder()
    batches = prepared_batches(encoder, files[: 32 * args.encoder_batches])
    out = {"pipeline": run_pipeline(encoder, folder)[0], "encoder": run_encoder_alone(encoder, batches)}
    print("RESULT " + json.dumps(out), flush=True)


# -------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="12-MP JPEGs in the indexed folder (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions; medians are reported")
    ap.add_argument("--naive-n", type=int, default=64, help="images per naive-loop measurement (default 64)")
    ap.add_argument("--decode-n", type=int, default=32, help="images per single-thread decode measurement")
    ap.add_argument("--encoder-batches", type=int, default=5, help="batches of 32 per encoder-alone measurement")
    ap.add_argument("--variants", action="store_true",
                    help="also run threading experiments: pipeline with 1 torch thread (1 or 2 decoder "
                         "threads), the encoder alone with 1 torch thread, and both in a fresh process "
                         "with OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.n < 32:
        ap.error("--n must be >= 32")
    if args.child:
        _child(args)
        return {}

    import torch

    folder = common.jpeg_folder(args.n, log=log)
    files = sorted(folder.iterdir())
    n_files, n_bytes = common.folder_bytes(folder)
    log(f"folder {folder}: {n_files} files, {n_bytes / n_files / 1e6:.2f} MB average")
    common.warm_page_cache(files)

    log("loading the lite encoder (excluded from timings)")
    encoder = make_encoder()
    model = naive_model()
    batches = prepared_batches(encoder, files[: 32 * args.encoder_batches])
    naive_files = files[: args.naive_n]
    dec_files = files[: args.decode_n]

    # one untimed warm-up of everything (first-call costs, allocator growth)
    run_naive(model, files[:4], batch=4)
    run_decode(encoder, files[:2], draft=True, prepare=True)

    keys = ("pipeline", "pipe_w1_t1", "pipe_w2_t1", "pipe_passive", "encoder", "encoder_t1", "encoder_passive", "naive",
            "dec_draft", "dec_full", "decprep_draft", "decprep_full")
    res: dict[str, list[float]] = {k: [] for k in keys}
    load_before = os.getloadavg()
    for r in range(args.repeat):
        log(f"repeat {r + 1}/{args.repeat} (load average {os.getloadavg()[0]:.1f})")
        rate, encoded, secs = run_pipeline(encoder, folder)
        res["pipeline"].append(rate)
        log(f"  pipeline {rate:.1f} img/s ({encoded} in {secs:.1f} s)")
        res["encoder"].append(run_encoder_alone(encoder, batches))
        log(f"  encoder alone {res['encoder'][-1]:.1f} img/s")
        if args.variants:
            res["pipe_w1_t1"].append(run_pipeline(encoder, folder, workers=1, torch_threads=1)[0])
            res["pipe_w2_t1"].append(run_pipeline(encoder, folder, workers=2, torch_threads=1)[0])
            res["encoder_t1"].append(run_encoder_alone(encoder, batches, torch_threads=1))
            log(f"  pipeline 1 decoder + 1 torch thread {res['pipe_w1_t1'][-1]:.1f}, "
                f"2 decoders + 1 torch thread {res['pipe_w2_t1'][-1]:.1f}, "
                f"encoder alone 1 thread {res['encoder_t1'][-1]:.1f} img/s")
            passive = run_passive_child(args.n, args.encoder_batches)
            res["pipe_passive"].append(passive["pipeline"])
            res["encoder_passive"].append(passive["encoder"])
            log(f"  OMP_WAIT_POLICY=PASSIVE process: pipeline {passive['pipeline']:.1f}, "
                f"encoder alone {passive['encoder']:.1f} img/s")
        res["naive"].append(run_naive(model, naive_files))
        log(f"  naive {res['naive'][-1]:.1f} img/s")
        res["dec_draft"].append(run_decode(encoder, dec_files, draft=True, prepare=False))
        res["dec_full"].append(run_decode(encoder, dec_files, draft=False, prepare=False))
        res["decprep_draft"].append(run_decode(encoder, dec_files, draft=True, prepare=True))
        res["decprep_full"].append(run_decode(encoder, dec_files, draft=False, prepare=True))
        log(f"  decode+prepare 1 thread: draft {res['decprep_draft'][-1]:.1f}, full {res['decprep_full'][-1]:.1f} img/s")
    load_after = os.getloadavg()

    m = {k: median(v) for k, v in res.items() if v}
    enc, naive = m["encoder"], m["naive"]
    # Per-repeat ratios (numerator and denominator measured back to back), then the median.
    r_enc = median(p / e for p, e in zip(res["pipeline"], res["encoder"]))
    r_naive = median(p / q for p, q in zip(res["pipeline"], res["naive"]))
    cores = torch.get_num_threads()
    from frozenlens.cores import usable_cores

    usable = usable_cores()
    # If the encoder keeps all cores busy and decode+prepare is perfectly
    # parallel, each image costs cores/enc + 1/dec core-seconds:
    bound = cores / (cores / enc + 1.0 / m["decprep_draft"])

    tables: list[str] = []
    def row(label: str, key: str) -> tuple[str, float, str, str, str]:
        vals = res[key]
        return (label, m[key], f"{m[key] / enc:.2f}", f"{m[key] / naive:.1f}×", f"{min(vals):.1f}–{max(vals):.1f}")

    rows = [row(f"(a) pipeline: Engine.index, defaults ({usable} decoder threads, {cores} torch threads)", "pipeline")]
    rows[0] = (*rows[0][:2], f"{r_enc:.2f}", f"{r_naive:.1f}×", rows[0][4])  # per-repeat ratios
    if args.variants:
        rows.append(row("(a1) pipeline, workers=1 + 1 torch thread (experiment)", "pipe_w1_t1"))
        rows.append(row("(a2) pipeline, workers=2 + 1 torch thread (experiment)", "pipe_w2_t1"))
        rows.append(row("(a3) pipeline, defaults, process with OMP_WAIT_POLICY=PASSIVE (experiment)", "pipe_passive"))
    rows.append(row(f"(b) encoder alone: embed_prepared, uint8 batches of 32, {cores} torch threads", "encoder"))
    if args.variants:
        rows.append(row("(b1) encoder alone, 1 torch thread (experiment)", "encoder_t1"))
        rows.append(row("(b3) encoder alone, OMP_WAIT_POLICY=PASSIVE (experiment)", "encoder_passive"))
    rows.append(row("(c) naive: full decode + resize, eager NCHW batch 32", "naive"))
    rows.append((f"CPU-budget bound of (a) on {cores} cores: {cores}/({cores}/b + 1/decode+prepare)", bound,
                 f"{bound / enc:.2f}", f"{bound / naive:.1f}×", "computed"))
    tables.append(
        print_table(
            f"Indexing throughput, {n_files} synthetic 4000×3000 JPEGs ({n_bytes / n_files / 1e6:.1f} MB avg), "
            f"median of {args.repeat} (load average {load_before[0]:.1f} before, {load_after[0]:.1f} after)",
            ["variant", "images/s (median)", "÷ encoder alone", "÷ naive", "range over repeats"],
            rows,
        )
    )
    tables.append(
        print_table(
            "Single-thread decode rates (12-MP JPEG, decode_file; prepare = resize to 256 + crop 224)",
            ["stage", "with Image.draft (images/s)", "full decode (images/s)", "draft speed-up"],
            [
                ("decode only", m["dec_draft"], m["dec_full"], f"{m['dec_draft'] / m['dec_full']:.1f}×"),
                ("decode + prepare", m["decprep_draft"], m["decprep_full"], f"{m['decprep_draft'] / m['decprep_full']:.1f}×"),
            ],
        )
    )
    ok_enc = r_enc >= TARGET_VS_ENCODER
    ok_naive = r_naive >= TARGET_VS_NAIVE
    target_rows = [
        (f"pipeline ≥ {TARGET_VS_ENCODER:.2f} × encoder alone", f"{r_enc:.2f}", verdict(ok_enc)),
        (f"pipeline ≥ {TARGET_VS_NAIVE:.0f}× naive", f"{r_naive:.1f}×", verdict(ok_naive)),
    ]
    if res["pipe_passive"]:
        r_passive = median(p / e for p, e in zip(res["pipe_passive"], res["encoder_passive"]))
        bound_p = cores / (cores / m["encoder_passive"] + 1.0 / m["decprep_draft"])
        target_rows.append((
            "(experiment) pipeline ÷ encoder alone, both with OMP_WAIT_POLICY=PASSIVE",
            f"{r_passive:.2f} (CPU-budget bound {bound_p / m['encoder_passive']:.2f})",
            verdict(r_passive >= TARGET_VS_ENCODER),
        ))
        target_rows.append((
            "(experiment) pipeline with OMP_WAIT_POLICY=PASSIVE ÷ naive",
            f"{m['pipe_passive'] / naive:.1f}×",
            verdict(m["pipe_passive"] / naive >= TARGET_VS_NAIVE),
        ))
    tables.append(print_table("Indexing targets", ["target", "measured", "verdict"], target_rows))
    print(
        f"pipeline/encoder-alone = {r_enc:.2f} (target ≥ {TARGET_VS_ENCODER}): {verdict(ok_enc)}; "
        f"pipeline/naive = {r_naive:.1f}× (target ≥ {TARGET_VS_NAIVE:.0f}×): {verdict(ok_naive)}. "
        f"Decode+prepare costs {1000 / m['decprep_draft']:.0f} ms of one core per image with draft "
        f"vs {1000 / m['decprep_full']:.0f} ms without; the encoder needs {1000 * cores / enc:.0f} core-ms per image, "
        f"so on {cores} cores the pipeline cannot exceed ~{bound:.0f} img/s ({bound / enc:.2f} of encoder alone).",
        flush=True,
    )
    return {"tables": tables, "raw": res, "ratios": {"vs_encoder": r_enc, "vs_naive": r_naive}}


if __name__ == "__main__":
    main()
