"""``frozenlens info``, ``doctor``, ``models`` and ``reranker info``: what an index, the encoders
and a reranker head hold. The descriptions come from the library; this module prints them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import FrozenLensError
from ..paths import to_text
from .exit_codes import EXIT_DAMAGED


def cmd_info(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine

    with Engine.open(index_dir) as engine:
        if args.errors:
            failures = engine.errors()
            if args.json:
                print(json.dumps([{"path": to_text(f.path), "reason": f.reason, "message": f.message} for f in failures],
                                 indent=2))
            elif not failures:
                print("no failed files")
            else:
                for f in failures:
                    print(f"{f.reason:16s} {to_text(f.path)}: {f.message}")
            return 0
        stats = engine.stats()
        recall = engine.measure_recall() if args.recall else None
    if args.json:
        out = stats.to_json()
        if recall is not None:
            out["recall"] = {space: t.to_json() for space, t in recall.items()}
        print(json.dumps(out, indent=2, default=str))
        return 0
    enc = stats.encoder
    print(f"index:      {to_text(str(stats.index_dir))}")
    print(f"database:   {stats.database} (schema v{stats.schema_version})")
    print(f"encoder:    {enc['name']} v{enc['version']} (dim {enc['dim']}, visual {enc['visual_dim']})")
    print(f"faiss:      {stats.index_type_text}; vectors {stats.vectors}")
    print(
        f"images:     {stats.images} indexed, {stats.duplicates} duplicates, {stats.failed} failed, "
        f"{stats.captions} captions, {stats.with_date} with a date"
    )
    if stats.cameras:
        cams = ", ".join(f"{c} ({n})" for c, n in list(stats.cameras.items())[:8])
        print(f"cameras:    {cams}")
    print(f"disk:       {stats.bytes_on_disk / 1e6:.1f} MB")
    for space, t in (recall or {}).items():
        knob = f", {t.knob}={t.value}" if t.knob else ""
        knob += f", k_factor={t.k_factor}" if t.k_factor else ""
        low = f" (>= {t.recall_low:.3f} at 95 %)" if t.recall_low is not None else ""
        print(f"recall:     {space}: recall@{t.k} {t.recall:.3f}{low} vs exact ({t.factory}{knob}; "
              f"{t.queries} leave-one-out queries over {t.n} vectors; target {t.target:g})")
    if recall == {}:
        print("recall:     the index holds no image vectors yet")
    return 0


def cmd_models(args: argparse.Namespace, index_dir: str) -> int:
    from ..models.describe import model_json, model_lines

    print(json.dumps(model_json(), indent=2) if args.json else "\n".join(model_lines()))
    return 0


def cmd_reranker(args: argparse.Namespace, index_dir: str) -> int:
    from ..reranker.describe import describe_head, has_head

    where = Path(args.head or index_dir)
    identity = None
    if not has_head(where):  # no head: the presets are sized for the index's encoder, if there is an index
        from ..engine import Engine

        try:
            with Engine.open(where) as engine:
                identity = engine.identity
        except FrozenLensError:
            identity = None
    description = describe_head(where, identity)
    print(json.dumps(description.to_json(), indent=2, default=str) if args.json else "\n".join(description.lines()))
    return 0


def cmd_doctor(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine.checkup import doctor

    report = doctor(index_dir, repair=args.repair)
    db = report.database
    print(f"database:  {db.path}: {'ok' if db.ok else 'DAMAGED'}")
    for line in db.problems[:10]:
        print(f"  {line}")
    for line in db.notes:
        print(f"  note: {line}")
    if report.read_only:
        print(f"read-only: {report.read_only}")
    for line in report.vector_problems:
        print(f"vectors:   {line}")
    rep = report.repair
    if rep is not None:
        print(f"repaired:  the damaged file is kept as {Path(rep.damaged_copy).name}" if rep.damaged_copy
              else "repaired:  rows that broke the index's consistency rules were deleted")
        if rep.settings_lost:
            print("  the index's settings (encoder, schema) were unreadable: the database starts empty")
        for t in rep.tables:
            lost = "?" if t.lost is None else t.lost
            dropped = f", {t.dropped} dropped with them" if t.dropped else ""
            print(f"  {t.name:22s} {t.salvaged} rows salvaged, {lost} lost{dropped}")
        if report.removed_vector_files:
            print(f"  vector files removed (rebuilt from the database): {', '.join(report.removed_vector_files)}")
        n = rep.images_to_reindex
        print(f"  run `frozenlens index` on the indexed folders to encode again the {'' if n is None else f'{n} '}"
              "photos whose rows were lost")
        print(f"database:  now {'ok' if report.ok else 'still damaged'}")
    elif not db.ok:
        print(f"run `frozenlens doctor --repair --index {index_dir}` to salvage what is readable")
    return 0 if report.ok else EXIT_DAMAGED
