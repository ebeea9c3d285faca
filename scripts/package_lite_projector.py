"""Package the projector chosen and trained by ``bench/lite_projector_quality.py`` for ``lite`` version 3.

Reads ``.cache/lite-projector/projector.safetensors`` and its ``projector.json``
and writes ``src/frozenlens/data/lite0-projector.safetensors``: the layers as
float16, the input statistics as float32, and the settings in the file's
metadata (``hidden``, ``lambda``, how it was trained). Prints the file's
SHA-256: ``frozenlens.models.lite.PROJECTOR_SHA256`` must name it (a new file is
a new encoder version). safetensors writes the metadata in a varying order, so
packaging the same weights again gives another digest: only repackage when the
weights change. The stamps it was trained on are GPL artwork, so the
packaged weights are distributed under GPL-2.0-or-later (the emoji it may also be
trained on are Noto Color Emoji, OFL-1.1, named by Unicode CLDR data).

    .venv/bin/python bench/lite_projector_quality.py && .venv/bin/python scripts/package_lite_projector.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _packaging import package, read_config  # noqa: E402

SOURCE = REPO / ".cache" / "lite-projector" / "projector.safetensors"
OUT = REPO / "src" / "frozenlens" / "data" / "lite0-projector.safetensors"


def main() -> int:
    config = read_config(SOURCE)
    meta = {k: str(config[k]) for k in ("hidden", "lambda", "data", "seed", "epoch", "images")}
    meta["val"] = json.dumps(config["val"])
    meta["licence"] = ("GPL-2.0-or-later (trained on tuxpaint-stamps-default artwork; the emoji are Noto Color Emoji, "
                       "OFL-1.1, named by Unicode CLDR data)")
    meta["trained_by"] = "bench/lite_projector_quality.py"
    digest = package(SOURCE, OUT, float32=("in_mean", "in_sd"), meta=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB), sha256 {digest}: {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
