#!/usr/bin/env python3
"""Fetch Debian's dataset-fashion-mnist and write a class-balanced PNG subset of it (idempotent).

Usage: ``python scripts/fetch_fashion_mnist.py [--dest DIR]
[--train-per-class N] [--test-per-class N] [--force]``. The destination
defaults to ``$FROZENLENS_TESTDATA/fashion-mnist`` or
``<repo>/.cache/testdata/fashion-mnist``.

The package (``apt-get download``, unpacked with ``dpkg -x`` in a temporary
folder, never installed) holds the four idx files of Zalando's Fashion-MNIST
in ``usr/share/datasets/fashion-mnist/``: 60,000 train and 10,000 test
28x28 grey images, 10 classes. What it writes under the destination:

``train/CC/NNNNN.png``, ``test/CC/NNNNN.png``
    ``--train-per-class`` (default 600) images per class of the train set and
    ``--test-per-class`` (default 200) of the test set; ``CC`` is the class
    (two digits), ``NNNNN`` the image's index in its original idx file. Each
    28x28 grey image is upscaled to 112x112 (``Image.Resampling.BICUBIC``)
    and saved as an RGB PNG; the pixels are the original ones (light
    garment on black, not inverted).
``labels.json``
    ``{"classes": [10 English class names], "train": [[relpath, label], ...],
    "test": [...]}``, sorted by relpath (so by class, then original index).
``.fetched``
    Format version, package file, selection rule and counts. A second run
    with the same options finds it and returns at once; other options or
    another format version rebuild the folder.

Selection, fixed and seeded: within each class the images are ordered by
``sha256(f"{SEED}:{split}:{index}")`` and the first N are kept. It depends
on nothing but the seed, the split and the index (no RNG stream that could
change between numpy versions), and a smaller N keeps a subset of a larger
N's images.

The set is built in a temporary sibling folder and swapped in, so the
destination is never half-written. A non-empty destination without a
``.fetched`` stamp is refused. Progress goes to stderr; the destination is
printed last on stdout. Exits non-zero with a message on stderr when
something fails.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ENV_DEST = "FROZENLENS_TESTDATA"
PACKAGE = "dataset-fashion-mnist"
SOURCE = Path("usr/share/datasets/fashion-mnist")
#: split → (images idx file, labels idx file) inside SOURCE
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: Fashion-MNIST's classes, in label order (0-9)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FORMAT = 1  # bump when the images, the layout or the selection rule change
SEED = "frozenlens-fashion-mnist-1"
SIDE = 112  # output PNG side (28 x 4)
STAMP_FILE = ".fetched"
LABELS_FILE = "labels.json"
_NEEDS_UPDATE = ("unable to locate package", "has no installation candidate",
                 "couldn't find any package", "404  not found", "404 not found")


class FetchError(Exception):
    """A fetch step failed; the message says what."""


def default_dest() -> Path:
    base = os.environ.get(ENV_DEST)
    return (Path(base) if base else REPO / ".cache" / "testdata") / "fashion-mnist"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise FetchError(f"{cmd[0]} not found: fetching {PACKAGE} needs apt-get and dpkg (Debian/Ubuntu)") from exc


def _download(workdir: Path) -> Path:
    result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
    if result.returncode != 0 and any(s in result.stderr.lower() for s in _NEEDS_UPDATE):
        _say(f"  package lists lack {PACKAGE}; running apt-get update")
        update = _run(["apt-get", "update"])
        if update.returncode != 0:
            raise FetchError(f"apt-get update failed:\n{update.stderr.strip()}")
        result = _run(["apt-get", "download", PACKAGE], cwd=workdir)
    debs = sorted(workdir.glob(f"{PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise FetchError(f"apt-get download {PACKAGE} failed:\n{result.stderr.strip()}")
    return debs[-1]


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """An idx file (gzip) → uint8 array of its shape; FetchError when malformed."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise FetchError(f"cannot read {path.name}: {exc}") from exc
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise FetchError(f"{path.name} is not an idx file with magic {magic:#010x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(data) - header != int(np.prod(shape)):
        raise FetchError(f"{path.name}: {len(data) - header} data bytes, header says {shape}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def load_split(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split of the unpacked package → (images uint8 (n, 28, 28), labels uint8 (n,))."""
    images_name, labels_name = IDX_FILES[split]
    images = _read_idx(folder / images_name, 0x00000803, 3)
    labels = _read_idx(folder / labels_name, 0x00000801, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
        raise FetchError(f"{split}: {images.shape} images do not match {labels.shape} labels")
    if labels.max() >= len(CLASSES):
        raise FetchError(f"{split}: label {labels.max()} outside 0-{len(CLASSES) - 1}")
    return images, labels


def select(labels: np.ndarray, split: str, per_class: int) -> list[int]:
    """Indices of the first ``per_class`` images of each class in seeded hash order, ascending."""
    chosen: list[int] = []
    for c in range(len(CLASSES)):
        members = np.flatnonzero(labels == c).tolist()
        if len(members) < per_class:
            raise FetchError(f"{split}: class {c} has {len(members)} images, fewer than {per_class}")
        members.sort(key=lambda i: hashlib.sha256(f"{SEED}:{split}:{i}".encode()).digest())
        chosen += members[:per_class]
    return sorted(chosen)


def write_png(image: np.ndarray, target: Path) -> None:
    """A uint8 (28, 28) grey image → RGB (SIDE, SIDE) PNG, bicubic."""
    big = Image.fromarray(image, mode="L").resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    big.convert("RGB").save(target, "PNG")


def _build(stage: Path, source: Path, counts: dict[str, int]) -> dict[str, list[list[object]]]:
    entries: dict[str, list[list[object]]] = {}
    for split, per_class in counts.items():
        images, labels = load_split(source, split)
        indices = select(labels, split, per_class)
        for c in range(len(CLASSES)):
            (stage / split / f"{c:02d}").mkdir(parents=True, exist_ok=True)
        rows: list[list[object]] = []
        for n, i in enumerate(indices, 1):
            label = int(labels[i])
            rel = f"{split}/{label:02d}/{i:05d}.png"
            write_png(images[i], stage / rel)
            rows.append([rel, label])
            if n % 1000 == 0 or n == len(indices):
                _say(f"  {split}: {n}/{len(indices)} images")
        entries[split] = sorted(rows, key=lambda r: str(r[0]))
    return entries


def _labels_json(entries: dict[str, list[list[object]]]) -> str:
    """``labels.json`` text: valid JSON, one ``[relpath, label]`` row per line."""
    parts = [f' "classes": {json.dumps(list(CLASSES))}']
    for split, rows in entries.items():
        body = ",\n  ".join(json.dumps(row) for row in rows)
        parts.append(f' "{split}": [\n  {body}\n ]')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _stamp_matches(dest: Path, counts: dict[str, int]) -> bool:
    try:
        stamp = json.loads((dest / STAMP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(stamp, dict) and stamp.get("format") == FORMAT and stamp.get("seed") == SEED
            and stamp.get("per_class") == counts and (dest / LABELS_FILE).is_file())


def fetch(dest: Path, counts: dict[str, int], *, force: bool = False) -> Path:
    """Ensure ``dest`` holds the subset described by ``counts`` (split → images per class).

    ``force`` rebuilds it even when the stamp matches."""
    if not force and _stamp_matches(dest, counts):
        return dest
    if dest.exists() and not (dest / STAMP_FILE).is_file() and any(dest.iterdir()):
        raise FetchError(f"{dest} exists, is not empty and holds no {STAMP_FILE} stamp; refusing to replace it")
    _say(f"fetching Debian package {PACKAGE} into {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-fetch-", dir=dest.parent) as tmp:
        work = Path(tmp)
        deb = _download(work)
        unpacked = work / "unpacked"
        result = _run(["dpkg", "-x", str(deb), str(unpacked)])
        if result.returncode != 0:
            raise FetchError(f"dpkg -x {deb.name} failed:\n{result.stderr.strip()}")
        source = unpacked / SOURCE
        missing = [name for pair in IDX_FILES.values() for name in pair if not (source / name).is_file()]
        if missing:
            raise FetchError(f"{deb.name} lacks {', '.join(str(SOURCE / m) for m in missing)}")
        stage = work / "stage"
        entries = _build(stage, source, counts)
        (stage / LABELS_FILE).write_text(_labels_json(entries), encoding="utf-8")
        stamp = {"format": FORMAT, "package": deb.name, "seed": SEED, "per_class": counts,
                 "images": {split: len(rows) for split, rows in entries.items()}, "side": SIDE}
        (stage / STAMP_FILE).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
        if dest.exists():  # an older or other-sized set: moved aside, removed with the temp folder
            os.replace(dest, work / "old")
        os.replace(stage, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", type=Path, default=default_dest(),
                        help=f"output directory (default: ${ENV_DEST}/fashion-mnist or {default_dest()})")
    parser.add_argument("--train-per-class", type=int, default=600, metavar="N",
                        help="train images kept per class (default 600, at most 6000)")
    parser.add_argument("--test-per-class", type=int, default=200, metavar="N",
                        help="test images kept per class (default 200, at most 1000)")
    parser.add_argument("--force", action="store_true", help="fetch and convert again")
    args = parser.parse_args(argv)
    counts = {"train": args.train_per_class, "test": args.test_per_class}
    if any(n < 1 for n in counts.values()):
        parser.error("--train-per-class and --test-per-class must be at least 1")
    dest: Path = args.dest.resolve()
    started = time.perf_counter()
    try:
        fetch(dest, counts, force=args.force)
    except (FetchError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _say(f"{sum(counts.values()) * len(CLASSES)} images ({counts['train']}/{counts['test']} per class"
         f" train/test) in {dest} ({time.perf_counter() - started:.1f} s)")
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
