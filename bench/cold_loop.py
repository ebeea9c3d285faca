"""Issue 16 goal 3 for ``bench_cold.py``: the indexing loop vs the same runtime's forward pass alone,
the time from process start to the first encoded batch, and the first use on a cold artefact cache.

Each figure comes from a fresh process run with the same environment as the timed commands of
``bench_cold.py`` (same ``FROZENLENS_CACHE``, same offline sandbox):

- **forward only**: the encoder the registry builds for the name (what ``frozenlens index`` uses),
  ``embed_prepared`` on batches of 32 already decoded and prepared photos of the folder (after one
  untimed warm-up batch): images/s of the model alone, on the same runtime and threads;
- **loop / forward**: the ``images/s encoded`` ``frozenlens index`` prints (the indexing call's
  files encoded / its seconds: scan, read, decode, encode, commit) divided by the forward-only rate;
- **first batch**: seconds from just before the process is spawned to the first ``encode`` progress
  event of ``Engine.index`` (the first batch of 32 decoded, encoded and committed), on a new index;
- **cold first use**: ``frozenlens index`` of 4 photos into a new index with an empty artefact
  cache: what the very first use of these weights costs (exports the ONNX graphs once);
  :func:`cold_first_use_split` runs it once more, reading the process's ``/proc/<pid>/status``
  every 20 ms, for what its peak is made of: anonymous memory (``RssAnon``: what the process
  allocated) and mapped files (``RssFile``: the memory-mapped checkpoint and shared libraries,
  page cache the kernel can drop and re-read).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import status_kb

FORWARD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from PIL import Image
from frozenlens.models import create_encoder
enc = create_encoder(sys.argv[1])
files = sorted(Path(sys.argv[2]).glob("*.jpg"))[: int(sys.argv[3])]
prepared = []
for f in files:
    with Image.open(f) as im:
        prepared.append(enc.prepare(im.convert("RGB")))
batch = np.stack(prepared)
enc.embed_prepared(batch[:32])  # warm-up: sessions, arenas
t = time.perf_counter()
for i in range(0, len(batch), 32):
    enc.embed_prepared(batch[i : i + 32])
print(json.dumps({"forward_ips": len(batch) / (time.perf_counter() - t), "encoder": type(enc).__name__}))
"""

FIRST_BATCH = r"""
import json, sys, time
t0 = float(sys.argv[4])
from frozenlens.engine import Engine
seen = []
def progress(p):
    if p.stage == "encode" and p.done > 0 and not seen:
        seen.append(time.time() - t0)
with Engine.open(sys.argv[1], create=True, encoder=sys.argv[2]) as engine:
    engine.index([sys.argv[3]], progress=progress)
print(json.dumps({"first_batch_s": seen[0] if seen else None}))
"""


def _py(code: str, args: list[str], env: dict[str, str], net: list[str]) -> dict:
    done = subprocess.run([*net, sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"driver failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def forward_only(encoder: str, folder: Path, env: dict[str, str], net: list[str], n: int) -> dict:
    return _py(FORWARD, [encoder, str(folder), str(n)], env, net)


def first_batch(encoder: str, folder: Path, env: dict[str, str], net: list[str], work: Path) -> float:
    index = work / "run-first-batch"
    shutil.rmtree(index, ignore_errors=True)
    try:
        return float(_py(FIRST_BATCH, [str(index), encoder, str(folder), repr(time.time())], env, net)
                     ["first_batch_s"])
    finally:
        shutil.rmtree(index, ignore_errors=True)


@contextlib.contextmanager
def _cold_run(encoder: str, folder: Path, env: dict[str, str], cache: Path | None) -> Iterator[tuple[list[str],
                                                                                                   dict[str, str], Path]]:
    """(command, environment, working directory) of ``frozenlens index`` of 4 of ``folder``'s photos into a
    new index, with an empty artefact cache (``cache=None``) or with ``cache``; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="fl-cold-") as tmp:
        small = Path(tmp) / "photos"
        small.mkdir()
        for f in sorted(folder.glob("*.jpg"))[:4]:
            shutil.copy(f, small / f.name)
        cold_env = {**env, "FROZENLENS_CACHE": str(cache or Path(tmp) / "cache")}
        yield ([sys.executable, "-m", "frozenlens", "index", str(small), "--index", str(Path(tmp) / "index"),
                "--encoder", encoder, "--no-progress"], cold_env, Path(tmp))


def cold_first_use(encoder: str, folder: Path, env: dict[str, str], net: list[str], timed,
                   cache: Path | None = None) -> tuple[float, float]:
    """(wall s, peak RSS GB) of ``frozenlens index`` of 4 photos into a new index, with an empty artefact
    cache (``cache=None``) or with ``cache`` (to fill it)."""
    with _cold_run(encoder, folder, env, cache) as (cmd, cold_env, tmp):
        wall, rss, _ = timed(cmd, cold_env, tmp, net)
    return wall, rss


def cold_first_use_split(encoder: str, folder: Path, env: dict[str, str], net: list[str]) -> dict[str, float]:
    """The cold first use (as :func:`cold_first_use`, empty cache), sampled: {"peak_gb", "anon_gb",
    "file_gb"} at the sample of highest VmRSS (a sample may miss a peak shorter than 20 ms)."""
    with _cold_run(encoder, folder, env, None) as (cmd, cold_env, tmp), (tmp / "stderr").open("w+") as err:
        # `unshare --net` execs the command, so the PID is the Python process's own
        proc = subprocess.Popen([*net, *cmd], env=cold_env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=err)
        best: dict[str, int] = {}
        while proc.poll() is None:
            now = status_kb("VmRSS", "RssAnon", "RssFile", pid=proc.pid)
            if now.get("VmRSS", 0) > best.get("VmRSS", 0):
                best = now
            time.sleep(0.02)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"cold first use failed ({proc.returncode}): {err.read()[-2000:]}")
    gib = 1024.0**2  # KiB per GiB
    return {"peak_gb": best.get("VmRSS", 0) / gib, "anon_gb": best.get("RssAnon", 0) / gib,
            "file_gb": best.get("RssFile", 0) / gib}


__all__ = ["cold_first_use", "cold_first_use_split", "first_batch", "forward_only"]
