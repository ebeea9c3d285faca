"""Turn Debian's ``tuxpaint-stamps-default`` into a multilingual retrieval set.

Input: the package unpacked with ``dpkg -x`` (``extracted_root`` holds
``usr/share/tuxpaint/stamps/``; the stamps folder itself is accepted too).
A *stamp* is a PNG with a caption file of the same stem beside it
(``animals/mammals/badger.png`` + ``badger.txt``). The caption file's first
line is the English caption; the other lines are ``<locale>.utf8=<caption>``.
Skipped: stamps that exist only as SVG (no PNG to composite), ``*_mirror.png``
alternates and other PNGs without a caption file, caption lines that cannot
be parsed (logged).

Output in ``out_dir``:

``images/<stamp>.jpg``
    Each stamp scaled (up or down, aspect kept, Lanczos on premultiplied
    alpha) to fit :data:`CANVAS` - 2 x :data:`MARGIN` = 240 px and
    alpha-composited, centred, onto a :data:`CANVAS` = 256 px square of
    :data:`BACKGROUND` **white** — the colour the hardened decoder
    composites transparent images onto, so a stamp indexed directly looks
    the same — then saved as JPEG quality :data:`JPEG_QUALITY`.
``manifest.jsonl``
    One line per stamp in the FrozenLens manifest format
    (:func:`frozenlens.eval.datasets.read_manifest`):
    ``{"image": "images/animals/mammals/badger.jpg", "captions": {"de": [...], "en": [...], ...},
    "split": "train", "stamp": "animals/mammals/badger"}``, sorted by stamp.
``tuxpaint.json``
    Counts, language coverage, split sizes, settings and the source
    fingerprint; a re-run whose fingerprint matches returns at once.

Locale tags are normalised by :func:`normalise_locale`: the codeset
(``.utf8``) is dropped; Simplified Chinese ``zh_CN`` → ``zh``; Traditional
Chinese ``zh_TW``/``zh_HK`` → ``zh-Hant`` and Serbian in Latin script
``sr@latin`` → ``sr-Latn`` stay separate languages (another script);
every other region or variant folds into its base language (``pt_BR`` →
``pt``, ``en_GB``/``en_AU`` → ``en``, ``ca@valencia`` → ``ca``), the base
tag's own caption first and duplicates removed. So a language has one
caption per stamp, occasionally two (e.g. ``pt`` and ``pt_BR`` differ).

Split, fixed **by stamp**: ``int(sha256(stamp)[:8], 16) % 100`` where
``stamp`` is the path relative to the stamps folder, without suffix, with
``/`` separators (``"animals/mammals/badger"``): 0-79 ``train``, 80-89
``val``, 90-99 ``test``. It depends on nothing else, so it is stable across
runs, machines and package versions (a new stamp never moves an old one).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from frozenlens.errors import DatasetError
from frozenlens.progress import Progress, ProgressCallback, ignore_progress

__all__ = [
    "BACKGROUND",
    "CANVAS",
    "MANIFEST_NAME",
    "Stamp",
    "convert_tuxpaint",
    "find_stamps",
    "fit_on_canvas",
    "normalise_locale",
    "parse_caption_file",
    "render_stamp",
    "stamp_split",
    "swap_in",
]

log = logging.getLogger(__name__)

#: bump when the output (images, manifest layout, splits) changes
FORMAT = 2
STAMPS_SUBDIR = Path("usr/share/tuxpaint/stamps")
MANIFEST_NAME = "manifest.jsonl"
INFO_NAME = "tuxpaint.json"
#: RGB colour of the canvas (white, as :data:`frozenlens.indexer.decode.BACKGROUND_RGB`)
BACKGROUND: tuple[int, int, int] = (255, 255, 255)
#: side of the square output image, and the empty border around the stamp
CANVAS = 256
MARGIN = 8
JPEG_QUALITY = 90
#: (split, upper bound of the hash bucket 0-99, exclusive)
SPLITS: tuple[tuple[str, int], ...] = (("train", 80), ("val", 90), ("test", 100))
#: stamps larger than this are refused (a sane bound for a clip-art package)
MAX_STAMP_PIXELS = 50_000_000

#: locales mapped to something other than their base language
_LOCALE_MAP = {"zh_CN": "zh", "zh_SG": "zh", "zh_TW": "zh-Hant", "zh_HK": "zh-Hant", "sr@latin": "sr-Latn"}
_LINE_RE = re.compile(r"^(?P<tag>[A-Za-z]{2,3}(?:_[A-Za-z]{2})?(?:@[A-Za-z]+)?)(?:\.[A-Za-z0-9-]+)?=(?P<text>.*)$")
_LANG_RE = re.compile(r"^[a-z]{2,3}$")


@dataclass(frozen=True)
class Stamp:
    """One captioned stamp: ``id`` is its path without suffix (``animals/mammals/badger``)."""

    id: str
    png: Path
    txt: Path


def normalise_locale(tag: str) -> str | None:
    """A Tux Paint locale (``pt_BR.utf8``, ``sr@latin``, ``de``) → language tag, or None if invalid."""
    tag = tag.split(".", 1)[0]
    if tag in _LOCALE_MAP:
        return _LOCALE_MAP[tag]
    base = tag.split("@", 1)[0].split("_", 1)[0].lower()
    return base if _LANG_RE.match(base) else None


def stamp_split(stamp_id: str) -> str:
    """``train``/``val``/``test`` of a stamp id (80/10/10 by a SHA-256 bucket, see module doc)."""
    bucket = int(hashlib.sha256(stamp_id.encode("utf-8")).hexdigest()[:8], 16) % 100
    for name, upper in SPLITS:
        if bucket < upper:
            return name
    raise AssertionError("unreachable")  # pragma: no cover


def parse_caption_file(path: Path) -> dict[str, list[str]]:
    """A stamp's caption file → ``{language: [captions]}`` (normalised tags, sorted).

    Raises :class:`DatasetError` when the file is not UTF-8 or has no English line.
    """
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DatasetError(f"not UTF-8 ({exc.reason})", path=str(path), line=line) from exc
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines or _LINE_RE.match(lines[0][1]):
        raise DatasetError("first line must be the English caption", path=str(path), line=1)
    found: list[tuple[str, int, str, str]] = [("en", 0, "", lines[0][1])]  # (lang, variant?, tag, text)
    for lineno, line in lines[1:]:
        m = _LINE_RE.match(line)
        lang = normalise_locale(m.group("tag")) if m else None
        if m is None or lang is None:
            log.warning("%s:%d: skipping unparsable caption line %r", path, lineno, line[:60])
            continue
        caption = m.group("text").strip()
        if caption:
            tag = m.group("tag")
            found.append((lang, 0 if tag == lang else 1, tag, caption))
    captions: dict[str, list[str]] = {}
    for lang, _, _, caption in sorted(found, key=lambda f: (f[0], f[1], f[2])):
        bucket = captions.setdefault(lang, [])
        if caption not in bucket:
            bucket.append(caption)
    return captions


def stamps_root(extracted_root: Path) -> Path:
    """The stamps folder under a ``dpkg -x`` root (or the root itself)."""
    for candidate in (extracted_root / STAMPS_SUBDIR, extracted_root):
        if candidate.is_dir() and any(candidate.rglob("*.txt")):
            return candidate
    raise DatasetError(f"no Tux Paint stamps found (expected {STAMPS_SUBDIR}/)", path=str(extracted_root))


def find_stamps(root: Path) -> tuple[list[Stamp], dict[str, int]]:
    """Captioned PNG stamps under the stamps folder ``root`` (sorted by id) and skip counts."""
    stamps: list[Stamp] = []
    skipped = {"svg_only": 0, "no_image": 0, "png_without_caption": 0}
    for txt in sorted(root.rglob("*.txt")):
        png = txt.with_suffix(".png")
        if png.is_file():
            stamps.append(Stamp(id=txt.relative_to(root).with_suffix("").as_posix(), png=png, txt=txt))
        elif txt.with_suffix(".svg").is_file():
            skipped["svg_only"] += 1
        else:
            skipped["no_image"] += 1
    skipped["png_without_caption"] = sum(1 for p in root.rglob("*.png") if not p.with_suffix(".txt").is_file())
    return sorted(stamps, key=lambda s: s.id), skipped


def render_stamp(png: Path) -> Image.Image:
    """The stamp composited onto the background → RGB (CANVAS, CANVAS) image."""
    with Image.open(png, formats=["PNG"]) as im:
        if im.width * im.height > MAX_STAMP_PIXELS:
            raise DatasetError(f"stamp too large ({im.width}x{im.height})", path=str(png))
        rgba = im.convert("RGBA")  # P+tRNS, LA, L, RGB → RGBA
    return fit_on_canvas(rgba)


def fit_on_canvas(rgba: Image.Image) -> Image.Image:
    """An RGBA image scaled to fit the canvas less its margins, composited centred onto the
    background → RGB (CANVAS, CANVAS) image (the look of every converted clip-art set)."""
    side = CANVAS - 2 * MARGIN
    scale = side / max(rgba.size)
    size = (max(1, round(rgba.width * scale)), max(1, round(rgba.height * scale)))
    rgba = rgba.resize(size, Image.Resampling.LANCZOS)  # Pillow resizes RGBA premultiplied
    canvas = Image.new("RGBA", (CANVAS, CANVAS), (*BACKGROUND, 255))
    canvas.alpha_composite(rgba, ((CANVAS - size[0]) // 2, (CANVAS - size[1]) // 2))
    return canvas.convert("RGB")


def _fingerprint(root: Path) -> str:
    """Hash of the settings, of the image library that encodes the JPEGs (another Pillow or
    libjpeg writes other bytes), and of every PNG/SVG/caption file's path, size and mtime."""
    from PIL import __version__ as pillow_version
    from PIL import features

    codec = [pillow_version, features.version("jpg")]
    h = hashlib.sha256(json.dumps([FORMAT, BACKGROUND, CANVAS, MARGIN, JPEG_QUALITY, SPLITS, codec]).encode())
    for p in sorted(root.rglob("*")):
        if p.suffix in (".png", ".svg", ".txt") and p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_info(out_dir: Path) -> dict[str, object] | None:
    try:
        info = json.loads((out_dir / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _coverage(lines: Iterable[dict[str, object]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        for lang in line["captions"]:  # type: ignore[attr-defined]
            counts[lang] = counts.get(lang, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _convert_into(stage: Path, stamps: list[Stamp], workers: int, progress: ProgressCallback) -> list[dict[str, object]]:
    def one(stamp: Stamp) -> dict[str, object]:
        captions = parse_caption_file(stamp.txt)
        rel = f"images/{stamp.id}.jpg"
        target = stage / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        render_stamp(stamp.png).save(target, "JPEG", quality=JPEG_QUALITY)
        return {"image": rel, "captions": captions, "split": stamp_split(stamp.id), "stamp": stamp.id}

    lines: list[dict[str, object]] = []
    progress(Progress(stage="convert", done=0, total=len(stamps)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tuxpaint") as pool:
        for line in pool.map(one, stamps):  # map keeps the (sorted) input order
            lines.append(line)
            progress(Progress(stage="convert", done=len(lines), total=len(stamps)))
    return lines


def convert_tuxpaint(
    extracted_root: Path, out_dir: Path, *, workers: int = 2, progress: ProgressCallback | None = None
) -> Path:
    """Convert the unpacked package into ``out_dir`` (see module doc) → the manifest path.

    Idempotent: when ``out_dir`` already holds a conversion of the same
    files with the same settings, nothing is done. Otherwise the set is
    built in a temporary sibling folder and swapped in, so ``out_dir`` is
    never half-written. A non-empty ``out_dir`` that is not a conversion is
    refused (:class:`DatasetError`).
    """
    root = stamps_root(Path(extracted_root))
    out_dir = Path(out_dir)
    fingerprint = _fingerprint(root)
    info = _read_info(out_dir)
    manifest = out_dir / MANIFEST_NAME
    if info is not None and info.get("fingerprint") == fingerprint and manifest.is_file():
        log.info("Tux Paint set in %s is up to date", out_dir)
        return manifest
    if out_dir.exists() and info is None and any(out_dir.iterdir()):
        raise DatasetError("exists, is not empty and holds no Tux Paint conversion; refusing to replace it",
                           path=str(out_dir))
    stamps, skipped = find_stamps(root)
    if not stamps:
        raise DatasetError("no captioned PNG stamps found", path=str(root))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        lines = _convert_into(stage, stamps, workers, progress or ignore_progress)
        with open(stage / MANIFEST_NAME, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        splits = {name: sum(1 for ln in lines if ln["split"] == name) for name, _ in SPLITS}
        summary = {
            "format": FORMAT, "fingerprint": fingerprint, "source": str(root),
            "stamps": len(lines), "skipped": skipped, "splits": splits,
            "coverage": _coverage(lines), "background": list(BACKGROUND), "canvas": CANVAS,
            "margin": MARGIN, "jpeg_quality": JPEG_QUALITY,
        }
        (stage / INFO_NAME).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        swap_in(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("converted %d Tux Paint stamps into %s (splits %s)", len(lines), out_dir, splits)
    return manifest


def swap_in(stage: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``stage`` (old copy renamed away first, then removed)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
