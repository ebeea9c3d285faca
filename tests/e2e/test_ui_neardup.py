"""The page's "Group near-duplicates" switch in a real browser (Debian chromium, live ``frozenlens serve``):
a photo's resized, cropped and mirrored copies fill the results until the switch collapses them into one
card that shows the group's size."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.neardup_set import _variant

from .conftest import index_archive, running_server, server_env
from .test_ui_browser import cards, names, open_page, shoot, wait_status, wait_thumbs

pytestmark = pytest.mark.slow
KINDS = ("half", "crop5", "flip")


@pytest.fixture(scope="module")
def dup_server(testdata, tmp_path_factory):
    """pool.jpg with three variants, pool_2.jpg (the same table, another photo), spiff.jpg and a copy of it."""
    tmp = tmp_path_factory.mktemp("serve-neardup")
    photos = tmp / "photos"
    photos.mkdir()
    for name in ("pool.jpg", "pool_2.jpg", "spiff.jpg"):
        shutil.copy2(testdata / "kphotoalbum" / name, photos / name)
    shutil.copy2(testdata / "kphotoalbum" / "spiff.jpg", photos / "spiff_copy.jpg")  # byte-identical
    with Image.open(photos / "pool.jpg") as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    for kind in KINDS:
        _variant(img, kind).save(photos / f"pool__{kind}.jpg", quality=90)
    (photos / "captions.jsonl").write_text(json.dumps({"path": "spiff.jpg", "text": "a rabbit"}) + "\n")
    index = tmp / "index"
    index_archive(photos, index, server_env(tmp))
    with running_server(index, photos, tmp) as srv:
        # load the encoder before the browser's first search (20 s waits on a busy 2-core machine)
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                srv.url + "/api/v1/search?q=warm&k=1", timeout=120) as resp:
            assert resp.status == 200
        yield srv


def group_sizes(page) -> dict[str, int]:
    return dict(page.locator("#fl-results .fl-card").evaluate_all(
        "els => els.map(e => [e.dataset.path.split('/').pop(), "
        "Number((e.querySelector('.fl-group') || {dataset: {size: 1}}).dataset.size)])"))


def test_collapse_switch_shows_each_group_once_with_its_size(page, dup_server, shots):
    open_page(page, dup_server)
    page.locator("#fl-upload input[type=file]").set_input_files(str(dup_server.photos / "pool.jpg"))
    wait_status(page, "like your photo “pool.jpg”")
    wait_thumbs(page)
    plain = names(cards(page))
    assert sorted(plain[:4]) == sorted(["pool.jpg", *(f"pool__{k}.jpg" for k in KINDS)]), plain
    assert len(plain) == 6 and page.locator("#fl-results .fl-group").count() == 0
    box = page.locator("#fl-collapse input[type=checkbox]")
    assert not box.is_checked()
    box.check()
    page.locator("#fl-search").click()  # no text: searches with the photo again
    page.wait_for_function("() => document.querySelectorAll('#fl-results .fl-card').length === 3")
    wait_thumbs(page)
    shoot(page, shots, "collapse_near_duplicates")
    sizes = group_sizes(page)
    assert sizes == {"pool.jpg": 1 + len(KINDS), "pool_2.jpg": 1, "spiff.jpg": 2}, sizes
    assert names(cards(page))[0] == "pool.jpg"  # the best member: the full-size original
    badge = page.locator("#fl-results .fl-card").first.locator(".fl-group")
    assert badge.inner_text().strip() == f"×{1 + len(KINDS)}"
    page.locator("#fl-results .fl-card").first.click()
    page.wait_for_function("() => document.querySelector('#fl-why').innerText.includes('near-identical')")
    assert f"a group of {1 + len(KINDS)} near-identical photos" in page.locator("#fl-why").inner_text()
    box.uncheck()
    page.locator("#fl-search").click()
    page.wait_for_function("() => document.querySelectorAll('#fl-results .fl-card').length === 6")
    assert Path(cards(page)[0]["path"]).name == "pool.jpg"
