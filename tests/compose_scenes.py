"""A small labelled set for composed queries, built from real Tux Paint photo cut-outs.

Each scene is a grey 448x256 canvas with one bird on the left and a kettle
or a pizza on the right (the same eight birds twice), plus the kettle and the
pizza alone. Labels: which birds and objects a scene shows. The `lite`
classifier sees the kettle ("coffeepot") but hardly the pizza, so "a bird"
alone ranks the two kinds of bird scene close together, and "a bird" minus
"a kettle" must push the kettle scenes down.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

BIRDS = ("blackbird", "crow", "duck", "hen", "heron_greatblue", "cuckoo", "drake", "gander")
OBJECTS = {"kettle": "household/kettle.png", "pizza": "food/pizza.png"}


def _stamp(path: Path, size: int) -> Image.Image:
    im = Image.open(path).convert("RGBA")
    im.thumbnail((size, size))
    return im


def _scene(parts: list[tuple[Path, int, int]]) -> Image.Image:
    canvas = Image.new("RGBA", (448, 256), (200, 200, 200, 255))
    for path, size, x in parts:
        s = _stamp(path, size)
        canvas.alpha_composite(s, (x + (224 - s.width) // 2, (256 - s.height) // 2))
    return canvas.convert("RGB")


def build_scenes(testdata: Path, out: Path) -> dict[str, set[str]]:
    """Write the scenes as JPEGs into ``out`` → {file name: labels ("bird", "kettle", "pizza", the bird's name)}."""
    stamps = testdata / "tuxpaint" / "stamps"
    out.mkdir(parents=True, exist_ok=True)
    labels: dict[str, set[str]] = {}
    for bird in BIRDS:
        for obj, rel in OBJECTS.items():
            name = f"{bird}+{obj}.jpg"
            _scene([(stamps / "animals" / "birds" / f"{bird}.png", 220, 0), (stamps / rel, 200, 224)]).save(
                out / name, quality=92)
            labels[name] = {"bird", bird, obj}
    for obj, rel in OBJECTS.items():
        _scene([(stamps / rel, 200, 224)]).save(out / f"{obj}.jpg", quality=92)
        labels[f"{obj}.jpg"] = {obj}
    return labels
