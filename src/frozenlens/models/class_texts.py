"""What each ImageNet-1k class of the offline `lite` encoder is called, in words.

Two packaged files, both in classifier index order:

- ``data/imagenet_classes.txt``: one short display name per class (labels);
- ``data/imagenet_wordnet.tsv``: the class's WordNet synset id, every lemma
  (``;``-separated) and its gloss, built from WordNet 3.0 by
  ``scripts/build_class_texts.py``.

Read once per process (cached); the files are validated, and a damaged one is
an error, never a silently shorter list.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

__all__ = ["ClassTexts", "class_items", "class_texts_bytes", "load_class_texts"]

_N_CLASSES = 1000


@dataclass(frozen=True)
class ClassTexts:
    """Per class (index order): synset id, lemmas (first = the WordNet head word) and gloss."""

    wnids: tuple[str, ...]
    lemmas: tuple[tuple[str, ...], ...]
    glosses: tuple[str, ...]


def class_texts_bytes() -> bytes:
    """Raw contents of the packaged WordNet class file (for cache keys)."""
    return (resources.files("frozenlens") / "data" / "imagenet_wordnet.tsv").read_bytes()


@functools.cache
def load_class_texts() -> ClassTexts:
    """The packaged WordNet lemmas and glosses of the 1000 classes (read once)."""
    wnids: list[str] = []
    lemmas: list[tuple[str, ...]] = []
    glosses: list[str] = []
    for line in class_texts_bytes().decode("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        names = tuple(x.strip() for x in parts[1].split(";") if x.strip()) if len(parts) == 3 else ()
        if len(parts) != 3 or not parts[0].startswith("n") or not names or not parts[2].strip():
            raise RuntimeError(f"packaged imagenet_wordnet.tsv is damaged near class {len(wnids)}")
        wnids.append(parts[0])
        lemmas.append(names)
        glosses.append(parts[2].strip())
    if len(wnids) != _N_CLASSES or len(set(wnids)) != _N_CLASSES:
        raise RuntimeError(f"packaged imagenet_wordnet.tsv is damaged (need {_N_CLASSES} unique classes)")
    return ClassTexts(tuple(wnids), tuple(lemmas), tuple(glosses))


def class_items(kind: str, names: Sequence[str]) -> list[list[str]]:
    """Per class, the texts whose embeddings are averaged into its vector.

    ``"name"``: the display name alone; ``"wordnet"``: every WordNet lemma,
    plus ``"<head word>: <gloss>"``.
    """
    if kind == "name":
        return [[name] for name in names]
    if kind == "wordnet":
        texts = load_class_texts()
        return [[*lemmas, f"{lemmas[0]}: {gloss}"] for lemmas, gloss in zip(texts.lemmas, texts.glosses, strict=True)]
    raise ValueError(f"unknown class text {kind!r}")
