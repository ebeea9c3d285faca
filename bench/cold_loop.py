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

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def cold_first_use(encoder: str, folder: Path, env: dict[str, str], net: list[str], timed,
                   cache: Path | None = None) -> tuple[float, float]:
    """(wall s, peak RSS GB) of ``frozenlens index`` of 4 photos into a new index, with an empty artefact
    cache (``cache=None``) or with ``cache`` (to fill it)."""
    with tempfile.TemporaryDirectory(prefix="fl-cold-") as tmp:
        small = Path(tmp) / "photos"
        small.mkdir()
        for f in sorted(folder.glob("*.jpg"))[:4]:
            shutil.copy(f, small / f.name)
        cold_env = {**env, "FROZENLENS_CACHE": str(cache or Path(tmp) / "cache")}
        wall, rss, _ = timed([sys.executable, "-m", "frozenlens", "index", str(small), "--index",
                              str(Path(tmp) / "index"), "--encoder", encoder, "--no-progress"], cold_env,
                             Path(tmp), net)
    return wall, rss


def _status(pid: int) -> dict[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    got = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            got[key] = int(rest.split()[0]) * 1024
    return got if "VmRSS" in got else None


def cold_first_use_split(encoder: str, folder: Path, env: dict[str, str], net: list[str]) -> dict[str, float]:
    """The cold first use (as :func:`cold_first_use`, empty cache), sampled: {"peak_gb", "anon_gb",
    "file_gb"} at the sample of highest VmRSS (a sample may miss a peak shorter than 20 ms)."""
    with tempfile.TemporaryDirectory(prefix="fl-cold-") as tmp:
        small = Path(tmp) / "photos"
        small.mkdir()
        for f in sorted(folder.glob("*.jpg"))[:4]:
            shutil.copy(f, small / f.name)
        cold_env = {**env, "FROZENLENS_CACHE": str(Path(tmp) / "cache")}
        # `unshare --net` execs the command, so the PID is the Python process's own
        proc = subprocess.Popen([*net, sys.executable, "-m", "frozenlens", "index", str(small), "--index",
                                 str(Path(tmp) / "index"), "--encoder", encoder, "--no-progress"], env=cold_env,
                                cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        best: dict[str, int] = {}
        while proc.poll() is None:
            now = _status(proc.pid)
            if now and now["VmRSS"] > best.get("VmRSS", 0):
                best = now
            time.sleep(0.02)
        if proc.returncode != 0:
            raise RuntimeError(f"cold first use failed ({proc.returncode}): {proc.stderr.read()[-2000:]!r}")
    gb = 1024.0**3
    return {"peak_gb": best.get("VmRSS", 0) / gb, "anon_gb": best.get("RssAnon", 0) / gb,
            "file_gb": best.get("RssFile", 0) / gb}


__all__ = ["cold_first_use", "cold_first_use_split", "first_batch", "forward_only"]
