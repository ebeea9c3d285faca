"""Plain-text and HTML pieces of the search page: pure functions, no Gradio.

Every value shown in the page that comes from the index (paths, captions,
camera names, labels, error messages) goes through :func:`esc`, which also
escapes the braces and dollar signs Gradio's HTML templates would otherwise
interpret.  Hits are handled as the plain dicts of :meth:`Hit.to_dict`
(that is what the page keeps in its session state), plus a ``thumb`` key:
the thumbnail URL, or ``None`` when the photo can no longer be read.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from collections.abc import Iterable, Mapping, Sequence

from ...errors import QueryError
from ...paths import to_text
from ...request import MAX_K
from ...types import index_type_text, parse_when

SORT_CHOICES = (("Best match first", "relevance"), ("Newest first", "newest"), ("Oldest first", "oldest"))
SORT_WORDS = {"relevance": "best match first", "newest": "newest first", "oldest": "oldest first"}
STATUS_KINDS = ("info", "empty", "error")


def esc(value: object) -> str:
    """HTML-escaped text, safe inside element content and quoted attributes."""
    text = html.escape("" if value is None else str(value), quote=True)
    return text.replace("{", "&#123;").replace("}", "&#125;").replace("$", "&#36;")


def fmt_score(score: float | None) -> str:
    return "–" if score is None else f"{score:.3f}"


def fmt_day(taken_at: str | dt.datetime | None) -> str:
    """``YYYY-MM-DD`` of an ISO date-time (string or datetime); ``""`` when unknown."""
    if taken_at is None or taken_at == "":
        return ""
    return (taken_at.isoformat() if isinstance(taken_at, dt.datetime) else str(taken_at))[:10]


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - loop always returns


def short_path(path: str, parts: int = 2) -> str:
    """The last ``parts`` components of a path (its text form: ``\\`` is an escape, not a
    separator), with a leading ``…/`` when shortened."""
    pieces = [p for p in path.split("/") if p]
    if len(pieces) <= parts:
        return path
    return "…/" + "/".join(pieces[-parts:])


def first_caption(hit: Mapping[str, object]) -> str:
    """The caption shown on a card: the photo's first caption (its description when it has one)."""
    captions = list(hit.get("captions") or [])
    return str(captions[0].get("text", "")) if captions else ""


# -- parsing form fields ------------------------------------------------------------
def parse_day(text: str | None, name: str) -> dt.date | dt.datetime | None:
    """An ISO date (``YYYY-MM-DD``) or date-time from a form field; ``None`` when blank.

    Raises :class:`QueryError` with a sentence a user can act on.
    """
    value = (text or "").strip()
    if not value:
        return None
    try:
        return parse_when(value)
    except ValueError:
        raise QueryError(
            f"The “{name}” date “{value[:40]}” is not a date. Write it as YYYY-MM-DD, for example 2005-07-01."
        ) from None


def parse_min_score(value: object) -> float | None:
    """The optional relevance cutoff; blank means automatic."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        score = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryError(f"The minimum score “{str(value)[:20]}” is not a number.") from None
    if math.isnan(score) or not -1.0 <= score <= 2.0:
        raise QueryError("The minimum score must be a number between -1 and 2 (scores are similarities, about 0 to 1).")
    return score


def parse_k(value: object, max_k: int = MAX_K) -> int:
    """The number of results from a form field (a whole number, 1 to ``max_k``: the request limit by default)."""
    try:
        k = int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryError(f"The number of results must be a whole number between 1 and {max_k}.") from None
    if not 1 <= k <= max_k:
        raise QueryError(f"The number of results must be between 1 and {max_k}.")
    return k


# -- status line -------------------------------------------------------------------------
def status_html(text: str, kind: str = "info", detail: str = "") -> str:
    """The message above the results. ``kind``: info | empty | error."""
    kind = kind if kind in STATUS_KINDS else "info"
    extra = f'<div class="fl-detail">{esc(detail)}</div>' if detail else ""
    role = ' role="alert"' if kind == "error" else ' role="status"'
    return f'<div class="fl-status fl-{kind}"{role}><div class="fl-text">{esc(text)}</div>{extra}</div>'


def no_index_text(index_dir: object, indexing_allowed: bool) -> str:
    where = "the Index tab" if indexing_allowed else f"`frozenlens index PHOTOS --index {index_dir}`"
    return f"No index yet: nothing has been indexed in {index_dir}. Index a folder of photos first ({where})."


def cutoff_words(sort: str, min_score: float | None, margin: float) -> str:
    """How date sorting picks its photos, in plain words ('' for relevance order)."""
    if sort == "relevance":
        return ""
    if min_score is not None:
        return f"Sorted {SORT_WORDS[sort]} among the photos scoring at least {min_score:.3f}."
    return (f"Sorted {SORT_WORDS[sort]} among the relevant photos only: those scoring within "
            f"{margin:.2f} of the best match (set a minimum score to choose the cutoff yourself).")


def results_text(n: int, what: str, sort: str) -> str:
    photos = "photo" if n == 1 else "photos"
    order = "" if sort == "relevance" else f", {SORT_WORDS[sort]}"
    return f"{n} {photos} {what}{order}."


def no_results_text(min_score: float | None, sort: str, filtered: bool) -> str:
    reasons = []
    if min_score is not None:
        reasons.append(f"scores at least {min_score:.3f}")
    if filtered:
        reasons.append("passes the filters")
    if not reasons:
        return "No photos found."
    return "No photo " + " and ".join(reasons) + ". Lower the minimum score or loosen the filters."


# -- result cards ------------------------------------------------------------------------
def cards_html(hits: Sequence[Mapping[str, object]]) -> str:
    """The result grid: one card per hit with thumbnail, score, date, camera, caption and path."""
    if not hits:
        return '<div class="fl-grid fl-grid-empty"></div>'
    cards = [_card(i, h) for i, h in enumerate(hits)]
    return f'<div class="fl-grid" data-count="{len(cards)}">{"".join(cards)}</div>'


def _file_date_note(hit: Mapping[str, object]) -> str:
    """A marker for dates that are only the file's modification time (no EXIF date)."""
    if hit.get("date_source") != "mtime" or not hit.get("taken_at"):
        return ""
    return ('<span class="fl-date-note" title="no EXIF date in the photo: this is the file\'s modification time">'
            "file date</span>")


def _group_badge(hit: Mapping[str, object]) -> str:
    """With collapsed results: how many files the photo's near-duplicate group holds."""
    size = int(hit.get("group_size") or 1)  # type: ignore[call-overload]
    if size < 2:
        return ""
    return (f'<span class="fl-group" data-size="{size}" title="{size} near-identical photos (resized, cropped, '
            f're-saved or a burst); this is the best of them">×{size}</span>')


def _card(rank: int, hit: Mapping[str, object]) -> str:
    path = str(hit.get("path", ""))
    name = os.path.basename(path) or path
    day = fmt_day(hit.get("taken_at"))  # type: ignore[arg-type]
    camera = str(hit.get("camera") or "")
    caption = first_caption(hit)
    thumb = hit.get("thumb")
    score = fmt_score(hit.get("score"))  # type: ignore[arg-type]
    if thumb:
        picture = f'<img class="fl-thumb" src="{esc(thumb)}" alt="{esc(name)}" loading="lazy" decoding="async">'
    else:
        picture = '<div class="fl-thumb fl-missing">photo unavailable</div>'
    return (
        f'<div class="fl-card" role="button" tabindex="0" data-id="{int(hit["id"])}" data-rank="{rank + 1}" '
        f'data-path="{esc(path)}" data-taken="{esc(hit.get("taken_at") or "")}" data-score="{float(hit.get("score") or 0):.6f}" '
        f'aria-label="{esc(f"{rank + 1}. {name}, score {score}")}">'
        f"{picture}"
        f'<div class="fl-meta">'
        f'<div class="fl-row"><span class="fl-score" title="relevance score">{score}</span>{_group_badge(hit)}'
        f'<span class="fl-when"><span class="fl-date" title="{esc(hit.get("taken_at") or "date unknown")}">'
        f'{esc(day or "no date")}</span>{_file_date_note(hit)}</span></div>'
        f'<div class="fl-camera" title="{esc(camera)}">{esc(camera or "camera unknown")}</div>'
        f'<div class="fl-caption" title="{esc(caption)}">{esc(caption)}</div>'
        f'<div class="fl-path" title="{esc(path)}">{esc(short_path(path))}</div>'
        f"</div></div>"
    )


# -- "why this result" --------------------------------------------------------------------
def why_html(hit: Mapping[str, object] | None, *, query: str = "") -> str:
    """The detail panel of the selected hit: labels, captions, score parts, full-size link."""
    if hit is None:
        return ('<div class="fl-why fl-why-empty">Select a result to see why it matched, '
                "then find more like it.</div>")
    image_id = int(hit["id"])  # type: ignore[arg-type]
    path = str(hit.get("path", ""))
    full = f"api/v1/images/{image_id}/file"
    parts = [
        ("final score", hit.get("score")),
        ("image match" + (" (reranked)" if hit.get("reranked") else ""), hit.get("image_score")),
        ("first-stage image match", hit.get("first_stage_image_score")),
        ("caption match", hit.get("caption_score")),
    ]
    score_rows = "".join(
        f'<tr><th scope="row">{esc(label)}</th><td class="fl-num">{fmt_score(value)}</td></tr>'  # type: ignore[arg-type]
        for label, value in parts if value is not None or label == "final score"
    )
    labels = list(hit.get("labels") or [])[:5]
    label_rows = "".join(
        f'<li class="fl-label"><span class="fl-label-name">{esc(lab["label"])}</span>'
        f'<span class="fl-bar"><span style="width:{max(0.0, min(1.0, float(lab["p"]))) * 100:.0f}%"></span></span>'
        f'<span class="fl-num">{float(lab["p"]) * 100:.1f}%</span></li>'
        for lab in labels
    ) or '<li class="fl-none">no labels stored</li>'
    captions = list(hit.get("captions") or [])
    caption_rows = "".join(
        f'<li><span class="fl-caption-text">{esc(c.get("text"))}</span> '
        f'<span class="fl-tag">{esc(c.get("source") or "")}{", " + esc(c["lang"]) if c.get("lang") else ""}</span></li>'
        for c in captions
    ) or '<li class="fl-none">no caption</li>'
    facts = [
        ("taken", str(hit.get("taken_at") or "unknown").replace("T", " ")
         + (" (the file's modification time: the photo has no EXIF date)" if hit.get("date_source") == "mtime" else "")),
        ("camera", " · ".join(str(x) for x in (hit.get("camera"), hit.get("lens")) if x) or "unknown"),
        ("size", f"{hit.get('width')} × {hit.get('height')} px" if hit.get("width") else "unknown"),
    ]
    if int(hit.get("group_size") or 1) > 1:  # type: ignore[call-overload]
        facts.append(("near-duplicates", f"a group of {hit['group_size']} near-identical photos; this is its best"))
    if hit.get("duplicates"):
        facts.append(("duplicates", ", ".join(short_path(str(d)) for d in hit["duplicates"])))  # type: ignore[union-attr]
    fact_rows = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in facts)
    thumb = hit.get("thumb")
    picture = (f'<a href="{esc(full)}" target="_blank" rel="noopener"><img class="fl-why-thumb" src="{esc(thumb)}" '
               f'alt="{esc(os.path.basename(path))}"></a>') if thumb else ""
    why = f'Why it matched “{esc(query)}”' if query else "Why it matched"
    return (
        f'<div class="fl-why" data-id="{image_id}">'
        f'<div class="fl-why-head">{picture}<div><div class="fl-why-name">{esc(os.path.basename(path))}</div>'
        f'<div class="fl-why-path">{esc(path)}</div>'
        f'<a class="fl-full" href="{esc(full)}" target="_blank" rel="noopener">Open full size</a></div></div>'
        f"<h4>{why}</h4>"
        f'<table class="fl-scores">{score_rows}</table>'
        f'<h4>What the model sees</h4><ul class="fl-labels">{label_rows}</ul>'
        f'<h4>Captions</h4><ul class="fl-captions">{caption_rows}</ul>'
        f'<table class="fl-facts">{fact_rows}</table>'
        f"</div>"
    )


# -- the Index tab ------------------------------------------------------------------------
def stats_html(stats: Mapping[str, object], has_head: bool) -> str:
    encoder = stats.get("encoder") or {}
    enc = encoder if isinstance(encoder, Mapping) else {}
    enc_text = f'{enc.get("name", "?")} (version {enc.get("version", "?")}, {enc.get("dim", "?")}-d text/semantic' + (
        f', {enc["visual_dim"]}-d visual)' if enc.get("visual_dim") else ")")
    counts = [
        ("images", "photos indexed"), ("captions", "captions"), ("with_date", "with a date"),
        ("duplicates", "duplicates"), ("failed", "failed files"),
    ]
    tiles = "".join(
        f'<div class="fl-tile" data-key="{key}"><div class="fl-big">{int(stats.get(key) or 0):,}</div>'
        f'<div class="fl-small">{esc(label)}</div></div>'
        for key, label in counts
    )
    vectors = stats.get("vectors") or {}
    vec_text = ", ".join(f"{k}: {v:,}" for k, v in vectors.items()) if isinstance(vectors, Mapping) else ""
    rows = [
        ("encoder", enc_text),
        ("index type", index_type_text(str(stats.get("factory", "?")), stats.get("index_types") or {})),  # type: ignore[arg-type]
        ("vectors", vec_text or "–"),
        ("reranker head", "trained" if has_head else "none (first-stage scores only)"),
        ("disk use", fmt_bytes(stats.get("bytes_on_disk"))),  # type: ignore[arg-type]
        ("index folder", to_text(str(stats.get("index_dir", "")))),
    ]
    table = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in rows)
    cameras = stats.get("cameras") or {}
    cam_text = ""
    if isinstance(cameras, Mapping) and cameras:
        cam_items = "".join(f"<li>{esc(name)} <span class='fl-num'>{int(n)}</span></li>" for name, n in cameras.items())
        cam_text = f"<h4>Cameras</h4><ul class='fl-cams'>{cam_items}</ul>"
    return f'<div class="fl-stats"><div class="fl-tiles">{tiles}</div><table class="fl-info">{table}</table>{cam_text}</div>'


FAILED_HEADERS = ["path", "reason", "message"]


def failed_title(n: int, shown: int | None = None) -> str:
    """The heading above the failed-files table (Markdown); ``shown`` rows of ``n`` are listed."""
    head = "#### Files that could not be indexed\n"
    if n == 0:
        return head + "None: every file found was indexed."
    files = "file" if n == 1 else "files"
    if shown is not None and shown < n:
        return head + f"{n:,} {files}; the first {shown:,} are listed with their reasons."
    return head + f"{n:,} {files}, listed with their reasons."


def failed_rows(failures: Iterable[object], limit: int = 1000) -> list[list[str]]:
    """Rows of the failed-files table (objects with path, reason, message)."""
    rows = []
    for f in failures:
        rows.append([to_text(str(getattr(f, "path", ""))), str(getattr(f, "reason", "")),
                     str(getattr(f, "message", ""))])
        if len(rows) >= limit:
            break
    return rows


def job_html(job: object | None) -> str:
    """The live status of an indexing job (an IndexJob snapshot)."""
    if job is None:
        return '<div class="fl-job fl-job-none">No indexing job yet.</div>'
    state = str(getattr(job, "state", ""))
    stage = str(getattr(job, "stage", "") or "")
    done, total = int(getattr(job, "done", 0) or 0), getattr(job, "total", None)
    path = to_text(str(getattr(job, "path", "")))  # the text form of frozenlens.paths, as everywhere
    message = to_text(str(getattr(job, "message", "") or ""))
    if state in ("queued", "running"):
        bar = (f'<progress max="{int(total)}" value="{min(done, int(total))}"></progress>' if total
               else "<progress></progress>")
        amount = f"{done:,} of {int(total):,}" if total else f"{done:,}"
        text = f"Indexing {path}: {stage or 'starting'} {amount} files…"
    elif state == "done":
        bar = '<progress max="1" value="1"></progress>'
        text = f"Finished indexing {path}: {message}."
    else:
        bar = ""
        text = f"Indexing {path} failed: {message or 'unknown error'}"
    return (f'<div class="fl-job fl-job-{esc(state)}" data-state="{esc(state)}" role="status">'
            f"{bar}<div>{esc(text)}</div></div>")
