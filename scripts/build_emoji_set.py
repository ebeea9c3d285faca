#!/usr/bin/env python3
"""Render Debian's colour emoji with their CLDR names into a training set (idempotent).

Usage: ``python scripts/build_emoji_set.py [--dest DIR]``; the destination defaults to
``$FROZENLENS_TESTDATA/emoji`` or ``<repo>/.cache/testdata/emoji``. Needs the Debian packages
``fonts-noto-color-emoji`` and ``unicode-cldr-core`` (``make emoji-data`` installs them). See
:mod:`frozenlens.eval.emoji` for what is written. Prints the manifest path last on stdout; exits
non-zero with a message on stderr when something fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def default_dest() -> Path:
    root = os.environ.get("FROZENLENS_TESTDATA")
    return (Path(root) if root else REPO / ".cache" / "testdata") / "emoji"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest(), help=f"output folder (default {default_dest()})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without installing too
    from frozenlens.errors import FrozenLensError
    from frozenlens.eval.emoji import convert_emoji

    try:
        manifest = convert_emoji(args.dest.resolve())
    except (FrozenLensError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = json.loads((manifest.parent / "emoji.json").read_text(encoding="utf-8"))
    print(f"{info['emoji']} emoji in {len(info['languages'])} languages "
          f"({info['not_drawn']} CLDR names the font draws no single glyph for left out)", file=sys.stderr)
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
