"""Tests for frozenlens.indexer.decode against a generated hostile corpus."""

from __future__ import annotations

import importlib.util
import io
import os
import warnings
from datetime import datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, TiffImagePlugin

from frozenlens.errors import DecodeError
from frozenlens.indexer.decode import (
    BACKGROUND_RGB,
    DecodedImage,
    DecodeLimits,
    decode_bytes,
    decode_file,
)

REPO = Path(__file__).resolve().parents[2]
KPA = Path(os.environ.get("FROZENLENS_TESTDATA") or REPO / ".cache" / "testdata") / "kphotoalbum"


def _load_corpus_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "hostile_corpus.py"
    spec = importlib.util.spec_from_file_location("hostile_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _load_corpus_module()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("hostile")
    return directory, hc.make_hostile_corpus(directory)


def outcome(fn, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    try:
        result = fn(*args, **kwargs)
    except DecodeError as exc:
        return exc.reason
    assert isinstance(result, DecodedImage)
    assert result.image.mode == "RGB"
    return "ok"


def test_every_corpus_file_gives_its_expected_outcome(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, expected = corpus
    got = {name: outcome(decode_file, directory / name) for name in expected}
    assert got == expected


def test_decode_bytes_agrees_with_decode_file(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, expected = corpus
    got = {name: outcome(decode_bytes, (directory / name).read_bytes())
           for name in expected if name != "unreadable.jpg"}
    assert got == {k: v for k, v in expected.items() if k != "unreadable.jpg"}


def test_no_warnings_escape_and_pillow_globals_untouched(
    corpus: tuple[Path, dict[str, str]]
) -> None:
    directory, expected = corpus
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in expected:
            outcome(decode_file, directory / name)
    assert caught == []
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_pixel_limit_is_ours_not_pillows() -> None:
    # 10000 x 10000 = 1e8: above Pillow's warning threshold (~8.9e7), below our default.
    mid = hc.bomb_png(10000, 10000, terminated=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leaked DecompressionBombWarning would raise here
        assert outcome(decode_bytes, mid) == "truncated"  # allowed, then the data ends
        assert outcome(decode_bytes, mid, limits=DecodeLimits(max_pixels=50_000_000)) == (
            "too-many-pixels")
    small = _jpeg_bytes(Image.new("RGB", (100, 100)))
    assert outcome(decode_bytes, small, limits=DecodeLimits(max_pixels=9_999)) == "too-many-pixels"
    assert outcome(decode_bytes, small, limits=DecodeLimits(max_pixels=10_000)) == "ok"


def test_file_size_limit(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    path = directory / "gray.jpg"
    limits = DecodeLimits(max_file_bytes=path.stat().st_size - 1)
    assert outcome(decode_file, path, limits=limits) == "too-large"
    assert outcome(decode_bytes, path.read_bytes(), limits=limits) == "too-large"


def test_cmyk_colours_roughly_right(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    for name in ("cmyk.jpg", "cmyk_bad_icc.jpg"):
        img = decode_file(directory / name, draft_size=None).image
        assert img.size == (200, 200)
        for i, (_, rgb) in enumerate(hc.CMYK_QUADRANTS):
            y, x = divmod(i, 2)
            got = img.getpixel((x * 100 + 50, y * 100 + 50))
            assert all(abs(g - e) <= 40 for g, e in zip(got, rgb, strict=True)), (name, got, rgb)


def test_16bit_is_scaled_not_clipped(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    assert Image.open(directory / "gray16.png").mode.startswith("I")
    row = np.asarray(decode_file(directory / "gray16.png").image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert abs(row[len(row) // 2] - 128) <= 2
    assert np.all(np.diff(row) >= 0)
    assert (row == 255).sum() <= 3  # clipping would saturate most of the ramp


def test_float_hdr_is_stretched(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    row = np.asarray(decode_file(directory / "hdr_float.tif").image)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[128] - 128) <= 2


@pytest.mark.parametrize("name", ["animated.gif", "animated.webp"])
def test_animation_gives_first_frame(corpus: tuple[Path, dict[str, str]], name: str) -> None:
    directory, _ = corpus
    img = decode_file(directory / name).image
    assert img.size == (64, 48)
    r, g, b = img.getpixel((32, 24))
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_swaps_dimensions(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    w, h = hc.ROTATED_STORED_SIZE
    decoded = decode_file(directory / "rotated.jpg", draft_size=None)
    assert decoded.image.size == (h, w)
    assert (decoded.metadata.width, decoded.metadata.height) == (h, w)
    # orientation 6: the stored top-left corner ends up top-right
    r, g, b = decoded.image.getpixel((h - 5, 5))
    assert r > 200 and b < 60
    with Image.open(directory / "rotated.jpg") as raw:
        reference = ImageOps.exif_transpose(raw.convert("RGB"))
    assert np.array_equal(np.asarray(decoded.image), np.asarray(reference))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_all_orientations_match_pillow(orientation: int) -> None:
    arr = np.random.default_rng(orientation).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", exif=exif.tobytes())
    decoded = decode_bytes(buf.getvalue(), draft_size=None)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))
    assert (decoded.metadata.width, decoded.metadata.height) == expected.size


@pytest.mark.parametrize("name", ["palette_transparent.png", "rgba.png"])
def test_transparency_composited_on_background(
    corpus: tuple[Path, dict[str, str]], name: str
) -> None:
    directory, _ = corpus
    img = decode_file(directory / name).image
    assert img.getpixel((10, 10)) == (255, 0, 0)
    assert img.getpixel((50, 10)) == BACKGROUND_RGB


def test_grey_and_bilevel_become_rgb(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    grey = decode_file(directory / "gray.jpg").image
    assert grey.size == (320, 240)
    r, g, b = grey.getpixel((300, 100))
    assert r == g == b and r > 200
    bilevel = np.asarray(decode_file(directory / "bilevel.png").image)
    assert set(np.unique(bilevel).tolist()) == {0, 255}
    la = decode_file(directory / "gray_alpha.png").image
    assert la.getpixel((5, 5)) == (40, 40, 40) and la.getpixel((5, 25)) == BACKGROUND_RGB


def test_draft_keeps_shorter_side_and_reports_original_size(
    corpus: tuple[Path, dict[str, str]]
) -> None:
    directory, _ = corpus
    decoded = decode_file(directory / "large.jpg")
    assert (decoded.metadata.width, decoded.metadata.height) == hc.LARGE_SIZE
    assert 256 <= min(decoded.image.size) < 2 * 256
    assert max(decoded.image.size) <= hc.LARGE_SIZE[0] // 4
    w, h = decoded.image.size
    assert abs(w / h - 4 / 3) < 0.02
    bigger = decode_file(directory / "large.jpg", draft_size=700).image
    assert 700 <= min(bigger.size) < 1400
    full = decode_file(directory / "large.jpg", draft_size=None).image
    assert full.size == hc.LARGE_SIZE


def test_non_jpeg_is_reduced_too() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (1200, 900), (1, 2, 3)).save(buf, "PNG")
    img = decode_bytes(buf.getvalue(), draft_size=256).image
    assert img.size == (400, 300)


def test_wrong_extension_reports_real_format(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, _ = corpus
    decoded = decode_file(directory / "png_named.jpg")
    assert decoded.metadata.format == "PNG"
    assert decoded.image.getpixel((0, 0)) == (0, 128, 0)


def test_missing_directory_fifo_and_permission(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert outcome(decode_file, tmp_path / "nope.jpg") == "vanished"
    assert outcome(decode_file, tmp_path) == "not-an-image"
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.jpg")
        assert outcome(decode_file, tmp_path / "pipe.jpg") == "not-an-image"  # no blocking
    real = tmp_path / "real.jpg"
    Image.new("RGB", (8, 8)).save(real)

    def denied(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    assert outcome(decode_file, real) == "unreadable"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_file_handles_are_closed(corpus: tuple[Path, dict[str, str]]) -> None:
    directory, expected = corpus
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        for name in expected:
            outcome(decode_file, directory / name)
    assert len(os.listdir("/proc/self/fd")) <= before


def test_image_is_loaded_and_independent_of_file(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.new("RGB", (30, 20), (9, 8, 7)).save(path)
    decoded = decode_file(path)
    path.unlink()
    assert decoded.image.getpixel((29, 19)) == (9, 8, 7)


def _jpeg_bytes(img: Image.Image, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes() if exif is not None else b"")
    return buf.getvalue()


def _rat(num: int, den: int = 1) -> TiffImagePlugin.IFDRational:
    return TiffImagePlugin.IFDRational(num, den)


def test_exif_metadata_fields() -> None:
    exif = Image.Exif()
    exif[0x010F] = "NIKON CORPORATION\x00"
    exif[0x0110] = "  NIKON D750 "
    exif[0x0132] = "2015:01:01 00:00:00"
    sub = exif.get_ifd(0x8769)
    sub[0x9003] = "0000:00:00 00:00:00"  # placeholder: ignored
    sub[0x9004] = "2014:07:14 18:30:05"
    sub[0xA434] = "24.0-120.0 mm f/4.0"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "S", (_rat(33), _rat(51), _rat(3036, 100))
    gps[3], gps[4] = "E", (_rat(151), _rat(12), _rat(30))
    meta = decode_bytes(_jpeg_bytes(Image.new("RGB", (40, 30)), exif)).metadata
    assert meta.camera_make == "NIKON CORPORATION" and meta.camera_model == "NIKON D750"
    assert meta.lens == "24.0-120.0 mm f/4.0"
    assert meta.taken_at == datetime(2014, 7, 14, 18, 30, 5)
    assert meta.lat == pytest.approx(-(33 + 51 / 60 + 30.36 / 3600))
    assert meta.lon == pytest.approx(151 + 12 / 60 + 30 / 3600)
    assert (meta.width, meta.height, meta.format) == (40, 30, "JPEG")


@pytest.mark.parametrize(
    "lat",
    [
        (_rat(33), _rat(0, 0), _rat(0)),  # zero denominator
        (_rat(95), _rat(0), _rat(0)),  # out of range
        (_rat(0), _rat(0), _rat(0)),  # with lon 0: "no fix"
    ],
)
def test_malformed_gps_gives_none(lat: tuple) -> None:  # type: ignore[type-arg]
    exif = Image.Exif()
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", lat, "W", (_rat(0), _rat(0), _rat(0))
    meta = decode_bytes(_jpeg_bytes(Image.new("RGB", (8, 8)), exif)).metadata
    assert meta.lat is None and meta.lon is None


def test_no_exif_gives_empty_metadata() -> None:
    meta = decode_bytes(_jpeg_bytes(Image.new("RGB", (8, 6)))).metadata
    assert meta.taken_at is None and meta.camera_make is None and meta.lat is None
    assert (meta.width, meta.height) == (8, 6)


@pytest.mark.skipif(not (KPA / "index.xml").is_file(),
                    reason="run scripts/fetch_test_data.py for the kphotoalbum photos")
def test_real_exif_from_kphotoalbum() -> None:
    anne = decode_file(KPA / "anne_helene.jpg").metadata
    assert (anne.camera_make, anne.camera_model) == ("Canon", "Canon EOS 20D")
    assert anne.taken_at == datetime(2005, 7, 28, 5, 18, 48)
    assert (anne.width, anne.height) == (400, 600)
    # IFD0 DateTime is the invalid "2001:12:00 00:00:00"; DateTimeOriginal wins
    canyon = decode_file(KPA / "grand_canyon_2.jpg").metadata
    assert canyon.taken_at == datetime(2003, 1, 2, 6, 48, 54)
    assert canyon.camera_make == "JENOPTIK OPTICAL CO,LTD"
    metas = [decode_file(p).metadata for p in sorted(KPA.glob("*.jpg"))]
    assert len(metas) == 24
    with_camera = [m for m in metas if m.camera_model]
    assert len(with_camera) == 17
    assert all(m.taken_at is not None and 2001 <= m.taken_at.year <= 2006 for m in with_camera)
    assert {m.camera_make for m in with_camera} == {
        "Canon", "OLYMPUS OPTICAL CO.,LTD", "JENOPTIK OPTICAL CO,LTD"}
