"""Run a retrieval evaluation: dataset + encoder in, :class:`EvalResult` out.

:func:`evaluate` embeds every image once (hardened decoder →
``encoder.prepare`` in a few threads → ``encoder.embed_prepared`` in
batches), embeds each language's captions with ``encoder.encode_texts``,
scores all texts against all images by exact brute-force cosine (a numpy
matrix product of the L2-normalised vectors — deliberately *not* the
engine's FAISS index, so the numbers measure the encoder alone) and computes
:func:`~frozenlens.eval.metrics.retrieval_metrics` per language and their
macro average.

Per language, the text→image gallery is **every image of the dataset**
(images without a caption in that language are distractors), so T2I numbers
of languages with different coverage share one gallery; the image→text
queries are the images that have a caption in that language.

Extension point for the reranker: pass ``rerank`` — a callable receiving a
:class:`RerankInput` (texts, image paths, both embeddings and the
first-stage scores) and returning a new float32 (T, I) score matrix. Metrics
are then computed from the returned matrix in both directions and the result
has ``reranked=True``. A reranker that rescores only each text's top-k
should keep the other scores below the rescored ones (e.g. first-stage score
minus a large constant) so that ranks beyond k stay in first-stage order.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frozenlens.errors import DatasetError, DecodeError, EvalError
from frozenlens.eval.metrics import RetrievalMetrics, retrieval_metrics
from frozenlens.eval.types import EvalDataset, EvalResult, LanguageResult
from frozenlens.indexer.decode import decode_file
from frozenlens.models.base import Encoder, ImageEmbeddings
from frozenlens.progress import Progress, ProgressCallback, ignore_progress

__all__ = ["RerankInput", "Reranker", "embed_image_files", "evaluate", "texts_of"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_TEXT_BATCH_SIZE = 256
DEFAULT_WORKERS = 2


@dataclass(frozen=True)
class RerankInput:
    """What a rerank hook sees for one language (never the ground truth).

    texts:            T captions (the T2I queries, in order)
    text_embeddings:  float32 (T, dim), L2-normalised
    image_paths:      I image files (the gallery, in order)
    image_embeddings: semantic float32 (I, dim), visual (I, visual_dim), tokens (I, T, dim) or None
    language / texts: the captions' language tag and texts (a reranker embeds
                      their sentences or words itself)
    scores:           float32 (T, I) first-stage cosine similarities
    """

    language: str
    texts: Sequence[str]
    text_embeddings: np.ndarray
    image_paths: Sequence[Path]
    image_embeddings: ImageEmbeddings
    scores: np.ndarray


#: returns the reranked float32 (T, I) score matrix
Reranker = Callable[[RerankInput], np.ndarray]


def _decode_prepare(encoder: Encoder, path: Path) -> np.ndarray:
    try:
        decoded = decode_file(path, draft_size=encoder.draft_size)
    except DecodeError as exc:
        raise DatasetError(f"cannot decode image ({exc.reason}): {exc}", path=str(path)) from exc
    return encoder.prepare(decoded.image)  # uint8 (S, S, 3)


def _prepared_batches(
    encoder: Encoder, paths: Sequence[Path], batch_size: int, workers: int
) -> Iterator[np.ndarray]:
    """uint8 (n, S, S, 3) batches in order; the next batch decodes while one is embedded."""
    starts = range(0, len(paths), batch_size)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-decode") as pool:
        def submit(start: int) -> list[Future[np.ndarray]]:
            return [pool.submit(_decode_prepare, encoder, p) for p in paths[start : start + batch_size]]

        pending = [submit(s) for s in starts[:2]]
        for i in range(len(starts)):
            futures = pending.pop(0)
            if i + 2 < len(starts):
                pending.append(submit(starts[i + 2]))
            yield np.stack([f.result() for f in futures])


def embed_image_files(
    encoder: Encoder, paths: Sequence[Path], *, batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS, progress: ProgressCallback = ignore_progress,
) -> ImageEmbeddings:
    """Embed image files → semantic float32 (n, dim), visual float32 (n, visual_dim)
    and, when the encoder has them, region tokens float32 (n, T, dim).

    Raises :class:`DatasetError` when a file cannot be decoded.
    """
    semantic: list[np.ndarray] = []
    visual: list[np.ndarray] = []
    tokens: list[np.ndarray] = []
    done = 0
    progress(Progress(stage="images", done=0, total=len(paths)))
    for batch in _prepared_batches(encoder, paths, batch_size, workers):
        emb = encoder.embed_prepared(batch)
        semantic.append(np.asarray(emb.semantic, np.float32))
        visual.append(np.asarray(emb.visual, np.float32))
        if emb.tokens is not None:
            tokens.append(np.asarray(emb.tokens, np.float32))
        done += len(batch)
        progress(Progress(stage="images", done=done, total=len(paths)))
    return ImageEmbeddings(
        semantic=np.concatenate(semantic), visual=np.concatenate(visual),
        tokens=np.concatenate(tokens) if tokens and len(tokens) == len(semantic) else None,
    )


def texts_of(dataset: EvalDataset, language: str) -> tuple[list[str], np.ndarray]:
    """All captions in ``language`` and the index of each one's image → (texts, int64 (T,))."""
    texts: list[str] = []
    owners: list[int] = []
    for i, im in enumerate(dataset.images):
        for caption in im.captions.get(language, ()):
            texts.append(caption)
            owners.append(i)
    return texts, np.asarray(owners, np.int64)


def _encode_texts(encoder: Encoder, texts: Sequence[str], batch_size: int, lang: str | None) -> np.ndarray:
    """Embed one language's captions; the language reaches tokenizers that need it (NLLB)."""
    parts = [encoder.encode_texts_in(texts[s : s + batch_size], lang) for s in range(0, len(texts), batch_size)]
    return np.concatenate([np.asarray(p, np.float32) for p in parts])  # (T, dim)


def _checked_rerank(rerank: Reranker, request: RerankInput) -> np.ndarray:
    out = np.asarray(rerank(request), dtype=np.float32)
    if out.shape != request.scores.shape:
        raise EvalError(f"rerank hook returned shape {out.shape}, expected {request.scores.shape}")
    return out


def evaluate(
    dataset: EvalDataset,
    encoder: Encoder,
    *,
    languages: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    text_batch_size: int = DEFAULT_TEXT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    rerank: Reranker | None = None,
    min_coverage: float = 0.0,
    images: ImageEmbeddings | None = None,
) -> EvalResult:
    """Evaluate ``encoder`` on ``dataset`` (see module doc).

    ``languages`` defaults to every language of the dataset (sorted) that
    has captions on at least ``min_coverage`` (fraction) of the images;
    asking for one no caption is written in raises :class:`EvalError`. Progress
    stages: ``"images"`` (done/total images), then ``"texts"`` (done/total
    captions over all languages). ``images``: the dataset's embeddings from an
    earlier :func:`embed_image_files` call with the same encoder (skips embedding).
    """
    started = time.perf_counter()
    report = progress or ignore_progress
    if len(dataset) == 0:
        raise EvalError(f"dataset {dataset.name!r} has no images")
    if batch_size < 1 or text_batch_size < 1 or workers < 1:
        raise EvalError("batch sizes and workers must be at least 1")
    available = dataset.languages()
    chosen = list(dict.fromkeys(languages)) if languages is not None else dataset.languages(min_coverage)
    unknown = [lang for lang in chosen if lang not in available]
    if unknown:
        raise EvalError(
            f"no captions in language(s) {', '.join(unknown)} in dataset {dataset.name!r}"
            f" (languages: {', '.join(available) or 'none'})"
        )
    if not chosen:
        raise EvalError(f"dataset {dataset.name!r} has no captions to evaluate")

    paths = [im.path for im in dataset.images]
    log.info("embedding %d images of %s with %s", len(paths), dataset.name, encoder.identity.describe())
    if images is None:
        images = embed_image_files(encoder, paths, batch_size=batch_size, workers=workers, progress=report)
    elif images.semantic.shape[0] != len(paths):
        raise EvalError(f"{images.semantic.shape[0]} precomputed image embeddings for {len(paths)} images")

    per_language: list[LanguageResult] = []
    grouped = {lang: texts_of(dataset, lang) for lang in chosen}
    total_texts = sum(len(texts) for texts, _ in grouped.values())
    done = 0
    report(Progress(stage="texts", done=0, total=total_texts))
    for lang in chosen:
        texts, owners = grouped[lang]
        text_emb = _encode_texts(encoder, texts, text_batch_size, lang)  # (T, dim)
        scores = text_emb @ images.semantic.T  # (T, I) cosine: both sides L2-normalised
        if rerank is not None:
            scores = _checked_rerank(rerank, RerankInput(
                language=lang, texts=texts, text_embeddings=text_emb, image_paths=paths,
                image_embeddings=images, scores=scores,
            ))
        metrics = retrieval_metrics(scores, owners)
        per_language.append(LanguageResult(
            language=lang, n_images=len(paths), n_texts=len(texts),
            n_query_images=int(np.unique(owners).size), metrics=metrics,
        ))
        done += len(texts)
        report(Progress(stage="texts", done=done, total=total_texts))
        log.info("%s: T2I R@1 %.3f, I2T R@1 %.3f (%d texts)", lang, metrics.t2i_r1, metrics.i2t_r1, len(texts))

    return EvalResult(
        dataset=dataset.name,
        n_images=len(paths),
        encoder=encoder.identity.as_dict(),
        per_language=tuple(per_language),
        mean=RetrievalMetrics.macro_average([r.metrics for r in per_language]),
        reranked=rerank is not None,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - started,
    )
