"""A labelled near-duplicate set generated from real photos (tests and ``bench/neardup_quality.py``).

Each real photo is an *original*; its variants are near-duplicates of it:
resized to 50 % and to 25 %, re-encoded as JPEG quality 25, cropped a little
(5 % off every side; 10 % off the top-left), mirrored left-right, and a
"burst" neighbour (shifted 3 % and 8 % brighter, as the next frame of a burst).
The label of every file is the name of its original, so two files belong to
one true group exactly when they come from the same photo. Genuinely
different photos of the same subject (the KPhotoAlbum demo's ``donna.jpg`` /
``donna_2.jpg``, ``grand_canyon_1..3``, ...) are different originals, so they
must NOT be grouped: they are the hard negatives.

Two disjoint splits, by original photo (same-subject sets stay in one split):
``validation`` (for choosing the threshold) and ``test`` (for reporting).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

#: KPhotoAlbum stems of each split (same-subject sets kept together), plus the package sample photos
SPLITS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "validation": (
        ("bar55", "bar55_2", "donna", "donna_2", "grand_canyon_1", "grand_canyon_2", "grand_canyon_3",
         "jesper", "jesper_2", "anne_helene", "blackie", "cold_water"),
        ("astronaut", "chelsea", "coffee", "china", "motorcycle_left"),
    ),
    "test": (
        ("new_wave_1", "new_wave_2", "pool", "pool_2", "skagen", "skagen_2", "spiff", "spiff_2",
         "snow", "sunset", "wayne", "qt-logo"),
        ("flower", "grace_hopper", "rocket", "hubble_deep_field", "immunohistochemistry"),
    ),
}
VARIANTS = ("half", "quarter", "jpeg25", "crop5", "crop10", "flip", "burst")


def _variant(img: Image.Image, kind: str) -> Image.Image:
    w, h = img.size
    if kind == "half":
        return img.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS)
    if kind == "quarter":
        return img.resize((max(1, w // 4), max(1, h // 4)), Image.Resampling.LANCZOS)
    if kind == "jpeg25":
        return img
    if kind == "crop5":
        dx, dy = w // 20, h // 20
        return img.crop((dx, dy, w - dx, h - dy))
    if kind == "crop10":
        return img.crop((w // 10, h // 10, w, h))
    if kind == "flip":
        return ImageOps.mirror(img)
    if kind == "burst":
        dx, dy = int(w * 0.03), int(h * 0.03)
        return ImageEnhance.Brightness(img.crop((dx, dy, w, h))).enhance(1.08)
    raise ValueError(kind)


def originals(testdata: Path, split: str) -> list[Path]:
    """The real photos of ``split``."""
    album, samples = SPLITS[split]
    found = [testdata / "kphotoalbum" / f"{s}.jpg" for s in album]
    for stem in samples:
        found += sorted((testdata / "photos").glob(f"{stem}.*"))
    missing = [p for p in found if not p.exists()]
    if missing or not found:
        raise FileNotFoundError(f"test photos missing: {missing[:3]}")
    return found


def make_set(testdata: Path, split: str, out: Path) -> dict[str, str]:
    """Write ``split``'s originals and variants under ``out`` (JPEG, 8-bit RGB);
    returns {absolute file path: label (the original's name)}."""
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, str] = {}
    for src in originals(testdata, split):
        with Image.open(src) as im:
            img = ImageOps.exif_transpose(im).convert("RGB")
        label = src.stem
        path = out / f"{label}.jpg"
        img.save(path, quality=92)
        labels[str(path.resolve())] = label
        for kind in VARIANTS:
            path = out / f"{label}__{kind}.jpg"
            _variant(img, kind).save(path, quality=25 if kind == "jpeg25" else 90)
            labels[str(path.resolve())] = label
    return labels


def pair_scores(found: list[list[str]], labels: dict[str, str]) -> dict[str, float]:
    """Pairwise precision, recall and F1 of a grouping ``found`` (lists of paths; photos in no
    list are singletons) against ``labels``: a pair is positive when both files share a label."""
    true_pairs = {frozenset(p) for p in itertools.combinations(sorted(labels), 2) if labels[p[0]] == labels[p[1]]}
    got = {frozenset(p) for group in found for p in itertools.combinations(sorted(group), 2)}
    tp = len(true_pairs & got)
    precision = tp / len(got) if got else 1.0
    recall = tp / len(true_pairs) if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "pairs_found": len(got),
            "pairs_true": len(true_pairs), "pairs_correct": tp}
