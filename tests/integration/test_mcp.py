"""`frozenlens mcp` end to end with the MCP SDK's own client, over a real index of the KPhotoAlbum demo
archive (the packaged `lite` encoder): the server runs as `python -m frozenlens mcp` over stdio and over
streamable HTTP on 127.0.0.1 (a free port), and each tool is called through a real ClientSession.
Also: bad arguments are tool errors with the request object's own messages (never a traceback), the
thumbnail is image content, indexing tools exist only with --allow-index, and the token / Host guards
of `frozenlens serve` stand in front of the HTTP transport."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import datetime as dt
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("mcp", reason="the mcp extra is installed by `make test`")
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from frozenlens import cli
from frozenlens.errors import QueryError
from frozenlens.request import MAX_K, MAX_QUERY_CHARS, SORTS, SearchRequest
from frozenlens.types import SearchFilters
from tests.conftest import index_kphotoalbum

READ_TOOLS = {"search", "photo_metadata", "thumbnail", "index_stats", "near_duplicates"}
H2_2005 = {"anne_helene.jpg", "cold_water.jpg", "skagen.jpg", "donna.jpg", "jesper.jpg", "jesper_2.jpg", "sunset.jpg"}
TOKEN = "t0ken-for-mcp-tests-0123456789abcdef"


def server_env() -> dict[str, str]:
    """The server process sees this checkout (PYTHONPATH) and the test photos, like the tests do."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "OMP_WAIT_POLICY": "PASSIVE"}


def run_in_thread(coro):
    """``asyncio.run(coro)`` in a thread of its own: the session's main thread may already run an
    event loop (Playwright's sync API, used by the browser tests, keeps one)."""
    out: dict = {}

    def target() -> None:
        try:
            out["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            out["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join(300)
    if "error" in out:
        raise out["error"]
    return out["value"]


class Session:
    """A real MCP ClientSession kept open on a background event loop; its calls are made synchronously."""

    def __init__(self, transport) -> None:  # transport: () -> async context manager yielding (read, write, ...)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._ready: concurrent.futures.Future = concurrent.futures.Future()
        self._main = asyncio.run_coroutine_threadsafe(self._run(transport), self.loop)
        self.session: ClientSession = self._ready.result(timeout=180)

    async def _run(self, transport) -> None:
        self._stop = asyncio.Event()
        try:
            async with transport() as streams, ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                self._ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run(self, coro, timeout: float = 180):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, tool: str, args: dict | None = None):
        return self.run(self.session.call_tool(tool, args or {}))

    def tools(self) -> dict:
        return {t.name: t for t in self.run(self.session.list_tools()).tools}

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        with contextlib.suppress(Exception):
            self._main.result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def stdio_session(*args: str) -> Session:
    params = StdioServerParameters(command=sys.executable, args=["-m", "frozenlens", "mcp", *args], env=server_env())
    return Session(lambda: stdio_client(params))


@contextlib.contextmanager
def http_server(*args: str):
    """`frozenlens mcp --http` on 127.0.0.1, a free port → its URL (read from the banner it prints)."""
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a chatty server never blocks on it
        proc = subprocess.Popen([sys.executable, "-m", "frozenlens", "mcp", "--http", "--host", "127.0.0.1",
                                 "--port", "0", *args], stdout=subprocess.PIPE, stderr=log, text=True, env=server_env())
        try:
            line = proc.stdout.readline()
            m = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)$", line.strip())
            if not m:
                proc.wait(timeout=30)
                log.seek(0)
                pytest.fail(f"the server did not start: {line!r} {log.read()[-2000:]}")
            yield m.group(1)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    return index_kphotoalbum(tmp_path_factory.mktemp("mcp"), testdata)


@pytest.fixture(scope="module")
def engine(archive):
    from frozenlens.engine import Engine

    with Engine.open(archive[1]) as e:
        yield e


@pytest.fixture(scope="module", params=["stdio", "http"])
def mcp(request, archive):
    _, index = archive
    if request.param == "stdio":
        s = stdio_session("--index", str(index))
        yield s
        s.close()
        return
    with http_server("--index", str(index)) as url:
        s = Session(lambda: streamable_http_client(url))
        yield s
        s.close()


def ok(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


def error_text(result) -> str:
    assert result.is_error, result
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert "Traceback" not in text and 'File "' not in text and "errors.pydantic.dev" not in text, text
    return text


def names(result) -> list[str]:
    return [Path(h["path"]).name for h in ok(result)["hits"]]


def by_name(engine, name: str) -> int:
    return next(h.id for h in engine.search("a photo", k=100) if Path(h.path).name == name)


# -- tools --------------------------------------------------------------------------------------
def test_tools_are_listed_read_only_with_the_request_limits(mcp):
    tools = mcp.tools()
    assert set(tools) == READ_TOOLS  # no indexing tool without --allow-index
    assert all(t.annotations.read_only_hint for t in tools.values())
    props = tools["search"].input_schema["properties"]
    assert props["k"]["maximum"] == MAX_K and props["query"]["maxLength"] == MAX_QUERY_CHARS
    assert props["sort"]["enum"] == list(SORTS)
    assert {"id", "path", "data"} <= set(tools["search"].input_schema["$defs"]["Photo"]["properties"])
    assert tools["thumbnail"].input_schema["required"] == ["id"]


def test_text_search_multilingual_matches_the_engine(mcp, engine):
    out = ok(mcp.call("search", {"query": "un lapin", "k": 3}))
    assert out["query"] == "un lapin" and out["k"] == 3 and out["sort"] == "relevance" and out["took_ms"] >= 0
    assert Path(out["hits"][0]["path"]).name in {"spiff.jpg", "spiff_2.jpg"}
    assert [h["id"] for h in out["hits"]] == [h.id for h in engine.search("un lapin", k=3)]
    assert names(mcp.call("search", {"query": "una mesa de billar", "k": 1}))[0] in {"pool.jpg", "pool_2.jpg"}
    # the hit carries what a client needs to show it
    h = out["hits"][0]
    assert h["image_score"] is not None and h["taken_at"] and h["width"] > 0 and isinstance(h["captions"], list)


def test_search_filters_and_date_sort(mcp, archive):
    photos, _ = archive
    r = mcp.call("search", {"query": "a photo", "k": 50, "filters": {"after": "2005-07-01", "before": "2005-12-31"}})
    assert set(names(r)) == H2_2005
    assert len(names(mcp.call("search", {"query": "people", "k": 50, "filters": {"camera": "canon"}}))) == 7
    assert names(mcp.call("search", {"query": "x", "filters": {"under": str(photos / "nope")}})) == []
    newest = ok(mcp.call("search", {"query": "a pool table", "k": 24, "sort": "newest"}))["hits"]
    assert 1 <= len(newest) < 24
    dates = [h["taken_at"] for h in newest if h["taken_at"]]
    assert dates == sorted(dates, reverse=True)


def test_photo_queries_by_id_path_and_upload(mcp, archive, engine):
    photos, _ = archive
    canyon = by_name(engine, "grand_canyon_3.jpg")
    by_id = ok(mcp.call("search", {"photo": {"id": canyon}, "k": 3}))
    assert [h["id"] for h in by_id["hits"]] == [h.id for h in engine.similar(canyon, k=3)]
    assert canyon not in [h["id"] for h in by_id["hits"]] and len(by_id["hits"]) == 3
    by_path = ok(mcp.call("search", {"photo": {"path": str(photos / "grand_canyon_3.jpg")}, "k": 3}))
    assert by_path["hits"] == by_id["hits"] and by_path["query"] is None
    data = base64.b64encode((photos / "grand_canyon_3.jpg").read_bytes()).decode()
    assert names(mcp.call("search", {"photo": {"data": data}, "k": 3}))[0] == "grand_canyon_3.jpg"
    buf = io.BytesIO()
    Image.open(photos / "pool.jpg").save(buf, "PNG")
    png = base64.b64encode(buf.getvalue()).decode()
    assert names(mcp.call("search", {"photo": {"data": png}, "k": 2, "filters": {"camera": "olympus"}}))[0] == "pool.jpg"


def test_composed_terms_are_the_engines(mcp, archive, engine):
    """Weighted text and photo terms give exactly the engine's composed search (one rule:
    frozenlens.engine.compose); bad terms are the request object's errors."""
    from frozenlens.request import QueryTerm, SearchRequest

    photos, _ = archive
    canyon = by_name(engine, "grand_canyon_3.jpg")
    args = {"query": "the sea", "terms": [{"text": "a dog", "weight": -1}, {"photo": {"id": canyon}, "weight": 0.5}],
            "k": 5}
    want = engine.search(SearchRequest(query="the sea", k=5, terms=(QueryTerm(text="a dog", weight=-1),
                                                                   QueryTerm(image=canyon, weight=0.5))))
    assert [h["id"] for h in ok(mcp.call("search", args))["hits"]] == [h.id for h in want]
    data = base64.b64encode((photos / "pool.jpg").read_bytes()).decode()
    only_terms = ok(mcp.call("search", {"terms": [{"photo": {"data": data}}, {"text": "people", "weight": -0.5}],
                                        "k": 3}))
    assert len(only_terms["hits"]) == 3
    assert "bad-term" in error_text(mcp.call("search", {"query": "x", "terms": [{"text": "y", "weight": 0}]}))
    assert "bad-term" in error_text(mcp.call("search", {"terms": [{"text": "y", "photo": {"id": canyon}}]}))
    assert "not read" in error_text(mcp.call("search", {"terms": [{"photo": {"path": str(photos / "pool.jpg")}}]}))
    assert "as a term" in error_text(mcp.call("search", {"photo": {"id": canyon}, "terms": [{"text": "y"}]}))


def test_near_duplicates_and_collapse_are_the_engines(mcp, engine):
    groups = engine.near_duplicates()
    out = ok(mcp.call("near_duplicates", {}))
    assert out["threshold"] == 0.6 and out["total"] == len(groups)
    assert [g["id"] for g in out["groups"]] == [g.id for g in groups]
    assert all(g["size"] == len(g["members"]) + len(g["copies"]) and g["members"] for g in out["groups"])
    strict = ok(mcp.call("near_duplicates", {"threshold": 0.99, "limit": 1}))
    assert strict["total"] == len(engine.near_duplicates(0.99)) and len(strict["groups"]) <= 1
    assert "threshold" in error_text(mcp.call("near_duplicates", {"threshold": 1.5}))
    from frozenlens.request import SearchRequest

    want = engine.search(SearchRequest(query="a billiard table", k=5, collapse=True))
    got = ok(mcp.call("search", {"query": "a billiard table", "k": 5, "collapse": True}))["hits"]
    assert [(h["id"], h["group_size"]) for h in got] == [(h.id, h.group_size) for h in want]


def test_photo_metadata(mcp, archive, engine):
    photos, _ = archive
    i = by_name(engine, "skagen.jpg")
    meta = ok(mcp.call("photo_metadata", {"id": i}))
    assert meta["id"] == i and meta["path"] == str(photos / "skagen.jpg") and meta["status"] == "indexed"
    assert meta["taken_at"].startswith("2005-07-28") and meta["date_source"] == "exif"
    assert meta["width"] > 0 and meta["format"] == "JPEG" and meta["captions"]


def test_thumbnail_is_image_content(mcp, archive, engine):
    i = by_name(engine, "pool.jpg")
    result = mcp.call("thumbnail", {"id": i})
    assert not result.is_error, result.content
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1 and images[0].mime_type == "image/webp"
    thumb = Image.open(io.BytesIO(base64.b64decode(images[0].data)))
    thumb.load()
    assert thumb.format == "WEBP" and max(thumb.size) == 256
    with Image.open(archive[0] / "pool.jpg") as original:  # the same picture, made smaller
        assert abs(thumb.size[0] / thumb.size[1] - original.size[0] / original.size[1]) < 0.02


def test_index_stats(mcp):
    stats = ok(mcp.call("index_stats"))
    assert stats["images"] == 24 and stats["counts"]["captions"] > 0 and stats["encoder"]["name"] == "lite"
    assert stats["vectors"]["visual"] == 24 and stats["reranker"] is False and stats["failed"] == []


# -- errors --------------------------------------------------------------------------------------
def request_error(**kwargs) -> str:
    """The request object's own message for these options."""
    with pytest.raises(QueryError) as exc:
        SearchRequest(**kwargs)
    return str(exc.value)


def test_bad_arguments_are_clear_tool_errors(mcp, archive):
    photos, _ = archive
    same_as_request = [
        ({"query": "dog", "k": 0}, request_error(k=0)),
        ({"query": "dog", "k": MAX_K + 1}, request_error(k=MAX_K + 1)),
        ({"query": "x" * (MAX_QUERY_CHARS + 1)}, request_error(query="x" * (MAX_QUERY_CHARS + 1))),
        ({"query": "   "}, request_error(query="   ")),
        ({"query": "dog", "sort": "sideways"}, request_error(sort="sideways")),
        ({"query": "dog", "rerank_candidates": 0}, request_error(rerank_candidates=0)),
        ({"query": "dog", "filters": {"after": "2006-01-01", "before": "2005-01-01"}},
         request_error(filters=SearchFilters(after=dt.date(2006, 1, 1), before=dt.date(2005, 1, 1)))),
    ]
    for args, message in same_as_request:
        assert error_text(mcp.call("search", args)).endswith(f"bad-query: {message}"), args
    cases = [
        ("search", {"query": "dog", "photo": {"id": 1}}, "bad-query: give either a text query or a photo"),
        ("search", {}, "bad-query: give a text query, a photo or terms"),
        ("search", {"photo": {"id": 1, "path": "/x.jpg"}}, "exactly one of id, path or data"),
        ("search", {"photo": {"path": "grand_canyon_3.jpg"}}, "must be an absolute path"),
        ("search", {"photo": {"path": str(photos / "nope.jpg")}}, "not-found: no indexed image"),
        ("search", {"photo": {"id": 10**6}}, "not-found"),
        ("search", {"photo": {"data": "not base64!"}}, "bad-query: photo.data is not valid base64"),
        ("search", {"photo": {"data": base64.b64encode(b"hello, not a photo").decode()}},
         "bad-query: cannot read the uploaded image"),
        ("search", {"query": "dog", "filters": {"after": "last week"}}, "not an ISO 8601 date"),
        ("search", {"query": "dog", "rerank": True}, "reranker:"),
        ("search", {"query": "dog", "k": "ten"}, "invalid: k: Input should be a valid integer"),
        ("search", {"query": "dog", "filters": {"colour": "red"}}, "invalid: filters.colour: Extra inputs are not permitted"),
        ("photo_metadata", {"id": 10**6}, "not-found: no indexed image 1000000"),
        ("photo_metadata", {"id": 2**70}, "not-found"),
        ("photo_metadata", {}, "invalid: id: Field required"),
        ("thumbnail", {"id": -1}, "not-found"),
        ("index_folder", {"path": str(photos)}, "Unknown tool: index_folder"),
    ]
    for tool, args, words in cases:
        assert words in error_text(mcp.call(tool, args)), (tool, args)
    assert not mcp.call("index_stats").is_error  # the session outlives its errors


def test_upload_limits_are_the_servers(archive, tmp_path):
    """The upload limits of `frozenlens serve` (Limits) apply to a photo sent as base64 (SDK client in-process)."""
    from mcp import Client

    from frozenlens.server.mcp.tools import create_mcp
    from frozenlens.server.settings import Limits, ServerSettings
    from frozenlens.server.state import ServerState

    photos, index = archive
    data = (photos / "pool.jpg").read_bytes()
    state = ServerState(ServerSettings(index_dir=index, limits=Limits(max_upload_bytes=len(data) - 1)))

    async def go():
        async with Client(create_mcp(state)) as client:
            big = await client.call_tool("search", {"photo": {"data": base64.b64encode(data).decode()}})
            small = await client.call_tool("search", {"photo": {"data": base64.b64encode(b"\0" * 10).decode()}})
            return big, small

    try:
        big, small = run_in_thread(go())
    finally:
        state.close()
    assert f"too-large: the upload is larger than {len(data) - 1} bytes" in error_text(big)
    assert "bad-query: cannot read the uploaded image" in error_text(small)


# -- indexing ------------------------------------------------------------------------------------
def test_indexing_tools_only_with_allow_index(tmp_path, testdata):
    allowed = tmp_path / "allowed"
    (allowed / "trip").mkdir(parents=True)
    for name in ("pool.jpg", "snow.jpg", "skagen.jpg"):
        shutil.copy(testdata / "kphotoalbum" / name, allowed / "trip" / name)
    s = stdio_session("--index", str(tmp_path / "index"), "--allow-index", str(allowed))
    try:
        tools = s.tools()
        assert set(tools) == READ_TOOLS | {"index_folder", "index_job"}
        assert tools["index_folder"].annotations.read_only_hint is False
        assert "no-index: there is no index" in error_text(s.call("search", {"query": "snow"}))
        assert "indexing-not-allowed" in error_text(s.call("index_folder", {"path": str(tmp_path)}))
        assert "not-found: no indexing job 7" in error_text(s.call("index_job", {"id": 7}))
        job = ok(s.call("index_folder", {"path": str(allowed / "trip")}))
        deadline = time.monotonic() + 180
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.3)
            job = ok(s.call("index_job", {"id": job["id"]}))
        assert job["state"] == "done" and job["report"]["new"] == 3 and job["finished_at"], job
        assert ok(s.call("index_stats"))["images"] == 3
        assert names(s.call("search", {"query": "a pool table", "k": 1})) == ["pool.jpg"]
    finally:
        s.close()


# -- the guards of `frozenlens serve` -------------------------------------------------------------
def test_public_address_needs_a_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FROZENLENS_API_TOKEN", raising=False)

    def never_listen(*args, **kwargs):
        raise AssertionError("the server must refuse to start, not listen")

    monkeypatch.setattr("frozenlens.cli.mcp.run_uvicorn", never_listen)  # a regression fails instead of binding
    rc = cli.main(["mcp", "--http", "--host", "0.0.0.0", "--port", "0", "--index", str(tmp_path)])
    assert rc == 1 and "without an API token" in capsys.readouterr().err


def test_token_and_host_guards_over_http(archive, tmp_path):
    import httpx2

    _, index = archive
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with http_server("--index", str(index), "--token-file", str(token_file)) as url:
        r = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        headers={"Accept": "application/json, text/event-stream"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"

        async def listed() -> set[str]:
            async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
                        streamable_http_client(url, http_client=http) as streams,
                        ClientSession(streams[0], streams[1]) as session):
                await session.initialize()
                return {t.name for t in (await session.list_tools()).tools}

        assert run_in_thread(listed()) == READ_TOOLS
    with http_server("--index", str(index)) as url:  # no token: only requests addressed to loopback
        r = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                        headers={"Host": "evil.example.com", "Accept": "application/json, text/event-stream"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_host"
