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

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / ".cache" / "flame-projector" / "projector.safetensors"
OUT = REPO / "src" / "frozenlens" / "data" / "flame-lite0-tuxpaint.safetensors"


def main() -> int:
    import torch
    from safetensors.torch import load_file, save_file

    config = json.loads(SOURCE.with_suffix(".json").read_text())
    state = load_file(str(SOURCE))
    kept = {k: v.to(torch.float16).contiguous() for k, v in state.items() if not k.startswith("logit_")}
    # the text statistics stay float32: the standard deviations of Gemma's massive activations span decades
    for k in ("text_norm.mean", "text_norm.sd", "in_mean", "in_std"):
        kept[k] = state[k].float().contiguous()
    meta = {k: str(config[k]) for k in ("llm", "layer", "prompt", "hidden", "dim", "seed", "epoch", "val_r1")}
    meta["norm"] = config["text_norm"]
    meta["licence"] = "GPL-2.0-or-later (trained on tuxpaint-stamps-default artwork)"
    meta["trained_by"] = "bench/flame_projector_quality.py"
    save_file(kept, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB): {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
