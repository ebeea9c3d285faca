"""The search page's pure helpers: HTML pieces, form parsing, and the no-index empty state (no browser)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from types import SimpleNamespace

import pytest

from frozenlens.errors import QueryError
from frozenlens.server.ui import actions
from frozenlens.server.ui import format as fmt
from frozenlens.types import CaptionInfo, Hit


def hit_row(**over) -> dict:
    hit = Hit(
        id=7, path="/photos/2005/skagen <beach>.jpg", score=0.6234, image_score=0.61, caption_score=0.6234,
        taken_at=dt.datetime(2005, 7, 28, 5, 9, 7), camera="Canon EOS 20D", lens="EF 17-40",
        width=600, height=400, captions=(CaptionInfo("The {{beach}} at ${HOME} <script>x</script>", "en", "manifest"),),
        labels=(("seashore", 0.42), ("breakwater", 0.2)), first_stage_image_score=0.58, reranked=True,
    )
    return {**hit.to_dict(), "thumb": "api/v1/images/7/thumbnail?v=7-abc-256", **over}


def test_esc_neutralises_html_and_template_syntax():
    assert fmt.esc('<a href="x">{{v}} ${x}</a>') == "&lt;a href=&quot;x&quot;&gt;&#123;&#123;v&#125;&#125; &#36;&#123;x&#125;&lt;/a&gt;"
    assert fmt.esc(None) == ""


def test_card_shows_score_date_camera_caption_and_path():
    html = fmt.cards_html([hit_row()])
    assert html.count('class="fl-card"') == 1
    assert 'data-id="7"' in html and 'data-taken="2005-07-28T05:09:07"' in html
    assert ">0.623<" in html and ">2005-07-28<" in html and ">Canon EOS 20D<" in html
    assert "&lt;script&gt;" in html and "<script>" not in html and "{{" not in html and "${" not in html
    assert "…/2005/skagen &lt;beach&gt;.jpg" in html
    assert 'src="api/v1/images/7/thumbnail?v=7-abc-256"' in html


def test_card_without_thumbnail_date_or_camera():
    html = fmt.cards_html([hit_row(thumb=None, taken_at=None, camera=None, captions=[])])
    assert "photo unavailable" in html and "no date" in html and "camera unknown" in html
    assert fmt.cards_html([]).count("fl-card") == 0


def test_why_panel_has_labels_captions_score_parts_and_full_size_link():
    html = fmt.why_html(hit_row(), query="la plage")
    assert "Why it matched “la plage”" in html
    assert "seashore" in html and "42.0%" in html and "width:42%" in html
    assert "The &#123;&#123;beach&#125;&#125;" in html and "manifest, en" in html
    for part in ("final score", "image match (reranked)", "first-stage image match", "caption match"):
        assert part in html
    assert 'href="api/v1/images/7/file"' in html and "Open full size" in html
    assert "EF 17-40" in html and "600 × 400 px" in html
    assert "Select a result" in fmt.why_html(None)


def test_why_panel_of_an_image_query_leaves_out_missing_parts():
    html = fmt.why_html(hit_row(caption_score=None, first_stage_image_score=None, reranked=False, labels=[]))
    assert "caption match" not in html and "first-stage" not in html and "no labels stored" in html


@pytest.mark.parametrize(("text", "expected"), [
    ("", None), ("  ", None), ("2005-07-01", dt.date(2005, 7, 1)),
    ("2005-07-01T10:30", dt.datetime(2005, 7, 1, 10, 30)),
])
def test_parse_day(text, expected):
    assert fmt.parse_day(text, "after") == expected


@pytest.mark.parametrize("text", ["2005-13-45", "yesterday", "05/07/2005"])
def test_parse_day_rejects_in_plain_words(text):
    with pytest.raises(QueryError, match=r"“after” date .* is not a date\. Write it as YYYY-MM-DD"):
        fmt.parse_day(text, "after")


def test_parse_min_score_and_k():
    assert fmt.parse_min_score(None) is None and fmt.parse_min_score(" ") is None
    assert fmt.parse_min_score("0.45") == 0.45 and fmt.parse_min_score(0.5) == 0.5
    for bad in ("abc", "nan", "5"):
        with pytest.raises(QueryError, match="minimum score"):
            fmt.parse_min_score(bad)
    assert fmt.parse_k(12.0, 200) == 12
    for bad in (0, 201, None, "x"):
        with pytest.raises(QueryError, match="number of results"):
            fmt.parse_k(bad, 200)


def test_cutoff_words_say_date_sorting_keeps_relevant_photos():
    assert fmt.cutoff_words("relevance", None, 0.1) == ""
    assert "relevant photos only" in fmt.cutoff_words("newest", None, 0.1)
    assert "within 0.10 of the best match" in fmt.cutoff_words("oldest", None, 0.1)
    assert "at least 0.450" in fmt.cutoff_words("newest", 0.45, 0.1)


def test_status_texts():
    assert 'role="alert"' in fmt.status_html("bad <date>", "error") and "bad &lt;date&gt;" in fmt.status_html("bad <date>")
    assert fmt.results_text(1, "for “x”", "relevance") == "1 photo for “x”."
    assert fmt.results_text(3, "for “x”", "newest") == "3 photos for “x”, newest first."
    assert "passes the filters" in fmt.no_results_text(None, "relevance", True)
    assert "scores at least 0.900" in fmt.no_results_text(0.9, "relevance", False)


def test_stats_and_failed_files():
    stats = {"images": 24, "captions": 33, "with_date": 24, "duplicates": 0, "failed": 1,
             "encoder": {"name": "lite", "version": "1", "dim": 512, "visual_dim": 1280}, "factory": "auto",
             "index_types": {"semantic": "SQfp16", "caption": "Flat"}, "vectors": {"semantic": 24}, "bytes_on_disk": 654940, "cameras": {"Canon <EOS>": 3}}
    html = fmt.stats_html(stats, has_head=False)
    assert 'data-key="images"><div class="fl-big">24<' in html and "639.6 KB" in html
    assert "auto (semantic SQfp16, caption Flat)" in html
    assert "lite (version 1" in html and "Canon &lt;EOS&gt;" in html and "none (first-stage" in html
    failures = [SimpleNamespace(path=f"/p/{i}.jpg", reason="corrupt", message="damaged") for i in range(5)]
    assert fmt.failed_rows(failures, limit=3) == [[f"/p/{i}.jpg", "corrupt", "damaged"] for i in range(3)]
    assert "None" in fmt.failed_title(0) and "5 files, listed" in fmt.failed_title(5, 5)
    assert "the first 3 are listed" in fmt.failed_title(5, 3)


def test_job_status():
    assert "No indexing job" in fmt.job_html(None)
    running = SimpleNamespace(state="running", stage="encode", done=5, total=10, path="/p", message="")
    html = fmt.job_html(running)
    assert '<progress max="10" value="5">' in html and "encode 5 of 10 files" in html
    done = SimpleNamespace(state="done", stage="", done=3, total=3, path="/p", message="indexed 3 new")
    assert "Finished indexing /p: indexed 3 new." in fmt.job_html(done)
    failed = SimpleNamespace(state="failed", stage="", done=0, total=None, path="/p", message="disk full")
    assert "failed: disk full" in fmt.job_html(failed)


def test_select_only_picks_shown_hits():
    rows = [hit_row()]
    panel, ident = actions.select(rows, 7, "q")
    assert ident == 7 and 'data-id="7"' in panel
    assert actions.select(rows, 8)[1] is None and actions.select(rows, "x")[1] is None


def test_no_index_yet_is_an_empty_state_not_an_error(tmp_path):
    from frozenlens.server.settings import ServerSettings
    from frozenlens.server.state import ServerState

    state = ServerState(ServerSettings(index_dir=tmp_path / "none"))
    view = actions.search_text(state, "un lapin", actions.Form())
    assert "No index yet" in view.status and "fl-empty" in view.status and view.hits == []
    assert "No index yet" in actions.page_info(state).status
    assert "Type what you are looking for" in actions.search_text(state, "  ", actions.Form()).status
    bad = actions.search_text(state, "x", actions.Form(after="2005-13-45"))
    assert "is not a date" in bad.status and "fl-error" in bad.status
    assert "No index yet" in actions.overview(state)[0]


def test_importing_the_ui_package_does_not_import_gradio():
    code = "import sys, frozenlens.server.ui, frozenlens.server.ui.format, frozenlens.server.ui.actions; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_forged_upload_paths_are_never_opened(tmp_path):
    """The page's upload payload comes from the browser: only files in the upload folder are read."""
    from PIL import Image

    from frozenlens.server.settings import ServerSettings
    from frozenlens.server.state import ServerState

    state = ServerState(ServerSettings(index_dir=tmp_path / "none"))
    uploads = tmp_path / "uploads"
    (uploads / "abc").mkdir(parents=True)
    outside = tmp_path / "private.png"
    Image.new("RGB", (32, 32), "red").save(outside)
    (uploads / "abc" / "escape.png").symlink_to(outside)
    inside = uploads / "abc" / "ok.png"
    Image.new("RGB", (32, 32), "blue").save(inside)
    for forged in ("/etc/passwd", str(outside), str(uploads / "abc" / ".." / ".." / "private.png"),
                   str(uploads / "abc" / "escape.png"), str(uploads), "\x00"):
        view = actions.search_photo(state, {"path": forged, "orig_name": "x.png"}, actions.Form(), str(uploads))
        assert "could not be read" in view.status and view.hits == [], forged
    # no upload folder known: nothing is opened at all
    assert "could not be read" in actions.search_photo(state, {"path": str(inside)}, actions.Form(), None).status
    # a real upload in the folder gets past the check (and then meets the missing index)
    view = actions.search_photo(state, {"path": str(inside), "orig_name": "ok.png"}, actions.Form(), str(uploads))
    assert "No index yet" in view.status
