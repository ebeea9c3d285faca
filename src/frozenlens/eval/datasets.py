"""Readers of retrieval evaluation sets → :class:`~frozenlens.eval.types.EvalDataset`.

Formats (``fmt`` of :func:`load_dataset`; aliases in brackets):

``manifest`` [``jsonl``]
    FrozenLens JSONL manifest, one image per line:
    ``{"image": "rel/path.jpg", "captions": {"en": ["...", ...], "de": [...]}, "split": "test"}``.
    ``split`` is optional; a caption list may also be a single string; other
    keys are ignored. Image paths are relative to the manifest's folder (or
    to ``image_root`` when given). Without ``split`` every image is used.
``karpathy`` [``flickr30k``, ``coco``]
    Karpathy-split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``):
    ``images[].filename``, optional ``filepath`` (COCO: ``val2014``, ...),
    ``split`` and ``sentences[].raw``. Default split ``"test"`` (Flickr30k:
    1,000 images, COCO: 5,000). English; the first :data:`KARPATHY_CAPTIONS`
    sentences per image are kept (a few COCO images have 6-7; the usual
    protocol uses 5). Images at ``image_root/filepath/filename`` (default
    ``image_root``: the JSON file's folder).
``xm3600`` [``crossmodal3600``]
    Crossmodal-3600 ``captions.jsonl``: one line per image with
    ``"image/key"`` (and ``"image/locale"``) plus, per language tag, an object
    whose ``"caption"`` list holds that language's captions (the
    ``"caption/tokenized"`` variants are ignored). Images are
    ``image_root/<key>.jpg`` (default: ``images/`` beside the file when it
    exists, else the file's folder). No splits.
``urban1k``
    A folder with ``image/N.jpg`` and ``caption/N.txt`` (one long English
    caption per file, paired by file stem). No splits; ``image_root``
    replaces ``<folder>/image``.
``docci``
    ``docci_descriptions.jsonlines``: ``example_id``, ``split``,
    ``image_file``, ``description`` (English). Default split ``"test"``;
    images at ``image_root/image_file`` (default: ``images/`` beside the file).

Every reader checks that all image files exist. Problems raise
:class:`~frozenlens.errors.DatasetError` naming the file and, for line-based
formats, the 1-based line; bad arguments (unknown format, a split the data
lacks) raise :class:`~frozenlens.errors.EvalError`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from frozenlens.errors import DatasetError, EvalError
from frozenlens.eval.types import EvalDataset, EvalImage, freeze_captions

__all__ = [
    "FORMATS",
    "KARPATHY_CAPTIONS",
    "load_dataset",
    "read_docci",
    "read_karpathy",
    "read_manifest",
    "read_urban1k",
    "read_xm3600",
]

log = logging.getLogger(__name__)

#: sentences kept per image by :func:`read_karpathy` (the standard 5)
KARPATHY_CAPTIONS = 5

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


# -- helpers -----------------------------------------------------------------
def _file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{what} not found", path=str(p))
    return p


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line; DatasetError on bad lines."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; bytes, so errors get their line
    except OSError as exc:
        raise DatasetError(f"cannot open: {exc.strerror or exc}", path=str(path)) from exc
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"not UTF-8 ({exc.reason})", path=str(path), line=lineno) from exc
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise DatasetError(f"invalid JSON ({exc})", path=str(path), line=lineno) from exc
            if not isinstance(obj, dict):
                raise DatasetError("expected a JSON object", path=str(path), line=lineno)
            yield lineno, obj


def _caption_list(value: Any, where: str, path: Path, line: int | None) -> list[str]:
    """A caption string or list of strings → list of stripped, non-empty strings."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
        raise DatasetError(f"{where} must be a string or a list of strings", path=str(path), line=line)
    out = [c.strip() for c in items]
    if any(not c for c in out):
        raise DatasetError(f"{where} holds an empty caption", path=str(path), line=line)
    return out


def _check_images_exist(images: list[EvalImage], source: Path) -> None:
    missing = [im.path for im in images if not im.path.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(
            f"{len(missing)} of {len(images)} image files not found: {shown}{more}", path=str(source)
        )


def _finish(name: str, images: list[EvalImage], source: Path, split: str | None) -> EvalDataset:
    if not images:
        raise DatasetError("no images in dataset", path=str(source))
    dataset = EvalDataset(name=name, images=tuple(images))
    if split is not None:
        dataset = dataset.with_split(split)
    _check_images_exist(list(dataset.images), source)
    return dataset


def _no_split(fmt: str, split: str | None) -> None:
    if split is not None:
        raise EvalError(f"the {fmt} format has no splits (got split {split!r})")


def _natural_key(stem: str) -> tuple[int, int | str]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


# -- readers -----------------------------------------------------------------
def read_manifest(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> EvalDataset:
    """FrozenLens JSONL manifest (see module doc); all images unless ``split``."""
    path = _file(path, "manifest")
    root = Path(image_root) if image_root is not None else path.parent
    images: list[EvalImage] = []
    seen: dict[str, int] = {}
    for lineno, obj in _json_lines(path):
        rel = obj.get("image")
        if not isinstance(rel, str) or not rel.strip():
            raise DatasetError('"image" must be a non-empty string', path=str(path), line=lineno)
        if rel in seen:
            raise DatasetError(f"image {rel!r} already listed on line {seen[rel]}", path=str(path), line=lineno)
        seen[rel] = lineno
        caps = obj.get("captions")
        if not isinstance(caps, dict):
            raise DatasetError('"captions" must be an object {language: [captions]}', path=str(path), line=lineno)
        captions: dict[str, list[str]] = {}
        for lang, value in caps.items():
            if not lang.strip():
                raise DatasetError("empty language tag in captions", path=str(path), line=lineno)
            captions[lang] = _caption_list(value, f"captions[{lang!r}]", path, lineno)
        tag = obj.get("split")
        if tag is not None and not isinstance(tag, str):
            raise DatasetError('"split" must be a string', path=str(path), line=lineno)
        images.append(EvalImage(path=root / rel, captions=freeze_captions(captions), split=tag, key=rel))
    name = path.parent.name if path.stem in ("manifest", "captions") else path.stem
    return _finish(name or path.stem, images, path, split)


def read_karpathy(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = "test", max_captions: int | None = KARPATHY_CAPTIONS,
) -> EvalDataset:
    """Karpathy-split Flickr30k/COCO JSON; ``split`` default ``"test"`` (``None``: all)."""
    path = _file(path, "Karpathy split file")
    root = Path(image_root) if image_root is not None else path.parent
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"invalid JSON ({exc})", path=str(path)) from exc
    entries = data.get("images") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise DatasetError('expected an object with an "images" list', path=str(path))
    images: list[EvalImage] = []
    for i, entry in enumerate(entries):
        where = f"images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise DatasetError(f'{where}: expected an object with a "filename" string', path=str(path))
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) for s in sentences):
            raise DatasetError(f'{where}: "sentences" must be a list of objects', path=str(path))
        raws = [s.get("raw") for s in sentences]
        texts = _caption_list(raws, f'{where}.sentences[].raw', path, None) if raws else []
        if max_captions is not None:
            texts = texts[:max_captions]
        sub = entry.get("filepath") or ""
        tag = entry.get("split")
        images.append(EvalImage(
            path=root / sub / entry["filename"], captions=freeze_captions({"en": texts}),
            split=tag if isinstance(tag, str) else None, key=entry["filename"],
        ))
    name = path.stem.removeprefix("dataset_")
    return _finish(name, images, path, split)


def read_xm3600(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> EvalDataset:
    """Crossmodal-3600 ``captions.jsonl`` (36 languages, no splits)."""
    _no_split("xm3600", split)
    path = _file(path, "Crossmodal-3600 captions file")
    if image_root is not None:
        root = Path(image_root)
    else:
        root = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    images: list[EvalImage] = []
    for lineno, obj in _json_lines(path):
        key = obj.get("image/key")
        if not isinstance(key, str) or not key:
            raise DatasetError('"image/key" must be a non-empty string', path=str(path), line=lineno)
        captions: dict[str, list[str]] = {}
        for lang, value in obj.items():
            if lang.startswith("image/"):
                continue
            if not isinstance(value, dict) or "caption" not in value:
                raise DatasetError(f'language {lang!r}: expected an object with a "caption" list',
                                   path=str(path), line=lineno)
            captions[lang] = _caption_list(value["caption"], f"{lang}.caption", path, lineno)
        images.append(EvalImage(path=root / f"{key}.jpg", captions=freeze_captions(captions), key=key))
    return _finish("xm3600", images, path, None)


def read_urban1k(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> EvalDataset:
    """Urban-1k folder (``image/N.jpg`` + ``caption/N.txt``), long English captions."""
    _no_split("urban1k", split)
    folder = Path(path)
    caption_dir = folder / "caption"
    image_dir = Path(image_root) if image_root is not None else folder / "image"
    for d, what in ((caption_dir, "caption folder"), (image_dir, "image folder")):
        if not d.is_dir():
            raise DatasetError(f"{what} not found", path=str(d))
    image_files = {p.stem: p for p in image_dir.iterdir()
                   if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES}
    caption_files = {p.stem: p for p in caption_dir.iterdir() if p.is_file() and p.suffix == ".txt"}
    lonely = sorted(set(caption_files) - set(image_files), key=_natural_key)
    if lonely:
        raise DatasetError(f"{len(lonely)} captions have no image, e.g. {lonely[0]}.txt", path=str(caption_dir))
    images: list[EvalImage] = []
    for stem in sorted(image_files, key=_natural_key):
        cap = caption_files.get(stem)
        if cap is None:
            raise DatasetError(f"image {image_files[stem].name} has no caption file", path=str(caption_dir))
        try:
            text = cap.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError as exc:
            raise DatasetError(f"not UTF-8 ({exc.reason})", path=str(cap)) from exc
        if not text:
            raise DatasetError("empty caption", path=str(cap))
        images.append(EvalImage(path=image_files[stem], captions={"en": (text,)}, key=stem))
    return _finish(folder.name or "urban1k", images, caption_dir, None)


def read_docci(
    path: str | os.PathLike[str], *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = "test",
) -> EvalDataset:
    """DOCCI ``docci_descriptions.jsonlines``; ``split`` default ``"test"`` (``None``: all)."""
    path = _file(path, "DOCCI descriptions file")
    root = Path(image_root) if image_root is not None else path.parent / "images"
    images: list[EvalImage] = []
    for lineno, obj in _json_lines(path):
        image_file, description = obj.get("image_file"), obj.get("description")
        if not isinstance(image_file, str) or not image_file:
            raise DatasetError('"image_file" must be a non-empty string', path=str(path), line=lineno)
        text = _caption_list(description, '"description"', path, lineno)
        tag = obj.get("split")
        key = obj.get("example_id")
        images.append(EvalImage(
            path=root / image_file, captions={"en": tuple(text)},
            split=tag if isinstance(tag, str) else None,
            key=key if isinstance(key, str) else image_file,
        ))
    return _finish("docci", images, path, split)


# -- dispatch ----------------------------------------------------------------
Reader = Callable[..., EvalDataset]

#: format name → reader
FORMATS: Mapping[str, Reader] = {
    "manifest": read_manifest,
    "karpathy": read_karpathy,
    "xm3600": read_xm3600,
    "urban1k": read_urban1k,
    "docci": read_docci,
}
_ALIASES = {"jsonl": "manifest", "flickr30k": "karpathy", "coco": "karpathy", "crossmodal3600": "xm3600"}
#: formats whose reader picks a split when none is asked for
_DEFAULT_SPLIT = {"karpathy": "test", "docci": "test"}


def format_names() -> list[str]:
    """Accepted ``fmt`` values (formats and aliases), sorted."""
    return sorted([*FORMATS, *_ALIASES])


def load_dataset(
    path: str | os.PathLike[str], fmt: str, *, image_root: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> EvalDataset:
    """Read ``path`` in format ``fmt`` (see module doc).

    ``split=None`` means the format's default: ``"test"`` for ``karpathy``
    and ``docci``, every image for ``manifest``; ``xm3600`` and ``urban1k``
    have no splits. Raises :class:`EvalError` for an unknown format.
    """
    canonical = _ALIASES.get(fmt.lower(), fmt.lower())
    reader = FORMATS.get(canonical)
    if reader is None:
        raise EvalError(f"unknown dataset format {fmt!r}; known formats: {', '.join(format_names())}")
    if split is None:
        split = _DEFAULT_SPLIT.get(canonical)
    dataset = reader(path, image_root=image_root, split=split)
    log.info("read %s dataset %s: %d images, languages %s",
             canonical, dataset.name, len(dataset), ", ".join(dataset.languages()))
    return dataset

