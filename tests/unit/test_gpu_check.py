"""``bench/gpu_check.py``, the prepared GPU check of issue 14 §4/§5, cannot rot: its ``--smoke`` mode
runs every line of both parts on the CPU (a CPU copy standing in for the GPU one), on real photos.

Without a GPU, the full run skips each part with a message instead of failing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_check.py"


def _run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OUT": ""}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO, check=False)


def test_smoke_runs_both_parts_and_the_stand_in_matches_the_cpu(tmp_path, testdata):
    pytest.importorskip("open_clip")
    out = tmp_path / "gpu_check.json"
    done = _run("--smoke", "--photos", str(testdata / "photos"), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["faiss"]["rows"]
    assert [(r["type"], r["path"]) for r in rows] == [
        ("Flat", "product"), ("Flat", "native"), ("IVF-PQ", "native"), ("IVF-PQ", "product")]
    for r in rows:
        assert "error" not in r, r
        assert r["gpu_vs_cpu"] == 1.0, r  # a CPU copy stands in for the GPU: identical results
        assert r["qps1_gpu"] > 0 and r["qps256_gpu"] > 0
    flat, ivf = rows[0], rows[3]
    assert flat["recall_cpu"] == 1.0 and flat["on_gpu"] is False
    assert ivf["trained"] is True and ivf["nprobe"] >= 1
    assert rows[2]["nprobe"] == ivf["nprobe"]  # both sides searched at the product's default nprobe
    assert 0.2 < ivf["recall_cpu"] < 1.0  # PQ codes are approximate
    encoder = result["encoder"]["rows"]
    bf16, fp32, index = encoder
    assert bf16["what"].endswith("bf16") and fp32["what"].endswith("fp32")
    # bf16 autocast really ran (not bit-equal to fp32) and stays close to it
    assert 0.99 < bf16["cosine_vs_fp32"] < 0.99999
    assert index["images"] == 4 and index["failed"] == 0 and index["images_per_s"] > 0
    assert "| IVF-PQ" in done.stdout and "Engine.index" in done.stdout


def test_without_a_gpu_each_part_is_skipped_with_a_message(tmp_path):
    import torch

    if faiss.get_num_gpus() > 0 or torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the full run would start")
    out = tmp_path / "gpu_check.json"
    done = _run("--out", str(out), timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "FAISS sees no GPU" in result["faiss"]["skipped"]
    assert "faiss: skipped" in done.stdout
    assert "torch sees no CUDA device" in result["encoder"]["skipped"]
