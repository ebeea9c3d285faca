"""Encoder throughput on this CPU: ``lite`` vs full-size open_clip models.

Pretrained CLIP weights cannot be downloaded here, but the cost of a forward
pass does not depend on the weight values, so the open_clip models are built
with RANDOM weights at their real sizes:

- ``ViT-B-32`` (OpenAI architecture, QuickGELU; open_clip's own BPE tokenizer);
- ``xlm-roberta-base-ViT-B-32`` (the LAION multilingual model): its Hugging
  Face text config is built locally from xlm-roberta-base's published
  hyper-parameters (no hub access). Its SentencePiece tokenizer cannot be had
  offline, so texts are turned into random ids of a realistic length, padded
  to the 77-token context as open_clip's HF tokenizer does (the forward cost
  is the same; the Rust tokenizer's ~20 µs/text is left out).

Measured in one run, interleaved: images/s of ``embed_prepared`` on a batch of
32 prepared photos (normalisation + image tower; decoding/resizing happen in
decoder threads and are not included) and texts/s of ``encode_texts`` on a
batch of 64 multilingual queries; FLOPs per image and per text counted with
``torch.utils.flop_counter`` (2 FLOP per multiply-add), next to FACTS.md's
numbers; costs relative to ``lite`` are ratios of rates from the same run.

    .venv/bin/python bench/bench_encoders.py            # ~3-4 min on 2 cores
    .venv/bin/python bench/bench_encoders.py --repeat 1 # quicker
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from queries import all_queries

#: FLOPs per image from FACTS.md (2 FLOP per multiply-add)
FACTS_GFLOPS = {"ViT-B-32": 8.8, "xlm-roberta-base-ViT-B-32": 8.8, "ViT-B-16": 35.0, "ViT-L-14": 162.0}

#: xlm-roberta-base's published hyper-parameters (its HF config.json)
XLMR_BASE = {
    "vocab_size": 250002, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 514, "type_vocab_size": 1,
    "layer_norm_eps": 1e-5, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
}  # fmt: skip


@dataclass
class Candidate:
    name: str
    encoder: object
    image_gflops: float = float("nan")
    text_gflops: float = float("nan")
    params_m: float = float("nan")
    facts_gflops: float | None = None
    image_rates: list[float] = field(default_factory=list)
    text_rates: list[float] = field(default_factory=list)


class RandomIdTokenizer:
    """Stand-in for XLM-R's tokenizer: <s> + ~1.5 ids per word + </s>, padded with <pad> to the context."""

    def __init__(self, context_length: int = 77, vocab: int = 250002, seed: int = 0) -> None:
        self.context_length = context_length
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)

    def __call__(self, texts: list[str] | str):
        import torch

        texts = [texts] if isinstance(texts, str) else texts
        out = np.full((len(texts), self.context_length), 1, dtype=np.int64)  # <pad> = 1
        for i, t in enumerate(texts):
            n = min(self.context_length - 2, max(1, round(1.5 * len(t.split()) + len(t) / 12)))
            out[i, 0], out[i, n + 1] = 0, 2  # <s> ... </s>
            out[i, 1 : n + 1] = self.rng.integers(5, self.vocab, n)
        return torch.from_numpy(out)


# -------------------------------------------------------------------- builders
def build_lite() -> Candidate:
    import torch

    from frozenlens.models import create_encoder
    from frozenlens.models.efficientnet_lite import load_efficientnet_lite0

    enc = create_encoder("lite", cache_dir=common.model_cache_dir())
    net = load_efficientnet_lite0(None).eval()
    cand = Candidate("lite (EfficientNet-Lite0 + USE-m3)", enc, facts_gflops=None)
    cand.image_gflops = count_gflops(lambda: net(torch.zeros(1, 3, 224, 224)))
    cand.params_m = sum(p.numel() for p in net.parameters()) / 1e6  # image tower only; USE-m3 ~69 M in numpy
    return cand


def build_vit_b32() -> Candidate:
    import open_clip

    from frozenlens.models.openclip import OpenClipEncoder

    model = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True)
    enc = OpenClipEncoder.from_model(model, open_clip.get_tokenizer("ViT-B-32"), name="bench", version="random")
    return _measure_model(Candidate("openclip:ViT-B-32 (random weights)", enc, facts_gflops=8.8))


def build_xlmr(workdir: Path) -> Candidate:
    import open_clip
    from transformers import XLMRobertaConfig

    from frozenlens.models.openclip import OpenClipEncoder

    text_dir = workdir / "xlm-roberta-base-config"
    XLMRobertaConfig(**XLMR_BASE).save_pretrained(text_dir)
    arch = "xlm-roberta-base-ViT-B-32"
    text_cfg = {
        **open_clip.get_model_config(arch)["text_cfg"],
        "hf_model_name": str(text_dir),
        "hf_tokenizer_name": str(text_dir),
        "hf_model_pretrained": False,
    }
    model = open_clip.create_model(arch, pretrained=None, pretrained_text=False, text_cfg=text_cfg)
    enc = OpenClipEncoder.from_model(model, RandomIdTokenizer(), name="bench", version="random")
    return _measure_model(Candidate("openclip:xlm-roberta-base-ViT-B-32 (random)", enc, facts_gflops=8.8))


def _measure_model(cand: Candidate) -> Candidate:
    import torch

    enc = cand.encoder
    model = enc.model  # type: ignore[attr-defined]
    size = enc.input_size  # type: ignore[attr-defined]
    cand.params_m = sum(p.numel() for p in model.parameters()) / 1e6
    tokens = enc.tokenizer(["a dog on the beach"])  # type: ignore[attr-defined]
    # with frozen parameters torch takes the fused attention fast path, which FlopCounterMode does not see
    model.requires_grad_(True)
    try:
        cand.image_gflops = count_gflops(lambda: model.encode_image(torch.zeros(1, 3, size, size)))
        cand.text_gflops = count_gflops(lambda: model.encode_text(tokens))
    finally:
        model.requires_grad_(False)
    return cand


def count_gflops(fn: Callable[[], object]) -> float:
    """GFLOPs of one call (grad mode on, so attention runs the unfused path the counter sees)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:
        fn()
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------- runs
def load_images(n: int) -> list:
    from PIL import Image

    folder = common.REPO / ".cache" / "testdata" / "photos"
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".png"))
    if files:
        images = [Image.open(p).convert("RGB") for p in files]
    else:  # no test photos fetched: synthetic ones
        from io import BytesIO

        images = [Image.open(BytesIO(common.synthetic_jpeg(i, 640, 480))).convert("RGB") for i in range(8)]
    return [images[i % len(images)] for i in range(n)]


def run(cands: list[Candidate], repeat: int, image_batch: int, text_batch: int) -> None:
    import time

    images = load_images(image_batch)
    texts = [q for q, _ in all_queries()][:text_batch]
    prepared = {c.name: np.stack([c.encoder.prepare(im) for im in images]) for c in cands}  # type: ignore[attr-defined]
    for c in cands:  # warm-up (lazy text model loads, allocator)
        c.encoder.embed_prepared(prepared[c.name][:4])  # type: ignore[attr-defined]
        c.encoder.encode_texts(texts[:8])  # type: ignore[attr-defined]
    for r in range(repeat):
        for c in cands:
            t0 = time.perf_counter()
            c.encoder.embed_prepared(prepared[c.name])  # type: ignore[attr-defined]
            c.image_rates.append(image_batch / (time.perf_counter() - t0))
            # fast encoders: repeat the text batch so a measurement lasts >= ~0.5 s
            reps, t0 = 0, time.perf_counter()
            while reps == 0 or time.perf_counter() - t0 < 0.5:
                c.encoder.encode_texts(texts)  # type: ignore[attr-defined]
                reps += 1
            c.text_rates.append(reps * len(texts) / (time.perf_counter() - t0))
            common.log(f"round {r + 1}/{repeat} {c.name}: {c.image_rates[-1]:.1f} img/s, {c.text_rates[-1]:.0f} texts/s")


def table(cands: list[Candidate], image_batch: int, text_batch: int) -> str:
    lite = cands[0]
    li, lt = statistics.median(lite.image_rates), statistics.median(lite.text_rates)
    rows = []
    for c in cands:
        ir, tr = statistics.median(c.image_rates), statistics.median(c.text_rates)
        rows.append([
            c.name, c.params_m, c.image_gflops, "n/a" if c.facts_gflops is None else c.facts_gflops,
            c.text_gflops, ir, tr, f"{li / ir:.1f}×", f"{lt / tr:.1f}×",
        ])  # fmt: skip
    return common.print_table(
        f"Encoder throughput (images/s at batch {image_batch}, texts/s at batch {text_batch}; median)",
        ["encoder", "params (M)", "GFLOP/image (counted)", "GFLOP/image (FACTS)", "GFLOP/text",
         "images/s", "texts/s", "image cost vs lite", "text cost vs lite"],
        rows,
    )  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved measurement rounds (median reported)")
    ap.add_argument("--image-batch", type=int, default=32)
    ap.add_argument("--text-batch", type=int, default=64)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        common.log("building lite")
        cands = [build_lite()]
        common.log("building ViT-B-32 (random weights)")
        cands.append(build_vit_b32())
        common.log("building xlm-roberta-base-ViT-B-32 (random weights, local HF config)")
        cands.append(build_xlmr(Path(tmp)))
        run(cands, args.repeat, args.image_batch, args.text_batch)
    print(f"\n{common.machine_line()}")
    table(cands, args.image_batch, args.text_batch)
    print(
        "GFLOP/text at the padded 77-token context. USE-m3 (lite's text tower) runs in numpy: not counted.\n"
        "lite's params: image tower only. Cost vs lite = lite's rate / the model's rate (same run)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
