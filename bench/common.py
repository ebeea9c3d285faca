"""Shared helpers of the FrozenLens benchmarks.

- timing (:class:`Timer`, :func:`time_call`) with ``time.perf_counter``;
- percentiles and summaries of latency samples;
- peak / current RSS from ``/proc/self/status`` (``VmHWM`` / ``VmRSS``) with a
  ``resource.getrusage`` fallback, and a way to reset the peak;
- synthetic "photographic" JPEGs (smooth gradients + shapes + texture +
  sensor noise, with EXIF camera and date), generated deterministically from a
  seed and cached under ``.cache/bench/`` so later runs reuse them;
- Markdown tables.

These machines are noisy (absolute times drift ±40 % between runs): every
benchmark reports ratios of rates measured in the same run, and interleaves
the things it compares.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench"

#: bump when the image generator changes (old cached folders are then ignored)
GENERATOR_VERSION = 1

_CAMERAS: tuple[tuple[str, str], ...] = (
    ("Canon", "Canon EOS 5D Mark IV"),
    ("NIKON CORPORATION", "NIKON D750"),
    ("Apple", "iPhone 12"),
    ("SONY", "ILCE-7M3"),
    ("FUJIFILM", "X-T3"),
)


# --------------------------------------------------------------------- timing
class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, perf_counter)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def ms(self) -> float:
        return self.seconds * 1000.0


def time_call(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation; NaN if empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


def summarize(values: Sequence[float]) -> Summary:
    vals = list(values)
    return Summary(
        n=len(vals),
        mean=statistics.fmean(vals) if vals else math.nan,
        p50=percentile(vals, 50),
        p90=percentile(vals, 90),
        p99=percentile(vals, 99),
        max=max(vals) if vals else math.nan,
    )


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else math.nan


# --------------------------------------------------------------------- memory
def status_kb(*fields: str, pid: int | str = "self") -> dict[str, int]:
    """The ``fields`` of ``/proc/<pid>/status`` that are there, in KiB ("VmHWM:   123456 kB"); {} if unreadable."""
    got: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in fields:
                    got[key] = int(rest.split()[0])
    except OSError:
        return {}
    return got


def _status_kb(field: str) -> int | None:
    return status_kb(field).get(field)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (VmHWM, else ru_maxrss)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        if sys.platform == "darwin":  # bytes there
            kb //= 1024
    return kb / 1024.0


def current_rss_mb() -> float:
    """Current resident set size in MiB (VmRSS; NaN if unavailable)."""
    kb = _status_kb("VmRSS")
    return math.nan if kb is None else kb / 1024.0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write "5" to clear_refs). True if it worked."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------ synthetic photos
def synthetic_jpeg(seed: int, width: int = 4000, height: int = 3000, quality: int = 90) -> bytes:
    """A deterministic photo-like JPEG: low-frequency colour gradients, blurred
    shapes, mid-frequency texture and per-pixel sensor noise, plus EXIF
    (Make, Model, DateTimeOriginal, Orientation=1). At 4000x3000 / q90 the
    files are ~2-4 MB, like a phone or DSLR JPEG."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([GENERATOR_VERSION, seed, width, height])
    lw, lh = max(8, width // 10), max(6, height // 10)
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    base = np.empty((lh, lw, 3), np.float32)
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        freq = rng.uniform(0.5, 3.0)
        base[..., c] = 128 + 60 * np.sin(freq * (a * xx / lw + b * yy / lh) * np.pi + phase * 3) + rng.uniform(-40, 40)
    small = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(small)
    for _ in range(int(rng.integers(8, 25))):
        x0, y0 = int(rng.integers(0, lw)), int(rng.integers(0, lh))
        x1, y1 = x0 + int(rng.integers(2, max(3, lw // 2))), y0 + int(rng.integers(2, max(3, lh // 2)))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    small = small.filter(ImageFilter.GaussianBlur(1.0))
    arr = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR)).astype(np.int16)  # (H, W, 3)
    tex = rng.normal(0.0, 1.0, size=(max(1, height // 4), max(1, width // 4))).astype(np.float32)
    tex_img = Image.fromarray(tex, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    arr += (np.asarray(tex_img)[..., None] * 8).astype(np.int16)
    amp = int(rng.integers(4, 11))  # sensor noise amplitude → file size spread
    arr += rng.integers(-amp, amp + 1, size=(height, width, 1), dtype=np.int16)
    np.clip(arr, 0, 255, out=arr)
    img = Image.fromarray(arr.astype(np.uint8))

    make, model = _CAMERAS[seed % len(_CAMERAS)]
    taken = dt.datetime(2005, 1, 1) + dt.timedelta(seconds=int(rng.integers(0, 20 * 365 * 86400)))
    exif = Image.Exif()
    exif[0x010F] = make
    exif[0x0110] = model
    exif[0x0112] = 1
    exif.get_ifd(0x8769)[0x9003] = taken.strftime("%Y:%m:%d %H:%M:%S")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def _write_one(args: tuple[Path, int, int, int, int]) -> int:
    path, seed, width, height, quality = args
    data = synthetic_jpeg(seed, width, height, quality)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # never leave a half-written image in the cache
    return len(data)


def jpeg_folder(
    n: int,
    width: int = 4000,
    height: int = 3000,
    *,
    quality: int = 90,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """A cached folder holding at least ``n`` synthetic JPEGs of the given size.

    Returns ``.cache/bench/jpeg-<w>x<h>-q<quality>-v<version>-n<n>/`` containing
    exactly ``n`` files (hard links into a shared pool, so folders of
    different ``n`` share the bytes). Missing pool images are generated in a
    process pool; existing ones are reused.
    """
    pool = CACHE / f"jpeg-{width}x{height}-q{quality}-v{GENERATOR_VERSION}"
    pool.mkdir(parents=True, exist_ok=True)
    wanted = [pool / f"img_{i:05d}.jpg" for i in range(n)]
    missing = [(p, i, width, height, quality) for i, p in enumerate(wanted) if not p.exists()]
    if missing:
        if log:
            log(f"generating {len(missing)} synthetic {width}x{height} JPEGs into {pool} (cached for later runs)")
        t0 = time.perf_counter()
        nproc = workers or min(len(missing), os.cpu_count() or 1)
        if nproc > 1:
            with ProcessPoolExecutor(max_workers=nproc) as ex:
                list(ex.map(_write_one, missing, chunksize=4))
        else:
            for item in missing:
                _write_one(item)
        if log:
            log(f"  generated in {time.perf_counter() - t0:.1f} s")
    folder = CACHE / f"{pool.name}-n{n}"
    folder.mkdir(parents=True, exist_ok=True)
    present = {p.name for p in folder.iterdir()}
    for p in wanted:
        if p.name not in present:
            try:
                os.link(p, folder / p.name)
            except OSError:
                (folder / p.name).write_bytes(p.read_bytes())
    for name in present - {p.name for p in wanted}:
        (folder / name).unlink()
    return folder


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(number of files, total bytes) of the regular files in ``folder``."""
    sizes = [p.stat().st_size for p in folder.iterdir() if p.is_file()]
    return len(sizes), sum(sizes)


def warm_page_cache(paths: Iterable[Path]) -> None:
    """Read files once so every timed variant sees them in the page cache."""
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 22):
                pass


# --------------------------------------------------------------------- output
def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    rows = [[_cell(v) for v in r] for r in rows]
    headers = [str(h) for h in headers]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, v in enumerate(r):
            widths[i] = max(widths[i], len(v))
    numeric = [all(_is_number(r[i]) for r in rows) and bool(rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if numeric[i] else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Print (and return) a titled Markdown table."""
    text = f"\n### {title}\n\n{markdown_table(headers, rows)}\n"
    print(text, flush=True)
    return text


def _cell(v: object) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _is_number(s: str) -> bool:
    s = s.replace(",", "").rstrip("×x%").strip()
    try:
        float(s)
        return True
    except ValueError:
        return s == "n/a"


def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def machine_line() -> str:
    """One line describing where the numbers come from."""
    import torch

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        cores = os.cpu_count() or 1
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}, {cores} cores ({cpu}), "
        f"Python {platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    )


def log(msg: str) -> None:
    """Progress messages go to stderr so stdout holds only the tables."""
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def model_cache_dir() -> Path:
    """Cache of the lite encoder's class-name embeddings for benchmark runs."""
    d = CACHE / "model-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d
