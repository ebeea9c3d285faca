"""``frozenlens duplicates``: groups of near-identical photos (and byte-identical copies)."""

from __future__ import annotations

import argparse
import json

from ..paths import to_text


def cmd_duplicates(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine
    from ..request import DUPLICATE_THRESHOLD

    with Engine.open(index_dir) as engine:
        groups = engine.near_duplicates(args.threshold)
        records = engine.store.images([i for g in groups for i in (*g.members, *(c for c, _ in g.copies))])
    path = {i: to_text(r.path) for i, r in records.items()}
    if args.json:
        rows = [{"id": g.id, "size": g.size, "similarity": g.similarity,
                 "members": [{"id": m, "path": path[m], "width": records[m].width, "height": records[m].height}
                             for m in g.members],
                 "copies": [{"id": c, "path": path[c], "copy_of": o} for c, o in g.copies]} for g in groups]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    threshold = DUPLICATE_THRESHOLD if args.threshold is None else args.threshold
    if not groups:
        print(f"no near-duplicates (threshold {threshold:g})")
        return 0
    files = sum(g.size for g in groups)
    print(f"{len(groups)} groups, {files} files (threshold {threshold:g}; best member first)")
    for n, g in enumerate(groups, 1):
        print(f"\ngroup {n}: {g.size} files, lowest similarity {g.similarity:.3f}")
        copies: dict[int, list[int]] = {}
        for c, o in g.copies:
            copies.setdefault(o, []).append(c)
        for rank, m in enumerate(g.members):
            r = records[m]
            size = f"{r.width}x{r.height}" if r.width and r.height else "?"
            print(f"  {'*' if rank == 0 else ' '} {size:>11s}  {path[m]}")
            for c in copies.get(m, []):
                print(f"    {'':>11s}  = {path[c]}  (byte-identical copy)")
    return 0
