"""``frozenlens index --engine ray``: the same index as the local engine, crash-safe, and on an existing cluster.

Ray must only ever talk to loopback (its dashboard probes cloud metadata
addresses at every start), so every Ray run here is a subprocess inside fresh
network + PID namespaces (``unshare``, root): only ``lo`` exists there, and
when the namespace's first process dies (or is SIGKILLed) the kernel ends
every Ray process it started. At most 2 one-CPU processes do the work: one
decode task slot and one encoder actor.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from ..conftest import write_noise_jpegs
from .test_crash_safety import db_counts, kill_when

pytestmark = pytest.mark.slow

NAMESPACE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
HOSTILE = os.fsdecode(b"h\xffst\nile \xe2\x80\xae name.jpg")  # invalid UTF-8, a newline, a bidi override


def _namespaces_work() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'frozenlens[ray]')"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not available: Ray cannot be confined to loopback here"
    probe = subprocess.run([*NAMESPACE, "sh", "-c", "ip link set lo up"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"cannot create network namespaces (needs root): {probe.stderr.decode(errors='replace').strip()}"
    return None


_SKIP = _namespaces_work()
if _SKIP:
    pytestmark = [pytestmark, pytest.mark.skip(reason=_SKIP)]


def loopback_only(script: str, *args: str) -> list[str]:
    """``sh -c script args...`` inside fresh network + PID namespaces with ``lo`` up."""
    return [*NAMESPACE, "sh", "-c", "ip link set lo up || exit 97\n" + script, "sh", *args]


@pytest.fixture
def ray_env(tmp_path):
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # Ray's unix sockets need a short path
    env = {
        **os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": tmp,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    yield env
    shutil.rmtree(tmp, ignore_errors=True)


def index_cmd(photos: Path, index: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "frozenlens", "index", str(photos), "--index", str(index), "--no-progress", *extra]


def run_ray_index(photos: Path, index: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    cmd = loopback_only('exec "$@"', *index_cmd(photos, index, "--engine", "ray", *extra))
    return subprocess.run(cmd, capture_output=True, env=env, timeout=900, check=False)


# -- what an index holds, engine-independently ------------------------------------
ROW_COLUMNS = ("size", "mtime_ns", "content_hash", "error_reason", "error_message", "format", "width", "height",
               "taken_at", "taken_at_source", "camera", "lat", "lon")


def index_rows(index: Path) -> tuple[dict[str, tuple], dict[str, str], dict[str, np.ndarray]]:
    """(path → row columns, path → status, content hash → semantic+visual vector of its indexed row).

    Which of several byte-identical new files becomes the primary (``indexed``)
    and which its ``duplicate`` depends on arrival order on Ray, so statuses
    are compared per content hash by the callers."""
    con = sqlite3.connect(f"file:{index / 'frozenlens.db'}?mode=ro", uri=True)
    try:
        rows, status = {}, {}
        for r in con.execute(f"SELECT path, status, {', '.join(ROW_COLUMNS)} FROM images"):
            rows[r[0]], status[r[0]] = tuple(r[2:]), r[1]
        vectors = {}
        for h, sem, vis in con.execute(
            "SELECT i.content_hash, v.semantic, v.visual FROM images i JOIN image_vectors v ON v.image_id = i.id"
        ):
            vectors[h] = np.concatenate([np.frombuffer(sem, np.float16), np.frombuffer(vis, np.float16)]).astype(np.float32)
        dup_targets = con.execute(
            "SELECT count(*) FROM images d JOIN images p ON p.id = d.duplicate_of "
            "WHERE d.status = 'duplicate' AND (p.status != 'indexed' OR p.content_hash != d.content_hash)"
        ).fetchone()[0]
        assert dup_targets == 0, "a duplicate row points at something else than the indexed row of its content"
    finally:
        con.close()
    return rows, status, vectors


def statuses_by_hash(rows: dict[str, tuple], status: dict[str, str]) -> dict[str | None, list[str]]:
    out: dict[str | None, list[str]] = {}
    for path, r in rows.items():
        out.setdefault(r[2], []).append(status[path])
    return {h: sorted(v) for h, v in out.items()}


def assert_same_index(a: Path, b: Path) -> None:
    rows_a, status_a, vec_a = index_rows(a)
    rows_b, status_b, vec_b = index_rows(b)
    assert rows_a == rows_b  # same paths, sizes, hashes, failures with reasons, metadata
    failed = {p: status_a[p] for p in rows_a if status_a[p] == "failed"}
    assert failed == {p: status_b[p] for p in rows_b if status_b[p] == "failed"}
    assert statuses_by_hash(rows_a, status_a) == statuses_by_hash(rows_b, status_b)
    assert vec_a.keys() == vec_b.keys()
    for h in vec_a:
        np.testing.assert_allclose(vec_a[h], vec_b[h], atol=2e-3)


def assert_consistent(index: Path) -> None:
    """The invariants of the local crash test (test_crash_safety.QUERIES)."""
    c = db_counts(index / "frozenlens.db")
    for key in ("indexed_without_vectors", "orphan_vectors", "orphan_captions", "vectors_of_non_indexed"):
        assert c.get(key, 0) == 0, c


def crash_folder(tmp_path: Path) -> tuple[Path, int]:
    """(folder, n): n noise photos, three byte-identical copies and a broken file."""
    photos, n = tmp_path / "photos", 120
    write_noise_jpegs(photos, n)
    for i in range(3):
        shutil.copy(photos / f"img_{i:04d}.jpg", photos / f"dup_{i}.jpg")
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    return photos, n


def rerun_finishes_like_local(photos: Path, n: int, index: Path, clean: Path, env: dict[str, str]) -> None:
    """After a crash: a Ray rerun finishes with every file once, as a clean local index of the folder."""
    done = run_ray_index(photos, index, env, "--batch-size", "4")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-4000:]
    assert_consistent(index)
    rows, status, vectors = index_rows(index)
    assert len(rows) == n + 4  # every file once: nothing lost, nothing duplicated
    counts = {s: list(status.values()).count(s) for s in ("indexed", "duplicate", "failed")}
    assert counts == {"indexed": n, "duplicate": 3, "failed": 1}
    assert len(vectors) == n
    local = subprocess.run(index_cmd(photos, clean), capture_output=True, timeout=900, check=False)
    assert local.returncode == 0, local.stderr.decode(errors="replace")
    assert_same_index(clean, index)


# -- tests ------------------------------------------------------------------------
def test_ray_index_equals_local_index_on_a_real_folder(tmp_path, testdata, ray_env):
    photos = tmp_path / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    (photos / "broken.jpg").write_bytes(b"not a jpeg at all")
    (photos / "empty.jpg").write_bytes(b"")
    shutil.copy(photos / "donna.jpg", photos / HOSTILE)  # also a byte-identical copy: a duplicate row

    local = subprocess.run(index_cmd(photos, tmp_path / "local"), capture_output=True, timeout=900, check=False)
    assert local.returncode == 0, local.stderr.decode(errors="replace")
    ray = run_ray_index(photos, tmp_path / "ray", ray_env)
    assert ray.returncode == 0, ray.stderr.decode(errors="replace")[-4000:]
    assert b"1 duplicates" in ray.stdout and b"2 failed" in ray.stdout, ray.stdout

    assert_same_index(tmp_path / "local", tmp_path / "ray")
    assert_consistent(tmp_path / "ray")
    rows, _, _ = index_rows(tmp_path / "ray")
    assert len(rows) == len([p for p in photos.iterdir() if p.suffix == ".jpg"])  # the hostile name included

    # an incremental Ray run over an unchanged folder has nothing to send to the cluster
    again = run_ray_index(photos, tmp_path / "ray", ray_env)
    assert again.returncode == 0, again.stderr.decode(errors="replace")[-4000:]
    assert b" 0 new, 0 changed" in again.stdout, again.stdout


def test_sigkill_of_the_ray_driver_then_rerun_loses_nothing(tmp_path, ray_env):
    photos, n = crash_folder(tmp_path)
    index = tmp_path / "index"
    db = index / "frozenlens.db"

    kills = 0
    for point in ({"rows": 8}, {"rows": 50}):
        before = db_counts(db)["rows"]
        cmd = loopback_only('exec "$@"', *index_cmd(photos, index, "--engine", "ray", "--batch-size", "4",
                                                   "--checkpoint-seconds", "0"))
        # SIGKILL of unshare → --kill-child SIGKILLs the driver (PID 1 of its namespace) → the
        # kernel ends every Ray process of the namespace with it
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ray_env)
        if kill_when(proc, lambda: db_counts(db), **point):
            kills += 1
        assert db_counts(db)["rows"] >= before  # committed work is never lost
        assert_consistent(index)
    assert kills >= 1, "the Ray driver finished before it could be killed"

    rerun_finishes_like_local(photos, n, index, tmp_path / "clean", ray_env)



def encode_actor_pids(proc: subprocess.Popen) -> list[int]:
    """Processes of ``proc``'s tree that run the encoder actor (Ray titles them after its class)."""
    parent, cmdline = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
                cmdline[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
    tree, grew = {proc.pid}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    return [pid for pid in tree if b"EncodeActor" in cmdline.get(pid, b"")]


def test_sigkill_of_an_encode_actor_then_rerun_loses_nothing(tmp_path, ray_env):
    """An encoder actor's process dies mid-job: the run either recovers (Ray restarts the actor) or
    stops; either way the database keeps the crash test's invariants and a rerun finishes the index."""
    photos, n = crash_folder(tmp_path)
    index = tmp_path / "index"
    db = index / "frozenlens.db"
    cmd = loopback_only('exec "$@"', *index_cmd(photos, index, "--engine", "ray", "--batch-size", "4",
                                               "--checkpoint-seconds", "0"))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ray_env)
    killed: list[int] = []
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            if db_counts(db)["rows"] >= 8:  # the job is under way: rows committed, the actor encoding
                for pid in encode_actor_pids(proc):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                if killed:
                    break
            time.sleep(0.05)
        assert killed, "no encoder actor process was found while the job ran"
        rows_at_kill = db_counts(db)["rows"]
        _, err = proc.communicate(timeout=600)  # recovers or stops; it must not hang
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert db_counts(db)["rows"] >= rows_at_kill  # committed work is never lost
    assert_consistent(index)

    rerun_finishes_like_local(photos, n, index, tmp_path / "clean", ray_env)


def test_address_auto_joins_a_running_cluster(tmp_path, testdata, ray_env):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("donna.jpg", "snow.jpg", "pool.jpg", "skagen.jpg"):
        shutil.copy(testdata / "kphotoalbum" / name, photos / name)
    script = (
        'ray start --head --node-ip-address=127.0.0.1 --num-cpus=2 --include-dashboard=false '
        '--disable-usage-stats >/dev/null || exit 98\n'
        '"$@"; rc=$?\n'
        'ray stop --force >/dev/null 2>&1\n'
        'exit $rc'
    )
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**ray_env, "PATH": os.pathsep.join([str(Path(ray_bin).parent), ray_env.get("PATH", "")])}
    proc = subprocess.run(
        loopback_only(script, *index_cmd(photos, tmp_path / "index", "--engine", "ray", "--address", "auto")),
        capture_output=True, env=env, timeout=900, check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-4000:]
    assert b"4 new" in proc.stdout, proc.stdout
    assert_consistent(tmp_path / "index")
    _, status, vectors = index_rows(tmp_path / "index")
    assert sorted(status.values()) == ["indexed"] * 4 and len(vectors) == 4


def test_ray_engine_error_when_ray_is_missing(tmp_path, monkeypatch):
    """No Ray → a typed error (the CLI prints one line), and ``import frozenlens`` never imports ray."""
    code = (
        "import sys, frozenlens, frozenlens.engine\n"
        "assert 'ray' not in sys.modules\n"
        "sys.modules['ray'] = None\n"
        "from frozenlens.errors import RayUnavailableError\n"
        "from frozenlens.indexer.ray_engine import import_ray\n"
        "try:\n    import_ray()\nexcept RayUnavailableError as e:\n    print('typed:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "typed: the Ray engine needs Ray Data" in out.stdout
