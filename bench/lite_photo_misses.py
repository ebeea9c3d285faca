"""Which validation-photo queries does each `lite` version miss? (issue 15 §1; docs/quality.md)

The 72 queries over 34 photos of ``tests/integration/test_quality_lite.py``; photos decoded with
PIL and embedded with ``embed_images`` (no DCT draft, unlike the indexer), top-1 by cosine.

    .venv/bin/python bench/lite_photo_misses.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rerank_quality as rq  # noqa: F401  (puts src/ on the path)
from frozenlens.models.lite import LiteEncoder
from lite_recipe_quality import photo_set


def main() -> int:
    paths, queries, truth = photo_set()
    for version, projection in (("2", 0.0), ("3", None)):
        enc = LiteEncoder() if projection is None else LiteEncoder(projection=projection)
        assert enc.identity.version == version
        images = []
        for p in paths:
            with Image.open(p) as im:
                images.append(im.convert("RGB"))
        top = np.argmax(enc.encode_texts(queries) @ enc.embed_images(images).semantic.T, axis=1)
        misses = [f"{queries[i]!r} → {paths[t].name}" for i, t in enumerate(top) if int(t) not in truth[i]]
        print(f"lite version {version}: {len(queries) - len(misses)}/{len(queries)}; missed: {', '.join(misses)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
