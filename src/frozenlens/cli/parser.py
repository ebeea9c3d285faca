"""The ``frozenlens`` argument parser: commands, options and their help.

Defaults and choices are read from their owners: query limits, sort and
fusion names from :mod:`frozenlens.request`, training options from
:mod:`frozenlens.reranker.options`, server defaults from
:mod:`frozenlens.server.settings`. Parsing imports nothing heavy (no numpy, no
torch); an ``--encoder`` left out stays ``None`` and the library picks its
default (the packaged ``lite`` encoder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

from .. import __version__
from ..models.precision import DEVICES, PRECISIONS
from ..request import DUPLICATE_THRESHOLD, FUSIONS, MAX_K, SORTS, SearchRequest
from ..reranker.options import DEFAULT_PRESET, PRESETS, TrainingData, TrainOptions
from ..retriever.choice import INDEX_TYPES
from ..server.settings import ServerSettings

ENV_INDEX = "FROZENLENS_INDEX"
#: default port of `frozenlens mcp --http` (next to `serve`'s)
MCP_PORT = ServerSettings.port + 1
MCP_DESCRIPTION = (
    "Serve the index over MCP (needs frozenlens[mcp]): tools to search by text or photo, read a photo's metadata "
    "and thumbnail, and read index stats; read-only unless --allow-index is given. Over stdio by default (an MCP "
    "client starts this command); --http serves streamable HTTP at /mcp, on 127.0.0.1 unless --host says "
    "otherwise, where any other address requires an API token as for `serve`."
)


def default_index_dir() -> str:
    """``$FROZENLENS_INDEX``, else ``$XDG_DATA_HOME/frozenlens/index`` (~/.local/share/...)."""
    if os.environ.get(ENV_INDEX):
        return os.environ[ENV_INDEX]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "frozenlens", "index")


def _memory(text: str) -> int:
    from ..errors import IndexInputError
    from ..retriever.choice import parse_bytes

    try:
        return parse_bytes(text)
    except IndexInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _recall(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"recall must be in (0, 1], got {text!r}")
    return value


def _date(text: str) -> dt.datetime | dt.date:
    from ..types import parse_when

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
    """The parser of every command (see :data:`frozenlens.cli.COMMANDS` for what each runs)."""
    search, train, data = SearchRequest(), TrainOptions(), TrainingData()
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
        p.add_argument("-k", type=_positive, default=search.k,
                       help=f"number of results (default {search.k}, at most {MAX_K})")
        p.add_argument("--min-score", type=float, default=None, help="drop results scoring below this")
        p.add_argument("--sort", choices=SORTS, default=search.sort,
                       help="order: by relevance (default), or newest/oldest first among the relevant photos "
                       "(cutoff: --min-score, else 0.1 below the best score)")
        p.add_argument(
            "--fusion", choices=FUSIONS, default=search.fusion,
            help=f"how pixel and caption evidence combine for text queries (default {search.fusion})",
        )
        p.add_argument("--json", action="store_true", help="print results as JSON")
        p.add_argument("--collapse", action="store_true",
                       help="show each group of near-duplicates once (its best member, with the group's size)")
        p.add_argument("--explain", action="store_true", help="show the labels the model saw and score parts")

    def add_rerank(p: argparse.ArgumentParser) -> None:
        g = p.add_argument_group("reranking (text queries; on by default when the index has a trained head)")
        g.add_argument("--no-rerank", action="store_true", help="first-stage ranking only, skip the reranker head")
        g.add_argument("--rerank-candidates", type=_positive, default=search.rerank_candidates, metavar="N",
                       help=f"first-stage candidates the head rescores (default {search.rerank_candidates})")

    def add_server_args(p: argparse.ArgumentParser, port: int, allow_index: str) -> None:
        p.add_argument("--host", default=ServerSettings.host, help=f"address to listen on (default {ServerSettings.host})")
        p.add_argument("--port", type=int, default=port, help=f"port (default {port}; 0 picks a free one)")
        p.add_argument("--token-file", metavar="FILE", help="file whose first line is the API token")
        p.add_argument("--allow-index", metavar="DIR", action="append", default=[],
                       help=f"{allow_index} (repeatable; default: indexing is off)")
        p.add_argument("--concurrency", type=_positive, default=None, metavar="N",
                       help="searches that run at the same time (default: one per CPU core; the rest wait)")
        p.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                       help="without a token only requests to localhost/loopback are answered; also accept this "
                            "Host name, e.g. a reverse proxy's (repeatable)")

    p = sub.add_parser("index", help="index or update photo folders", description="Index photos under PATHs (recursive, incremental, resumable).")
    p.add_argument("paths", nargs="+", metavar="PATH", help="folders or files to index")
    add_index_arg(p)
    p.add_argument("--captions", metavar="FILE.jsonl", help='captions manifest: {"path": ..., "text": ..., "lang": ...} per line')
    p.add_argument("--encoder", default=None, help="encoder for a new index (default: lite; see `frozenlens models`)")
    p.add_argument(
        "--weights", metavar="PATH", default=None,
        help="local weights file for the encoder (offline use); recorded in the index",
    )
    p.add_argument("--device", choices=DEVICES, default=None,
                   help="where an openclip: encoder runs for this run only, not recorded (default auto: CUDA if any)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="its precision for this run only (default auto: fp16 on CUDA, fp32 on the CPU; fp16 needs "
                        "CUDA; lite runs fp32 on the CPU, where cpu/fp32 are no-ops)")
    types = "; ".join(f"{name}: {what}" for name, what in INDEX_TYPES.items())
    p.add_argument(
        "--index-type", "--factory", dest="index_type", default=None, metavar="TYPE",
        help=f"vector index type of a new index (default: auto) -- {types}; or a FAISS factory string",
    )
    p.add_argument("--memory-budget", type=_memory, default=None, metavar="SIZE",
                   help="RAM the vector index may use, for --index-type auto (e.g. 4GB; default: half the RAM)")
    p.add_argument("--target-recall", type=_recall, default=0.95, metavar="R",
                   help="recall@10 vs exact search that nprobe/efSearch are tuned to reach (default 0.95)")
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
    p.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="where images are decoded and encoded: this process (default) or Ray (needs frozenlens[ray])",
    )
    p.add_argument(
        "--address", default=None, metavar="auto|ray://HOST:PORT",
        help="with --engine ray: the Ray cluster to use (default: start Ray on this machine)",
    )

    p = sub.add_parser("search", help="search by text (any of 16 languages) or by an example image", description="Search the index with a text query, or with --image FILE.")
    p.add_argument("query", nargs="?", default=None, help="text query")
    p.add_argument("--image", metavar="FILE", help="query by an example image file instead of text")
    g = p.add_argument_group("composed query (weighted terms; see README, \"Composed queries\")")
    g.add_argument("--add", action="append", default=[], metavar="TEXT", help="add a text term (weight +1)")
    g.add_argument("--subtract", action="append", default=[], metavar="TEXT", help="subtract a text term (weight -1)")
    g.add_argument("--add-image", action="append", default=[], metavar="PHOTO[:W]",
                   help="add a photo term: a file or an indexed photo's id, with an optional weight (default 1)")
    g.add_argument("--subtract-image", action="append", default=[], metavar="PHOTO[:W]",
                   help="subtract a photo term (a file or an id; weight W, default 1)")
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
    p.add_argument("--format", dest="fmt", default=data.fmt, help=f"dataset format (default {data.fmt})")
    p.add_argument("--encoder", default=None, help="encoder name (default lite)")
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
    p.add_argument("--rerank-candidates", type=_positive, default=search.rerank_candidates, metavar="N",
                   help=f"first-stage candidates the head rescores (default {search.rerank_candidates})")

    p = sub.add_parser(
        "train-reranker", help="train the FrEVL reranker head on captions",
        description="Train the reranking head on image-caption pairs: the index's own captions (default) or a "
        "dataset's train/val splits (--dataset). Hard negatives come from the first-stage retriever. "
        "The head is saved into the index directory (or --out) and used by every later text search. "
        "Resumable: rerun the same command after an interruption.",
    )
    add_index_arg(p)
    p.add_argument("--dataset", metavar="PATH", help="train on this dataset instead of the index's captions")
    p.add_argument("--format", dest="fmt", default=data.fmt, help=f"dataset format (default {data.fmt})")
    p.add_argument("--image-root", metavar="DIR", help="folder holding the dataset's images (Karpathy, XM3600)")
    p.add_argument("--train-split", default=data.train_split,
                   help=f"dataset split to train on (default {data.train_split})")
    p.add_argument("--val-split", default=data.val_split,
                   help=f"dataset split for early stopping (default {data.val_split})")
    p.add_argument("--val-fraction", type=float, default=data.val_fraction, metavar="F",
                   help=f"index captions: fraction of images held out for validation (default {data.val_fraction})")
    p.add_argument("--languages", help="comma-separated language tags (default: all with enough captions)")
    p.add_argument("--min-coverage", type=float, default=data.min_coverage, metavar="F",
                   help="dataset: only languages captioning at least this fraction of the training images")
    p.add_argument("--encoder", default=None,
                   help="encoder when there is no index (with --out; default lite); otherwise the index's")
    p.add_argument("--out", metavar="DIR", help="save the head here instead of the index directory")
    p.add_argument("--preset", choices=tuple(PRESETS), default=DEFAULT_PRESET,
                   help=f"head size (default {DEFAULT_PRESET})")
    p.add_argument("--epochs", type=_positive, default=train.epochs,
                   help=f"most epochs (default {train.epochs}; early stopping may end sooner)")
    p.add_argument("--batch-size", type=_positive, default=train.batch_size,
                   help=f"texts per step (default {train.batch_size})")
    p.add_argument("--max-steps-per-epoch", type=_positive, default=None, metavar="N",
                   help="cap the steps of an epoch (large caption sets: validate more often)")
    p.add_argument("--hard-negatives", type=_positive, default=train.hard_negatives,
                   help=f"mined hard negatives per text (default {train.hard_negatives})")
    p.add_argument("--lr", type=float, default=train.lr, help="peak learning rate (default: by preset)")
    p.add_argument("--seed", type=int, default=train.seed, help=f"random seed (default {train.seed})")
    p.add_argument("--device", default=train.device, help="torch device (default: cuda when present, else cpu)")
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
    add_server_args(p, ServerSettings.port, "let the page index folders inside DIR")
    p.add_argument("--no-ui", action="store_true", help="REST API only, no web page")

    p = sub.add_parser("mcp", help="serve the index to AI agents over the Model Context Protocol",
                       description=MCP_DESCRIPTION)
    add_index_arg(p)
    p.add_argument("--http", action="store_true", help="serve streamable HTTP at /mcp instead of stdio")
    add_server_args(p, MCP_PORT, "add tools that index folders inside DIR")

    p = sub.add_parser("models", help="list the encoders and presets", description="Encoders FrozenLens can use, with dimensions, languages and download sizes.")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser("info", help="show what an index contains", description="Counts, encoder and index details; --errors lists files that failed.")
    add_index_arg(p)
    p.add_argument("--errors", action="store_true", help="list files that could not be indexed, with reasons")
    p.add_argument("--recall", action="store_true",
                   help="measure recall@10 vs exact search on held-out queries (stored vectors, perturbed)")
    p.add_argument("--json", action="store_true", help="print as JSON")

    p = sub.add_parser(
        "duplicates", help="list groups of near-identical photos",
        description="Groups of near-identical photos (resized, re-encoded, slightly cropped, mirrored, bursts) by "
        "the cosine of their visual vectors, every pair in a group at least --threshold; byte-identical copies "
        "are listed with their original. The best member (most pixels, then earliest) comes first.",
    )
    add_index_arg(p)
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help=f"least cosine similarity of two photos in a group, in (0, 1] (default {DUPLICATE_THRESHOLD})")
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
