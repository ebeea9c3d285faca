"""Building :class:`~frozenlens.reranker.train.TrainingSet` s and the
evaluation-harness rerank hook.

Sources:

* an evaluation dataset (manifest, Karpathy, XM3600 ...; the harness's
  formats) — one split for training, another for validation;
* an index's own captions (``from_store``), split into training and
  validation *by image* with a seeded hash, so no image is in both.

Within one language, a text's positives are its own image plus every image
that has the same caption (normalised), so duplicates never act as negatives.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from frozenlens.errors import RerankerError
from frozenlens.eval.folds import holdout
from frozenlens.eval.runner import RerankInput, embed_image_files
from frozenlens.eval.types import EvalDataset
from frozenlens.models.base import Encoder, ImageEmbeddings
from frozenlens.progress import ProgressCallback, ignore_progress
from frozenlens.reranker.features import ImageTokens, encode_texts_with_units
from frozenlens.reranker.head import Reranker
from frozenlens.reranker.train import TrainingSet

if TYPE_CHECKING:
    from frozenlens.store import Store

log = logging.getLogger(__name__)


def image_tokens_of(emb: ImageEmbeddings) -> ImageTokens:
    return ImageTokens.build(emb.semantic, emb.visual, emb.tokens)


def normalise_caption(text: str) -> str:
    """Captions equal after this (case-folded, whitespace collapsed) are word-for-word the same."""
    return " ".join(text.casefold().split())


def training_set(
    encoder: Encoder,
    texts: Sequence[str],
    langs: Sequence[str | None],
    owners: Sequence[int],
    images: ImageTokens,
) -> TrainingSet:
    """Texts with the index (into ``images``) of the image each describes."""
    if not texts:
        raise RerankerError("no captions to train on")
    groups: dict[tuple[str | None, str], set[int]] = {}
    for t, lang, o in zip(texts, langs, owners, strict=True):
        groups.setdefault((lang, normalise_caption(t)), set()).add(int(o))
    positives = tuple(np.array(sorted(groups[(lang, normalise_caption(t))]), np.int64) for t, lang in zip(texts, langs, strict=True))
    tokens = encode_texts_with_units(encoder, texts, langs)
    return TrainingSet(tokens, tuple(langs), images, positives)


def from_eval_dataset(
    dataset: EvalDataset,
    encoder: Encoder,
    *,
    languages: Sequence[str] | None = None,
    images: ImageEmbeddings | None = None,
    progress: ProgressCallback = ignore_progress,
) -> TrainingSet:
    """All captions of ``dataset`` in ``languages`` (default all) against its images."""
    if len(dataset) == 0:
        raise RerankerError(f"dataset {dataset.name!r} has no images")
    wanted = set(languages) if languages is not None else None
    if images is None:
        images = embed_image_files(encoder, [im.path for im in dataset.images], progress=progress)
    texts: list[str] = []
    langs: list[str | None] = []
    owners: list[int] = []
    for i, im in enumerate(dataset.images):
        for lang, caps in im.captions.items():
            if wanted is not None and lang not in wanted:
                continue
            for c in caps:
                texts.append(c)
                langs.append(lang)
                owners.append(i)
    return training_set(encoder, texts, langs, owners, image_tokens_of(images))


def split_by_image(image_ids: Sequence[int], val_fraction: float, seed: int) -> np.ndarray:
    """bool (n,): True = validation, chosen by a seeded hash of each id (stable
    as the collection grows: an image never moves between the two sides)."""
    if not 0.0 < val_fraction < 1.0:
        raise RerankerError("val_fraction must be between 0 and 1")
    return holdout([str(int(i)) for i in image_ids], val_fraction, seed)


def from_store(store: Store, encoder: Encoder, *, val_fraction: float = 0.1, seed: int = 0,
               languages: Sequence[str] | None = None) -> tuple[TrainingSet, TrainingSet]:
    """(train, val) from an index's own captions; images without captions are
    left out (they would only be negatives)."""
    rows = store.caption_texts()  # [(image_id, text, lang)]
    if languages is not None:
        rows = [r for r in rows if r[2] in set(languages)]
    ids = sorted({r[0] for r in rows})
    if len(ids) < 4:
        raise RerankerError(f"the index has captions on {len(ids)} images; training needs at least 4")
    dim, vdim = encoder.identity.dim, encoder.identity.visual_dim
    images = ImageTokens.from_store(store, ids, dim, vdim)
    is_val = split_by_image(ids, val_fraction, seed)
    if is_val.all() or not is_val.any():
        is_val[: max(1, len(ids) // 10)] = True
        is_val[max(1, len(ids) // 10):] = False
    pos = {i: j for j, i in enumerate(ids)}

    def part(mask: np.ndarray) -> TrainingSet:
        keep = np.flatnonzero(mask)
        local = {int(k): n for n, k in enumerate(keep)}
        sel = [(t, lang, local[pos[i]]) for i, t, lang in rows if pos[i] in local]
        return training_set(encoder, [s[0] for s in sel], [s[1] for s in sel], [s[2] for s in sel],
                            images.take(keep))

    return part(~is_val), part(is_val)


def eval_hook(head: Reranker, encoder: Encoder, candidates: int = 100) -> Callable[[RerankInput], np.ndarray]:
    """A rerank hook for :func:`frozenlens.eval.runner.evaluate`: each text's
    top-``candidates`` first-stage images get the head's score; the rest keep
    their first-stage order below them."""
    head.check_encoder(encoder.identity)

    def hook(request: RerankInput) -> np.ndarray:
        images = image_tokens_of(request.image_embeddings)
        texts = encode_texts_with_units(encoder, request.texts, [request.language] * len(request.texts))
        first = np.asarray(request.scores, np.float32)
        k = min(candidates, first.shape[1])
        top = np.argpartition(-first, k - 1, axis=1)[:, :k]  # (T, k)
        t_idx = np.repeat(np.arange(len(request.texts)), k)
        scores = head.score_pairs(texts, t_idx, images, top.reshape(-1)).reshape(-1, k)
        out = first - 1000.0
        np.put_along_axis(out, top, scores, axis=1)
        return out

    return hook


def from_categories(dataset, encoder: Encoder, *, phrasing_set: str = "A",  # noqa: ANN001 - CategoryDataset
                    languages: Sequence[str] | None = None, images: ImageEmbeddings | None = None,
                    progress: ProgressCallback = ignore_progress) -> TrainingSet:
    """Category queries (every language's phrasings of ``phrasing_set``) against
    a :class:`~frozenlens.eval.categories.CategoryDataset`: a query's positives
    are all images of its class."""
    if images is None:
        images = embed_image_files(encoder, list(dataset.paths), progress=progress)
    labels = np.asarray(dataset.labels)
    by_class = {int(c): np.flatnonzero(labels == c).astype(np.int64) for c in np.unique(labels)}
    texts: list[str] = []
    langs: list[str | None] = []
    positives: list[np.ndarray] = []
    for lang in languages or dataset.languages():
        queries, classes = dataset.queries(lang, phrasing_set)
        for q, c in zip(queries, classes, strict=True):
            texts.append(q)
            langs.append(lang)
            positives.append(by_class[int(c)])
    if not texts:
        raise RerankerError("no category queries to train on")
    tokens = encode_texts_with_units(encoder, texts, langs)
    return TrainingSet(tokens, tuple(langs), image_tokens_of(images), tuple(positives))
