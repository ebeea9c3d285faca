"""The page's composed queries: weighted terms added to the text query, shown as chips.

No Gradio here (like :mod:`.actions`): the page keeps the terms as a list of
plain dicts in its session state — ``{"text": ..., "weight": ...}`` or
``{"image_id": ..., "name": ..., "weight": ...}`` — and these functions add,
remove, draw and search with them. Each term is checked by
:class:`frozenlens.request.QueryTerm` when it is added (the one owner of the
term rules), so the page never holds a term the engine would refuse;
how terms combine is :mod:`frozenlens.engine.compose`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from ...errors import QueryTermError
from ...paths import to_text
from ...request import MAX_TERMS, QueryTerm
from ..state import ServerState
from . import format as fmt
from .actions import Form, View, _view, guarded, search_request

Term = dict[str, object]

#: the chips' own script: the × of a chip asks the page to remove that term
CHIPS_JS = """
element.addEventListener('click', (e) => {
  const x = e.target.closest('.fl-chip-x');
  if (x) trigger('select', {index: Number(x.dataset.index)});
});
"""
CHIPS_CSS = """
.fl-terms { display: flex; flex-wrap: wrap; gap: 6px; min-height: 4px; }
.fl-chip { display: inline-flex; align-items: center; gap: 4px; padding: 2px 4px 2px 10px; border-radius: 14px;
  border: 1px solid var(--border-color-primary); background: var(--background-fill-secondary); font-size: 0.9em; }
.fl-chip.fl-minus { border-color: var(--error-border-color, #e99); }
.fl-chip-w { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued); }
.fl-chip-x { border: none; background: none; cursor: pointer; font-size: 1.1em; padding: 0 6px; }
"""


def parse_weight(value: object) -> float:
    """The weight box's value: a positive number (add or subtract decides the sign)."""
    try:
        weight = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise QueryTermError(f"The weight “{str(value)[:20]}” is not a number.") from None
    if not math.isfinite(weight) or weight <= 0:
        raise QueryTermError("The weight must be a positive number (use Subtract to take a term away).")
    return weight


def add_term(terms: Sequence[Term] | None, term: Term) -> list[Term]:
    """``terms`` plus ``term``, checked as a :class:`QueryTerm` (:class:`QueryTermError` otherwise)."""
    current = list(terms or [])
    to_query_term(term)
    if len(current) + 1 >= MAX_TERMS:  # the text box is a term too
        raise QueryTermError(f"A query has at most {MAX_TERMS} terms: remove one first.")
    return [*current, term]


def text_term(text: str | None, weight: object, sign: int) -> Term:
    return {"text": (text or "").strip(), "weight": sign * parse_weight(weight)}


def photo_term(image_id: object, name: str, weight: object = 1.0) -> Term:
    return {"image_id": int(image_id), "name": name, "weight": parse_weight(weight)}  # type: ignore[call-overload]


def remove_term(terms: Sequence[Term] | None, index: object) -> list[Term]:
    """``terms`` without the one at ``index`` (an index out of range removes nothing)."""
    current = list(terms or [])
    try:
        i = int(index)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return current
    return current[:i] + current[i + 1:] if 0 <= i < len(current) else current


def to_query_term(term: Mapping[str, object]) -> QueryTerm:
    if "image_id" in term:
        return QueryTerm(image=int(term["image_id"]), weight=term.get("weight", 1.0))  # type: ignore[call-overload, arg-type]
    return QueryTerm(text=str(term.get("text") or ""), weight=term.get("weight", 1.0))  # type: ignore[arg-type]


def describe(term: Mapping[str, object]) -> str:
    """A term in words: ``“sunset”`` or ``photo grand_canyon_3.jpg``."""
    return f"photo {term.get('name')}" if "image_id" in term else f"“{term.get('text')}”"


def chips_html(terms: Sequence[Mapping[str, object]] | None) -> str:
    """The terms as chips, each with its sign, weight and a remove button."""
    chips = []
    for i, t in enumerate(terms or []):
        w = float(t.get("weight", 1.0))  # type: ignore[arg-type]
        sign, kind = ("+", "fl-plus") if w > 0 else ("−", "fl-minus")
        label = describe(t)
        chips.append(
            f'<span class="fl-chip {kind}" data-index="{i}" data-weight="{w:g}">{sign} {fmt.esc(label)}'
            f'<span class="fl-chip-w">×{abs(w):g}</span>'
            f'<button class="fl-chip-x" type="button" data-index="{i}" aria-label="remove {fmt.esc(label)}">×</button>'
            f"</span>")
    return f'<div class="fl-terms" data-count="{len(chips)}">{"".join(chips)}</div>'


def summary(text: str, terms: Sequence[Mapping[str, object]]) -> str:
    """The composed query in words: ``for “beach” + “sunset” − “people”``."""
    parts = [f"“{text}”"] if text else []
    for t in terms:
        w = float(t.get("weight", 1.0))  # type: ignore[arg-type]
        weight = "" if abs(w) == 1 else f"×{abs(w):g} "
        parts.append(f"{'+' if w > 0 else '−'} {weight}{describe(t)}")
    return "for " + " ".join(parts)


@guarded
def search_composed(state: ServerState, text: str | None, terms: Sequence[Mapping[str, object]] | None,
                    form: Form) -> View:
    """The text box (weight 1) and the terms as one composed query (:mod:`frozenlens.engine.compose`)."""
    query = (text or "").strip()
    if not terms:
        return View(status=fmt.status_html("Type what you are looking for, or add a term.", "empty"))
    req = search_request(form, query or None)
    req = replace(req, terms=tuple(to_query_term(t) for t in terms))
    with state.engine() as engine:
        req = replace(req, rerank=bool(form.rerank) and engine.reranker_path.exists())
        hits = engine.search(req)
        view = _view(engine, hits, summary(query, terms), req)
    return view


def photo_name(state: ServerState, image_id: int) -> str:
    """The file name of an indexed photo, as the page shows paths."""
    with state.engine() as engine:
        return to_text(Path(engine.image_by_id(image_id).path).name)
