#!/usr/bin/env python3
"""A fresh ``frozenlens search`` process on 1,000- and 10,000-photo ``lite`` indexes: wall time and peak memory.

Usage::

    PYTHONPATH=src .venv/bin/python bench/bench_search_scale.py [--sizes 1000,10000] [--repeats 5]
        [--python /path/to/venv/bin/python]   # whose FrozenLens and torch to measure (default: this one)

Issue 16's goal 1 is "a fresh ``frozenlens search`` on a 10,000-photo index in <= 1.5 s with ``lite``"
(``bench/bench_cold.py`` measures 200 photos side by side with rclip). This builds a folder of
``max(sizes)`` small JPEGs (320x240 random crops, flips and brightness changes of the real test
photos in ``$FROZENLENS_TESTDATA``, 1,000 per sub-folder), indexes the first ``size`` of them
(sub-folders) with the real ``lite`` encoder once per size (cached under ``.cache/bench/search-scale``),
then runs ``search "..." -k 10`` as a fresh process ``--repeats`` times per size, interleaved, under
``/usr/bin/time`` (peak RSS of the whole process). The first search of each index fills nothing (the
model caches are filled while indexing). Prints median / min wall and peak RSS per size.

``--python``: the user's install is what ``make setup`` makes (the CPU build of torch); the test set-up's
venv holds the CUDA build, whose import alone is ~0.3 GB larger (a text search imports no torch at all).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from common import log, machine_line, print_table  # noqa: E402

WORK = REPO / ".cache" / "bench" / "search-scale"
DATA = Path(os.environ.get("FROZENLENS_TESTDATA", REPO / ".cache" / "testdata"))
QUERIES = ["a dog on the beach", "ein Haus am See", "un gâteau au chocolat", "夕日の山"]
PER_FOLDER = 1000


def make_photos(n: int) -> Path:
    from PIL import Image, ImageEnhance

    root = WORK / "photos"
    done = root / f".done-{n}"
    if done.exists():
        return root
    sources = [p for d in ("photos", "kphotoalbum") for p in sorted((DATA / d).iterdir())
               if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    images = []
    for p in sources:
        im = Image.open(p).convert("RGB")
        images.append(im.resize((640, max(1, round(640 * im.height / im.width)))))
    rng = random.Random(1)
    log(f"writing {n} photos under {root}")
    for i in range(n):
        im = rng.choice(images)
        s = rng.uniform(0.5, 1.0)
        cw, ch = int(im.width * s), int(im.height * s)
        x, y = rng.randint(0, im.width - cw), rng.randint(0, im.height - ch)
        out = ImageEnhance.Brightness(im.crop((x, y, x + cw, y + ch)).resize((320, 240))).enhance(rng.uniform(0.7, 1.3))
        if rng.random() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        folder = root / f"{i // PER_FOLDER:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        out.save(folder / f"p{i:06d}.jpg", quality=85)
    done.touch()
    return root


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, peak RSS GB, stdout) of ``cmd`` under /usr/bin/time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", r.stderr)
    assert wall, r.stderr
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 2**20
    return seconds, rss, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    if any(s % PER_FOLDER for s in sizes):
        raise SystemExit(f"sizes must be multiples of {PER_FOLDER}")
    photos = make_photos(max(sizes))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    fl = [args.python, "-m", "frozenlens"]
    indexes = {}
    for n in sizes:
        index = WORK / f"index-{n}"
        if not (index / ".complete").exists():
            folders = [str(photos / f"{i:03d}") for i in range(n // PER_FOLDER)]
            log(f"indexing {n} photos into {index}")
            wall, rss, _ = timed([*fl, "index", *folders, "--index", str(index), "--no-progress"], env)
            log(f"  {wall:.0f} s, peak {rss:.2f} GB")
            (index / ".complete").touch()
        indexes[n] = index
    samples: dict[int, list[tuple[float, float]]] = {n: [] for n in sizes}
    for r in range(args.repeats):
        for n in sizes:
            wall, rss, out = timed([*fl, "search", QUERIES[r % len(QUERIES)], "-k", "10", "--index", str(indexes[n])], env)
            assert out.strip(), "no hits printed"
            samples[n].append((wall, rss))
    print(machine_line())
    torch = subprocess.run([args.python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                           text=True, check=False).stdout.strip()
    print(f"measured: {args.python} (its torch: {torch or 'none'}; a text search imports none)")
    rows = []
    for n in sizes:
        walls = [w for w, _ in samples[n]]
        rows.append([f"{n:,}", f"{statistics.median(walls):.2f} s", f"{min(walls):.2f} s",
                     f"{max(r for _, r in samples[n]):.2f} GB"])
    print_table(f"A fresh `frozenlens search` process, lite, {args.repeats} runs per size (interleaved)",
                ["photos in the index", "search, median wall", "min", "peak RSS"], rows)


if __name__ == "__main__":
    main()
