#!/usr/bin/env python3
"""Issue 16 goal 2: the CPU runtimes of each tower, speed and quality against torch eager fp32.

    FROZENLENS_TESTDATA=.cache/testdata PYTHONPATH=src .venv/bin/python bench/bench_runtimes.py [--repeats 3]

Towers and runtimes:

- ``lite`` image (EfficientNet-Lite0 + ConSE): torch eager (the reference), channels_last, TorchScript
  (trace + freeze, ``jit``), ONNX Runtime fp32 (``onnx``) and int8 (``onnx-int8``: the classifier's
  weights quantised) — each a ``LiteEncoder(runtime=...)``;
- ``openclip:`` image and text towers of one randomly initialised ``ViT-B-32-256`` (seed 0, the
  weights of bench/bench_cold.py; pretrained CLIPs cannot be downloaded here): torch eager (the
  reference), ``torch.jit.trace`` of the tower (measured here only), ONNX Runtime fp32 and int8
  (the linear layers' weights quantised) — ``OpenClipEncoder(runtime=...)``.

(``lite``'s text tower, USE-m3, already runs on numpy; it was not exported.)

Speed: images/s for one batch of 32 real photos (``embed_prepared``), texts/s for the 72 queries of
bench/photo_queries.py in batches of 32 (``encode_texts``), the median of ``--repeats`` runs after
one warm-up, the runtimes interleaved in every round. Quality, against torch eager fp32 on the 34
real photos (KPhotoAlbum demo + samples) and the 72 multilingual queries: the min and mean cosine
of the embeddings (image vectors; for ``lite`` also the 1280-d visual vectors) and the share of
queries whose top-10 photos are the same set (and in the same order) as the reference's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from PIL import Image  # noqa: E402
from tests.integration.test_quality_lite import CONCEPTS  # noqa: E402

from common import log, machine_line, print_table  # noqa: E402

QUERIES = [q for group in CONCEPTS for q in group]  # 72


def photos(testdata: Path) -> list[Image.Image]:
    paths = sorted(p for d in ("kphotoalbum", "photos") for p in (testdata / d).rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [Image.open(p).convert("RGB") for p in paths]


def rate(n: int, fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(n / (time.perf_counter() - t))
    return out


def quality(img: np.ndarray, txt: np.ndarray, ref_img: np.ndarray, ref_txt: np.ndarray) -> dict[str, float]:
    cos = (img * ref_img).sum(1)
    top = np.argsort(-(txt @ img.T), axis=1)[:, :10]
    ref_top = np.argsort(-(ref_txt @ ref_img.T), axis=1)[:, :10]
    same_set = np.mean([set(a) == set(b) for a, b in zip(top, ref_top, strict=True)])
    same_order = np.mean([list(a) == list(b) for a, b in zip(top, ref_top, strict=True)])
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "top10": float(same_set),
            "order": float(same_order)}


def bench_lite(images: list[Image.Image], repeats: int, cache: Path) -> list[list[object]]:
    from frozenlens.models.lite import LiteEncoder

    runtimes = ["eager", "channels_last", "jit", "onnx", "onnx-int8"]
    encs = {rt: LiteEncoder(cache_dir=cache, runtime=rt) for rt in runtimes}  # type: ignore[arg-type]
    for e in encs.values():
        e.warm(images=True)
    batch = np.stack([encs["eager"].prepare(im) for im in images])
    b32 = batch[:32]
    txt = encs["eager"].encode_texts(QUERIES)  # USE-m3 (numpy): the same for every image runtime
    rates: dict[str, list[float]] = {rt: [] for rt in runtimes}
    for e in encs.values():
        e.embed_prepared(b32)  # warm-up
    for _ in range(repeats):
        for rt, e in encs.items():
            rates[rt] += rate(32, lambda e=e: e.embed_prepared(b32), 1)
    ref = encs["eager"].embed_prepared(batch)
    rows = []
    base = statistics.median(rates["eager"])
    for rt, e in encs.items():
        emb = e.embed_prepared(batch)
        q = quality(emb.semantic, txt, ref.semantic, txt)
        vis = (emb.visual * ref.visual).sum(1)
        r = statistics.median(rates[rt])
        rows.append(["lite image", rt, f"{r:.1f} img/s ({r / base:.2f}x)", f"{q['cos_min']:.6f}",
                     f"{q['cos_mean']:.6f}", f"{vis.min():.6f}", f"{q['top10']:.0%}", f"{q['order']:.0%}"])
        log(f"lite {rt}: {rows[-1]}")
    return rows


def bench_openclip(images: list[Image.Image], repeats: int) -> list[list[object]]:
    import torch

    import bench_cold
    from frozenlens.models.openclip import OpenClipEncoder
    from frozenlens.models.openclip_onnx import text_tower

    ckpt, _ = bench_cold.export_weights()
    name = f"{bench_cold.ARCH}/{ckpt}"
    runtimes = ["torch", "onnx", "onnx-int8"]
    encs = {rt: OpenClipEncoder(name, runtime=rt, device="cpu", batch_size=32) for rt in runtimes}
    ref = encs["torch"]
    batch = np.stack([ref.prepare(im) for im in images])
    b32 = batch[:32]

    # torch.jit.trace of each tower (bench only): normalised pixels / token ids in, embeddings out
    model = ref.model
    with torch.no_grad(), torch.jit.optimized_execution(True):
        x32 = (torch.from_numpy(b32).permute(0, 3, 1, 2).float() / 255 - ref._mean) / ref._std
        jit_img = torch.jit.freeze(torch.jit.trace(model.visual.eval(), x32[:2], check_trace=False).eval())
        tok = ref.tokenizer(QUERIES[:32])
        jit_txt = torch.jit.freeze(torch.jit.trace(text_tower(model), tok, check_trace=False).eval())

    def jit_images(b: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = (torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255 - ref._mean) / ref._std
            return torch.nn.functional.normalize(jit_img(x), dim=-1).numpy()

    def jit_texts(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            out = [jit_txt(ref.tokenizer(texts[i : i + 32])) for i in range(0, len(texts), 32)]
            return torch.nn.functional.normalize(torch.cat(out), dim=-1).numpy()

    image_fns = {rt: (lambda b, e=e: e.embed_prepared(b).semantic) for rt, e in encs.items()}
    text_fns = {rt: e.encode_texts for rt, e in encs.items()}
    image_fns = {"torch": image_fns["torch"], "torch-jit": jit_images, **{k: image_fns[k] for k in runtimes[1:]}}
    text_fns = {"torch": text_fns["torch"], "torch-jit": jit_texts, **{k: text_fns[k] for k in runtimes[1:]}}
    img_rates: dict[str, list[float]] = {rt: [] for rt in image_fns}
    txt_rates: dict[str, list[float]] = {rt: [] for rt in image_fns}
    for rt in image_fns:  # warm-up (builds the ONNX sessions)
        image_fns[rt](b32)
        text_fns[rt](QUERIES[:32])
    for _ in range(repeats):
        for rt in image_fns:
            img_rates[rt] += rate(32, lambda rt=rt: image_fns[rt](b32), 1)
            txt_rates[rt] += rate(len(QUERIES), lambda rt=rt: text_fns[rt](QUERIES), 1)
    ref_img, ref_txt = image_fns["torch"](batch), text_fns["torch"](QUERIES)
    rows = []
    bi, bt = statistics.median(img_rates["torch"]), statistics.median(txt_rates["torch"])
    for rt in image_fns:
        img, txt = image_fns[rt](batch), text_fns[rt](QUERIES)
        q = quality(img, txt, ref_img, ref_txt)
        tcos = (txt * ref_txt).sum(1)
        ri, rtx = statistics.median(img_rates[rt]), statistics.median(txt_rates[rt])
        rows.append(["openclip image", rt, f"{ri:.1f} img/s ({ri / bi:.2f}x)", f"{q['cos_min']:.6f}",
                     f"{q['cos_mean']:.6f}", "", f"{q['top10']:.0%}", f"{q['order']:.0%}"])
        rows.append(["openclip text", rt, f"{rtx:.1f} texts/s ({rtx / bt:.2f}x)", f"{tcos.min():.6f}",
                     f"{tcos.mean():.6f}", "", "(same)", "(same)"])
        log(f"openclip {rt}: {rows[-2]} {rows[-1]}")
    return rows


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], choices=["lite", "openclip"])
    args = ap.parse_args()
    testdata = Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))
    images = photos(testdata)
    if len(images) < 32:
        raise SystemExit(f"need >= 32 photos in {testdata}/kphotoalbum and /photos, found {len(images)}")
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FROZENLENS_CACHE"] = tmp  # fresh graphs: every export and quantisation runs here
        rows = []
        if "lite" not in args.skip:
            rows += bench_lite(images, args.repeats, Path(tmp))
        if "openclip" not in args.skip:
            rows += bench_openclip(images, args.repeats)
    print_table(f"CPU runtimes per tower: speed (batch 32; ratio to torch eager) and quality vs torch eager fp32 "
                f"({len(images)} photos, {len(QUERIES)} queries)",
                ["tower", "runtime", "speed", "cos min", "cos mean", "visual cos min", "same top-10",
                 "same order"], rows)


if __name__ == "__main__":
    main()
