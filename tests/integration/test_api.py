"""The REST API in-process (FastAPI TestClient) over a real index of the KPhotoAlbum demo
archive: every route, its error paths and limits, the token check, and path-traversal
and symlink attempts against the file routes. The Python client runs against a real
uvicorn server started here."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from frozenlens import cli

fastapi = pytest.importorskip("fastapi", reason="the serve extra is installed by `make test`")
from fastapi.testclient import TestClient  # noqa: E402

from frozenlens.request import MAX_K  # noqa: E402
from frozenlens.server.app import create_app  # noqa: E402
from frozenlens.server.settings import Limits, ServerConfigError, ServerSettings, read_token  # noqa: E402

TOKEN = "t0ken-for-tests-0123456789abcdef"
H2_2005 = {"anne_helene.jpg", "cold_water.jpg", "skagen.jpg", "donna.jpg", "jesper.jpg", "jesper_2.jpg", "sunset.jpg"}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    """A copy of the archive plus a photo outside it reached through symlinks, indexed."""
    root = tmp_path_factory.mktemp("api")
    photos = root / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    outside = root / "outside"
    outside.mkdir()
    shutil.copy(testdata / "photos" / "rocket.jpg", outside / "secret.jpg")
    (photos / "link_out.jpg").symlink_to(outside / "secret.jpg")  # a file symlink leading out
    (photos / "linked_dir").symlink_to(outside, target_is_directory=True)  # a directory symlink leading out
    index = root / "index"
    # --follow-links: the user asked for the links to be followed; serving still refuses what lies outside
    rc = cli.main(["index", str(photos), "--index", str(index), "--captions", str(photos / "captions.jsonl"),
                   "--no-progress", "--follow-links"])
    assert rc == 0
    return photos, index, outside


@pytest.fixture(scope="module")
def client(archive):
    _, index, _ = archive
    with TestClient(create_app(ServerSettings(index_dir=index), ui=False), base_url="http://127.0.0.1") as c:
        yield c


def hits(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [Path(h["path"]).name for h in response.json()["hits"]]


def image_id(client, name: str) -> int:
    for h in client.get("/api/v1/search", params={"q": "photo", "k": 100}).json()["hits"]:
        if Path(h["path"]).name == name:
            return h["id"]
    raise AssertionError(f"{name} not found")


def assert_error(response, status: int, words: str = "") -> dict:
    assert response.status_code == status, response.text
    err = response.json()["error"]
    assert err["status"] == status and err["message"]
    assert words.lower() in err["message"].lower(), err["message"]
    return err


# -- searching -----------------------------------------------------------------
def test_search_get_and_post_agree_multilingual(client):
    r = client.get("/api/v1/search", params={"q": "un lapin", "k": 3})
    assert hits(r)[0] in {"spiff.jpg", "spiff_2.jpg"}
    body = r.json()
    assert body["query"] == "un lapin" and body["k"] == 3 and body["sort"] == "relevance" and body["took_ms"] >= 0
    h = body["hits"][0]
    assert h["thumbnail_url"] == f"/api/v1/images/{h['id']}/thumbnail" and h["image_score"] is not None
    post = client.post("/api/v1/search", json={"q": "un lapin", "k": 3})
    assert hits(post) == hits(r)
    assert hits(client.get("/api/v1/search", params={"q": "una mesa de billar", "k": 1}))[0] in {"pool.jpg", "pool_2.jpg"}


def test_search_filters(client, archive):
    photos, _, _ = archive
    r = client.get("/api/v1/search", params={"q": "a photo", "k": 50, "after": "2005-07-01", "before": "2005-12-31"})
    assert set(hits(r)) == H2_2005
    canon = hits(client.post("/api/v1/search", json={"q": "people", "k": 50, "camera": "canon"}))
    assert canon and len(canon) == 7
    assert hits(client.get("/api/v1/search", params={"q": "x", "under": str(photos / "nope")})) == []
    r = client.get("/api/v1/search", params={"q": "x", "k": 50, "after": "2005-07-28T05:10:00"})
    assert "skagen.jpg" not in hits(r) and "anne_helene.jpg" in hits(r)


def test_sort_by_date_keeps_only_relevant_photos(client):
    by_relevance = client.get("/api/v1/search", params={"q": "a pool table", "k": 24}).json()["hits"]
    best = by_relevance[0]["score"]
    newest = client.get("/api/v1/search", params={"q": "a pool table", "k": 24, "sort": "newest"}).json()["hits"]
    assert 1 <= len(newest) < 24  # the cutoff drops the unrelated photos
    assert all(h["score"] >= best - 0.1 - 1e-6 for h in newest)
    dates = [h["taken_at"] for h in newest if h["taken_at"]]
    assert dates == sorted(dates, reverse=True)
    oldest = client.get("/api/v1/search", params={"q": "a pool table", "k": 24, "sort": "oldest"}).json()["hits"]
    assert {h["id"] for h in oldest} == {h["id"] for h in newest}
    assert [h["taken_at"] for h in oldest if h["taken_at"]] == sorted(dates)
    # an explicit cutoff replaces the default one
    loose = client.get("/api/v1/search", params={"q": "a pool table", "k": 24, "sort": "newest", "min_score": -1}).json()
    assert len(loose["hits"]) == 24


def test_search_by_uploaded_photo_finds_it(client, archive):
    photos, _, _ = archive
    data = (photos / "grand_canyon_3.jpg").read_bytes()
    r = client.post("/api/v1/search/image", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "3"})
    assert hits(r)[0] == "grand_canyon_3.jpg"
    # a PNG re-encode of another photo also works, with filters as form fields
    buf = io.BytesIO()
    Image.open(photos / "pool.jpg").save(buf, "PNG")
    r = client.post("/api/v1/search/image", files={"file": ("q.png", buf.getvalue(), "image/png")},
                    data={"k": "2", "camera": "olympus"})
    assert hits(r)[0] == "pool.jpg"


def test_similar_excludes_itself(client):
    i = image_id(client, "grand_canyon_3.jpg")
    r = client.get(f"/api/v1/images/{i}/similar", params={"k": 3})
    names = hits(r)
    assert "grand_canyon_3.jpg" not in names and len(names) == 3


def test_query_errors_are_json_with_status(client):
    # what the published schema already forbids is a 422 (validation), with the field named
    assert_error(client.get("/api/v1/search", params={"q": "   "}), 422, "q")
    assert_error(client.get("/api/v1/search", params={"q": "x\x00y"}), 422, "q")
    assert_error(client.get("/api/v1/search", params={"q": "x" * 1001}), 422, "at most 1000 characters")
    assert_error(client.get("/api/v1/search", params={"q": "x", "k": 0}), 422, "k")
    assert_error(client.get("/api/v1/search", params={"q": "x", "k": MAX_K + 1}), 422, "k")
    assert_error(client.get("/api/v1/search", params={"q": "x", "k": "many"}), 422, "k")
    assert_error(client.get("/api/v1/search", params={"q": "x", "after": "last week"}), 422, "after")
    assert_error(client.get("/api/v1/search", params={"q": "x", "before": "2005-13-45"}), 422, "not an ISO 8601 date")
    assert_error(client.get("/api/v1/search", params={"q": "x", "camera": "a\x00"}), 422, "camera")
    assert_error(client.get("/api/v1/search", params={"q": "x", "color": "red"}), 422, "color")
    assert_error(client.post("/api/v1/search", json={"q": "x", "rerank": 0}), 422, "rerank")  # strict JSON types
    assert_error(client.post("/api/v1/search", json={"q": "x", "k": "5"}), 422, "k")
    r = client.request("TRACE", "/api/v1/search")
    assert_error(r, 405)
    assert r.headers["allow"] == "GET, POST"
    assert_error(client.get("/api/v1/search", params={"q": "x", "sort": "random"}), 422, "sort")
    assert_error(client.get("/api/v1/search"), 422, "q")
    assert_error(client.post("/api/v1/search", json={"q": "x", "colour": "red"}), 422, "colour")
    assert_error(client.post("/api/v1/search", content=b"{not json", headers={"content-type": "application/json"}), 422)
    assert_error(client.get("/api/v1/search", params={"q": "x", "rerank": "true"}), 409, "no reranker head")
    assert_error(client.get("/api/v1/nope"), 404)


def test_upload_errors_and_limits(archive):
    photos, index, _ = archive
    tight = ServerSettings(index_dir=index, limits=Limits(max_upload_bytes=60_000, max_upload_pixels=600_000))
    with TestClient(create_app(tight, ui=False), base_url="http://127.0.0.1") as c:
        small = (photos / "grand_canyon_3.jpg").read_bytes()
        assert len(small) < 60_000
        assert c.post("/api/v1/search/image", files={"file": ("q.jpg", small)}).status_code == 200
        big = b"\xff" * 60_001
        assert_error(c.post("/api/v1/search/image", files={"file": ("q.jpg", big)}), 413, "larger than 60000 bytes")
        # far over the limit: refused from Content-Length before the body is parsed or spooled to disk
        huge = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.jpg\"\r\n\r\n" + b"\0" * 500_000
        ctype = {"content-type": "multipart/form-data; boundary=x"}
        assert_error(c.post("/api/v1/search/image", content=huge, headers=ctype), 413, "request body is larger")

        def chunks():  # no Content-Length: counted while it streams in
            for i in range(0, len(huge), 8192):
                yield huge[i:i + 8192]

        assert_error(c.post("/api/v1/search/image", content=chunks(), headers=ctype), 413, "request body is larger")
        buf = io.BytesIO()
        Image.new("RGB", (1000, 1000), "white").save(buf, "PNG")  # tiny file, 1 MP > 0.6 MP limit
        assert_error(c.post("/api/v1/search/image", files={"file": ("q.png", buf.getvalue())}), 413, "too many pixels")
        assert_error(c.post("/api/v1/search/image", files={"file": ("q.jpg", b"GIF89a-not-really")}), 400, "cannot read")
        assert_error(c.post("/api/v1/search/image", files={"file": ("q.jpg", b"")}), 400, "cannot read")
        assert_error(c.post("/api/v1/search/image", data={"k": "3"}), 422, "file")


def test_no_index_yet_is_503_and_health_says_so(tmp_path):
    with TestClient(create_app(ServerSettings(index_dir=tmp_path / "none"), ui=False), base_url="http://127.0.0.1") as c:
        assert c.get("/api/v1/health").json() == {"status": "ok", "version": c.get("/api/v1/health").json()["version"],
                                                  "index": False}
        assert_error(c.get("/api/v1/search", params={"q": "dog"}), 503, "no index")
        assert_error(c.get("/api/v1/stats"), 503, "no index")
    assert not (tmp_path / "none").exists()  # nothing created by merely serving


# -- images, thumbnails, files -----------------------------------------------------
def test_image_metadata_thumbnail_and_file(client, archive):
    photos, index, _ = archive
    i = image_id(client, "anne_helene.jpg")
    meta = client.get(f"/api/v1/images/{i}").json()
    assert meta["camera"] == "Canon EOS 20D" and meta["taken_at"] == "2005-07-28T05:18:48"
    assert meta["date_source"] == "exif"
    assert client.get(f"/api/v1/images/{image_id(client, 'spiff.jpg')}").json()["date_source"] == "mtime"
    assert (meta["width"], meta["height"]) == (400, 600) and meta["format"] == "JPEG"
    assert any("Anne Helene" in c["text"] for c in meta["captions"]) and meta["labels"]
    t = client.get(f"/api/v1/images/{i}/thumbnail")
    assert t.status_code == 200 and t.headers["content-type"] == "image/webp"
    thumb = Image.open(io.BytesIO(t.content))
    assert thumb.format == "WEBP" and max(thumb.size) == 256 and thumb.size[1] > thumb.size[0]  # upright portrait
    cached = list((index / "thumbnails").rglob(f"{i}-*.webp"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    assert client.get(f"/api/v1/images/{i}/thumbnail").content == t.content
    assert cached[0].stat().st_mtime_ns == mtime  # generated once, then served from the cache
    f = client.get(f"/api/v1/images/{i}/file")
    assert f.status_code == 200 and f.headers["content-type"] == "image/jpeg"
    assert f.content == (photos / "anne_helene.jpg").read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/images/../../../etc/passwd",
        "/api/v1/images/..%2F..%2F..%2Fetc%2Fpasswd/file",
        "/api/v1/images/%2Fetc%2Fpasswd/file",
        "/api/v1/images//etc/passwd/file",
        "/api/v1/images/1%2F..%2F2/file",
        "/api/v1/images/..%252F..%252Fetc%252Fpasswd/file",
        "/api/v1/images/0x1/file",
        "/api/v1/images/-1/thumbnail",
        "/api/v1/images/1.0/file",
        "/api/v1/images/99999/file",
        "/api/v1/images/%00/file",
        "/api/v1/images/file?path=/etc/passwd",
        "/api/v1/file?path=/etc/passwd",
        "/api/v1/images/1/file/../../../../etc/passwd",
    ],
)
def test_path_traversal_gets_404(client, path):
    r = client.get(path)
    assert r.status_code in (403, 404), (path, r.status_code, r.text[:200])
    assert b"root:" not in r.content


def test_symlinks_out_of_the_indexed_roots_are_not_served(client, archive):
    photos, index, outside = archive
    secret = (outside / "secret.jpg").read_bytes()
    from frozenlens.engine import Engine

    with Engine.open(index) as engine:  # one of the two byte-identical files is a duplicate of the other
        ids = [engine.get_image(photos / rel).id for rel in ("link_out.jpg", "linked_dir/secret.jpg")]
        inside = engine.get_image(photos / "pool.jpg").id
        # a page of results: the thumbnails that may be shown, the others left out (not an error)
        assert set(engine.thumbnails([*ids, inside, 99999])) == {inside}
    for i in ids:  # the file symlink, and the photo reached through the directory symlink
        r = client.get(f"/api/v1/images/{i}/file")
        assert_error(r, 403, "outside the indexed folders")
        assert r.content != secret
        assert_error(client.get(f"/api/v1/images/{i}/thumbnail"), 403, "outside the indexed folders")
    # an indexed file later swapped for a symlink to a file outside the roots
    victim = photos / "wayne.jpg"
    i = image_id(client, "wayne.jpg")
    original = victim.read_bytes()
    victim.unlink()
    victim.symlink_to("/etc/passwd")
    try:
        assert_error(client.get(f"/api/v1/images/{i}/file"), 403)
    finally:
        victim.unlink()
        victim.write_bytes(original)
    # a file that vanished is a plain 404
    gone = photos / "snow.jpg"
    i = image_id(client, "snow.jpg")
    data = gone.read_bytes()
    gone.unlink()
    try:
        assert_error(client.get(f"/api/v1/images/{i}/file"), 404, "gone")
    finally:
        gone.write_bytes(data)


def test_stats_and_health(client):
    s = client.get("/api/v1/stats").json()
    assert s["images"] == 25 and s["counts"]["captions"] == 33 and s["counts"]["duplicates"] == 1
    assert s["encoder"]["name"] == "lite" and s["factory"] == "auto" and s["reranker"] is False
    assert s["index_types"] == {"semantic": "SQfp16", "visual": "SQfp16", "caption": "Flat"}
    assert s["cameras"]["Canon EOS 20D"] == 3 and s["bytes_on_disk"] > 0 and s["failed"] == []
    h = client.get("/api/v1/health").json()
    assert h["status"] == "ok" and h["index"] is True


def test_openapi_documents_every_route(client):
    spec = client.get("/openapi.json").json()
    paths = set(spec["paths"])
    assert {
        "/api/v1/search", "/api/v1/search/image", "/api/v1/images/{image_id}", "/api/v1/images/{image_id}/thumbnail",
        "/api/v1/images/{image_id}/file", "/api/v1/images/{image_id}/similar", "/api/v1/stats", "/api/v1/health",
        "/api/v1/index", "/api/v1/index/jobs/{job_id}",
    } <= paths
    assert set(spec["paths"]["/api/v1/search"]) == {"get", "post"}
    assert client.get("/docs").status_code == 200


# -- indexing from the server ----------------------------------------------------------
def test_indexing_is_off_unless_allowed(client, tmp_path):
    assert_error(client.post("/api/v1/index", json={"path": str(tmp_path)}), 403, "--allow-index")
    assert_error(client.get("/api/v1/index/jobs/1"), 404)


def test_index_job_inside_allowed_root(tmp_path, testdata, shared_lite):
    allowed = tmp_path / "allowed"
    (allowed / "trip").mkdir(parents=True)
    for name in ("pool.jpg", "snow.jpg", "skagen.jpg"):
        shutil.copy(testdata / "kphotoalbum" / name, allowed / "trip" / name)
    settings = ServerSettings(index_dir=tmp_path / "index", index_roots=(allowed,))
    with TestClient(create_app(settings, ui=False), base_url="http://127.0.0.1") as c:
        assert_error(c.get("/api/v1/search", params={"q": "snow"}), 503)
        assert_error(c.post("/api/v1/index", json={"path": str(tmp_path)}), 403, "outside")
        assert_error(c.post("/api/v1/index", json={"path": str(allowed / "trip" / ".." / ".." )}), 403, "outside")
        (allowed / "escape").symlink_to(tmp_path, target_is_directory=True)
        assert_error(c.post("/api/v1/index", json={"path": str(allowed / "escape")}), 403, "outside")
        # links inside the folder that lead out of it pull nothing in (files and their EXIF stay private)
        secret = tmp_path / "private"
        secret.mkdir()
        shutil.copy(testdata / "photos" / "rocket.jpg", secret / "secret.jpg")
        (allowed / "trip" / "out_dir").symlink_to(secret, target_is_directory=True)
        (allowed / "trip" / "out_file.jpg").symlink_to(secret / "secret.jpg")
        r = c.post("/api/v1/index", json={"path": str(allowed / "trip")})
        assert r.status_code == 202, r.text
        job = r.json()
        deadline = time.monotonic() + 120
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = c.get(f"/api/v1/index/jobs/{job['id']}").json()
        assert job["state"] == "done", job
        assert job["report"]["new"] == 3 and job["finished_at"]
        assert job["report"]["not_scanned"] == {"outside-roots": 2}
        assert c.get("/api/v1/stats").json()["images"] == 3
        pool = c.get("/api/v1/search", params={"q": "a pool table", "k": 1}).json()["hits"][0]
        assert Path(pool["path"]).name == "pool.jpg"
        assert c.get(pool["thumbnail_url"]).status_code == 200
        assert list((tmp_path / "index" / "thumbnails").rglob(f"{pool['id']}-*.webp"))
        # a second run after the photo was deleted drops it and its cached thumbnail
        (allowed / "trip" / "pool.jpg").unlink()
        job = c.post("/api/v1/index", json={"path": str(allowed / "trip")}).json()
        while job["state"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = c.get(f"/api/v1/index/jobs/{job['id']}").json()
        assert job["state"] == "done" and job["report"]["deleted"] == 1, job
        assert not list((tmp_path / "index" / "thumbnails").rglob(f"{pool['id']}-*.webp"))
        assert_error(c.get(pool["thumbnail_url"]), 404)


# -- the token ---------------------------------------------------------------------------
def test_public_address_needs_a_token(tmp_path):
    with pytest.raises(ServerConfigError, match="without an API token"):
        create_app(ServerSettings(index_dir=tmp_path, host="0.0.0.0"), ui=False)
    with pytest.raises(ServerConfigError, match="at least 16"):
        create_app(ServerSettings(index_dir=tmp_path, host="0.0.0.0", token="short"), ui=False)
    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        create_app(ServerSettings(index_dir=tmp_path, host=loopback), ui=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    assert read_token(token_file) == TOKEN
    assert read_token(None, env={"FROZENLENS_API_TOKEN": TOKEN}) == TOKEN
    assert read_token(None, env={}) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ServerConfigError, match="empty"):
        read_token(tmp_path / "empty")


def test_cli_serve_refuses_public_address_without_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FROZENLENS_API_TOKEN", raising=False)
    rc = cli.main(["serve", "--index", str(tmp_path), "--host", "0.0.0.0", "--port", "0", "--no-ui"])
    assert rc == 1
    assert "without an API token" in capsys.readouterr().err


def test_token_is_checked_on_every_route(archive):
    _, index, _ = archive
    settings = ServerSettings(index_dir=index, host="0.0.0.0", token=TOKEN)
    with TestClient(create_app(settings, ui=False), base_url="http://127.0.0.1") as c:
        i = image_id_with(c, {"Authorization": f"Bearer {TOKEN}"})
        routes = ["/api/v1/health", "/api/v1/stats", "/api/v1/search?q=dog", f"/api/v1/images/{i}",
                  f"/api/v1/images/{i}/thumbnail", f"/api/v1/images/{i}/file", f"/api/v1/images/{i}/similar",
                  "/openapi.json", "/docs", "/api/v1/index/jobs/1"]
        for route in routes:
            r = c.get(route)
            assert r.status_code == 401, route
            assert r.json()["error"]["code"] == "unauthorized"
            assert c.get(route, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
            assert c.get(route, headers={"Authorization": f"Bearer {TOKEN}"}).status_code in (200, 404), route
            assert c.get(route, headers={"X-API-Token": TOKEN}).status_code in (200, 404), route
        assert c.post("/api/v1/search", json={"q": "dog"}).status_code == 401
        assert c.post("/api/v1/search/image", files={"file": ("q.jpg", b"x")}).status_code == 401
        # a browser: login page, then ?token= sets an HttpOnly cookie and redirects without the token
        page = c.get("/", headers={"accept": "text/html"})
        assert page.status_code == 401 and "token" in page.text.lower() and page.headers["content-type"].startswith("text/html")
        r = c.get(f"/api/v1/health?token={TOKEN}&x=1", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/api/v1/health?x=1"
        assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=Strict" in r.headers["set-cookie"]
        assert c.get("/api/v1/stats").status_code == 200  # the cookie now authenticates
        c.cookies.clear()
        assert c.get("/api/v1/health?token=wrong-token-0123456789").status_code == 401


def image_id_with(c, headers) -> int:
    return c.get("/api/v1/search", params={"q": "photo", "k": 1}, headers=headers).json()["hits"][0]["id"]


# -- the Python client against a real server -------------------------------------------------
@pytest.fixture
def live_server(archive):
    import uvicorn

    _, index, _ = archive
    app = create_app(ServerSettings(index_dir=index, host="127.0.0.1", token=TOKEN), ui=False)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_python_client_mirrors_the_engine(live_server, archive):
    from frozenlens.client import ApiError, Client
    from frozenlens.engine import Engine
    from frozenlens.types import SearchFilters

    photos, index, _ = archive
    with Client(live_server, token=TOKEN) as fl:
        assert fl.health()["index"] is True
        got = fl.search("un lapin", k=5)
        with Engine.open(index) as engine:
            want = engine.search("un lapin", k=5)
        assert [h.id for h in got] == [h.id for h in want]
        assert got[0].score == pytest.approx(want[0].score, abs=1e-5)
        assert got[0].captions == want[0].captions and got[0].taken_at == want[0].taken_at
        assert got[0].date_source == want[0].date_source is not None
        dated = fl.search("a photo", k=50, filters=SearchFilters(after=dt.date(2005, 7, 1), before=dt.date(2005, 12, 31)))
        assert {Path(h.path).name for h in dated} == H2_2005
        by_image = fl.search(photos / "pool.jpg", k=1)
        assert Path(by_image[0].path).name == "pool.jpg"
        like = fl.similar(by_image[0].id, k=3)
        assert by_image[0].id not in {h.id for h in like}
        assert fl.get_image(by_image[0].id)["camera"].startswith("OLYMPUS")
        assert fl.image_file(by_image[0].id) == (photos / "pool.jpg").read_bytes()
        assert Image.open(io.BytesIO(fl.thumbnail(by_image[0].id))).format == "WEBP"
        assert fl.stats()["images"] == 25
        with pytest.raises(ApiError) as err:
            fl.search("", k=3)
        assert err.value.status == 422 and "q" in err.value.message
        with pytest.raises(ApiError) as err:
            fl.get_image(99999)
        assert err.value.status == 404
    with Client(live_server, token="wrong-token-0123456789") as bad, pytest.raises(ApiError) as err:
        bad.health()
    assert err.value.status == 401


def test_reranked_search_through_the_api(archive, tmp_path, capsys):
    """With a trained head in the index, text searches are reranked by default; rerank=false skips it."""
    _, index, _ = archive
    work = tmp_path / "index"
    shutil.copytree(index, work)
    rc = cli.main(["train-reranker", "--index", str(work), "--epochs", "1", "--max-steps-per-epoch", "3",
                   "--seed", "0", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    with TestClient(create_app(ServerSettings(index_dir=work), ui=False), base_url="http://127.0.0.1") as c:
        assert c.get("/api/v1/stats").json()["reranker"] is True
        on = c.get("/api/v1/search", params={"q": "un lapin", "k": 5}).json()["hits"]
        assert all(h["reranked"] and h["first_stage_image_score"] is not None for h in on)
        off = c.get("/api/v1/search", params={"q": "un lapin", "k": 5, "rerank": "false"}).json()["hits"]
        assert not any(h["reranked"] for h in off) and all(h["first_stage_image_score"] is None for h in off)
        forced = c.post("/api/v1/search", json={"q": "un lapin", "k": 5, "rerank": True}).json()["hits"]
        assert [h["id"] for h in forced] == [h["id"] for h in on]
        newest = c.get("/api/v1/search", params={"q": "un lapin", "k": 5, "sort": "newest"}).json()["hits"]
        assert newest and all(h["reranked"] for h in newest)


# -- DNS rebinding: without a token, only loopback host names -----------------------------
def test_host_header_must_be_loopback_without_a_token(archive):
    _, index, _ = archive
    from frozenlens.server.hosts import host_allowed, host_name

    assert host_name("[::1]:7860") == "::1" and host_name("LocalHost:80") == "localhost"
    assert host_name("127.0.0.1") == "127.0.0.1" and host_name("example.org.") == "example.org"
    with TestClient(create_app(ServerSettings(index_dir=index), ui=False), base_url="http://127.0.0.1") as c:
        for good in ("127.0.0.1", "127.0.0.1:7860", "localhost", "localhost:7860", "[::1]:7860", "127.8.9.10",
                     "app.localhost:7860", "LOCALHOST"):
            assert c.get("/api/v1/health", headers={"host": good}).status_code == 200, good
        for bad in ("evil.example.com", "evil.example.com:7860", "127.0.0.1.evil.example.com", "localhost.evil.com",
                    "192.168.1.10", "[2001:db8::1]:7860", "0.0.0.0", ""):
            for route in ("/api/v1/health", "/api/v1/search?q=dog", "/openapi.json", "/"):
                r = c.get(route, headers={"host": bad})
                assert r.status_code == 400, (bad, route, r.status_code)
                assert r.json()["error"]["code"] == "bad_host"
        assert c.post("/api/v1/search", json={"q": "dog"}, headers={"host": "evil.example.com"}).status_code == 400
    # a reverse proxy's name, when the operator lists it
    proxied = ServerSettings(index_dir=index, allowed_hosts=("photos.example.org",))
    with TestClient(create_app(proxied, ui=False), base_url="http://127.0.0.1") as c:
        assert c.get("/api/v1/health", headers={"host": "photos.example.org"}).status_code == 200
        assert c.get("/api/v1/health", headers={"host": "evil.example.com"}).status_code == 400
    assert host_allowed("Photos.Example.Org:443", frozenset({"photos.example.org"}))
    with pytest.raises(ServerConfigError, match="allowed-host"):
        create_app(ServerSettings(index_dir=index, allowed_hosts=("bad name/x",)), ui=False)
    # with a token the token is the defence (a rebound page has no cookie for our origin)
    with TestClient(create_app(ServerSettings(index_dir=index, host="0.0.0.0", token=TOKEN), ui=False)) as c:
        assert c.get("/api/v1/health", headers={"host": "photos.example.org", "X-API-Token": TOKEN}).status_code == 200
        assert c.get("/api/v1/health", headers={"host": "evil.example.com"}).status_code == 401
