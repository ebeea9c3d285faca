#!/usr/bin/env python3
"""Fetch Debian's tuxpaint-stamps-default and convert it into a retrieval test set (idempotent).

Usage: ``python scripts/fetch_tuxpaint.py [--dest DIR] [--force]``. The
destination defaults to ``$FROZENLENS_TESTDATA/tuxpaint`` or
``<repo>/.cache/testdata/tuxpaint``.

What it writes:

``<dest>/stamps/``
    The package's stamps folder (``usr/share/tuxpaint/stamps``): PNG, SVG
    and caption ``.txt`` files only (the package's 7,800 sound files are
    left out; SVGs are kept so the converter can count SVG-only stamps),
    fetched with ``apt-get download`` and unpacked with ``dpkg -x``,
    never installed. A ``.fetched`` stamp names the package file.
``<dest>/dataset/``
    The converted set (``manifest.jsonl``, ``images/``, ``tuxpaint.json``),
    see :mod:`frozenlens.eval.tuxpaint`.

A second run finds both in place and returns in well under a second.
Prints the manifest path last on stdout. Exits non-zero with a message on
stderr when something fails.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_DEST = "FROZENLENS_TESTDATA"
PACKAGE = "tuxpaint-stamps-default"
STAMPS = Path("usr/share/tuxpaint/stamps")
STAMP_FILE = ".fetched"
KEEP_SUFFIXES = (".png", ".txt", ".svg")
_NEEDS_UPDATE = ("unable to locate package", "has no installation candidate",
                 "couldn't find any package", "404  not found", "404 not found")


class FetchError(Exception):
    """A fetch step failed; the message says what."""


def default_dest() -> Path:
    base = os.environ.get(ENV_DEST)
    return (Path(base) if base else REPO / ".cache" / "testdata") / "tuxpaint"


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise FetchError(f"{cmd[0]} not found: fetching {PACKAGE} needs apt-get and dpkg (Debian/Ubuntu)") from exc


def _download(workdir: Path) -> Path:
    result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
    if result.returncode != 0 and any(s in result.stderr.lower() for s in _NEEDS_UPDATE):
        print(f"  package lists lack {PACKAGE}; running apt-get update", file=sys.stderr)
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise FetchError(f"apt-get update failed:\n{update.stderr.strip()}")
        result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {PACKAGE} failed:\n{result.stderr.strip()}")
    return debs[-1]


def fetch_stamps(dest: Path) -> Path:
    """Ensure ``dest`` holds the package's PNG + caption files; return it."""
    stamp = dest / STAMP_FILE
    if stamp.is_file():
        try:
            if tuple(json.loads(stamp.read_text()).get("suffixes", ())) == KEEP_SUFFIXES:
                return dest
        except ValueError:
            pass  # damaged stamp file: fetch again
    print(f"fetching Debian package {PACKAGE} into {dest}", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tuxpaint-fetch-", dir=dest.parent) as tmp:
        work = Path(tmp)
        deb = _download(work)
        unpacked = work / "unpacked"
        result = _run(["dpkg", "-x", str(deb), str(unpacked)])
        if result.returncode != 0:
            raise FetchError(f"dpkg -x {deb.name} failed:\n{result.stderr.strip()}")
        source = unpacked / STAMPS
        if not source.is_dir():
            raise FetchError(f"{deb.name} has no {STAMPS}/")
        staged = work / "stamps"
        kept = 0
        for path in sorted(source.rglob("*")):
            if path.is_file() and path.suffix in KEEP_SUFFIXES:
                target = staged / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)  # keeps the package's mtimes: stable fingerprint
                kept += 1
        (staged / STAMP_FILE).write_text(json.dumps({"package": deb.name, "files": kept, "suffixes": KEEP_SUFFIXES}) + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # an incomplete copy
        os.replace(staged, dest)
    print(f"  kept {kept} PNG/SVG/caption files of {deb.name}", file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest(),
                        help=f"cache directory (default: ${ENV_DEST}/tuxpaint or {default_dest()})")
    parser.add_argument("--force", action="store_true", help="fetch and convert again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    dest: Path = args.dest.resolve()
    try:
        sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without installing too
        from frozenlens.errors import FrozenLensError
        from frozenlens.eval.tuxpaint import convert_tuxpaint
    except ImportError as exc:
        print(f"error: cannot import frozenlens ({exc}); run with the project's venv", file=sys.stderr)
        return 1
    if args.force:
        for sub in ("stamps", "dataset"):
            shutil.rmtree(dest / sub, ignore_errors=True)
    try:
        stamps = fetch_stamps(dest / "stamps")
        manifest = convert_tuxpaint(stamps, dest / "dataset")
    except (FetchError, FrozenLensError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    info = json.loads((manifest.parent / "tuxpaint.json").read_text(encoding="utf-8"))
    print(f"{info['stamps']} stamps, splits {info['splits']}, {len(info['coverage'])} languages",
          file=sys.stderr)
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
