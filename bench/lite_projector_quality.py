"""Issue 15 §1: a learned projector from `lite`'s image features into its text space, blended with ConSE.

ConSE can only say what ImageNet's 1000 classes say, so most Tux Paint stamps
(and scenes) are out of its reach. This trains a small network from the
EfficientNet-Lite0 features `lite` already computes to the USE-m3 text space,
on captioned images that ship offline, and blends it into the image vector:

    semantic = L2-normalise(ConSE + λ · L2-normalise(projector(features)))

Protocol (fixed before the run that chose the shipped setting; docs/quality.md):

* Input: `lite`'s L2-normalised pooled features (1280), standardised with the
  training images' mean and sd. Targets: USE-m3 embeddings of the captions in
  USE's 16 languages.
* Model: ``Linear(1280, 512)`` (H = 0) or ``Linear(1280, H) → GELU → Linear(H, 512)``;
  output L2-normalised. Loss: symmetric InfoNCE at a fixed scale of 20, batches
  of 128 images, each with one of its captions (any of the 16 languages) drawn
  afresh every step. AdamW, lr 1e-3, weight decay 0.01, 40 epochs; the epoch
  with the best Tux Paint **val** R@1 of the projector alone is kept.
* Training data: the Tux Paint **train** stamps (637), or those plus the emoji
  of :mod:`frozenlens.eval.emoji` (``make emoji-data``).
* Validation, and nothing else, chooses (data, H, λ), with seed 0: ``photos``
  (the 72 queries over 34 real photos of ``tests/integration/test_quality_lite.py``)
  and Tux Paint val (mean T2I R@1 over USE's 16 languages). Rule: the highest
  Tux Paint val R@1 among the settings whose photos val R@1 is at least
  today's (λ = 0) — the projector learns clip art, so real photos must not get
  worse; ties go to the smaller λ, then H = 0, then no emoji.
* The chosen (data, H) is trained again with seeds 1 and 2 (val only). Then,
  once, today's vectors and the chosen setting (each seed) are scored on the
  Tux Paint **test** split; seed 0's weights are the ones packaged
  (``scripts/package_lite_projector.py``).

    .venv/bin/python bench/lite_projector_quality.py     # → results/lite_projector_quality.json (~5–10 min)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_quality as rq

sys.path.insert(0, str(rq.REPO))
import torch

from flame_conse_quality import USE_LANGS, Scorer, lite_texts
from frozenlens.eval.datasets import load_dataset
from frozenlens.eval.emoji import convert_emoji
from frozenlens.eval.metrics import recall_at
from lite_recipe_quality import photo_r1, photo_set

MANIFEST = rq.DATA / "tuxpaint" / "dataset" / "manifest.jsonl"
OUT_DIR = rq.REPO / ".cache" / "lite-projector"
LAMBDAS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.75, 1.0)
HIDDEN = (0, 1024)
DATA_CHOICES = ("tuxpaint", "tuxpaint+emoji")
SCALE = 20.0
BATCH = 128
log = logging.getLogger("lite_projector_quality")


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Data:
    """Every image set's cached `lite` embeddings, and the scorers of the evaluation sets."""

    def __init__(self) -> None:
        # ConSE alone (lite version 2): the vectors the projector is blended into
        enc = self.encoder = rq.create_encoder("lite", projection=0.0)
        self.sets = {s: load_dataset(MANIFEST, "manifest", split=s) for s in ("train", "val", "test")}
        self.sets["emoji"] = load_dataset(convert_emoji(rq.DATA / "emoji"), "manifest")
        self.emb = {s: rq.cached_embeddings(enc, [im.path for im in d.images], s if s == "emoji" else f"tuxpaint-{s}")
                    for s, d in self.sets.items()}
        paths, queries, self.photo_truth = photo_set()
        self.photos = rq.cached_embeddings(enc, paths, "photos-val")
        self.photo_queries, _ = lite_texts(enc, queries)
        self.langs = [g for g in USE_LANGS if g in self.sets["val"].languages(0.5)
                      and g in self.sets["test"].languages(0.5)]
        self.scorers: dict[str, tuple[Scorer, np.ndarray]] = {}
        for s in ("val", "test"):
            texts = sorted({c for im in self.sets[s].images for g in self.langs for c in im.captions.get(g, ())})
            emb, _ = lite_texts(enc, texts)
            self.scorers[s] = (Scorer(self.sets[s], self.langs, {t: i for i, t in enumerate(texts)}), emb)

    def pairs(self, names: list[str]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        """(features (n, 1280), per image the rows of its captions, caption embeddings)."""
        feats, caps = [], []
        for s in names:
            for i, im in enumerate(self.sets[s].images):
                cs = [c for g in self.langs for c in im.captions.get(g, ())]
                if cs:
                    feats.append(self.emb[s].visual[i])
                    caps.append(cs)
        flat = sorted({c for cs in caps for c in cs})
        emb, _ = lite_texts(self.encoder, flat)
        row = {t: i for i, t in enumerate(flat)}
        return np.stack(feats), [np.asarray([row[c] for c in cs]) for cs in caps], emb

    def tux_r1(self, split: str, images: np.ndarray, k: int = 1) -> float:
        scorer, text_emb = self.scorers[split]
        ranks = scorer.ranks(text_emb, images)
        return 100 * float(np.mean([recall_at(ranks[g], k) for g in scorer.langs]))

    def photo_r1(self, images: np.ndarray) -> float:
        return photo_r1(images, self.photo_queries, self.photo_truth)


class Projector:
    """A trained projector: standardisation + network, applied in numpy-in / numpy-out."""

    def __init__(self, net: torch.nn.Module, mean: np.ndarray, sd: np.ndarray, hidden: int) -> None:
        self.net, self.mean, self.sd, self.hidden = net, mean, sd, hidden

    def __call__(self, visual: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            z = self.net(torch.from_numpy(((visual - self.mean) / self.sd).astype(np.float32)))
        return unit(z.numpy())

    def tensors(self) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone().contiguous() for k, v in self.net.state_dict().items()}
        return {"in_mean": torch.from_numpy(self.mean.astype(np.float32)),
                "in_sd": torch.from_numpy(self.sd.astype(np.float32)), **state}


def network(hidden: int) -> torch.nn.Module:
    if hidden == 0:
        return torch.nn.Sequential(torch.nn.Linear(1280, 512))
    return torch.nn.Sequential(torch.nn.Linear(1280, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 512))


def train(data: Data, names: list[str], hidden: int, seed: int, epochs: int) -> tuple[Projector, dict[str, Any]]:
    x, caps, text = data.pairs(names)
    mean, sd = x.mean(axis=0), x.std(axis=0) + 1e-6
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = network(hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    xt = torch.from_numpy(((x - mean) / sd).astype(np.float32))
    tt = torch.from_numpy(text.astype(np.float32))
    proj = Projector(net, mean, sd, hidden)
    best: tuple[float, dict[str, torch.Tensor] | None, int] = (-1.0, None, -1)
    history = []
    for epoch in range(epochs):
        net.train()
        perm = rng.permutation(len(x))
        for s in range(0, len(x) - BATCH + 1, BATCH):
            idx = perm[s:s + BATCH]
            t = tt[[int(rng.choice(caps[i])) for i in idx]]
            z = torch.nn.functional.normalize(net(xt[idx]), dim=1)
            logits = SCALE * z @ t.T
            y = torch.arange(len(idx))
            loss = (torch.nn.functional.cross_entropy(logits, y) + torch.nn.functional.cross_entropy(logits.T, y)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        r1 = data.tux_r1("val", proj(data.emb["val"].visual))
        history.append(round(r1, 2))
        if r1 > best[0]:
            best = (r1, {k: v.clone() for k, v in net.state_dict().items()}, epoch + 1)
    assert best[1] is not None
    net.load_state_dict(best[1])
    return proj, {"val_r1_alone": round(best[0], 2), "epoch": best[2], "history": history, "images": len(x)}


def blend(semantic: np.ndarray, projected: np.ndarray, lam: float) -> np.ndarray:
    return unit(semantic + lam * projected)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(rq.REPO / "results" / "lite_projector_quality.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("frozenlens.eval.datasets").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = Data()
    today = {"photos_val_r1": round(data.photo_r1(data.photos.semantic), 2),
             "tux_val_r1": round(data.tux_r1("val", data.emb["val"].semantic), 2)}
    log.info("today (λ = 0): %s", today)
    rows, trained = [], {}
    for names, hidden in itertools.product(DATA_CHOICES, HIDDEN):
        t0 = time.perf_counter()
        proj, info = train(data, names.replace("tuxpaint", "train").split("+"), hidden, 0, args.epochs)
        trained[(names, hidden)] = (proj, info)
        p_photos, p_val = proj(data.photos.visual), proj(data.emb["val"].visual)
        for lam in LAMBDAS:
            rows.append({"data": names, "hidden": hidden, "lambda": lam,
                         "photos_val_r1": round(data.photo_r1(blend(data.photos.semantic, p_photos, lam)), 2),
                         "tux_val_r1": round(data.tux_r1("val", blend(data.emb["val"].semantic, p_val, lam)), 2)})
        log.info("%s H=%d: alone val R@1 %.1f (epoch %d), %.0fs", names, hidden, info["val_r1_alone"],
                 info["epoch"], time.perf_counter() - t0)
    allowed = [r for r in rows if r["photos_val_r1"] >= today["photos_val_r1"]]
    best = max(allowed, key=lambda r: (r["tux_val_r1"], -r["lambda"], -r["hidden"], -DATA_CHOICES.index(r["data"])))
    log.info("chosen on val: %s", best)
    key = (best["data"], best["hidden"])
    seeds = {0: trained[key]}
    for seed in (1, 2):
        seeds[seed] = train(data, best["data"].replace("tuxpaint", "train").split("+"), best["hidden"], seed,
                            args.epochs)
    result: dict[str, Any] = {"languages": data.langs, "today_val": today, "val_rows": rows, "chosen": best,
                              "train": {f"{d} H={h}": info for (d, h), (_, info) in trained.items()},
                              "seeds": {}, "test": {}}
    for seed, (proj, info) in seeds.items():
        lam = best["lambda"]
        result["seeds"][seed] = {
            **info, "photos_val_r1": round(data.photo_r1(blend(data.photos.semantic, proj(data.photos.visual), lam)), 2),
            "tux_val_r1": round(data.tux_r1("val", blend(data.emb["val"].semantic, proj(data.emb["val"].visual), lam)), 2)}
    # test, once
    test = data.emb["test"]
    result["test"]["today"] = {"r1": round(data.tux_r1("test", test.semantic), 2),
                               "r5": round(data.tux_r1("test", test.semantic, 5), 2)}
    for seed, (proj, _) in seeds.items():
        vec = blend(test.semantic, proj(test.visual), best["lambda"])
        result["test"][f"seed{seed}"] = {"r1": round(data.tux_r1("test", vec), 2),
                                         "r5": round(data.tux_r1("test", vec, 5), 2)}
    log.info("test: %s", result["test"])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    proj, info = seeds[0]
    config = {"hidden": best["hidden"], "lambda": best["lambda"], "data": best["data"], "seed": 0,
              "epoch": info["epoch"], "val": {k: best[k] for k in ("photos_val_r1", "tux_val_r1")},
              "images": info["images"]}
    save_file(proj.tensors(), str(OUT_DIR / "projector.safetensors"))
    (OUT_DIR / "projector.json").write_text(json.dumps(config, indent=1) + "\n")
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    log.info("wrote %s and %s", args.out, OUT_DIR / "projector.safetensors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
