"""Quality floor of the offline `lite` encoder on real photos, through the engine.

34 real photos (KPhotoAlbum demo + scikit-image/-learn/matplotlib samples), 12
everyday concepts asked in 6 languages = 72 text queries, pixels only (no
captions). Measured R@1 through the engine: 0.847 (61/72) with the first
ConSE recipe (bare class names, top 20, T 3; the misses were the rabbit/dog
confusion and "sunset", which has no ImageNet class), 0.972 (70/72) with the
issue-15 recipe (WordNet lemmas + gloss, top 50, T 5; misses: "ein
Billardtisch" and "un coucher de soleil"). This set is validation data of
that choice (bench/lite_recipe_quality.py), so the floor guards against
regressions of the encoder, decoder or search path; it is not a test score.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from frozenlens.engine import Engine

pytestmark = pytest.mark.slow

CONCEPTS: dict[tuple[str, ...], set[str]] = {
    ("a dog", "un chien", "ein Hund", "un perro", "собака", "狗"): {"donna.jpg", "donna_2.jpg"},
    ("a rabbit", "un lapin", "ein Kaninchen", "un conejo", "кролик", "兔子"): {"spiff.jpg", "spiff_2.jpg"},
    ("a cat", "un chat", "eine Katze", "un gato", "кошка", "猫"): {"chelsea.png"},
    ("an airplane", "un avion", "ein Flugzeug", "un avión", "самолёт", "飞机"): {"snow.jpg"},
    ("a billiard table", "un billard", "ein Billardtisch", "una mesa de billar", "бильярдный стол", "台球桌"): {"pool.jpg", "pool_2.jpg"},
    ("a flower", "une fleur", "eine Blume", "una flor", "цветок", "花"): {"flower.jpg"},
    ("a cup of coffee", "une tasse de café", "eine Tasse Kaffee", "una taza de café", "чашка кофе", "一杯咖啡"): {"coffee.png"},
    ("a motorbike", "une moto", "ein Motorrad", "una moto", "мотоцикл", "摩托车"): {"motorcycle_left.png"},
    ("a rocket", "une fusée", "eine Rakete", "un cohete", "ракета", "火箭"): {"rocket.jpg"},
    ("a temple", "un temple", "ein Tempel", "un templo", "храм", "寺庙"): {"china.jpg"},
    ("the sea", "la mer", "das Meer", "el mar", "море", "大海"): {"skagen.jpg", "skagen_2.jpg", "cold_water.jpg"},
    ("a sunset", "un coucher de soleil", "ein Sonnenuntergang", "una puesta de sol", "закат", "日落"): {"sunset.jpg"},
}


def test_category_queries_in_six_languages(tmp_path, testdata, lite_encoder):
    lib = tmp_path / "lib"
    shutil.copytree(testdata / "kphotoalbum", lib / "kpa")
    shutil.copytree(testdata / "photos", lib / "samples")
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    engine.index([lib])  # no captions manifest: pixels only
    assert engine.stats()["captions"] == 0
    hits = total = 0
    misses = []
    for queries, expected in CONCEPTS.items():
        for q in queries:
            top = Path(engine.search(q, k=1)[0].path).name
            total += 1
            if top in expected:
                hits += 1
            else:
                misses.append((q, top))
    r1 = hits / total
    assert total == 72
    assert r1 >= 0.93, (r1, misses)
