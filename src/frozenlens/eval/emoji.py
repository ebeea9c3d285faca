"""Emoji rendered from Debian's colour emoji font, named in many languages by Unicode CLDR: a
multilingual image–text set for training (issue 15 §2, "more training signal").

Input, both from Debian (``make emoji-data`` installs them):

* the font ``fonts-noto-color-emoji`` (:data:`DEFAULT_FONT`, bitmap glyphs drawn at their one
  size, :data:`GLYPH_SIZE` = 109 px, by Pillow with ``embedded_color``);
* ``unicode-cldr-core``'s ``common/annotations/<locale>.xml`` (:data:`DEFAULT_ANNOTATIONS`): per
  emoji, a short name (``type="tts"``: "grinning face", "Hund", "イヌの顔") and keywords.

Every emoji with an English short name whose sequence the font draws as **one** glyph (CLDR also
names punctuation the font has no glyph for, which draws nothing; an unsupported ZWJ sequence
falls apart into several glyphs, wider than one) becomes an image: the glyph (a few are grey by
design: wolf, cloud, the family) composited onto the same white 256-px canvas as the Tux Paint
stamps (:func:`frozenlens.eval.tuxpaint.fit_on_canvas`), JPEG; a sequence that differs from one
already drawn only by the emoji variation selector (U+FE0F) is left out. Its captions are
the short names, one per language: CLDR files named by a bare language (``fr.xml``) plus the
script variants :data:`SCRIPT_LOCALES`; regional files (``fr_CA.xml``) are left out, as are names
that only point to the parent locale (``↑↑↑``).

Output in ``out_dir`` is a FrozenLens manifest set (``images/<code points>.jpg``,
``manifest.jsonl``, ``emoji.json`` with counts and the source fingerprint); each line has
``"split"`` by the same hash rule as the stamps (:func:`frozenlens.eval.tuxpaint.stamp_split` of
``emoji/<code points>``) and ``"emoji"``: the sequence. Idempotent and swapped in whole, as the
Tux Paint converter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from frozenlens.errors import DatasetError
from frozenlens.eval.tuxpaint import CANVAS, JPEG_QUALITY, MANIFEST_NAME, fit_on_canvas, stamp_split, swap_in
from frozenlens.progress import Progress, ProgressCallback, ignore_progress

__all__ = ["DEFAULT_ANNOTATIONS", "DEFAULT_FONT", "convert_emoji", "read_annotations", "render_emoji"]

log = logging.getLogger(__name__)

#: bump when the output changes
FORMAT = 1
DEFAULT_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
DEFAULT_ANNOTATIONS = Path("/usr/share/unicode/cldr/common/annotations")
INFO_NAME = "emoji.json"
#: the one pixel size the font's bitmap strikes are drawn at
GLYPH_SIZE = 109
#: a drawn sequence wider than this many pixels is several glyphs, not one
MAX_GLYPH_WIDTH = 140
#: CLDR files of another script of a language, kept as their own language tag
SCRIPT_LOCALES = {"zh_Hant": "zh-Hant", "sr_Latn": "sr-Latn"}
_BARE = re.compile(r"^[a-z]{2,3}$")
#: CLDR's marker for "inherit this value from the parent locale"
_INHERIT = "↑↑↑"
#: variation selector 16 (emoji presentation): not part of an emoji's identity in file names
_VS16 = "\ufe0f"


def _language_of(stem: str) -> str | None:
    if stem in SCRIPT_LOCALES:
        return SCRIPT_LOCALES[stem]
    return stem if _BARE.match(stem) and stem != "root" else None


def read_annotations(folder: Path) -> dict[str, dict[str, str]]:
    """``{emoji: {language: short name}}`` from a CLDR ``annotations`` folder (see module doc)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.xml")) if folder.is_dir() else []
    if not files:
        raise DatasetError("no CLDR annotation files (install Debian's unicode-cldr-core)", path=str(folder))
    names: dict[str, dict[str, str]] = {}
    for f in files:
        lang = _language_of(f.stem)
        if lang is None:
            continue
        try:
            root = ET.parse(f).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"unreadable CLDR annotation file: {exc}", path=str(f)) from exc
        for node in root.iter("annotation"):
            text = (node.text or "").strip()
            if node.get("type") == "tts" and text and text != _INHERIT:
                names.setdefault(node.get("cp", ""), {})[lang] = text
    names.pop("", None)
    return names


def render_emoji(font: ImageFont.FreeTypeFont, sequence: str) -> Image.Image | None:
    """The sequence's glyph on the Tux Paint canvas (RGB), or None when the font draws nothing
    for it or several glyphs."""
    size = (2 * MAX_GLYPH_WIDTH, 2 * GLYPH_SIZE)
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(layer).text((0, 0), sequence, font=font, embedded_color=True)
    box = layer.getchannel("A").getbbox()
    if box is None or box[2] - box[0] > MAX_GLYPH_WIDTH:
        return None
    return fit_on_canvas(layer.crop(box))


def _key(sequence: str) -> str:
    return "-".join(f"{ord(c):x}" for c in sequence if c != _VS16)


def _fingerprint(font: Path, annotations: Path) -> str:
    from PIL import __version__ as pillow_version
    from PIL import features

    h = hashlib.sha256(json.dumps([FORMAT, CANVAS, JPEG_QUALITY, GLYPH_SIZE, MAX_GLYPH_WIDTH, SCRIPT_LOCALES,
                                   pillow_version, features.version("jpg")]).encode())
    for p in [font, *sorted(annotations.glob("*.xml"))]:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def convert_emoji(out_dir: Path, *, font: Path = DEFAULT_FONT, annotations: Path = DEFAULT_ANNOTATIONS,
                  progress: ProgressCallback | None = None) -> Path:
    """Render and name the emoji into ``out_dir`` (see module doc) → the manifest path."""
    font, annotations, out_dir = Path(font), Path(annotations), Path(out_dir)
    if not font.is_file():
        raise DatasetError("emoji font not found (install Debian's fonts-noto-color-emoji)", path=str(font))
    names = read_annotations(annotations)
    fingerprint = _fingerprint(font, annotations)
    manifest = out_dir / MANIFEST_NAME
    try:
        info = json.loads((out_dir / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and info.get("fingerprint") == fingerprint and manifest.is_file():
        return manifest
    if out_dir.exists() and not isinstance(info, dict) and any(out_dir.iterdir()):
        raise DatasetError("exists, is not empty and holds no emoji set; refusing to replace it", path=str(out_dir))
    try:
        face = ImageFont.truetype(str(font), GLYPH_SIZE)
    except OSError as exc:
        raise DatasetError(f"cannot load the emoji font: {exc}", path=str(font)) from exc
    wanted = sorted(e for e, by_lang in names.items() if "en" in by_lang)
    report = progress or ignore_progress
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    lines, skipped = [], []
    try:
        (stage / "images").mkdir()
        seen: set[str] = set()
        for i, seq in enumerate(wanted):
            key = _key(seq)
            image = None if key in seen else render_emoji(face, seq)  # with and without VS16: one emoji
            if image is None:
                skipped.append(seq)
            else:
                seen.add(key)
                rel = f"images/{key}.jpg"
                image.save(stage / rel, "JPEG", quality=JPEG_QUALITY)
                captions = {lang: [name] for lang, name in sorted(names[seq].items())}
                lines.append({"image": rel, "captions": captions, "split": stamp_split(f"emoji/{key}"),
                              "emoji": seq})
            report(Progress(stage="render", done=i + 1, total=len(wanted)))
        with open(stage / MANIFEST_NAME, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
        languages = sorted({lang for line in lines for lang in line["captions"]})
        summary = {"format": FORMAT, "fingerprint": fingerprint, "font": str(font), "annotations": str(annotations),
                   "emoji": len(lines), "not_drawn": len(skipped), "languages": languages}
        (stage / INFO_NAME).write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        swap_in(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("rendered %d emoji into %s (%d not drawn as one glyph)", len(lines), out_dir, len(skipped))
    return manifest
