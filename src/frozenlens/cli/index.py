"""``frozenlens index`` and ``frozenlens reindex``: build or rebuild an index, print the summary."""

from __future__ import annotations

import argparse
import os

from ..errors import QueryError
from ..paths import to_text
from ..retriever.choice import AutoPolicy, default_memory_budget
from .progress import IndexBar, wanted

#: how the index summary names each reason the scan skipped something
NOT_SCANNED = {
    "outside-roots": "symlinks leading outside the named folders (--follow-links follows them)",
    "unreadable": "unreadable",
    "vanished": "vanished while scanning",
    "broken-symlink": "broken symlinks",
}


def _weights(path: str | None) -> dict[str, object] | None:
    """Encoder options for ``--weights`` (an absolute path: it is recorded in the index)."""
    return {"weights": os.path.abspath(path)} if path else None


def _policy(args: argparse.Namespace) -> AutoPolicy:
    """The ``auto`` policy of a new index from ``--memory-budget`` and ``--target-recall``."""
    return AutoPolicy(args.memory_budget or default_memory_budget(), args.target_recall)


def cmd_index(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine.run_encoder import open_for_run

    for path in args.paths:
        if not os.path.exists(path):
            raise QueryError(f"no such file or directory: {path}")
    if args.captions and not os.path.isfile(args.captions):
        raise QueryError(f"captions manifest not found: {args.captions}")
    if args.engine == "ray" and (args.device or args.precision):
        raise QueryError("--device/--precision apply to the local engine; Ray workers place their own encoders")
    engine = open_for_run(
        index_dir, device=args.device, precision=args.precision, encoder=args.encoder, factory=args.index_type,
        database_url=args.database_url, encoder_options=_weights(args.weights), index_policy=_policy(args),
    )
    with engine:
        bar = IndexBar() if wanted(args.no_progress, forced_by_env=True) else None
        report = engine.index(
            args.paths,
            captions=args.captions,
            progress=bar,
            batch_size=args.batch_size,
            workers=args.workers,
            checkpoint_seconds=args.checkpoint_seconds,
            follow_links=args.follow_links,
            engine=args.engine,
            address=args.address,
        )
        if bar:
            bar.close()
    rate = report.encoded / report.seconds if report.seconds > 0 else 0.0
    print(
        f"indexed {report.scanned} files in {report.seconds:.1f}s: {report.new} new, {report.changed} changed, "
        f"{report.skipped} unchanged, {report.moved} moved, {report.duplicates} duplicates, "
        f"{report.deleted} deleted, {report.failed} failed ({rate:.1f} images/s encoded)"
    )
    if report.failed:
        print(f"see `frozenlens info --errors --index {to_text(index_dir)}` for the {report.failed} failed files")
    if report.not_scanned:
        print("not scanned: " + ", ".join(f"{n} {NOT_SCANNED.get(r, r)}" for r, n in sorted(report.not_scanned.items())))
        for line in report.problems[:10]:
            print(f"  {line}")
        if len(report.problems) > 10:
            print(f"  ... and {sum(report.not_scanned.values()) - 10} more (see the log)")
    return 0


def cmd_reindex(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine

    with Engine.open(index_dir) as engine:
        old = engine.identity.describe()
        bar = IndexBar() if wanted(args.no_progress) else None
        report = engine.reindex(
            args.encoder, progress=bar, batch_size=args.batch_size, workers=args.workers,
            encoder_options=_weights(args.weights),
        )
        if bar:
            bar.close()
        new = engine.identity.describe()
    if not report.swapped:
        print(f"index already uses {new}: nothing to do")
        return 0
    resumed = " (resumed)" if report.resumed else ""
    print(
        f"re-indexed{resumed}: {old} -> {new}; {report.images} images and {report.captions} captions embedded, "
        f"{report.failed} images could not be read"
    )
    return 0
