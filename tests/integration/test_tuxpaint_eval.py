"""The Tux Paint converter on the real Debian package, and the `lite` encoder on its test split.

The fixture runs ``scripts/fetch_tuxpaint.py`` (apt-get download + dpkg -x
on the first run, well under a second afterwards) into
``$FROZENLENS_TESTDATA/tuxpaint`` (default ``<repo>/.cache/testdata/tuxpaint``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from frozenlens.eval import evaluate, read_manifest
from frozenlens.eval.tuxpaint import CANVAS, convert_tuxpaint, stamp_split
from tests.conftest import REPO
from tests.conftest import testdata_dir as _testdata_dir

pytestmark = pytest.mark.slow

#: the package these exact counts were taken from (Debian bookworm)
KNOWN_PACKAGE = "tuxpaint-stamps-default_2022.06.04-1_all.deb"
#: the 16 languages of the lite encoder's text tower (USE multilingual v3)
USE_LANGUAGES = ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh", "zh-Hant")


@pytest.fixture(scope="module")
def tuxpaint() -> Path:
    """The converted set's folder (fetched and converted by the script when missing)."""
    dest = _testdata_dir() / "tuxpaint"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fetch_tuxpaint.py"), "--dest", str(dest)],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/fetch_tuxpaint.py failed:\n{proc.stderr}")
    assert proc.stdout.strip() == str(dest / "dataset" / "manifest.jsonl")
    return dest


def _lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]


def test_counts_languages_and_splits(tuxpaint):
    dataset_dir = tuxpaint / "dataset"
    lines = _lines(dataset_dir / "manifest.jsonl")
    info = json.loads((dataset_dir / "tuxpaint.json").read_text(encoding="utf-8"))
    package = json.loads((tuxpaint / "stamps" / ".fetched").read_text())["package"]
    n = len(lines)
    splits = {s: sum(1 for ln in lines if ln["split"] == s) for s in ("train", "val", "test")}
    assert info["stamps"] == n and info["splits"] == splits
    if package == KNOWN_PACKAGE:  # counted on the real package when this test was written
        assert n == 785
        assert splits == {"train": 637, "val": 69, "test": 79}
        assert info["skipped"] == {"svg_only": 165, "no_image": 2, "png_without_caption": 11}
        assert len(info["coverage"]) == 74
    else:  # another package version: the same shape, roughly
        assert 600 <= n <= 1200
    assert abs(splits["train"] / n - 0.8) < 0.05 and abs(splits["test"] / n - 0.1) < 0.04

    stamps = [ln["stamp"] for ln in lines]
    assert stamps == sorted(stamps) and len(set(stamps)) == n
    for ln in lines:
        assert ln["split"] == stamp_split(ln["stamp"])  # the documented, fixed rule
        assert ln["image"] == f"images/{ln['stamp']}.jpg"
        assert ln["captions"]["en"] and all(ln["captions"].values())

    coverage = info["coverage"]
    for lang in ("de", "fr", "es", "ru", "ja", "pt", "nl", "pl", "uk", "sv", "cs", "en"):
        assert coverage[lang] == n, lang  # on every stamp
    for lang in USE_LANGUAGES:
        assert coverage[lang] >= 0.85 * n, (lang, coverage[lang])
    assert not any(tag in coverage for tag in ("pt_BR", "zh_CN", "en_GB", "ca@valencia"))  # normalised

    for ln in lines[:: max(1, n // 40)]:  # a sample of the images
        with Image.open(dataset_dir / ln["image"]) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (CANVAS, CANVAS)

    ds = read_manifest(dataset_dir / "manifest.jsonl")  # the format-(a) reader accepts it
    assert len(ds) == n and len(ds.with_split("test")) == splits["test"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "tuxpaint.json"
    }


def test_conversion_is_deterministic_and_idempotent(tuxpaint, tmp_path):
    again = convert_tuxpaint(tuxpaint / "stamps", tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(tuxpaint / "dataset")  # byte-identical images + manifest
    before = again.stat().st_mtime_ns
    assert convert_tuxpaint(tuxpaint / "stamps", tmp_path / "again") == again  # up to date: nothing rewritten
    assert again.stat().st_mtime_ns == before


def test_lite_retrieves_tuxpaint_test_split_well_above_chance(tuxpaint, lite_encoder):
    # Measured with lite version 3 (ConSE + the learned projector; 79 test stamps, chance R@1 = 1.3 %,
    # R@10 = 12.7 %), T2I R@1 / R@10 in %:
    #   en 30.0/80.0  de 27.8/73.4  fr 32.9/79.7  es 32.9/75.9  ru 22.8/68.4  ja 16.5/58.2  zh 29.6/77.5
    #   mean T2I R@1 27.5, mean I2T R@1 12.6. Version 2 (ConSE alone) measured 15.3 and 7.5, R@10 36.7-50.6:
    # the mean and R@10 floors fail it. Mean T2I R@1 >= 20 is the issue-15 target. One stamp is 1.3 points.
    ds = read_manifest(tuxpaint / "dataset" / "manifest.jsonl", split="test")
    langs = ["en", "de", "fr", "es", "ru", "ja", "zh"]
    result = evaluate(ds, lite_encoder, languages=langs)
    assert result.n_images == len(ds) and result.languages == langs
    summary = {r.language: (round(r.metrics.t2i_r1, 3), round(r.metrics.t2i_r10, 3)) for r in result.per_language}
    assert result.mean.t2i_r1 >= 0.20, summary
    assert result.mean.i2t_r1 >= 0.09, summary
    for r in result.per_language:
        assert r.metrics.t2i_r10 >= 0.45, summary
        assert r.metrics.t2i_r1 >= 0.08, summary  # 6x chance
