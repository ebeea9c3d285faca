"""The in-memory types of the evaluation harness: datasets in, results out.

An :class:`EvalDataset` is a list of :class:`EvalImage` — an image file with
its captions per language (``{"en": [...], "de": [...]}``) and an optional
split tag. Every reader in :mod:`frozenlens.eval.datasets` produces one.

An evaluation (:func:`frozenlens.eval.runner.evaluate`) returns an
:class:`EvalResult`: one :class:`LanguageResult` per language plus their
macro average, each holding :class:`~frozenlens.eval.metrics.RetrievalMetrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from frozenlens.errors import EvalError
from frozenlens.eval.metrics import RetrievalMetrics

__all__ = ["EvalDataset", "EvalImage", "EvalResult", "LanguageResult"]


@dataclass(frozen=True)
class EvalImage:
    """One image of an evaluation set.

    ``captions`` maps a language tag to that language's captions (at least
    one per listed language, none empty); ``split`` is e.g. ``"test"`` or
    ``None``; ``key`` is the dataset's own identifier of the image (file
    name, XM3600 key, ...), used in reports and error messages.
    """

    path: Path
    captions: Mapping[str, tuple[str, ...]]
    split: str | None = None
    key: str = ""

    def languages(self) -> list[str]:
        """Language tags this image has captions in, sorted."""
        return sorted(self.captions)


@dataclass(frozen=True)
class EvalDataset:
    """A named, ordered collection of captioned images (the order is kept)."""

    name: str
    images: tuple[EvalImage, ...]

    def __len__(self) -> int:
        return len(self.images)

    def languages(self, min_coverage: float = 0.0) -> list[str]:
        """Language tags with captions on at least ``min_coverage`` (a fraction
        in [0, 1]) of the images — by default every language any image has
        captions in — sorted."""
        if not 0.0 <= min_coverage <= 1.0:
            raise EvalError(f"min_coverage must be a fraction in [0, 1], not {min_coverage}")
        need = min_coverage * len(self.images)
        return [lang for lang, n in self.coverage().items() if n > 0 and n >= need]

    def coverage(self) -> dict[str, int]:
        """Language tag → number of images with at least one caption in it."""
        counts: dict[str, int] = {}
        for im in self.images:
            for lang in im.captions:
                counts[lang] = counts.get(lang, 0) + 1
        return dict(sorted(counts.items()))

    def splits(self) -> dict[str | None, int]:
        """Split tag → number of images (``None`` for untagged images)."""
        counts: dict[str | None, int] = {}
        for im in self.images:
            counts[im.split] = counts.get(im.split, 0) + 1
        return counts

    def with_split(self, split: str) -> EvalDataset:
        """Only the images tagged ``split``; :class:`EvalError` if there are none."""
        kept = tuple(im for im in self.images if im.split == split)
        if not kept:
            known = sorted(s for s in self.splits() if s is not None)
            raise EvalError(
                f"dataset {self.name!r} has no images in split {split!r}"
                f" (splits: {', '.join(known) if known else 'none'})"
            )
        return EvalDataset(name=f"{self.name}[{split}]", images=kept)

    def head(self, limit: int) -> EvalDataset:
        """The first ``limit`` images (``limit`` >= 1)."""
        if limit < 1:
            raise EvalError(f"limit must be at least 1, not {limit}")
        if limit >= len(self.images):
            return self
        return EvalDataset(name=f"{self.name}[:{limit}]", images=self.images[:limit])


@dataclass(frozen=True)
class LanguageResult:
    """Retrieval quality in one language.

    ``n_images`` is the gallery of text→image search (every image of the
    dataset, whether or not it has captions in this language);
    ``n_texts`` the captions in this language (the T2I queries and the I2T
    gallery); ``n_query_images`` the images with at least one caption in this
    language (the I2T queries).
    """

    language: str
    n_images: int
    n_texts: int
    n_query_images: int
    metrics: RetrievalMetrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "n_images": self.n_images,
            "n_texts": self.n_texts,
            "n_query_images": self.n_query_images,
            **self.metrics.to_dict(),
        }


@dataclass(frozen=True)
class EvalResult:
    """Everything one evaluation run measured.

    ``per_language`` is in the order the languages were evaluated; ``mean``
    is the macro average over them (every field averaged with equal weight
    per language, see :meth:`RetrievalMetrics.macro_average`). ``encoder``
    is the encoder's identity (``EncoderIdentity.as_dict()``); ``reranked``
    tells whether a rerank hook rescored the similarities; ``created`` is an
    ISO-8601 UTC timestamp; ``seconds`` the wall time of the run.
    """

    dataset: str
    n_images: int
    encoder: Mapping[str, str | int]
    per_language: tuple[LanguageResult, ...]
    mean: RetrievalMetrics
    reranked: bool
    created: str
    seconds: float
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return [r.language for r in self.per_language]

    def language(self, tag: str) -> LanguageResult:
        """The result of language ``tag`` (:class:`EvalError` if not evaluated)."""
        for r in self.per_language:
            if r.language == tag:
                return r
        raise EvalError(f"language {tag!r} was not evaluated (evaluated: {', '.join(self.languages)})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (recalls are fractions in [0, 1], ranks 1-based)."""
        return {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "encoder": dict(self.encoder),
            "reranked": self.reranked,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "languages": [r.to_dict() for r in self.per_language],
            "mean": {"languages": len(self.per_language), **asdict(self.mean)},
            **({"extra": dict(self.extra)} if self.extra else {}),
        }


def freeze_captions(captions: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """Copy ``{lang: [caption, ...]}`` into tuples, sorted by language,
    dropping languages left without captions."""
    out: dict[str, tuple[str, ...]] = {}
    for lang in sorted(captions):
        texts = tuple(captions[lang])
        if texts:
            out[lang] = texts
    return out
