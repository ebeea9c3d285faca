"""Long and mixed-language captions through the whole pipeline with `lite`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from frozenlens.engine import Engine

FILLER = (
    "The light that afternoon was soft and the room smelled of old books. "
    "Somebody had left the window open, and the curtains moved slowly. "
    "On the shelf stood a row of porcelain figures collected over many years. "
)
# the telling sentence is buried at the end of a caption far longer than the
# text tower's 128-token context
LONG = FILLER * 6 + "In the middle of all this, grandmother was blowing out the candles on her birthday cake."
MIXED = "Unser Hund Bello spielt im Schnee. The lighthouse in the background was built in 1880."


def test_long_caption_is_chunked_and_its_last_sentence_found(tmp_path, testdata, lite_encoder):
    lib = tmp_path / "lib"
    lib.mkdir()
    for name in ("flower.jpg", "china.jpg", "rocket.jpg", "coffee.png"):
        shutil.copy(testdata / "photos" / name, lib / name)
    manifest = tmp_path / "captions.jsonl"
    manifest.write_text(
        "\n".join(
            json.dumps(line)
            for line in (
                {"path": "lib/flower.jpg", "text": LONG},  # no lang: detected
                {"path": "lib/china.jpg", "text": MIXED},
                {"path": "lib/rocket.jpg", "text": "Ein Raketenstart am Abend.", "lang": "de"},
            )
        ),
        encoding="utf-8",
    )
    assert lite_encoder.count_tokens(LONG) > 2 * lite_encoder.max_text_tokens
    engine = Engine.open(tmp_path / "index", encoder=lite_encoder, create=True)
    engine.index([lib], captions=manifest)
    chunks = engine.spaces["caption"]
    min_long = -(-lite_encoder.count_tokens(LONG) // lite_encoder.max_text_tokens)
    assert min_long >= 3 and len(chunks) >= min_long + 2  # the long caption became several chunks
    assert engine.stats()["captions"] == 3

    hit = engine.search("grandmother's birthday cake with candles", k=1)[0]
    assert Path(hit.path).name == "flower.jpg" and hit.caption_score > hit.image_score
    # each language half of the mixed caption finds it
    assert Path(engine.search("a dog playing in the snow", k=1)[0].path).name == "china.jpg"
    assert Path(engine.search("Leuchtturm aus dem Jahr 1880", k=1)[0].path).name == "china.jpg"

    langs = {Path(h.path).name: [c.lang for c in h.captions] for h in engine.search("a photo", k=10)}
    assert langs["flower.jpg"] == ["en"] and langs["rocket.jpg"] == ["de"]
    for fusion in ("weighted", "rrf"):
        top = engine.search("grandmother's birthday cake with candles", k=1, fusion=fusion)[0]
        assert Path(top.path).name == "flower.jpg", fusion
    engine.close()
