"""Where does `lite` version 3 gain on Tux Paint: photo cut-outs, drawings or silhouettes? (issue 15 §1)

An analysis after the choice (nothing is chosen here): the test split's stamps are grouped by the
number of distinct colours in their source PNG (opaque pixels, each channel quantised to 64 levels):
``silhouette`` (one colour: Tux Paint's tintable masks), ``drawn`` (2–999) and ``photo-like``
(≥ 1,000: mostly photo cut-outs). Every caption in USE's 16 languages is a query over all 79 test stamps
(as in ``bench/lite_projector_quality.py``); R@1 is reported per group of the queried stamp.

    .venv/bin/python bench/lite_stamp_kinds.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_quality as rq

sys.path.insert(0, str(rq.REPO))
from flame_conse_quality import USE_LANGS, Scorer, lite_texts
from frozenlens.eval.datasets import load_dataset
from frozenlens.eval.runner import embed_image_files
from frozenlens.models.lite import LiteEncoder

KINDS = (("silhouette", 1, 1), ("drawn", 2, 999), ("photo-like", 1000, 10**9))


def colours(png: Path) -> int:
    with Image.open(png) as im:
        a = np.asarray(im.convert("RGBA"))
    opaque = a[a[..., 3] > 128][:, :3] // 4
    return len(np.unique(opaque, axis=0)) if len(opaque) else 0


def main() -> int:
    tux = rq.DATA / "tuxpaint"
    test = load_dataset(tux / "dataset" / "manifest.jsonl", "manifest", split="test")
    kind_of = []
    for im in test.images:
        stamp = im.path.relative_to(tux / "dataset" / "images").with_suffix("")
        n = colours(tux / "stamps" / stamp.with_suffix(".png"))
        kind_of.append(next(k for k, lo, hi in KINDS if lo <= n <= hi))
    langs = [g for g in USE_LANGS if g in test.languages(0.5)]
    encoders = {"2": LiteEncoder(projection=0.0), "3": LiteEncoder()}
    texts = sorted({c for im in test.images for g in langs for c in im.captions.get(g, ())})
    text_emb, _ = lite_texts(encoders["3"], texts)
    scorer = Scorer(test, langs, {t: i for i, t in enumerate(texts)})
    print(f"{len(test)} test stamps: " + ", ".join(f"{k} {kind_of.count(k)}" for k, _, _ in KINDS))
    for version, enc in encoders.items():
        images = embed_image_files(enc, [im.path for im in test.images]).semantic
        ranks = scorer.ranks(text_emb, images)
        row = []
        for k, _, _ in KINDS:
            per_lang = [np.mean(ranks[g][[kind_of[o] == k for o in scorer.queries[g][1]]] <= 1) for g in langs]
            row.append(f"{k} {100 * float(np.nanmean(per_lang)):.1f}")
        print(f"lite version {version}: R@1 (mean over {len(langs)} languages) " + ", ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
