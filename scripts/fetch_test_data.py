#!/usr/bin/env python3
"""Fetch real test photos into a local cache directory (idempotent).

Usage: ``python scripts/fetch_test_data.py [--dest DIR]``. The destination
defaults to ``$FROZENLENS_TESTDATA`` or ``<repo>/.cache/testdata``.

What it writes:

``<dest>/kphotoalbum/``
    The 24 demo JPEGs and ``index.xml`` of Debian's ``kphotoalbum`` package
    (fetched with ``apt-get download``, unpacked with ``dpkg -x``, never
    installed; ``movie.avi`` and the ``CategoryImages/`` tag icons are left
    out so the folder is exactly a small photo archive), plus
    ``captions.jsonl``, a caption manifest built from ``index.xml``:

    - ``"kind": "description"`` - the free-text description, where the image
      has one;
    - ``"kind": "tags"`` - every image's People/Places/Events tags (with their
      member groups, e.g. Skagen -> Denmark, Spiff -> Pets) as a sentence
      such as ``"People: Jesper. Places: Esbjerg, Denmark. Events: new wave,
      scanned in."``. Tags are the archivist's own keywords, so they make a
      realistic second caption. KPhotoAlbum's ``Tokens`` category and the
      ``untagged`` event are bookkeeping and left out.

    All lines have ``"lang": "en"`` and paths relative to the manifest.
    A ``.fetched`` stamp marks a complete copy.

``<dest>/photos/``
    Sample photos shipped inside scikit-image, scikit-learn and matplotlib
    (the ``dev`` extras), copied byte for byte, each only if its package is
    installed.

A second run finds everything in place and does nothing. Exits non-zero with
a message on stderr when something could not be fetched.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEST = REPO / ".cache" / "testdata"
ENV_DEST = "FROZENLENS_TESTDATA"

KPA_PACKAGE = "kphotoalbum"
KPA_DEMO = Path("usr/share/kphotoalbum/demo")
KPA_STAMP = ".fetched"
KPA_FORMAT = 1  # bump when the copied layout or captions.jsonl changes
KPA_CATEGORIES = ("People", "Places", "Events")
KPA_IGNORED_VALUES = {"untagged"}

#: (package, path inside the package, file name under photos/)
SAMPLE_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("skimage", "data/chelsea.png", "chelsea.png"),
    ("skimage", "data/coffee.png", "coffee.png"),
    ("skimage", "data/astronaut.png", "astronaut.png"),
    ("skimage", "data/rocket.jpg", "rocket.jpg"),
    ("skimage", "data/motorcycle_left.png", "motorcycle_left.png"),
    ("skimage", "data/hubble_deep_field.jpg", "hubble_deep_field.jpg"),
    ("skimage", "data/ihc.png", "immunohistochemistry.png"),
    ("sklearn", "datasets/images/china.jpg", "china.jpg"),
    ("sklearn", "datasets/images/flower.jpg", "flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper.jpg"),
)

# Lines in apt-get's error output that mean "the package lists are missing or stale".
_NEEDS_UPDATE = ("unable to locate package", "has no installation candidate",
                 "couldn't find any package", "404  not found", "404 not found")


class FetchError(Exception):
    """A fetch step failed; the message says what to do."""


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise FetchError(f"{cmd[0]} not found: the kphotoalbum data needs a Debian-based "
                         "machine (apt-get and dpkg)") from exc


def _apt_download(package: str, workdir: Path) -> Path:
    """``apt-get download`` into ``workdir``; ``apt-get update`` once if lists lack it."""
    result = _run(["apt-get", "download", package], cwd=workdir)
    if result.returncode != 0 and any(s in result.stderr.lower() for s in _NEEDS_UPDATE):
        print(f"  package lists lack {package}; running apt-get update")
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise FetchError(f"apt-get update failed:\n{update.stderr.strip()}")
        result = _run(["apt-get", "download", package], cwd=workdir)
    if result.returncode != 0:
        raise FetchError(f"apt-get download {package} failed:\n{result.stderr.strip()}")
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise FetchError(f"apt-get download {package} produced no .deb file")
    return debs[-1]


def _tag_sentence(values: dict[str, list[str]]) -> str | None:
    parts = [f"{cat}: {', '.join(values[cat])}." for cat in KPA_CATEGORIES if values.get(cat)]
    return " ".join(parts) or None


def build_kpa_manifest(index_xml: Path, photos: set[str]) -> list[dict[str, str]]:
    """Caption manifest lines (dicts) for ``photos`` from KPhotoAlbum's index.xml."""
    import defusedxml.ElementTree as SafeET  # a project dependency

    root = SafeET.fromstring(index_xml.read_bytes())
    groups: dict[tuple[str, str], list[str]] = {}
    for member in root.iter("member"):
        key = (member.get("category", ""), member.get("member", ""))
        groups.setdefault(key, []).append(member.get("group-name", ""))
    lines: list[dict[str, str]] = []
    images = sorted(root.iter("image"), key=lambda im: im.get("file", ""))
    for image in images:
        name = image.get("file", "")
        if name not in photos:
            continue
        description = (image.get("description") or "").strip()
        if description:
            lines.append({"path": name, "text": description, "lang": "en",
                          "kind": "description"})
        values: dict[str, list[str]] = {}
        for option in image.iter("option"):
            category = option.get("name", "")
            if category not in KPA_CATEGORIES:
                continue
            bucket = values.setdefault(category, [])
            for value in option.iter("value"):
                tag = value.get("value", "").strip()
                if not tag or tag in KPA_IGNORED_VALUES:
                    continue
                for word in [tag, *groups.get((category, tag), [])]:
                    if word and word not in bucket:
                        bucket.append(word)
        sentence = _tag_sentence(values)
        if sentence:
            lines.append({"path": name, "text": sentence, "lang": "en", "kind": "tags"})
    return lines


def fetch_kphotoalbum(dest: Path) -> None:
    """Ensure ``dest`` holds the kphotoalbum demo photos, index.xml, captions.jsonl."""
    stamp = dest / KPA_STAMP
    if stamp.is_file():
        try:
            info = json.loads(stamp.read_text())
        except ValueError:
            info = {}
        if info.get("format") == KPA_FORMAT:
            print(f"kphotoalbum: already present in {dest} "
                  f"({info.get('photos')} photos, {info.get('captions')} captions)")
            return
    print(f"kphotoalbum: fetching Debian package {KPA_PACKAGE} into {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="frozenlens-kpa-", dir=dest.parent) as tmp:
        work = Path(tmp)
        deb = _apt_download(KPA_PACKAGE, work)
        print(f"  downloaded {deb.name}")
        unpacked = work / "unpacked"
        result = _run(["dpkg", "-x", str(deb), str(unpacked)])
        if result.returncode != 0:
            raise FetchError(f"dpkg -x {deb.name} failed:\n{result.stderr.strip()}")
        demo = unpacked / KPA_DEMO
        if not (demo / "index.xml").is_file():
            raise FetchError(f"{deb.name} has no {KPA_DEMO}/index.xml")
        staged = work / "kphotoalbum"
        staged.mkdir()
        photos = sorted(p.name for p in demo.iterdir()
                        if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg"))
        for name in [*photos, "index.xml"]:
            shutil.copy2(demo / name, staged / name)
        lines = build_kpa_manifest(staged / "index.xml", set(photos))
        with open(staged / "captions.jsonl", "w", encoding="utf-8") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        info = {"format": KPA_FORMAT, "package": deb.name, "photos": len(photos),
                "captions": len(lines)}
        (staged / KPA_STAMP).write_text(json.dumps(info) + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # an incomplete or outdated copy
        os.replace(staged, dest)
    print(f"  wrote {len(photos)} photos, index.xml and captions.jsonl "
          f"({len(lines)} captions) to {dest}")


def _package_dir(package: str) -> Path | None:
    """Install directory of ``package`` without importing it, or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def fetch_sample_photos(dest: Path) -> list[str]:
    """Copy the packaged sample photos into ``dest``; return what is missing."""
    missing: list[str] = []
    copied = present = 0
    dest.mkdir(parents=True, exist_ok=True)
    for package, inner, name in SAMPLE_PHOTOS:
        target = dest / name
        if target.is_file():
            present += 1
            continue
        base = _package_dir(package)
        source = base / inner if base is not None else None
        if source is None or not source.is_file():
            missing.append(f"{name} ({package} not installed or has no {inner})")
            continue
        tmp = target.with_name(f".{name}.part")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        copied += 1
    print(f"photos: {copied} copied, {present} already present in {dest}")
    for item in missing:
        print(f"  skipped {item}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path,
                        default=Path(os.environ.get(ENV_DEST) or DEFAULT_DEST),
                        help=f"cache directory (default: ${ENV_DEST} or {DEFAULT_DEST})")
    args = parser.parse_args(argv)
    dest: Path = args.dest.resolve()
    failed = False
    try:
        fetch_kphotoalbum(dest / "kphotoalbum")
    except (FetchError, OSError) as exc:
        print(f"error: kphotoalbum: {exc}", file=sys.stderr)
        failed = True
    try:
        fetch_sample_photos(dest / "photos")
    except OSError as exc:
        print(f"error: photos: {exc}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
