"""The Gradio layout of the search page and the wiring of its events.

Handlers here only convert between Gradio values and :mod:`.actions`; the
HTML comes from :mod:`.format` and the styles from :mod:`.styles`. Stable
``elem_id`` values (``fl-*``) are what the browser tests target.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import gradio as gr

from ...engine import DATE_SORT_MARGIN
from ...errors import FrozenLensError
from ...request import MAX_K, MAX_QUERY_CHARS
from ..state import ServerState
from . import actions
from . import compose as terms_ui
from . import format as fmt
from .styles import CARDS_CSS, INDEX_CSS, SELECT_JS, STATUS_CSS, WHY_CSS

PRIVATE = {"api_visibility": "private"}  # the REST API under /api/v1 is the programmatic interface
HEADER = (
    '<div class="fl-header"><h1>FrozenLens</h1>'
    "<p>Search your photos by describing them in any language, or by dropping an example photo "
    '(programs: see the <a href="docs" target="_blank" rel="noopener">REST API</a>)</p></div>'
)
HEADER_CSS = ("h1 { margin: 0 0 2px 0; font-size: 1.6em; } p { margin: 0; color: var(--body-text-color-subdued); } "
              "a { padding: 0; margin: 0; }")
SORT_NOTE = (
    "Sorting by date only includes relevant photos: those scoring at least the minimum score, or, "
    f"when it is empty, within {DATE_SORT_MARGIN:.2f} of the best match."
)


def build(state: ServerState) -> gr.Blocks:
    """The search page over ``state`` (a :class:`~frozenlens.server.state.ServerState`)."""
    with gr.Blocks(title="FrozenLens", analytics_enabled=False, fill_width=True,
                   delete_cache=(3600, 3600)) as page:
        hits = gr.State([])
        shown_query = gr.State("")
        selected = gr.State(None)
        terms = gr.State([])  # a composed query's extra terms (see .compose)
        gr.HTML(HEADER, css_template=HEADER_CSS, elem_id="fl-header", js_on_load=None)
        with gr.Tabs(elem_id="fl-tabs"):
            with gr.Tab("Search", id="search", elem_id="fl-tab-search") as search_tab:
                with gr.Row(equal_height=True):
                    query = gr.Textbox(
                        show_label=False, placeholder="Describe the photo, in any language: “un lapin”, “a pool table”, “ein Hund” …",
                        elem_id="fl-query", scale=6, max_length=MAX_QUERY_CHARS, autofocus=True, lines=1,
                    )
                    go = gr.Button("Search", variant="primary", elem_id="fl-search", scale=0, min_width=120)
                with gr.Row(equal_height=True, elem_id="fl-compose"):
                    term = gr.Textbox(show_label=False, placeholder="Refine with another term: “sunset”, “people” …",
                                      elem_id="fl-term", scale=4, max_length=MAX_QUERY_CHARS, lines=1)
                    # no minimum/maximum here: the weight rules are frozenlens.request's, said in plain words
                    weight = gr.Number(value=1.0, label="Weight", step=0.5, elem_id="fl-term-weight", scale=0,
                                       min_width=90)
                    add = gr.Button("+ Add", elem_id="fl-term-add", scale=0, min_width=90, size="sm")
                    subtract = gr.Button("− Subtract", elem_id="fl-term-subtract", scale=0, min_width=110, size="sm")
                chips = gr.HTML(terms_ui.chips_html([]), elem_id="fl-terms", css_template=terms_ui.CHIPS_CSS,
                                js_on_load=terms_ui.CHIPS_JS)
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        photo = gr.Image(
                            label="Search by example photo", type="filepath",
                            sources=["upload", "clipboard"], elem_id="fl-upload", height=190,
                        )
                        with gr.Accordion("Filters and order", open=True, elem_id="fl-filters"):
                            k = gr.Slider(1, MAX_K, value=12, step=1, label="Number of results", elem_id="fl-k")
                            rerank = gr.Checkbox(label="Rerank with the learned head", value=False, interactive=False,
                                                 elem_id="fl-rerank")
                            with gr.Row():
                                after = gr.Textbox(label="Taken from", placeholder="YYYY-MM-DD",
                                                   elem_id="fl-after", min_width=120)
                                before = gr.Textbox(label="Taken until", placeholder="YYYY-MM-DD",
                                                    elem_id="fl-before", min_width=120)
                            camera = gr.Dropdown(choices=[("Any camera", "")], value="", label="Camera",
                                                 elem_id="fl-camera")
                            folder = gr.Textbox(label="In folder", placeholder="/photos/2005",
                                                elem_id="fl-folder")
                            sort = gr.Radio([*fmt.SORT_CHOICES], value="relevance", label="Order", elem_id="fl-sort")
                            min_score = gr.Textbox(label="Minimum score", placeholder="automatic (e.g. 0.45)",
                                                   elem_id="fl-min-score")
                            gr.Markdown(SORT_NOTE, elem_id="fl-sort-note")
                            collapse = gr.Checkbox(label="Group near-duplicates", value=False, elem_id="fl-collapse",
                                                   info="Show resized, cropped or re-saved copies and bursts once.")
                    with gr.Column(scale=3, min_width=360):
                        status = gr.HTML(fmt.status_html("Loading…"), elem_id="fl-status", css_template=STATUS_CSS,
                                         js_on_load=None)
                        results = gr.HTML(fmt.cards_html([]), elem_id="fl-results", css_template=CARDS_CSS,
                                          js_on_load=SELECT_JS)
                    with gr.Column(scale=2, min_width=300):
                        more = gr.Button("More like this", elem_id="fl-more", interactive=False, variant="primary")
                        with_photo = gr.Button("Search with this photo", elem_id="fl-with-photo", interactive=False)
                        why = gr.HTML(fmt.why_html(None), elem_id="fl-why", css_template=WHY_CSS, js_on_load=None)
            with gr.Tab("Index", id="index", elem_id="fl-tab-index") as index_tab:
                overview = gr.HTML(elem_id="fl-stats", css_template=INDEX_CSS, js_on_load=None)
                failed_title = gr.Markdown("#### Files that could not be indexed", elem_id="fl-failed-title")
                failed = gr.Dataframe(headers=fmt.FAILED_HEADERS, value=[], interactive=False, wrap=True,
                                      elem_id="fl-failed", max_height=360, visible=False)
                refresh = gr.Button("Refresh", elem_id="fl-refresh", size="sm")
                if state.indexing_allowed:
                    roots = ", ".join(str(r) for r in state.settings.index_roots)
                    gr.Markdown(f"#### Index a folder\nFolders inside {roots} may be indexed from this page.")
                    with gr.Row(equal_height=True):
                        index_path = gr.Textbox(show_label=False, placeholder=str(state.settings.index_roots[0]),
                                                elem_id="fl-index-path", scale=5)
                        index_go = gr.Button("Index this folder", elem_id="fl-index-go", scale=0, min_width=160,
                                             variant="primary")
                    job = gr.HTML(actions.latest_job(state), elem_id="fl-job", css_template=INDEX_CSS,
                                  js_on_load=None)

        form = [k, rerank, after, before, camera, folder, sort, min_score, collapse]
        view_out = [status, results, hits, shown_query, why, selected, more, with_photo]

        def show(view: actions.View) -> tuple:
            return (view.status, view.cards, view.hits, view.query, view.why, None, gr.Button(interactive=False),
                    gr.Button(interactive=False))

        # raw (not preprocessed) values: the upload is Gradio's file payload, read by actions.search_photo,
        # which opens it only inside Gradio's upload folder (the payload's path comes from the browser)
        uploads = gr.utils.get_upload_folder()

        def on_search(text: str | None, upload: Mapping[str, object] | None, extra: list, *values: object) -> tuple:
            if extra:
                return show(terms_ui.search_composed(state, text, extra, actions.Form(*values)))
            if not (text or "").strip() and upload:
                return show(actions.search_photo(state, upload, actions.Form(*values), uploads))
            return show(actions.search_text(state, text, actions.Form(*values)))

        def on_upload(upload: Mapping[str, object] | None, *values: object) -> tuple:
            return show(actions.search_photo(state, upload, actions.Form(*values), uploads))

        def on_more(image_id: int | None, *values: object) -> tuple:
            return show(actions.more_like(state, image_id, actions.Form(*values)))

        def on_select(current: list[dict[str, object]], text: str, evt: gr.EventData) -> tuple:
            data = evt._data if isinstance(getattr(evt, "_data", None), dict) else {}
            panel, ident = actions.select(current, data.get("id"), text)
            return panel, ident, gr.Button(interactive=ident is not None), gr.Button(interactive=ident is not None)

        def composed(new_terms: list, text: str | None, *values: object) -> tuple:
            view = terms_ui.search_composed(state, text, new_terms, actions.Form(*values))
            return (new_terms, terms_ui.chips_html(new_terms), *show(view))

        def refused(current: list, exc: Exception) -> tuple:
            return (current, gr.skip(), *show(actions.error_view(exc, state)))

        def on_term(sign: int) -> object:
            def handler(text: str | None, word: str | None, w: object, current: list, *values: object) -> tuple:
                try:
                    new_terms = terms_ui.add_term(current, terms_ui.text_term(word, w, sign))
                except FrozenLensError as exc:
                    return (gr.skip(), *refused(current, exc))
                return ("", *composed(new_terms, text, *values))
            return handler

        def on_remove(evt: gr.EventData, current: list, text: str | None, *values: object) -> tuple:
            data = evt._data if isinstance(getattr(evt, "_data", None), dict) else {}
            new_terms = terms_ui.remove_term(current, data.get("index"))
            if not new_terms:
                return (new_terms, terms_ui.chips_html(new_terms), *on_search(text, None, [], *values))
            return composed(new_terms, text, *values)

        def on_with_photo(image_id: int | None, text: str | None, current: list, w: object, *values: object) -> tuple:
            if image_id is None:
                return (current, gr.skip(), *show(actions.View(status=fmt.status_html(
                    "Select a result first, then search with it.", "empty"))))
            try:
                name = terms_ui.photo_name(state, int(image_id))
                new_terms = terms_ui.add_term(current, terms_ui.photo_term(image_id, name, w))
            except FrozenLensError as exc:
                return refused(current, exc)
            return composed(new_terms, text, *values)

        def on_load() -> tuple:
            info = actions.page_info(state)
            choices = [("Any camera", ""), *info.cameras]
            if info.has_head:
                box = gr.Checkbox(value=True, interactive=True, info="Rerank the top results with this index's trained head.")
            else:
                box = gr.Checkbox(value=False, interactive=False, info=(
                    "This index has no trained reranker head, so results use first-stage scores "
                    "(train one with `frozenlens train-reranker`)."))
            return info.status, gr.Dropdown(choices=choices, value=""), box

        def on_overview() -> tuple:
            html, rows, n_failed = actions.overview(state)
            return html, fmt.failed_title(n_failed, len(rows)), gr.Dataframe(value=rows, visible=bool(rows))

        def on_search_tab(current: list[dict[str, object]]) -> tuple:  # back from the Index tab: new cameras, new index
            info = actions.page_info(state)
            return (gr.skip() if current else info.status,
                    gr.Dropdown(choices=[("Any camera", ""), *info.cameras]))

        raw = {"preprocess": False, **PRIVATE}  # the upload payload is decoded by our own hardened decoder
        go.click(on_search, [query, photo, terms, *form], view_out, **raw)
        query.submit(on_search, [query, photo, terms, *form], view_out, **raw)
        terms_out = [terms, chips, *view_out]
        for button, sign in ((add, +1), (subtract, -1)):
            button.click(on_term(sign), [query, term, weight, terms, *form], [term, *terms_out], **PRIVATE)
        term.submit(on_term(+1), [query, term, weight, terms, *form], [term, *terms_out], **PRIVATE)
        chips.select(on_remove, [terms, query, *form], terms_out, **PRIVATE)
        with_photo.click(on_with_photo, [selected, query, terms, weight, *form], terms_out, **PRIVATE)
        photo.upload(on_upload, [photo, *form], view_out, **raw)
        more.click(on_more, [selected, *form], view_out, **PRIVATE)
        results.select(on_select, [hits, shown_query], [why, selected, more, with_photo], **PRIVATE)
        page.load(on_load, None, [status, camera, rerank], **PRIVATE)
        index_tab.select(on_overview, None, [overview, failed_title, failed], **PRIVATE)
        refresh.click(on_overview, None, [overview, failed_title, failed], **PRIVATE)
        search_tab.select(on_search_tab, [hits], [status, camera], **PRIVATE)

        if state.indexing_allowed:
            def on_index(path: str) -> Iterator[tuple]:
                for html, finished in actions.index_folder(state, path):
                    if finished:
                        yield (html, *on_overview(), gr.Button(interactive=True))
                    else:
                        yield html, gr.skip(), gr.skip(), gr.skip(), gr.Button(interactive=False)

            index_go.click(on_index, [index_path], [job, overview, failed_title, failed, index_go], **PRIVATE)
    return page
