"""The search page in a real browser: Debian chromium driving a live ``frozenlens serve``.

Facts about the KPhotoAlbum archive (EXIF dates, cameras) come from
test_kphotoalbum_cli.py. The French query and its expected first photo were
checked against the packaged ``lite`` encoder: "un lapin" ranks a Spiff photo
first (0.623, next 0.589); "une table de billard" scores pool.jpg and
pool_2.jpg at 0.53 / 0.51 and everything else below 0.45.

Each test saves a screenshot to .cache/test-output/ui/<name>.png.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from frozenlens.engine import DATE_SORT_MARGIN

from .conftest import BROKEN_NAME
from .test_kphotoalbum_cli import CANON, H2_2005

#: the two photos of Spiff the rabbit: "un lapin" ranks one of them first
RABBITS = {"spiff.jpg", "spiff_2.jpg"}
#: their top ImageNet label (the classifier's own guess, at temperature 1)
TOP_LABEL = {"spiff.jpg": "hare", "spiff_2.jpg": "chocolate sauce"}

pytestmark = pytest.mark.slow


# -- helpers ----------------------------------------------------------------------------------
def open_page(page, server, path: str = "/") -> None:
    page.goto(server.url + path)
    page.wait_for_selector("#fl-query textarea")
    page.wait_for_function(
        "() => { const s = document.querySelector('#fl-status'); return s && s.innerText.trim() && !s.innerText.includes('Loading'); }"
    )


def status(page) -> str:
    return page.locator("#fl-status").inner_text().strip()


def wait_status(page, fragment: str) -> str:
    page.wait_for_function(
        "(frag) => { const s = document.querySelector('#fl-status'); return s && s.innerText.includes(frag); }",
        arg=fragment,
    )
    return status(page)


def search(page, text: str) -> str:
    box = page.locator("#fl-query textarea")
    box.fill(text)
    box.press("Enter")
    return wait_status(page, f"for “{text}”") if text.strip() else ""


def cards(page) -> list[dict]:
    return page.locator("#fl-results .fl-card").evaluate_all(
        """els => els.map(e => ({
            id: Number(e.dataset.id), path: e.dataset.path, taken: e.dataset.taken, score: Number(e.dataset.score),
            date: e.querySelector('.fl-date').innerText, camera: e.querySelector('.fl-camera').innerText,
            file_date: e.querySelector('.fl-date-note') !== null,
            caption: e.querySelector('.fl-caption').innerText, shown_path: e.querySelector('.fl-path').innerText,
            text: e.innerText,
            thumb_ok: (() => { const i = e.querySelector('img'); return !!i && i.complete && i.naturalWidth > 0; })(),
        }))"""
    )


def names(rows: list[dict]) -> list[str]:
    return [Path(r["path"]).name for r in rows]


def set_field(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} textarea, #{elem_id} input").first
    box.fill(value)
    box.press("Tab")


def set_k(page, k: int) -> None:
    set_field(page, "fl-k", str(k))


def choose_sort(page, label: str) -> None:
    page.locator("#fl-sort label", has_text=label).click()


def wait_thumbs(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#fl-results img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def shoot(page, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


# -- searching ------------------------------------------------------------------------------------
def test_french_query_puts_the_rabbit_first(page, server, shots):
    open_page(page, server)
    assert "24 photos indexed" in status(page)
    text = search(page, "un lapin")
    wait_thumbs(page)
    shoot(page, shots, "french_query")
    rows = cards(page)
    assert "12 photos" in text and len(rows) == 12  # the default k
    first = rows[0]
    rabbit = names(rows)[0]
    assert rabbit in RABBITS, names(rows)
    assert first["shown_path"].endswith(f"photos/{rabbit}") and "Spiff" in first["caption"]
    assert first["text"].startswith(f"{first['score']:.3f}")  # the score is shown
    assert first["date"] == first["taken"][:10] and first["camera"] == "camera unknown"  # no EXIF in either
    assert first["file_date"]  # so its date is marked as the file's modification time
    assert all(r["thumb_ok"] for r in rows)  # thumbnails served from the index's cache
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    canon = next(r for r in rows if Path(r["path"]).name == "donna.jpg")
    assert canon["camera"] == "Canon EOS DIGITAL REBEL XT" and canon["date"] == "2005-12-26" and not canon["file_date"]
    # this index has no reranker head: the checkbox says so and cannot be ticked
    assert page.locator("#fl-rerank input[type=checkbox]").is_disabled()
    assert "no trained reranker head" in page.locator("#fl-rerank").inner_text()
    # the k selector
    set_k(page, 5)
    page.locator("#fl-search").click()
    wait_status(page, "5 photos for “un lapin”")
    assert names(cards(page))[0] in RABBITS and len(cards(page)) == 5


def test_uploaded_photo_finds_itself_first(page, server, shots):
    open_page(page, server)
    page.locator("#fl-upload input[type=file]").set_input_files(str(server.photos / "pool.jpg"))
    text = wait_status(page, "like your photo “pool.jpg”")
    wait_thumbs(page)
    shoot(page, shots, "upload_query")
    rows = cards(page)
    assert names(rows)[0] == "pool.jpg", names(rows)
    assert rows[0]["score"] > 0.99 and "photos like your photo" in text
    assert names(rows)[1] == "pool_2.jpg"  # the other photo of the pool table


def test_date_and_camera_filters(page, server, shots):
    open_page(page, server)
    set_k(page, 24)
    set_field(page, "fl-after", "2005-07-01")
    set_field(page, "fl-before", "2005-12-31")
    search(page, "a photo")
    shoot(page, shots, "date_filter")
    rows = cards(page)
    assert set(names(rows)) == H2_2005
    for r in rows:
        assert dt.date(2005, 7, 1) <= dt.date.fromisoformat(r["date"]) <= dt.date(2005, 12, 31), r
    # the camera list comes from the index: pick one; only its photos remain
    page.locator("#fl-camera input").click()
    page.get_by_role("option", name="Canon EOS 20D (3)").click()  # "(3)": its number of photos
    set_field(page, "fl-after", "")
    set_field(page, "fl-before", "")
    page.locator("#fl-search").click()
    page.wait_for_function("() => document.querySelectorAll('#fl-results .fl-card').length === 3")
    rows = cards(page)
    assert {r["camera"] for r in rows} == {"Canon EOS 20D"} and set(names(rows)) < CANON
    shoot(page, shots, "camera_filter")


def test_sort_by_date_keeps_only_relevant_photos(page, server, shots):
    open_page(page, server)
    set_k(page, 24)
    choose_sort(page, "Newest first")
    text = search(page, "une table de billard")
    rows = cards(page)
    # no minimum score: the engine's default cutoff keeps the two pool-table photos only
    assert "relevant photos only" in text and f"within {DATE_SORT_MARGIN:.2f} of the best match" in text
    assert names(rows) == ["pool.jpg", "pool_2.jpg"]  # 2005-05-17, then 2005-02-05
    set_field(page, "fl-min-score", "0.40")
    page.locator("#fl-search").click()
    text = wait_status(page, "at least 0.400")
    rows = cards(page)
    shoot(page, shots, "sort_newest_cutoff")
    assert 2 < len(rows) < 24
    assert all(r["score"] >= 0.40 for r in rows)
    taken = [r["taken"] for r in rows]
    assert taken == sorted(taken, reverse=True)
    assert {"pool.jpg", "pool_2.jpg"} <= set(names(rows))


def test_why_this_result_and_more_like_this(page, server, shots):
    open_page(page, server)
    assert page.locator("#fl-more").is_disabled()
    search(page, "un lapin")
    first = cards(page)[0]
    page.locator("#fl-results .fl-card").first.click()
    page.wait_for_selector(f"#fl-why .fl-why[data-id='{first['id']}']")
    assert page.locator("#fl-results .fl-card").first.get_attribute("class").count("fl-selected") == 1
    why = page.locator("#fl-why").inner_text()
    shoot(page, shots, "why_this_result")
    rabbit = names([first])[0]
    assert rabbit in RABBITS and rabbit in why and "Why it matched “un lapin”" in why
    assert TOP_LABEL[rabbit] in why and "%" in why  # the top label with its probability
    assert "People: Spiff" in why  # the matching caption
    assert "image match" in why and "caption match" in why and "final score" in why
    link = page.locator("#fl-why a.fl-full")
    href = link.get_attribute("href")
    assert href == f"api/v1/images/{first['id']}/file"
    resp = page.request.get(f"{server.url}/{href}")
    assert resp.status == 200 and resp.headers["content-type"] == "image/jpeg"
    assert resp.body() == (server.photos / rabbit).read_bytes()
    # more like this: similar photos, never the selected one itself
    assert page.locator("#fl-more").is_enabled()
    page.locator("#fl-more").click()
    wait_status(page, f"like “{rabbit}”")
    wait_thumbs(page)
    shoot(page, shots, "more_like_this")
    rows = cards(page)
    assert len(rows) == 12 and first["id"] not in [r["id"] for r in rows]
    assert rabbit not in names(rows)
    assert page.locator("#fl-more").is_disabled()  # the selection went with the old results


def test_rerank_switch_with_a_trained_head(page, rerank_server, shots):
    open_page(page, rerank_server)
    box = page.locator("#fl-rerank input[type=checkbox]")
    page.wait_for_function("() => { const b = document.querySelector('#fl-rerank input[type=checkbox]');"
                           " return b && !b.disabled; }", timeout=10_000)
    assert box.is_checked()  # on by default once the index has a head
    for query, reranked in (("un lapin", True), ("une table de billard", False)):
        if not reranked:
            box.uncheck()
        search(page, query)
        first = cards(page)[0]
        page.locator("#fl-results .fl-card").first.click()
        page.wait_for_selector(f"#fl-why .fl-why[data-id='{first['id']}']")
        why = page.locator("#fl-why").inner_text()
        if reranked:
            shoot(page, shots, "reranked")
            assert "image match (reranked)" in why and "first-stage image match" in why
        else:
            assert "(reranked)" not in why and "pool" in Path(first["path"]).name


# -- empty states and errors ----------------------------------------------------------------------
def test_empty_query_and_plain_word_errors(page, server, shots, tmp_path):
    open_page(page, server)
    page.locator("#fl-search").click()
    text = wait_status(page, "Type what you are looking for")
    shoot(page, shots, "empty_query")
    assert page.locator("#fl-results .fl-card").count() == 0
    # a date that is no date
    set_field(page, "fl-after", "2005-13-45")
    search_box = page.locator("#fl-query textarea")
    search_box.fill("a dog")
    search_box.press("Enter")
    text = wait_status(page, "is not a date")
    assert "YYYY-MM-DD" in text and "Traceback" not in text
    shoot(page, shots, "bad_date")
    set_field(page, "fl-after", "")
    # nothing passes the filters
    set_field(page, "fl-folder", str(server.photos / "no-such-folder"))
    page.locator("#fl-search").click()
    text = wait_status(page, "No photo")
    assert "passes the filters" in text and page.locator("#fl-results .fl-card").count() == 0
    shoot(page, shots, "no_results")
    set_field(page, "fl-folder", "")
    # an upload that is not a photo
    bogus = tmp_path / "holiday.jpg"
    bogus.write_bytes(b"GIF89a but not really" * 10)
    page.locator("#fl-upload input[type=file]").set_input_files(str(bogus))
    text = wait_status(page, "Cannot use “holiday.jpg”")
    assert "not a photo this server can read" in text and "Traceback" not in page.content()
    shoot(page, shots, "unreadable_upload")


def test_index_tab_shows_counts_and_failed_files(page, server, shots):
    open_page(page, server)
    page.locator("button[role=tab]", has_text="Index").click()
    page.wait_for_selector("#fl-stats .fl-tile[data-key='images']")
    tiles = page.locator("#fl-stats .fl-tile").evaluate_all(
        "els => Object.fromEntries(els.map(e => [e.dataset.key, e.querySelector('.fl-big').innerText]))")
    assert tiles["images"] == "24" and tiles["captions"] == "33" and tiles["failed"] == "1"
    info = page.locator("#fl-stats").inner_text()
    assert "lite" in info and "auto (semantic SQfp16, visual SQfp16, caption Flat)" in info
    assert "disk use" in info and "KB" in info
    page.wait_for_function("() => (document.querySelector('#fl-failed')?.innerText || '').includes('broken.jpg')")
    failed = page.locator("#fl-failed").inner_text()
    assert BROKEN_NAME in failed and "corrupt" in failed  # the path with its reason
    assert "1 file, listed with their reasons" in page.locator("#fl-failed-title").inner_text()
    assert not page.locator("#fl-index-go").count()  # this server does not allow indexing from the page
    shoot(page, shots, "index_tab")


# -- the token-protected server -------------------------------------------------------------------
def test_token_server_shows_login_then_search_page(page, token_server, shots):
    page.goto(token_server.url + "/")
    assert "needs its API token" in page.locator("body").inner_text()
    assert page.locator("#fl-query").count() == 0
    shoot(page, shots, "token_login")
    req = urllib.request.Request(token_server.url + "/api/v1/stats")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=5)
    assert err.value.code == 401
    page.locator("input[name=token]").fill(token_server.token)  # the login form opens /?token=...
    page.locator("button[type=submit]").click()
    page.wait_for_selector("#fl-query textarea")
    assert page.url == token_server.url + "/"  # the token went into a cookie, not the address bar
    assert any(c["name"] == "frozenlens_token" and c["httpOnly"] for c in page.context.cookies())
    assert page.locator("#fl-query textarea").is_visible()
    shoot(page, shots, "token_search_page")


def test_no_index_yet_then_index_a_folder_from_the_page(page, token_server, shots):
    open_page(page, token_server, f"/?token={token_server.token}")
    assert "No index yet" in status(page)  # the only test that indexes on this server
    shoot(page, shots, "no_index_yet")
    page.locator("button[role=tab]", has_text="Index").click()
    page.locator("#fl-index-path textarea").fill(str(token_server.photos / "album"))
    page.locator("#fl-index-go").click()
    page.wait_for_selector("#fl-job [data-state='done'], #fl-job [data-state='failed']", timeout=60_000)
    job = page.locator("#fl-job").inner_text()
    assert "Finished indexing" in job, job
    page.wait_for_function(
        "() => { const t = document.querySelector(\"#fl-stats .fl-tile[data-key='images'] .fl-big\"); return t && t.innerText === '3'; }"
    )
    shoot(page, shots, "indexed_from_page")
    assert "None: every file found was indexed" in page.locator("#fl-failed-title").inner_text()
    page.locator("button[role=tab]", has_text="Search").click()
    wait_status(page, "3 photos indexed")  # the search page picked up the new index
    search(page, "un lapin")
    assert names(cards(page))[0] in RABBITS
