"""The emoji training set: Debian's colour emoji font drawn by Pillow, named by Debian's CLDR files.

Runs on the real font and, where a test needs a known set of names, on a small CLDR folder written
here in CLDR's own layout (``make emoji-data`` installs both Debian packages).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from frozenlens.errors import DatasetError
from frozenlens.eval.datasets import load_dataset
from frozenlens.eval.emoji import (
    DEFAULT_ANNOTATIONS,
    DEFAULT_FONT,
    GLYPH_SIZE,
    convert_emoji,
    read_annotations,
    render_emoji,
)
from frozenlens.eval.tuxpaint import CANVAS

if not DEFAULT_FONT.is_file() or not DEFAULT_ANNOTATIONS.is_dir():  # pragma: no cover - make emoji-data installs them
    pytest.fail("the emoji font or CLDR annotations are missing: run `make emoji-data`", pytrace=False)

_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n<ldml><identity><language type="{lang}"/></identity><annotations>\n'
_TAIL = "</annotations></ldml>\n"


def _cldr(folder: Path, files: dict[str, dict[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, names in files.items():
        body = "".join(f'<annotation cp="{cp}">kw | {name}</annotation>\n'
                       f'<annotation cp="{cp}" type="tts">{name}</annotation>\n' for cp, name in names.items())
        (folder / f"{stem}.xml").write_text(_HEAD.format(lang=stem) + body + _TAIL, encoding="utf-8")
    return folder


def test_names_keep_short_names_of_bare_languages_and_script_variants(tmp_path: Path) -> None:
    folder = _cldr(tmp_path / "ann", {
        "en": {"🐶": "dog face", "!": "exclamation mark"},
        "fr": {"🐶": "tête de chien"},
        "fr_CA": {"🐶": "regional variant, left out"},
        "zh_Hant": {"🐶": "狗臉"},
        "de": {"🐶": "↑↑↑"},  # inherit marker: no name of its own
        "root": {"🐶": "root, left out"},
    })
    names = read_annotations(folder)
    assert names["🐶"] == {"en": "dog face", "fr": "tête de chien", "zh-Hant": "狗臉"}
    assert names["!"] == {"en": "exclamation mark"}
    with pytest.raises(DatasetError, match="unicode-cldr-core"):
        read_annotations(tmp_path / "missing")


def test_only_single_glyphs_are_drawn() -> None:
    font = ImageFont.truetype(str(DEFAULT_FONT), GLYPH_SIZE)
    dog = render_emoji(font, "🐶")
    assert dog is not None and dog.mode == "RGB" and dog.size == (CANVAS, CANVAS)
    px = np.asarray(dog)
    assert (px[0, 0] == 255).all() and px.std() > 30  # white margin, coloured glyph
    assert render_emoji(font, "👨\u200d👩\u200d👧") is not None  # a ZWJ sequence drawn as one (grey) glyph
    assert render_emoji(font, "x") is None  # no glyph in this font
    assert render_emoji(font, "🐶🐱") is None  # two glyphs side by side


def test_convert_writes_a_manifest_set_once_and_refuses_foreign_folders(tmp_path: Path) -> None:
    folder = _cldr(tmp_path / "ann", {"en": {"🐶": "dog face", "🌅": "sunrise", "!": "exclamation mark",
                                             "\u2603": "snowman", "\u2603\ufe0f": "snowman, emoji style"},
                                      "ja": {"🐶": "イヌの顔", "🌅": "日の出"}})
    out = tmp_path / "emoji"
    manifest = convert_emoji(out, annotations=folder)
    ds = load_dataset(manifest, "manifest")
    by_name = {im.captions["en"][0]: im for im in ds.images}
    # the font has no "!"; the snowman with and without VS16 is one emoji (one file name)
    assert sorted(by_name) == ["dog face", "snowman", "sunrise"]
    assert by_name["sunrise"].captions["ja"] == ("日の出",)
    assert by_name["dog face"].path.name == "1f436.jpg"
    info = json.loads((out / "emoji.json").read_text(encoding="utf-8"))
    assert (info["emoji"], info["not_drawn"], info["languages"]) == (3, 2, ["en", "ja"])
    before = manifest.stat().st_mtime_ns
    assert convert_emoji(out, annotations=folder) == manifest and manifest.stat().st_mtime_ns == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(DatasetError, match="refusing"):
        convert_emoji(foreign, annotations=folder)
    assert (foreign / "keep.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(DatasetError, match="fonts-noto-color-emoji"):
        convert_emoji(tmp_path / "other", font=tmp_path / "no-font.ttf", annotations=folder)


def test_the_debian_set_covers_the_text_towers_languages(tmp_path: Path) -> None:
    names = read_annotations(DEFAULT_ANNOTATIONS)
    use = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-Hant")
    dog = names["🐶"]
    assert all(lang in dog for lang in use)
    assert len([e for e, n in names.items() if "en" in n]) > 1500
