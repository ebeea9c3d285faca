"""Category retrieval: a text query names a class, every image of that class is relevant.

The dataset is a class-balanced subset of Fashion-MNIST written by
``scripts/fetch_fashion_mnist.py`` (``train/CC/NNNNN.png``,
``test/CC/NNNNN.png`` and ``labels.json``); :func:`load_fashion_mnist` reads
one split into a :class:`CategoryDataset`.

Queries come from :data:`CLASS_CAPTIONS` (package data
``frozenlens/data/fashion_captions.json``, read on first use): for each of
the 10 classes and each of 15 languages two disjoint sets of phrasings —
**set "A"** (3 phrasings: the bare noun, the noun with an article or a
counter, a short description) for training and validation, and **set "B"**
(2 other phrasings: "a photo of a ...", a synonym or another description)
held out for testing. A reranker trained on set-A queries and tested on
set-B queries has never seen a test query's wording.

Metrics (:func:`category_metrics`), for a score matrix float32 (Q, I):

- ``P@k``: fraction of the top k images whose class is the query's,
  averaged over queries (always divided by k, also when I < k);
- ``mAP@100``: average precision over the top 100, normalised by
  ``min(100, #relevant)``, averaged over queries;
- ``R@1``: fraction of queries whose top image is relevant (equal to P@1).

**Ties are broken pessimistically**, as in :mod:`frozenlens.eval.metrics`:
among images with exactly the same score, irrelevant ones are ranked first,
so a constant score matrix gets the worst possible numbers and the result
does not depend on the order of the images.

:func:`evaluate_categories` embeds the images once, every language's
queries with ``encoder.encode_texts_in``, scores by exact cosine, applies
an optional rerank hook (:class:`~frozenlens.eval.runner.RerankInput`) and
returns a :class:`CategoryResult` per language plus the macro mean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from frozenlens.errors import DatasetError, EvalError
from frozenlens.eval.runner import Reranker, RerankInput, embed_image_files
from frozenlens.models.base import Encoder, ImageEmbeddings
from frozenlens.progress import Progress, ProgressCallback, ignore_progress

__all__ = [
    "CLASS_CAPTIONS",
    "MAP_DEPTH",
    "PHRASING_SETS",
    "CategoryDataset",
    "CategoryMetrics",
    "CategoryResult",
    "category_metrics",
    "class_captions",
    "evaluate_categories",
    "load_fashion_mnist",
]

#: the two disjoint phrasing sets: "A" train/validation, "B" held-out test
PHRASING_SETS = ("A", "B")
#: depth of the average precision (mAP@100)
MAP_DEPTH = 100
#: rows (queries) sorted at once; bounds the temporary (CHUNK, I) matrices
CHUNK = 256
CAPTIONS_RESOURCE = "data/fashion_captions.json"
LABELS_FILE = "labels.json"
SPLITS = ("train", "test")

#: class name → language → phrasing set → phrasings
Captions = Mapping[str, Mapping[str, Mapping[str, tuple[str, ...]]]]


# -- captions ------------------------------------------------------------------
@cache
def class_captions() -> Captions:
    """The packaged phrasings: class name → language → ``"A"``/``"B"`` → phrasings.

    Read once from ``frozenlens/data/fashion_captions.json``; raises
    :class:`DatasetError` when the file is missing or malformed (a set
    empty, or a phrase in both sets of one class and language).
    """
    where = f"frozenlens/{CAPTIONS_RESOURCE}"
    try:
        data = json.loads((resources.files("frozenlens") / CAPTIONS_RESOURCE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the packaged class captions ({exc})", path=where) from exc
    try:
        languages = list(data["languages"])
        out: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
        for entry in data["classes"]:
            per_lang: dict[str, dict[str, tuple[str, ...]]] = {}
            for lang in languages:
                sets = {s: tuple(str(t).strip() for t in entry["captions"][lang][s]) for s in PHRASING_SETS}
                if not all(sets.values()) or set(sets["A"]) & set(sets["B"]):
                    raise DatasetError(f"{entry['name']}/{lang}: empty or overlapping phrasing sets", path=where)
                per_lang[lang] = sets
            out[str(entry["name"])] = per_lang
    except (KeyError, TypeError) as exc:
        raise DatasetError(f"malformed class captions ({exc!r})", path=where) from exc
    return out


class _LazyCaptions(Mapping[str, Mapping[str, Mapping[str, tuple[str, ...]]]]):
    """A read-only view of :func:`class_captions` that reads the file on first use, not at import."""

    def __getitem__(self, name: str) -> Mapping[str, Mapping[str, tuple[str, ...]]]:
        return class_captions()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(class_captions())

    def __len__(self) -> int:
        return len(class_captions())

    def __repr__(self) -> str:
        return f"CLASS_CAPTIONS({', '.join(self)})"


#: class name → language → ``"A"``/``"B"`` → phrasings (see :func:`class_captions`)
CLASS_CAPTIONS: Captions = _LazyCaptions()


# -- dataset -------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CategoryDataset:
    """Images with a class label each (order kept).

    paths:       n image files
    labels:      int64 (n,), indices into ``class_names`` (read-only)
    class_names: the classes' English names, in label order
    """

    name: str
    paths: tuple[Path, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        labels = np.array(self.labels, dtype=np.int64)  # a copy, so read-only is safe
        if labels.shape != (len(self.paths),):
            raise EvalError(f"labels must have shape ({len(self.paths)},), got {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise EvalError(f"labels must lie in [0, {len(self.class_names)})")
        labels.setflags(write=False)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "paths", tuple(Path(p) for p in self.paths))
        object.__setattr__(self, "class_names", tuple(self.class_names))

    def __len__(self) -> int:
        return len(self.paths)

    def languages(self) -> list[str]:
        """Languages every class of the dataset has phrasings in, sorted."""
        captions = class_captions()
        present = [captions.get(c, {}) for c in self.class_names]
        return sorted(set.intersection(*(set(p) for p in present))) if present else []

    def class_counts(self) -> np.ndarray:
        """Images per class → int64 (n_classes,)."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def queries(self, language: str, phrasing_set: str) -> tuple[list[str], np.ndarray]:
        """Query texts in ``language`` from set ``"A"`` or ``"B"`` and their classes → (texts, int64 (Q,)).

        Classes in label order, phrasings in file order; only classes with
        at least one image in the dataset are asked for. :class:`EvalError`
        for an unknown set, language or class.
        """
        if phrasing_set not in PHRASING_SETS:
            raise EvalError(f"phrasing set must be one of {', '.join(PHRASING_SETS)}, not {phrasing_set!r}")
        captions = class_captions()
        texts: list[str] = []
        owners: list[int] = []
        for label in np.flatnonzero(self.class_counts()):
            name = self.class_names[label]
            if name not in captions:
                raise EvalError(f"no captions for class {name!r} of dataset {self.name!r}")
            if language not in captions[name]:
                raise EvalError(
                    f"no captions in language {language!r} (languages: {', '.join(self.languages())})"
                )
            for text in captions[name][language][phrasing_set]:
                texts.append(text)
                owners.append(int(label))
        return texts, np.asarray(owners, np.int64)

    def subset(self, mask: np.ndarray | Sequence[bool] | Sequence[int], name: str | None = None) -> CategoryDataset:
        """The images selected by a boolean mask (n,) or by integer indices (in the given order)."""
        sel = np.asarray(mask)
        if sel.dtype == bool:
            if sel.shape != (len(self),):
                raise EvalError(f"a boolean mask must have shape ({len(self)},), got {sel.shape}")
            index = np.flatnonzero(sel)
        elif sel.size == 0 or np.issubdtype(sel.dtype, np.integer):
            index = sel.astype(np.int64).reshape(-1)
            if len(index) and (index.min() < -len(self) or index.max() >= len(self)):
                raise EvalError(f"subset indices outside [0, {len(self)})")
        else:
            raise EvalError(f"subset takes a boolean mask or integer indices, not {sel.dtype}")
        return CategoryDataset(
            name=name or f"{self.name}[subset]", paths=tuple(self.paths[i] for i in index),
            labels=self.labels[index], class_names=self.class_names,
        )

    def head(self, per_class: int) -> CategoryDataset:
        """The first ``per_class`` images of each class (>= 1), in dataset order —
        class-balanced when every class has that many."""
        if per_class < 1:
            raise EvalError(f"per_class must be at least 1, not {per_class}")
        seen = np.zeros(len(self.class_names), np.int64)
        keep = np.zeros(len(self), bool)
        for i, label in enumerate(self.labels):
            if seen[label] < per_class:
                seen[label] += 1
                keep[i] = True
        return self.subset(keep, name=f"{self.name}[:{per_class}/class]")


def load_fashion_mnist(root: str | os.PathLike[str], split: str) -> CategoryDataset:
    """The ``"train"`` or ``"test"`` split written by ``scripts/fetch_fashion_mnist.py`` into ``root``.

    Raises :class:`EvalError` for another split and :class:`DatasetError`
    when the folder, ``labels.json`` or an image is missing, or the file is
    malformed.
    """
    if split not in SPLITS:
        raise EvalError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("Fashion-MNIST folder not found (run scripts/fetch_fashion_mnist.py)", path=str(root))
    labels_path = root / LABELS_FILE
    if not labels_path.is_file():
        raise DatasetError("labels file not found (run scripts/fetch_fashion_mnist.py)", path=str(labels_path))
    try:
        data = json.loads(labels_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"cannot read labels ({exc})", path=str(labels_path)) from exc
    where = str(labels_path)
    if not isinstance(data, dict):
        raise DatasetError('expected an object {"classes": [...], "train": [...], "test": [...]}', path=where)
    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise DatasetError('"classes" must be a non-empty list of names', path=where)
    rows = data.get(split)
    if not isinstance(rows, list) or not rows:
        raise DatasetError(f"{split!r} must be a non-empty list of [path, label] pairs", path=where)
    paths: list[Path] = []
    labels: list[int] = []
    for i, row in enumerate(rows):
        if (not isinstance(row, list) or len(row) != 2 or not isinstance(row[0], str)
                or type(row[1]) is not int or not 0 <= row[1] < len(classes)):
            raise DatasetError(f"{split}[{i}]: expected [relative path, label in 0-{len(classes) - 1}]", path=where)
        rel = PurePosixPath(row[0])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise DatasetError(f"{split}[{i}]: path {row[0]!r} must stay inside the folder", path=where)
        paths.append(root.joinpath(*rel.parts))
        labels.append(row[1])
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(paths)} {split} images not found, e.g. {missing[0]}", path=where)
    return CategoryDataset(name=f"fashion-mnist[{split}]", paths=tuple(paths),
                           labels=np.asarray(labels, np.int64), class_names=tuple(classes))


# -- metrics -------------------------------------------------------------------
@dataclass(frozen=True)
class CategoryMetrics:
    """P@k per k (``precision``: ((k, P@k), ...), k ascending), mAP@100 and R@1, fractions in [0, 1]."""

    precision: tuple[tuple[int, float], ...]
    map100: float
    r1: float

    def p_at(self, k: int) -> float:
        """P@k; :class:`EvalError` when k was not computed."""
        for kk, value in self.precision:
            if kk == k:
                return value
        raise EvalError(f"P@{k} was not computed (ks: {', '.join(str(kk) for kk, _ in self.precision)})")

    def as_dict(self) -> dict[str, float]:
        """``{"p1": ..., "p5": ..., "p10": ..., "map100": ..., "r1": ...}``."""
        return {**{f"p{k}": v for k, v in self.precision}, "map100": self.map100, "r1": self.r1}

    @classmethod
    def macro_average(cls, items: Sequence[CategoryMetrics]) -> CategoryMetrics:
        """Field-wise unweighted mean over ``items`` (e.g. over languages); all must share their ks."""
        if not items:
            raise EvalError("cannot average zero results")
        ks = [k for k, _ in items[0].precision]
        if any([k for k, _ in m.precision] != ks for m in items):
            raise EvalError("cannot average metrics computed at different ks")
        precision = tuple((k, float(np.mean([m.precision[j][1] for m in items]))) for j, k in enumerate(ks))
        rest = {f.name: float(np.mean([getattr(m, f.name) for m in items]))
                for f in fields(cls) if f.name != "precision"}
        return cls(precision=precision, **rest)


def _check_labels(scores: np.ndarray, query_labels: np.ndarray, image_labels: np.ndarray) -> None:
    if scores.ndim != 2 or 0 in scores.shape:
        raise EvalError(f"scores must be a non-empty (queries, images) matrix, got shape {scores.shape}")
    for arr, n, what in ((query_labels, scores.shape[0], "query_labels"), (image_labels, scores.shape[1], "image_labels")):
        if arr.shape != (n,) or not np.issubdtype(arr.dtype, np.integer):
            raise EvalError(f"{what} must be integer of shape ({n},), got {arr.dtype} {arr.shape}")
    if not np.isfinite(scores).all():
        raise EvalError("scores contain NaN or infinite values")
    absent = np.setdiff1d(query_labels, image_labels)
    if len(absent):
        raise EvalError(f"no image has the class of some queries (classes {absent.tolist()})")


def category_metrics(
    scores: np.ndarray, query_labels: np.ndarray, image_labels: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> CategoryMetrics:
    """P@k for each k in ``ks``, mAP@100 and R@1 (see module doc; pessimistic ties).

    scores: float (Q, I); query_labels: int (Q,); image_labels: int (I,).
    Every query's class must have at least one image (:class:`EvalError`).
    """
    scores = np.asarray(scores)
    query_labels = np.asarray(query_labels)
    image_labels = np.asarray(image_labels)
    _check_labels(scores, query_labels, image_labels)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise EvalError(f"ks must be positive integers, got {ks}")
    n_queries, n_images = scores.shape
    depth = min(MAP_DEPTH, n_images)
    cut = max(depth, min(ks[-1], n_images))
    hits_at = np.zeros((n_queries, cut), bool)  # (Q, cut) relevance of the ranked images
    for start in range(0, n_queries, CHUNK):
        block = scores[start : start + CHUNK]  # (c, I)
        relevant = image_labels[None, :] == query_labels[start : start + CHUNK, None]  # (c, I)
        # lexsort: last key is primary → descending score, then irrelevant (False) before relevant
        order = np.lexsort((relevant, -block.astype(np.float64)), axis=1)[:, :cut]  # (c, cut)
        hits_at[start : start + CHUNK] = np.take_along_axis(relevant, order, axis=1)
    cum = np.cumsum(hits_at, axis=1)  # (Q, cut) relevant images within the top j+1
    precision = tuple((k, float(np.mean(cum[:, min(k, cut) - 1] / k))) for k in ks)
    n_relevant = (image_labels[None, :] == query_labels[:, None]).sum(axis=1)  # (Q,)
    ranks = np.arange(1, depth + 1)
    ap = (hits_at[:, :depth] * cum[:, :depth] / ranks).sum(axis=1) / np.minimum(MAP_DEPTH, n_relevant)
    return CategoryMetrics(precision=precision, map100=float(np.mean(ap)), r1=float(np.mean(hits_at[:, 0])))


# -- evaluation ----------------------------------------------------------------
@dataclass(frozen=True)
class CategoryResult:
    """Category retrieval quality per language and the macro mean.

    ``per_language``: (language, number of queries, metrics) in evaluation
    order; ``mean``: :meth:`CategoryMetrics.macro_average` over them;
    ``reranked``: whether a rerank hook rescored; ``phrasing_set``: the
    query set used (``"A"`` or ``"B"``).
    """

    dataset: str
    n_images: int
    per_language: tuple[tuple[str, int, CategoryMetrics], ...]
    mean: CategoryMetrics
    reranked: bool
    phrasing_set: str = "B"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (metrics as fractions in [0, 1])."""
        return {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "phrasing_set": self.phrasing_set,
            "reranked": self.reranked,
            "languages": [{"language": lang, "n_queries": n, **m.as_dict()} for lang, n, m in self.per_language],
            "mean": {"languages": len(self.per_language), **self.mean.as_dict()},
        }

    def to_markdown(self) -> str:
        """A per-language table (P@1, P@10, mAP@100 in percent) and the mean row."""
        def pct(m: CategoryMetrics, k: int) -> str:
            return f"{100 * m.p_at(k):.1f}" if any(kk == k for kk, _ in m.precision) else "–"

        def row(label: str, n: str, m: CategoryMetrics) -> str:
            return f"| {label} | {n} | {pct(m, 1)} | {pct(m, 10)} | {100 * m.map100:.1f} |"

        lines = [
            f"# Category retrieval: {self.dataset}",
            "",
            (f"- images: {self.n_images}; queries: phrasing set {self.phrasing_set};"
             f" reranked: {'yes' if self.reranked else 'no'}"),
            "- percent; a query's relevant images are all images of its class; ties count against",
            "",
            "| language | queries | P@1 | P@10 | mAP@100 |",
            "|---|--:|--:|--:|--:|",
        ]
        lines += [row(lang, str(n), m) for lang, n, m in self.per_language]
        total = sum(n for _, n, _ in self.per_language)
        lines.append(row(f"**mean ({len(self.per_language)})**", str(total), self.mean))
        return "\n".join(lines) + "\n"


def evaluate_categories(
    dataset: CategoryDataset,
    encoder: Encoder,
    *,
    languages: Sequence[str] | None = None,
    phrasing_set: str = "B",
    rerank: Reranker | None = None,
    progress: ProgressCallback | None = None,
    images: ImageEmbeddings | None = None,
) -> CategoryResult:
    """Category retrieval of ``dataset`` with ``encoder`` (see module doc).

    ``languages`` defaults to :meth:`CategoryDataset.languages`; ``rerank``
    is a :data:`~frozenlens.eval.runner.Reranker` (gets the first-stage
    float32 (Q, I) scores, returns a new (Q, I) matrix); ``images`` are
    precomputed embeddings of ``dataset.paths`` (in order) to skip
    embedding. Progress stages: ``"images"`` (unless ``images`` is given),
    then ``"texts"`` (done/total queries).
    """
    report = progress or ignore_progress
    if len(dataset) == 0:
        raise EvalError(f"dataset {dataset.name!r} has no images")
    available = dataset.languages()
    chosen = list(dict.fromkeys(languages)) if languages is not None else available
    unknown = [lang for lang in chosen if lang not in available]
    if unknown or not chosen:
        raise EvalError(f"no captions in language(s) {', '.join(unknown) or '(none given)'}"
                        f" (languages: {', '.join(available)})")
    grouped = {lang: dataset.queries(lang, phrasing_set) for lang in chosen}
    paths = list(dataset.paths)
    if images is None:
        images = embed_image_files(encoder, paths, progress=report)
    elif images.semantic.shape[0] != len(dataset):
        raise EvalError(f"images holds {images.semantic.shape[0]} embeddings for {len(dataset)} images")
    gallery = np.asarray(images.semantic, np.float32)  # (I, dim)

    per_language: list[tuple[str, int, CategoryMetrics]] = []
    total = sum(len(texts) for texts, _ in grouped.values())
    done = 0
    report(Progress(stage="texts", done=0, total=total))
    for lang in chosen:
        texts, owners = grouped[lang]
        text_emb = np.asarray(encoder.encode_texts_in(texts, lang), np.float32)  # (Q, dim)
        scores = text_emb @ gallery.T  # (Q, I) cosine: both sides L2-normalised
        if rerank is not None:
            request = RerankInput(language=lang, texts=texts, text_embeddings=text_emb, image_paths=paths,
                                  image_embeddings=images, scores=scores)
            scores = np.asarray(rerank(request), dtype=np.float32)
            if scores.shape != request.scores.shape:
                raise EvalError(f"rerank hook returned shape {scores.shape}, expected {request.scores.shape}")
        per_language.append((lang, len(texts), category_metrics(scores, owners, dataset.labels)))
        done += len(texts)
        report(Progress(stage="texts", done=done, total=total))
    return CategoryResult(
        dataset=dataset.name, n_images=len(dataset), per_language=tuple(per_language),
        mean=CategoryMetrics.macro_average([m for _, _, m in per_language]),
        reranked=rerank is not None, phrasing_set=phrasing_set,
    )
