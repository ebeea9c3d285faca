"""What the projector of `lite` version 3 costs per image: `embed_prepared` images/s of version 2
(ConSE alone) and version 3, interleaved in one run (issue 15 §1; docs/quality.md).

Queries are not measured: the text side is the same object in both versions.

    .venv/bin/python bench/lite_projector_cost.py [--rounds 7] [--batch 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from frozenlens.models.lite import LiteEncoder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args(argv)
    batch = np.random.default_rng(0).integers(0, 256, (args.batch, 224, 224, 3), dtype=np.uint8)
    encoders = {"2": LiteEncoder(projection=0.0), "3": LiteEncoder()}
    for enc in encoders.values():
        enc.embed_prepared(batch[:8])  # build the image side outside the timing
    seconds: dict[str, list[float]] = {v: [] for v in encoders}
    for r in range(args.rounds):
        for version, enc in sorted(encoders.items(), reverse=r % 2 == 1):  # alternate who goes first
            t = time.perf_counter()
            enc.embed_prepared(batch)
            seconds[version].append(time.perf_counter() - t)
    rates = {v: args.batch / float(np.median(s)) for v, s in seconds.items()}
    for v, r in rates.items():
        print(f"lite version {v} ({encoders[v].runtime}): {r:.1f} images/s (median of {args.rounds})")
    print(f"version 3 / version 2: {rates['3'] / rates['2']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
