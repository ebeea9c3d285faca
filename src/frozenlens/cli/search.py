"""``frozenlens search`` and ``frozenlens similar``: build the request, call the engine, print hits."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path

from ..errors import QueryError, QueryTermError
from ..paths import from_user, to_text
from ..request import QueryTerm, SearchRequest
from ..types import Hit, SearchFilters


def filters_of(args: argparse.Namespace) -> SearchFilters:
    """The filter options as typed (``--under`` made absolute)."""
    return SearchFilters(
        after=args.after,
        before=args.before,
        camera=args.camera,
        under=os.path.abspath(from_user(args.under)) if args.under else None,
        min_width=args.min_width,
        min_height=args.min_height,
    )


def request_of(args: argparse.Namespace, query: str | None = None) -> SearchRequest:
    """The validated request (:class:`frozenlens.request.SearchRequest`) for the search options."""
    return SearchRequest(
        query=query, k=args.k, filters=filters_of(args), sort=args.sort, min_score=args.min_score,
        fusion=getattr(args, "fusion", SearchRequest.fusion),
        rerank=False if getattr(args, "no_rerank", False) else None,
        rerank_candidates=getattr(args, "rerank_candidates", SearchRequest.rerank_candidates),
        collapse=getattr(args, "collapse", False),
    )


def cmd_search(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine

    terms = terms_of(args)
    if terms:
        return _composed(args, index_dir, terms)
    if args.image and args.query:
        raise QueryError("give either a text query or --image, not both")
    if not args.image and args.query is None:
        raise QueryError("empty query: give some words to search for, or --image FILE")
    request = request_of(args, None if args.image else args.query)
    if args.image and not os.path.isfile(args.image):
        raise QueryError(f"query image not found: {args.image}")
    with Engine.open(index_dir) as engine:
        hits = engine.search(request, image=Path(args.image)) if args.image else engine.search(request)
    print_hits(hits, args)
    return 0


def terms_of(args: argparse.Namespace) -> tuple[QueryTerm, ...]:
    """The ``--add/--subtract[-image]`` options as query terms (checked by :class:`QueryTerm`)."""
    texts = [QueryTerm(text=t) for t in args.add] + [QueryTerm(text=t, weight=-1.0) for t in args.subtract]
    photos = [photo_term(spec, +1) for spec in args.add_image] + [photo_term(spec, -1) for spec in args.subtract_image]
    return (*texts, *photos)


def photo_term(spec: str, sign: int) -> QueryTerm:
    """A photo term from ``PHOTO[:W]``: an existing file (the whole text first), else ``PHOTO`` with
    weight ``W``; ``PHOTO`` is a file, or the id of an indexed photo when it is a number and no such file."""
    value, weight = spec, 1.0
    head, sep, tail = spec.rpartition(":")
    if sep and head and not os.path.exists(from_user(spec)):
        with contextlib.suppress(ValueError):
            value, weight = head, float(tail)
    path = from_user(value)
    if value.isdigit() and not os.path.exists(path):
        return QueryTerm(image=int(value), weight=sign * weight)
    if not os.path.isfile(path):
        raise QueryTermError(f"query image not found: {value}")
    return QueryTerm(image=Path(path), weight=sign * weight)


def _composed(args: argparse.Namespace, index_dir: str, terms: tuple[QueryTerm, ...]) -> int:
    """A composed search: the text query and ``--image`` (weight 1 each) plus the terms."""
    from ..engine import Engine

    if args.image:
        terms = (photo_term(args.image, +1), *terms)
    request = replace(request_of(args, args.query), terms=terms)
    with Engine.open(index_dir) as engine:
        hits = engine.search(request)
    print_hits(hits, args, composed=True)
    return 0


def cmd_similar(args: argparse.Namespace, index_dir: str) -> int:
    from ..engine import Engine

    request = request_of(args)
    with Engine.open(index_dir) as engine:
        target = int(args.image) if args.image.isdigit() and not os.path.exists(args.image) else from_user(args.image)
        hits = engine.similar(target, request)
    print_hits(hits, args)
    return 0


def print_hits(hits: list[Hit], args: argparse.Namespace, composed: bool = False) -> None:
    """One line per hit (``--explain``: its score parts, labels, captions), or JSON (``--json``).

    composed: the hits of a composed query, whose image/caption parts make its text part only."""
    if args.json:
        rows = [{**h.to_dict(), "path": to_text(h.path), "duplicates": [to_text(d) for d in h.duplicates]} for h in hits]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    if not hits:
        print("no results")
        return
    for rank, h in enumerate(hits, 1):
        date = h.taken_at.strftime("%Y-%m-%d") if h.taken_at else "          "
        date += "~" if h.date_source == "mtime" else " "  # ~ = the file's modification time (no EXIF date)
        group = f"  [group of {h.group_size}]" if h.group_size > 1 else ""
        print(f"{rank:3d}. {h.score:.3f}  {date} {to_text(h.path)}{group}")  # path text: one line, see frozenlens.paths
        if args.explain:
            _explain(h, getattr(args, "fusion", "max"), "text part" if composed else "score")


def _explain(h: Hit, fusion: str, what: str = "score") -> None:
    parts = []
    if h.image_score is not None:
        parts.append(f"image {h.image_score:.3f}")
    if h.caption_score is not None:
        parts.append(f"caption {h.caption_score:.3f}")
    if parts:
        print(f"       {what} = {fusion}({', '.join(parts)})")
    if h.reranked and h.first_stage_image_score is not None and h.image_score is not None:
        print(f"       reranked: image {h.first_stage_image_score:.3f} -> {h.image_score:.3f}")
    if h.labels:
        print("       sees: " + ", ".join(f"{label} {p:.0%}" for label, p in h.labels[:5]))
    for c in h.captions[:3]:
        lang = f"[{c.lang}] " if c.lang else ""
        print(f"       caption: {lang}{c.text[:100]}")
    if h.camera:
        print(f"       camera: {h.camera}")
    if h.date_source == "mtime":
        print("       date: the file's modification time (the photo has no EXIF date)")
