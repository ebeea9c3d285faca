"""R@1 of encoders on the 34 real photos × 72 multilingual queries, through the engine (index, then search).

The set of ``tests/integration/test_quality_lite.py`` (the KPhotoAlbum demo and
the scikit-image/-learn/matplotlib samples; 12 everyday concepts in 6
languages; pixels only, no captions). It is the validation set of ``lite``'s
ConSE recipe (``bench/lite_recipe_quality.py``), so for ``lite`` this is not a
test score; for any other encoder it is a photo check it was never tuned on.

    .venv/bin/python bench/photo_queries.py lite flame:gemma-3-270m/lite0-tuxpaint
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.integration.test_quality_lite import CONCEPTS  # noqa: E402

from frozenlens.engine import Engine  # noqa: E402


def score(encoder: str, data: Path, cache: Path | None) -> dict[str, object]:
    options = {"cache_dir": str(cache)} if cache else None
    with tempfile.TemporaryDirectory() as tmp:
        lib = Path(tmp) / "lib"
        shutil.copytree(data / "kphotoalbum", lib / "kpa")
        shutil.copytree(data / "photos", lib / "samples")
        t = time.perf_counter()
        with Engine.open(Path(tmp) / "index", encoder=encoder, encoder_options=options, create=True) as engine:
            engine.index([lib])
            misses, total = [], 0
            for queries, expected in CONCEPTS.items():
                for q in queries:
                    total += 1
                    top = Path(engine.search(q, k=1)[0].path).name
                    if top not in expected:
                        misses.append([q, top])
        return {"encoder": encoder, "r1": round(100 * (total - len(misses)) / total, 1), "queries": total,
                "misses": misses, "seconds": round(time.perf_counter() - t, 1)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("encoders", nargs="+")
    ap.add_argument("--data", type=Path, default=REPO / ".cache" / "testdata")
    ap.add_argument("--model-cache", type=Path, default=REPO / ".cache" / "models")
    args = ap.parse_args(argv)
    for name in args.encoders:
        print(json.dumps(score(name, args.data, args.model_cache), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
