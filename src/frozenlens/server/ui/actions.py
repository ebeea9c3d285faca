"""What the page's buttons do: validate form values, call the engine, shape the view.

No Gradio here: every function takes the server state and plain form values
and returns a :class:`View` (or HTML), so the page module only wires
components to these functions. Errors never escape as stack traces: a
FrozenLens error becomes its message in plain words, anything else a short
"internal error" line (the details go to the server log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ...engine import DATE_SORT_MARGIN, Engine
from ...engine.media import resolved_inside
from ...errors import (
    FrozenLensError,
    ImageNotFoundError,
    QueryError,
    RerankerError,
)
from ...paths import from_text, to_text
from ...request import SearchRequest
from ...types import Hit, SearchFilters
from ..state import IndexingNotAllowedError, NoIndexError, ServerState
from ..uploads import decode_upload
from . import format as fmt

log = logging.getLogger(__name__)


@dataclass
class Form:
    """The search form's values as the browser sent them."""

    k: object = 12
    rerank: bool = False
    after: str = ""
    before: str = ""
    camera: str = ""
    folder: str = ""
    sort: str = "relevance"
    min_score: object = None
    collapse: bool = False


@dataclass
class View:
    """What a search shows: the status line, the result grid and the hits behind it."""

    status: str
    cards: str = field(default_factory=lambda: fmt.cards_html([]))
    hits: list[dict[str, object]] = field(default_factory=list)
    query: str = ""
    why: str = field(default_factory=lambda: fmt.why_html(None))


@dataclass(frozen=True)
class PageInfo:
    """What the page needs when it opens: the camera choices and whether a reranker head exists."""

    has_index: bool
    cameras: list[tuple[str, str]]
    has_head: bool
    status: str


def error_view(exc: BaseException, state: ServerState) -> View:
    return View(status=error_status(exc, state))


def error_status(exc: BaseException, state: ServerState) -> str:
    if isinstance(exc, NoIndexError):
        return fmt.status_html(fmt.no_index_text(state.settings.index_dir, state.indexing_allowed), "empty")
    message = to_text(str(exc))  # it may quote a path: shown in the path text form (frozenlens.paths)
    if isinstance(exc, RerankerError):
        return fmt.status_html(f"Reranking is not available: {message}", "error")
    if isinstance(exc, ImageNotFoundError):
        return fmt.status_html(f"That photo is no longer in the index ({message}). Search again.", "error")
    if isinstance(exc, FrozenLensError):
        return fmt.status_html(_sentence(message), "error")
    log.exception("the search page failed")
    return fmt.status_html(
        f"Something went wrong on the server ({type(exc).__name__}). The details are in the server log.", "error")


def _sentence(text: str) -> str:
    text = text.strip() or "the request is invalid"
    return text[0].upper() + text[1:]


def guarded(fn: Callable[..., View]) -> Callable[..., View]:
    """``fn`` with every exception turned into an error view (first argument: state)."""
    def run(state: ServerState, *args: object, **kwargs: object) -> View:
        try:
            return fn(state, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown in the page, logged when unexpected
            return error_view(exc, state)
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


# -- opening the page ---------------------------------------------------------------------
def page_info(state: ServerState) -> PageInfo:
    try:
        with state.engine() as engine:
            stats = engine.stats()
            has_head = engine.reranker_path.exists()
    except Exception as exc:  # noqa: BLE001 - no index yet, or a broken one: said in the page
        return PageInfo(False, [], False, error_status(exc, state))
    cameras = stats.cameras
    choices = [(f"{name} ({n})", name) for name, n in sorted(cameras.items(), key=lambda kv: (-kv[1], kv[0]))]
    n = stats.images
    text = (f"{n:,} photos indexed. Type what you are looking for, in any language, or drop a photo."
            if n else "The index is empty: index a folder of photos first.")
    return PageInfo(True, choices, has_head, fmt.status_html(text, "info" if n else "empty"))


# -- searching ----------------------------------------------------------------------------
def search_request(form: Form, query: str | None = None) -> SearchRequest:
    """The form's values as a validated :class:`~frozenlens.request.SearchRequest`.

    Form fields are parsed here (dates, numbers and the folder, typed as the
    page shows paths) with messages in plain words; the limits and the rules
    between fields (``k``, query length, filters, after ≤ before, sort) are
    :mod:`frozenlens.request`'s, whose :class:`QueryError` the page shows.
    """
    after = fmt.parse_day(form.after, "after")
    before = fmt.parse_day(form.before, "before")
    try:
        folder = from_text((form.folder or "").strip())  # typed as the page shows paths
    except ValueError as exc:
        raise QueryError(f"The folder filter is not a path as this page writes them: {exc}") from None
    filters = SearchFilters(after=after, before=before, camera=(form.camera or "").strip() or None,
                            under=folder or None)
    return SearchRequest(query=query, k=fmt.parse_k(form.k), filters=filters, sort=form.sort or SearchRequest.sort,
                         min_score=fmt.parse_min_score(form.min_score), collapse=bool(form.collapse))


def _view(engine: Engine, hits: list[Hit], what: str, req: SearchRequest) -> View:
    thumbs = engine.thumbnails([h.id for h in hits])
    rows = [with_thumb(h, thumbs.get(h.id)) for h in hits]
    query = req.query or ""
    if not rows:
        text = fmt.no_results_text(req.min_score, req.sort, not req.filters.is_empty())
        return View(status=fmt.status_html(text, "empty"), query=query)
    text = fmt.results_text(len(rows), what, req.sort)
    note = fmt.cutoff_words(req.sort, req.min_score, DATE_SORT_MARGIN)
    return View(status=fmt.status_html(text, "info", note), cards=fmt.cards_html(rows), hits=rows, query=query)


def with_thumb(hit: Hit, thumb: Path | None) -> dict[str, object]:
    """The hit as a dict (paths in their text form, see :mod:`frozenlens.paths`) plus the URL of its
    cached thumbnail (``None``: the photo is unavailable)."""
    row = {**hit.to_dict(), "path": to_text(hit.path), "duplicates": [to_text(d) for d in hit.duplicates]}
    row["thumb"] = None if thumb is None else f"api/v1/images/{hit.id}/thumbnail?v={thumb.stem}"
    return row


@guarded
def search_text(state: ServerState, query: str, form: Form) -> View:
    text = (query or "").strip()
    if not text:
        return View(status=fmt.status_html(
            "Type what you are looking for (in any language), or drop a photo to find similar ones.", "empty"))
    req = search_request(form, text)
    with state.engine() as engine:
        req = replace(req, rerank=bool(form.rerank) and engine.reranker_path.exists())
        hits = engine.search(req)
        view = _view(engine, hits, f"for “{req.query}”", req)
    return view


@guarded
def search_photo(state: ServerState, upload: Mapping[str, object] | str | None, form: Form,
                 upload_folder: str | None = None) -> View:
    """Photos like an uploaded one. ``upload`` is Gradio's file payload, as the browser sent it.

    Its ``path`` comes from the client, so it is only opened when it lies in
    ``upload_folder`` (Gradio's upload folder, where Gradio stored the
    upload): a forged payload naming any other file is refused.
    """
    path = upload.get("path") if isinstance(upload, Mapping) else upload
    if not path:
        return View(status=fmt.status_html("Drop a photo (or type a query) to search.", "empty"))
    real = None if upload_folder is None else resolved_inside(str(path), [upload_folder])
    if real is None or not real.is_file():
        log.warning("refused an upload payload outside the upload folder: %r", str(path)[:200])
        raise QueryError("The uploaded photo could not be read; upload it again.")
    name = str(upload.get("orig_name") or Path(str(path)).name) if isinstance(upload, Mapping) else Path(path).name
    limits = state.settings.limits
    req = search_request(form)
    try:
        with open(real, "rb") as fp:
            data = fp.read(limits.max_upload_bytes + 1)
    except OSError:
        raise QueryError("The uploaded photo could not be read; upload it again.") from None
    try:
        image = decode_upload(data, limits.max_upload_bytes, limits.max_upload_pixels)
    except QueryError as exc:
        raise QueryError(f"Cannot use “{name}” as a query photo: {_plain_decode_error(exc)}") from None
    with state.engine() as engine:
        hits = engine.search(req, image=image)
        view = _view(engine, hits, f"like your photo “{name}”", req)
    return view


def _plain_decode_error(exc: QueryError) -> str:
    text = str(exc)
    if "too many pixels" in text or "larger than" in text:
        return text
    return "it is not a photo this server can read (a JPEG, PNG, WebP, GIF, BMP or TIFF file)."


@guarded
def more_like(state: ServerState, image_id: object, form: Form) -> View:
    if image_id is None or image_id == "":
        return View(status=fmt.status_html("Select a result first, then ask for more like it.", "empty"))
    try:
        ident = int(image_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImageNotFoundError(f"no image {str(image_id)[:20]!r}") from None
    req = search_request(form)
    with state.engine() as engine:
        name = to_text(Path(engine.image_by_id(ident).path).name)
        hits = engine.similar(ident, req)
        view = _view(engine, hits, f"like “{name}”", req)
    return view


def select(hits: list[Mapping[str, object]] | None, image_id: object, query: str = "") -> tuple[str, int | None]:
    """(why panel, selected id) for a clicked card; ids not among the hits select nothing."""
    try:
        ident = int(image_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return fmt.why_html(None), None
    for hit in hits or []:
        if hit.get("id") == ident:
            return fmt.why_html(hit, query=query), ident
    return fmt.why_html(None), None


# -- the Index tab ------------------------------------------------------------------------
def overview(state: ServerState) -> tuple[str, list[list[str]], int]:
    """(stats HTML, failed-file rows (at most FAILED_ROWS), number of failed files) of the index."""
    try:
        with state.engine() as engine:
            stats = engine.stats()
            failed = engine.errors()
            has_head = engine.reranker_path.exists()
    except Exception as exc:  # noqa: BLE001 - shown in the page
        return error_status(exc, state), [], 0
    return fmt.stats_html(stats.to_json(), has_head), fmt.failed_rows(failed, FAILED_ROWS), len(failed)


FAILED_ROWS = 1000


def index_folder(state: ServerState, folder: str, poll_seconds: float = 0.5, sleep: Callable[[float], None] | None = None,
                 ) -> Iterator[tuple[str, bool]]:
    """Start indexing ``folder`` and yield (job status HTML, finished) until the job ends."""
    import time

    sleep = sleep or time.sleep
    try:
        job = state.start_index(from_text((folder or "").strip()))  # typed as the page shows paths
    except ValueError as exc:
        yield fmt.status_html(_sentence(f"not a folder path as this page writes them: {exc}"), "error"), True
        return
    except IndexingNotAllowedError as exc:
        yield fmt.status_html(_sentence(to_text(str(exc))), "error"), True
        return
    while True:
        snapshot = state.job(job.id)
        yield fmt.job_html(snapshot), snapshot is None or not snapshot.active
        if snapshot is None or not snapshot.active:
            return
        sleep(poll_seconds)


def latest_job(state: ServerState) -> str:
    jobs = state.jobs()
    return fmt.job_html(jobs[-1] if jobs else None)
