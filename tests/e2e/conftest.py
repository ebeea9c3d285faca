"""Live-server fixtures for the browser tests: a real ``frozenlens serve`` and Debian chromium.

Everything stays on 127.0.0.1: the servers listen on loopback only, Gradio's
telemetry and update checks are off, and chromium resolves no host name but
127.0.0.1/localhost (see FACTS.md, "Real components on these machines").
Never run ``playwright install``; ``make test`` installs chromium with apt.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Request

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / ".cache" / "test-output" / "ui"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1, EXCLUDE localhost",
]
ADDRESS = re.compile(r"FrozenLens serving .* at (http://127\.0\.0\.1:\d+)/")
START_TIMEOUT = 60.0
#: a photo that cannot be decoded, added to the archive copy so the Index tab has a failure to show
BROKEN_NAME = "broken.jpg"


@dataclass(frozen=True)
class Server:
    url: str  # http://127.0.0.1:PORT (no trailing slash)
    photos: Path
    index: Path
    token: str | None = None


def server_env(tmp: Path) -> dict[str, str]:
    """The environment of a test server: no telemetry, no update checks, temp files under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k != "FROZENLENS_API_TOKEN"}
    env.update({
        "OMP_WAIT_POLICY": "PASSIVE",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_SSR_MODE": "False",
        "GRADIO_TEMP_DIR": str(tmp / "gradio-tmp"),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONUNBUFFERED": "1",
    })
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(var, None)
    return env


def index_archive(photos: Path, index: Path, env: dict[str, str]) -> None:
    """Index ``photos`` (with its captions.jsonl) through the real CLI."""
    cmd = [sys.executable, "-m", "frozenlens", "index", str(photos), "--captions", str(photos / "captions.jsonl"),
           "--index", str(index), "--no-progress"]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"indexing failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy


def wait_healthy(url: str, token: str | None, proc: subprocess.Popen, deadline: float) -> None:
    req = urllib.request.Request(url + "/api/v1/health", headers={"Authorization": f"Bearer {token}"} if token else {})
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} before it was healthy")
        try:
            with _opener().open(req, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy in time")


@contextlib.contextmanager
def running_server(index: Path, photos: Path, tmp: Path, *args: str, token: str | None = None) -> Iterator[Server]:
    """A ``frozenlens serve --port 0`` subprocess; yields its address once ``/api/v1/health`` answers."""
    env = server_env(tmp)
    token_args: list[str] = []
    if token is not None:
        token_file = tmp / "token.txt"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        token_args = ["--token-file", str(token_file)]
    log = tmp / "server-stderr.log"
    cmd = [sys.executable, "-m", "frozenlens", "serve", "--index", str(index), "--host", "127.0.0.1", "--port", "0",
           *token_args, *args]
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        deadline = time.monotonic() + START_TIMEOUT
        url = None
        while url is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None and lines.empty():
                raise AssertionError(f"frozenlens serve did not start; stderr:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                match = ADDRESS.search(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
            url = match.group(1) if match else None
        wait_healthy(url, token, proc, deadline)
        yield Server(url=url, photos=photos, index=index, token=token)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def ui_archive(tmp_path_factory, testdata) -> tuple[Path, Path]:
    """(photos, index): a copy of the KPhotoAlbum archive plus one broken file, indexed by the CLI."""
    root = tmp_path_factory.mktemp("ui-kpa")
    photos = root / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    (photos / BROKEN_NAME).write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00 this is not really a photo")
    index = root / "index"
    index_archive(photos, index, server_env(root))
    return photos, index


@pytest.fixture(scope="module")
def server(ui_archive, tmp_path_factory) -> Iterator[Server]:
    """The archive served without a token (loopback only)."""
    photos, index = ui_archive
    with running_server(index, photos, tmp_path_factory.mktemp("serve")) as srv:
        yield srv


@pytest.fixture(scope="module")
def rerank_server(ui_archive, tmp_path_factory) -> Iterator[Server]:
    """A copy of the archive's index with a briefly trained reranker head, served without a token."""
    photos, index = ui_archive
    tmp = tmp_path_factory.mktemp("serve-rerank")
    work = tmp / "index"
    shutil.copytree(index, work)
    cmd = [sys.executable, "-m", "frozenlens", "train-reranker", "--index", str(work), "--epochs", "1",
           "--max-steps-per-epoch", "3", "--seed", "0", "--no-progress"]
    done = subprocess.run(cmd, check=False, env=server_env(tmp), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"training failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    with running_server(work, photos, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_server(testdata, tmp_path_factory) -> Iterator[Server]:
    """A server with an API token, no index yet, and indexing from the page allowed inside ``incoming``."""
    tmp = tmp_path_factory.mktemp("serve-token")
    incoming = tmp / "incoming"
    album = incoming / "album"
    album.mkdir(parents=True)
    for name in ("pool.jpg", "spiff.jpg", "grand_canyon_3.jpg"):
        shutil.copy2(testdata / "kphotoalbum" / name, album / name)
    token = "T0ken-for-browser-tests-0123456789abcdef"[:32]
    with running_server(tmp / "index", incoming, tmp, "--allow-index", str(incoming), token=token) as srv:
        yield srv


@pytest.fixture(scope="session")
def browser():
    """Debian chromium through Playwright (never `playwright install`)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make browser`, run by `make test`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and page; fails the test if the page asked for any other host."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    context.set_default_timeout(20_000)
    pg = context.new_page()
    outside: list[str] = []

    def watch(request: Request) -> None:
        url = request.url
        if not re.match(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/", url) and not url.startswith(("data:", "blob:")):
            outside.append(url)

    pg.on("request", watch)
    yield pg
    context.close()
    assert not outside, f"the page tried to reach other hosts: {outside[:5]}"


@pytest.fixture(scope="session")
def shots() -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS
