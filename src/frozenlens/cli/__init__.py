"""The ``frozenlens`` command line: a thin client of :class:`frozenlens.engine.Engine`.

It parses arguments (:mod:`.parser`), calls the library and prints: one
module per group of commands (:mod:`.index`, :mod:`.search`, :mod:`.admin`,
:mod:`.quality`, :mod:`.serve`, :mod:`.mcp`), progress bars in :mod:`.progress`. Errors
become one line on stderr and an exit code (:mod:`.exit_codes`): 0 ok, 1 a
FrozenLens error, 2 bad usage, 3 the index is locked by another indexing run,
4 the disk is full, 5 the index database is damaged (``frozenlens doctor``),
6 the index is read-only and the command needs to write, 130 interrupted.

``frozenlens.cli:main`` is the console script; ``cli.main([...])`` runs a
command in-process and returns its exit code.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import FrozenLensError
from .admin import cmd_doctor, cmd_info, cmd_models, cmd_reranker
from .duplicates import cmd_duplicates
from .exit_codes import EXIT_DAMAGED, EXIT_DISK_FULL, EXIT_READ_ONLY, error_line, exit_code
from .index import cmd_index, cmd_reindex
from .mcp import cmd_mcp
from .parser import ENV_INDEX, build_parser, default_index_dir
from .quality import cmd_eval, cmd_train_reranker
from .search import cmd_search, cmd_similar
from .serve import cmd_serve

Command = Callable[[argparse.Namespace, str], int]

#: what each command runs: (parsed arguments, index directory) → exit code
COMMANDS: dict[str, Command] = {
    "index": cmd_index,
    "search": cmd_search,
    "similar": cmd_similar,
    "reindex": cmd_reindex,
    "info": cmd_info,
    "eval": cmd_eval,
    "models": cmd_models,
    "train-reranker": cmd_train_reranker,
    "reranker": cmd_reranker,
    "serve": cmd_serve,
    "mcp": cmd_mcp,
    "doctor": cmd_doctor,
    "duplicates": cmd_duplicates,
}
_COMMANDS = COMMANDS  # the name tests and older code use

__all__ = ["COMMANDS", "ENV_INDEX", "EXIT_DAMAGED", "EXIT_DISK_FULL", "EXIT_READ_ONLY", "build_parser",
           "default_index_dir", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``frozenlens`` command; returns its exit code (never raises for a FrozenLens error)."""
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
        return COMMANDS[args.command](args, index_dir)
    except (FrozenLensError, KeyboardInterrupt) as exc:
        print(error_line(exc, index_dir), file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
