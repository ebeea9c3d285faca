"""Package the projector trained by ``bench/flame_projector_quality.py`` as ``flame:gemma-3-270m/lite0-tuxpaint``.

Reads ``.cache/flame-projector/projector.safetensors`` and its ``projector.json``
and writes ``src/frozenlens/data/flame-lite0-tuxpaint.safetensors``: float16
tensors (the projector, its input standardisation, the Gemma text statistics;
the training-only logit scale/bias are dropped) with the settings the encoder
needs in the file's metadata. The stamps it was trained on are GPL artwork, so
the packaged weights are distributed under GPL-2.0-or-later.

    .venv/bin/python bench/flame_projector_quality.py && .venv/bin/python scripts/package_flame_lite.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _packaging import package, read_config  # noqa: E402

SOURCE = REPO / ".cache" / "flame-projector" / "projector.safetensors"
OUT = REPO / "src" / "frozenlens" / "data" / "flame-lite0-tuxpaint.safetensors"


def main() -> int:
    config = read_config(SOURCE)
    meta = {k: str(config[k]) for k in ("llm", "layer", "prompt", "hidden", "dim", "seed", "epoch", "val_r1")}
    meta["norm"] = config["text_norm"]
    meta["licence"] = "GPL-2.0-or-later (trained on tuxpaint-stamps-default artwork)"
    meta["trained_by"] = "bench/flame_projector_quality.py"
    # the text statistics stay float32: the standard deviations of Gemma's massive activations span decades
    package(SOURCE, OUT, float32=("text_norm.mean", "text_norm.sd", "in_mean", "in_std"), meta=meta,
            drop_prefix="logit_")
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
