"""The ``frozenlens`` command line: a thin client of :class:`frozenlens.engine.Engine`.

Exit codes: 0 ok, 1 a FrozenLens error (one line on stderr, no traceback),
2 bad usage (argparse), 3 the index is locked by another indexing run,
4 the disk is full, 5 the index database is damaged (``frozenlens doctor``),
6 the index is read-only and the command needs to write, 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import DatabaseDamagedError, DiskFullError, FrozenLensError, IndexLockedError, IndexReadOnlyError, QueryError
from .paths import from_user, to_text

ENV_INDEX = "FROZENLENS_INDEX"
#: exit code of a run stopped by a full disk (what was committed is kept)
EXIT_DISK_FULL = 4
#: exit codes of a damaged index database and of a write to a read-only index
EXIT_DAMAGED, EXIT_READ_ONLY = 5, 6


def default_index_dir() -> str:
    """``$FROZENLENS_INDEX``, else ``$XDG_DATA_HOME/frozenlens/index`` (~/.local/share/...)."""
    if os.environ.get(ENV_INDEX):
        return os.environ[ENV_INDEX]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "frozenlens", "index")


def _date(text: str) -> dt.datetime | dt.date:
    from .types import parse_when

    try:
        return parse_when(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """Usage errors as one clear line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="frozenlens",
        description="Multilingual photo search on frozen encoders, offline by default.",
    )
    parser.add_argument("--version", action="version", version=f"frozenlens {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add_index_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--index",
            metavar="DIR",
            default=None,
            help=f"index directory (default: ${ENV_INDEX} or {default_index_dir()})",
        )

    def add_filters(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("filters")
        g.add_argument("--after", type=_date, help="taken on or after this date (YYYY-MM-DD)")
        g.add_argument("--before", type=_date, help="taken on or before this date (YYYY-MM-DD, inclusive)")
        g.add_argument("--camera", help="camera make/model contains this text (case-insensitive)")
        g.add_argument("--under", metavar="DIR", help="only photos inside this directory")
        g.add_argument("--min-width", type=_positive, metavar="PX", help="minimum width in pixels")
        g.add_argument("--min-height", type=_positive, metavar="PX", help="minimum height in pixels")
        p.add_argument("-k", type=_positive, default=10, help="number of results (default 10)")
        p.add_argument("--min-score", type=float, default=None, help="drop results scoring below this")
        p.add_argument("--sort", choices=("relevance", "newest", "oldest"), default="relevance",
                       help="order: by relevance (default), or newest/oldest first among the relevant photos "
                       "(cutoff: --min-score, else 0.1 below the best score)")
        p.add_argument(
            "--fusion", choices=("max", "weighted", "rrf"), default="max",
            help="how pixel and caption evidence combine for text queries (default max)",
        )
        p.add_argument("--json", action="store_true", help="print results as JSON")
        p.add_argument("--explain", action="store_true", help="show the labels the model saw and score parts")

    def add_rerank(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("reranking (text queries; on by default when the index has a trained head)")
        g.add_argument("--no-rerank", action="store_true", help="first-stage ranking only, skip the reranker head")
        g.add_argument("--rerank-candidates", type=_positive, default=100, metavar="N",
                       help="first-stage candidates the head rescores (default 100)")

    p = sub.add_parser("index", help="index or update photo folders", description="Index photos under PATHs (recursive, incremental, resumable).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to index")
    add_index_arg(p)
    p.add_argument("--captions", metavar="FILE.jsonl", help='captions manifest: {"path": ..., "text": ..., "lang": ...} per line')
    p.add_argument("--encoder", default=None, help="encoder for a new index (default: lite; see `frozenlens models`)")
    p.add_argument(
        "--weights", metavar="PATH", default=None,
        help="local weights file for the encoder (offline use); recorded in the index",
    )
    p.add_argument("--factory", default=None, help="FAISS factory string for a new index (default: Flat)")
    p.add_argument(
        "--database-url", default=None, metavar="URL",
        help="SQLAlchemy URL of the metadata database for a new index (default: SQLite file in the index directory)",
    )
    p.add_argument("--batch-size", type=_positive, default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=_positive, default=None, help="decoder threads (default: CPU cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--follow-links", action="store_true",
        help="also follow symlinks that lead outside the named folders (default: skip them and say so)",
    )
    p.add_argument(
        "--checkpoint-seconds", type=float, default=60.0, metavar="S",
        help="save the FAISS files at least this often during a run (default 60)",
    )

    p = sub.add_parser("search", help="search by text (any of 16 languages) or by an example image", description="Search the index with a text query, or with --image FILE.")
    p.add_argument("query", nargs="?", default=None, help="text query")
    p.add_argument("--image", metavar="FILE", help="query by an example image file instead of text")
    add_index_arg(p)
    add_filters(p)
    add_rerank(p)

    p = sub.add_parser("similar", help="photos that look like an indexed photo", description="Find photos visually similar to an indexed photo (by path or id).")
    p.add_argument("image", metavar="PATH_OR_ID", help="path of an indexed photo, or its id")
    add_index_arg(p)
    add_filters(p)

    p = sub.add_parser(
        "reindex", help="recompute all vectors with another encoder",
        description="Rebuild the vectors of an existing index with another encoder, keeping its metadata. "
        "Resumable: rerun the same command after an interruption.",
    )
    add_index_arg(p)
    p.add_argument("--encoder", required=True, help="encoder name, e.g. lite or openclip:xlm-roberta-base-ViT-B-32")
    p.add_argument("--weights", metavar="PATH", default=None, help="local weights file for the new encoder")
    p.add_argument("--batch-size", type=_positive, default=32, help="images per batch (default 32)")
    p.add_argument("--workers", type=_positive, default=None, help="decoder threads (default: CPU cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser(
        "eval", help="measure retrieval quality of an encoder on a captioned dataset",
        description="Text→image and image→text recall@1/5/10 and mean rank, per language and averaged. "
        "Formats: manifest (FrozenLens JSONL), karpathy (Flickr30k/COCO), xm3600, urban1k, docci.",
    )
    p.add_argument("dataset", metavar="PATH", help="manifest / annotation file or dataset folder")
    p.add_argument("--format", dest="fmt", default="manifest", help="dataset format (default manifest)")
    p.add_argument("--encoder", default="lite", help="encoder name (default lite)")
    p.add_argument("--weights", metavar="PATH", default=None, help="local weights file for the encoder")
    p.add_argument("--image-root", metavar="DIR", help="folder holding the images (Karpathy, XM3600)")
    p.add_argument("--split", help="split to evaluate (default: the format's test split, or all)")
    p.add_argument("--languages", help="comma-separated language tags (default: all present)")
    p.add_argument("--min-coverage", type=float, default=0.0, metavar="F",
                   help="only languages captioning at least this fraction of images")
    p.add_argument("--limit", type=_positive, help="evaluate only the first N images")
    p.add_argument("--out", metavar="DIR", help="write results.md and results.json here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    p.add_argument("--rerank", metavar="DIR",
                   help="also rerank each text's top candidates with the head in DIR (an index or --out directory)")
    p.add_argument("--rerank-candidates", type=_positive, default=100, metavar="N",
                   help="first-stage candidates the head rescores (default 100)")

    p = sub.add_parser(
        "train-reranker", help="train the FrEVL reranker head on captions",
        description="Train the reranking head on image-caption pairs: the index's own captions (default) or a "
        "dataset's train/val splits (--dataset). Hard negatives come from the first-stage retriever. "
        "The head is saved into the index directory (or --out) and used by every later text search. "
        "Resumable: rerun the same command after an interruption.",
    )
    add_index_arg(p)
    p.add_argument("--dataset", metavar="PATH", help="train on this dataset instead of the index's captions")
    p.add_argument("--format", dest="fmt", default="manifest", help="dataset format (default manifest)")
    p.add_argument("--image-root", metavar="DIR", help="folder holding the dataset's images (Karpathy, XM3600)")
    p.add_argument("--train-split", default="train", help="dataset split to train on (default train)")
    p.add_argument("--val-split", default="val", help="dataset split for early stopping (default val)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="index captions: fraction of images held out for validation (default 0.1)")
    p.add_argument("--languages", help="comma-separated language tags (default: all with enough captions)")
    p.add_argument("--min-coverage", type=float, default=0.0, metavar="F",
                   help="dataset: only languages captioning at least this fraction of the training images")
    p.add_argument("--encoder", default=None,
                   help="encoder when there is no index (with --out; default lite); otherwise the index's")
    p.add_argument("--out", metavar="DIR", help="save the head here instead of the index directory")
    p.add_argument("--preset", choices=("cpu", "paper"), default="cpu", help="head size (default cpu)")
    p.add_argument("--epochs", type=_positive, default=12, help="most epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=_positive, default=32, help="texts per step (default 32)")
    p.add_argument("--max-steps-per-epoch", type=_positive, default=None, metavar="N",
                   help="cap the steps of an epoch (large caption sets: validate more often)")
    p.add_argument("--hard-negatives", type=_positive, default=7, help="mined hard negatives per text (default 7)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: by preset)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--restart", action="store_true", help="ignore a checkpoint of an interrupted run")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("reranker", help="show the reranker head of an index",
                       description="Parameter counts, encoder and training summary of a reranker head "
                       "(and of every preset for the index's encoder dimensions).")
    p.add_argument("action", choices=("info",), help="info: describe the head and the presets")
    add_index_arg(p)
    p.add_argument("--head", metavar="DIR", help="a head directory other than the index")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser(
        "serve", help="run the web page and REST API",
        description="Serve the search page (/) and the REST API (/api/v1, OpenAPI docs at /docs) for one index. "
        "Listens on 127.0.0.1 unless --host says otherwise; any other address requires an API token "
        "(--token-file FILE or $FROZENLENS_API_TOKEN), checked on every API route and the page.",
    )
    add_index_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--token-file", metavar="FILE", help="file whose first line is the API token")
    p.add_argument("--allow-index", metavar="DIR", action="append", default=[],
                   help="let the page index folders inside DIR (repeatable; default: indexing from the page is off)")
    p.add_argument("--no-ui", action="store_true", help="REST API only, no web page")
    p.add_argument("--concurrency", type=_positive, default=None, metavar="N",
                   help="searches that run at the same time (default: one per CPU core; the rest wait)")
    p.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                   help="without a token only requests to localhost/loopback are answered; also accept this "
                        "Host name, e.g. a reverse proxy's (repeatable)")

    p = sub.add_parser("models", help="list the encoders and presets", description="Encoders FrozenLens can use, with dimensions, languages and download sizes.")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("info", help="show what an index contains", description="Counts, encoder and index details; --errors lists files that failed.")
    add_index_arg(p)
    p.add_argument("--errors", action="store_true", help="list files that could not be indexed, with reasons")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser(
        "doctor", help="check an index; --repair salvages a damaged database",
        description="Integrity-check the index database and its vector files. With --repair, a damaged database's "
        "readable rows are copied into a fresh one (the damaged file is kept as frozenlens.db.damaged-TIME); "
        "the next `frozenlens index` encodes again the photos whose rows were lost. Stop servers using the index "
        "before repairing it. Exit code 5 while damaged.",
    )
    add_index_arg(p)
    p.add_argument("--repair", action="store_true", help="salvage a damaged database into a fresh one")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Decoder threads and torch's OpenMP pool share the cores while indexing;
    # spinning OpenMP workers starve the decoders (measured: +31 % images/s
    # with PASSIVE on 2 cores). Must be set before torch loads; users may override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: already printed
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    index_dir = getattr(args, "index", None) or default_index_dir()
    try:
        return _COMMANDS[args.command](args, index_dir)
    except IndexLockedError as exc:
        print(f"frozenlens: {exc}", file=sys.stderr)
        return 3
    except DiskFullError as exc:
        print(f"frozenlens: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    except DatabaseDamagedError as exc:
        print(f"frozenlens: the index database {exc.path} is damaged ({exc.detail}); "
              f"run `frozenlens doctor --repair --index {index_dir}` to salvage what is readable", file=sys.stderr)
        return EXIT_DAMAGED
    except IndexReadOnlyError as exc:
        print(f"frozenlens: {exc}", file=sys.stderr)
        return EXIT_READ_ONLY
    except FrozenLensError as exc:
        print(f"frozenlens: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("frozenlens: interrupted", file=sys.stderr)
        return 130


# -- commands --------------------------------------------------------------------
def _cmd_index(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine

    for path in args.paths:
        if not os.path.exists(path):
            raise QueryError(f"no such file or directory: {path}")
    if args.captions and not os.path.isfile(args.captions):
        raise QueryError(f"captions manifest not found: {args.captions}")
    engine = Engine.open(
        index_dir, encoder=args.encoder, create=True, factory=args.factory, database_url=args.database_url,
        encoder_options={"weights": os.path.abspath(args.weights)} if args.weights else None,
    )
    with engine:
        bar = None if args.no_progress or not sys.stderr.isatty() and not os.environ.get("FROZENLENS_PROGRESS") else _Bar()
        report = engine.index(
            args.paths,
            captions=args.captions,
            progress=bar,
            batch_size=args.batch_size,
            workers=args.workers,
            checkpoint_seconds=args.checkpoint_seconds,
            follow_links=args.follow_links,
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
        print("not scanned: " + ", ".join(f"{n} {_NOT_SCANNED.get(r, r)}" for r, n in sorted(report.not_scanned.items())))
        for line in report.problems[:10]:
            print(f"  {line}")
        if len(report.problems) > 10:
            print(f"  ... and {sum(report.not_scanned.values()) - 10} more (see the log)")
    return 0


#: how the index summary names each reason the scan skipped something
_NOT_SCANNED = {
    "outside-roots": "symlinks leading outside the named folders (--follow-links follows them)",
    "unreadable": "unreadable",
    "vanished": "vanished while scanning",
    "broken-symlink": "broken symlinks",
}


def _cmd_serve(args: argparse.Namespace, index_dir: str) -> int:
    try:
        import uvicorn

        from .api.app import create_app
        from .api.settings import ServerSettings, read_token
    except ImportError as exc:
        raise QueryError(f"serving needs the `serve` extra: pip install 'frozenlens[serve]' ({exc.name} is missing)") from exc
    settings = ServerSettings(
        index_dir=Path(index_dir).expanduser().absolute(), host=args.host, port=args.port,
        token=read_token(args.token_file), index_roots=tuple(Path(d).expanduser().absolute() for d in args.allow_index),
        concurrency=args.concurrency, allowed_hosts=tuple(args.allowed_host),
    )
    import asyncio

    app = create_app(settings, ui=not args.no_ui)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                            access_log=args.verbose)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:  # print the real address (port 0 = any free port)
            for sock in (s for srv in server.servers for s in srv.sockets):
                host, port = sock.getsockname()[:2]
                print(f"FrozenLens serving {to_text(str(settings.index_dir))} at http://{host}:{port}/ (API: /api/v1, docs: /docs)",
                      flush=True)
        try:
            await task
        except SystemExit:  # uvicorn exits when it cannot bind
            raise QueryError(f"cannot listen on {args.host}:{args.port} (address in use or not available)") from None

    asyncio.run(run())
    return 0


class _Bar:
    """tqdm progress bar fed by the engine's progress callback."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None

    def __call__(self, p) -> None:  # noqa: ANN001 - frozenlens.progress.Progress
        if p.stage == "scan":
            return
        if self.bar is None:
            self.bar = self._tqdm(total=p.total, unit="img", desc="indexing", dynamic_ncols=True)
        self.bar.n = p.done
        self.bar.set_postfix(new=p.new, changed=p.changed, skipped=p.skipped, failed=p.failed, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _filters(args: argparse.Namespace):  # noqa: ANN202
    from .types import SearchFilters

    return SearchFilters(
        after=args.after,
        before=args.before,
        camera=args.camera,
        under=os.path.abspath(from_user(args.under)) if args.under else None,
        min_width=args.min_width,
        min_height=args.min_height,
    )


def _cmd_search(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine

    if args.image and args.query:
        raise QueryError("give either a text query or --image, not both")
    if not args.image and (args.query is None or not args.query.strip()):
        raise QueryError("empty query: give some words to search for, or --image FILE")
    if args.image and not os.path.isfile(args.image):
        raise QueryError(f"query image not found: {args.image}")
    with Engine.open(index_dir) as engine:
        query = Path(args.image) if args.image else args.query
        hits = engine.search(
            query, k=args.k, filters=_filters(args), min_score=args.min_score, fusion=args.fusion,
            rerank=False if args.no_rerank else None, rerank_candidates=args.rerank_candidates, sort=args.sort,
        )
    _print_hits(hits, args)
    return 0


def _cmd_similar(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine

    with Engine.open(index_dir) as engine:
        target = int(args.image) if args.image.isdigit() and not os.path.exists(args.image) else from_user(args.image)
        hits = engine.similar(target, k=args.k, filters=_filters(args), min_score=args.min_score, sort=args.sort)
    _print_hits(hits, args)
    return 0


def _print_hits(hits: list, args: argparse.Namespace) -> None:
    if args.json:
        rows = [{**h.to_dict(), "path": to_text(h.path), "duplicates": [to_text(d) for d in h.duplicates]} for h in hits]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not hits:
        print("no results")
        return
    for rank, h in enumerate(hits, 1):
        date = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else "          "
        date += "~" if h.date_source == "mtime" else " "  # ~ = the file's modification time (no EXIF date)
        print(f"{rank:3d}. {h.score:.3f}  {date} {to_text(h.path)}")  # the path text: one line, see frozenlens.paths
        if args.explain:
            parts = []
            if h.image_score is not None:
                parts.append(f"image {h.image_score:.3f}")
            if h.caption_score is not None:
                parts.append(f"caption {h.caption_score:.3f}")
            if parts:
                how = "max" if getattr(args, "fusion", "max") == "max" else args.fusion
                print(f"       score = {how}({', '.join(parts)})")
            if h.reranked and h.first_stage_image_score is not None and h.image_score is not None:
                print(f"       reranked: image {h.first_stage_image_score:.3f} -> {h.image_score:.3f}")
            if h.labels:
                print("       sees: " + ", ".join(f"{label} {p:.0%}" for label, p in h.labels[:5]))
            for c in h.captions[:3]:
                lang = f"[{c.lang}] " if c.lang else ""
                print(f"       caption: {lang}{c.text[:100]}")
            if h.camera:
                print(f"       camera: {h.camera}")
            if h.date_source == "mtime":
                print("       date: the file's modification time (the photo has no EXIF date)")


def _cmd_reindex(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine

    with Engine.open(index_dir) as engine:
        old = engine.identity.describe()
        bar = None if args.no_progress or not sys.stderr.isatty() else _Bar()
        options = {"weights": os.path.abspath(args.weights)} if args.weights else None
        report = engine.reindex(
            args.encoder, progress=bar, batch_size=args.batch_size, workers=args.workers, encoder_options=options
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


def _cmd_eval(args: argparse.Namespace, index_dir: str) -> int:
    from .eval import eval_command
    from .eval.report import to_markdown

    langs = [x.strip() for x in args.languages.split(",") if x.strip()] if args.languages else None
    rerank = None
    encoder_options = {"weights": os.path.abspath(args.weights)} if args.weights else None
    if args.rerank:
        from .models import create_encoder
        from .reranker.data import eval_hook
        from .reranker.head import Reranker

        head = Reranker.load(args.rerank)
        rerank = eval_hook(head, create_encoder(args.encoder, **(encoder_options or {})), args.rerank_candidates)
    result = eval_command(
        args.dataset,
        args.fmt,
        encoder_name=args.encoder,
        image_root=args.image_root,
        split=args.split,
        languages=langs,
        out_dir=args.out,
        limit=args.limit,
        min_coverage=args.min_coverage,
        encoder_options=encoder_options,
        rerank=rerank,
    )
    print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) if args.json else to_markdown(result))
    return 0


def _cmd_models(args: argparse.Namespace, index_dir: str) -> int:
    from .models.openclip import list_presets

    rows = [
        {"name": "lite", "dim": 512, "image_size": 224, "languages": "16 (USE-m3)", "download_mb": 0,
         "source": "packaged: EfficientNet-Lite0 + USE-m3 (ConSE)", "license": "Apache-2.0 / MIT"},
    ]
    for r in list_presets():
        rows.append({"name": r.name, "dim": r.dim, "image_size": r.image_size,
                     "languages": r.languages, "download_mb": r.download_mb, "source": r.source, "license": r.license})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'encoder':40s} {'dim':>4s} {'px':>4s} {'download':>9s}  languages")
    for r in rows:
        size = "packaged" if not r["download_mb"] else f"{r['download_mb'] / 1000:.1f} GB"
        print(f"{r['name']:40s} {r['dim']:4d} {r['image_size']:4d} {size:>9s}  {r['languages']}")
    print("\nAlso: openclip:<arch>/<pretrained>, openclip:hf-hub:<org>/<repo>, openclip:<local checkpoint>")
    return 0


def _cmd_info(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine

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
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
        return 0
    enc = stats["encoder"]
    print(f"index:      {to_text(str(stats['index_dir']))}")
    print(f"database:   {stats['database']} (schema v{stats['schema_version']})")
    print(f"encoder:    {enc['name']} v{enc['version']} (dim {enc['dim']}, visual {enc['visual_dim']})")
    print(f"faiss:      {stats['factory']}; vectors {stats['vectors']}")
    print(
        f"images:     {stats['images']} indexed, {stats['duplicates']} duplicates, {stats['failed']} failed, "
        f"{stats['captions']} captions, {stats['with_date']} with a date"
    )
    if stats["cameras"]:
        cams = ", ".join(f"{c} ({n})" for c, n in list(stats["cameras"].items())[:8])
        print(f"cameras:    {cams}")
    print(f"disk:       {stats['bytes_on_disk'] / 1e6:.1f} MB")
    return 0


def _cmd_train_reranker(args: argparse.Namespace, index_dir: str) -> int:
    from .engine import Engine
    from .models import create_encoder
    from .reranker.command import train_command
    from .reranker.train import TrainOptions

    langs = [x.strip() for x in args.languages.split(",") if x.strip()] if args.languages else None
    options = TrainOptions(preset=args.preset, epochs=args.epochs, batch_size=args.batch_size,
                           hard_negatives=args.hard_negatives, lr=args.lr, seed=args.seed, device=args.device,
                           max_steps_per_epoch=args.max_steps_per_epoch)
    engine = None
    if args.dataset is None or not args.out or args.index:
        engine = Engine.open(index_dir)
    try:
        if engine is not None:
            if args.encoder and args.encoder != engine.identity.name:
                raise QueryError(f"the index uses encoder {engine.identity.name}; a head for it must use it too")
            if not args.out:
                engine.require_writable("training a reranker into it")
            encoder = engine.encoder
        else:
            encoder = create_encoder(args.encoder or "lite")
        out = args.out or str(engine.index_dir if engine is not None else index_dir)
        data = {"dataset": args.dataset, "fmt": args.fmt, "image_root": args.image_root,
                "train_split": args.train_split, "val_split": args.val_split, "languages": langs,
                "min_coverage": args.min_coverage, "val_fraction": args.val_fraction,
                "store": engine.store if engine is not None and args.dataset is None else None}
        bar = None if args.no_progress or not sys.stderr.isatty() else _StageBar()
        try:
            result = train_command(encoder, out, options, progress=bar, resume=not args.restart, **data)
        finally:
            if bar:
                bar.close()
    finally:
        if engine is not None:
            engine.close()
    rep = result.report
    first, best = rep.val_first_stage, rep.val_reranked
    print(f"trained on {result.train_texts} captions ({result.val_texts} for validation) in {rep.seconds:.0f}s, "
          f"{rep.epochs_run} epochs (best {rep.best_epoch}); validation R@1 {first['r1']:.3f} -> {best['r1']:.3f}, "
          f"MRR {first['mrr']:.3f} -> {best['mrr']:.3f}")
    print(f"saved {result.path}")
    return 0


class _StageBar:
    """tqdm bar that restarts for every progress stage (e.g. each epoch)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar = None
        self.stage = None

    def __call__(self, p) -> None:  # noqa: ANN001 - frozenlens.progress.Progress
        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            self.bar = self._tqdm(total=p.total, desc=p.stage, dynamic_ncols=True, leave=False)
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cmd_doctor(args: argparse.Namespace, index_dir: str) -> int:
    from .checkup import doctor

    report = doctor(index_dir, repair=args.repair)
    db = report.database
    print(f"database:  {db.path}: {'ok' if db.ok else 'DAMAGED'}")
    for line in db.problems[:10]:
        print(f"  {line}")
    if report.read_only:
        print(f"read-only: {report.read_only}")
    for line in report.vector_problems:
        print(f"vectors:   {line}")
    rep = report.repair
    if rep is not None:
        print(f"repaired:  the damaged file is kept as {Path(rep.damaged_copy).name}")
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


def _cmd_reranker(args: argparse.Namespace, index_dir: str) -> int:
    from .models.base import EncoderIdentity
    from .reranker import CONFIG_NAME
    from .reranker.head import Reranker
    from .reranker.model import PRESETS, FusionHead, count_parameters, preset_config

    where = Path(args.head or index_dir)
    head = Reranker.load(where) if (where / CONFIG_NAME).is_file() else None
    if head is not None:
        enc = head.config.encoder
        ident = EncoderIdentity(enc.get("name", "?"), enc.get("version", "?"), head.config.dim, head.config.visual_dim)
    else:
        from .engine import Engine

        try:
            with Engine.open(where) as engine:
                ident = engine.identity
        except FrozenLensError:
            ident = EncoderIdentity("lite", "1", 512, 1280)
    presets = {
        name: count_parameters(FusionHead(preset_config(name, dim=ident.dim, visual_dim=ident.visual_dim,
                                                        encoder=ident.as_dict())))
        for name in PRESETS
    }
    doc = {"head": None if head is None else {
        "path": str(where / CONFIG_NAME), "config": head.config.as_dict(), "parameters": head.parameters(),
        "summary": head.summary}, "encoder": ident.as_dict(), "presets": presets}
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return 0
    if head is None:
        print(f"no reranker head in {where}")
    else:
        c = head.config
        print(f"head:       {where / CONFIG_NAME}")
        print(f"encoder:    {ident.describe()}")
        print(f"preset:     {c.preset} (d_model {c.d_model}, {c.layers} layers, {c.heads} heads)")
        print(f"parameters: {head.parameters()['total']:,}")
        rep = head.summary.get("report") or {}
        if rep:
            print(f"validation: R@1 {rep['val_first_stage'].get('r1', 0):.3f} (first stage) -> "
                  f"{rep['val_reranked'].get('r1', 0):.3f} (reranked)")
    print(f"presets for {ident.describe()}:")
    for name, counts in presets.items():
        print(f"  {name:6s} {counts['total']:>12,} parameters ({counts['cross_attention_blocks']:,} in cross-attention blocks)")
    return 0


_COMMANDS = {
    "index": _cmd_index,
    "search": _cmd_search,
    "similar": _cmd_similar,
    "reindex": _cmd_reindex,
    "info": _cmd_info,
    "eval": _cmd_eval,
    "models": _cmd_models,
    "train-reranker": _cmd_train_reranker,
    "reranker": _cmd_reranker,
    "serve": _cmd_serve,
    "doctor": _cmd_doctor,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
