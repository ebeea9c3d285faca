"""The JSON form of search hits, photo records and index statistics, shared by
the REST API (:mod:`.api`) and the MCP server (:mod:`.mcp`).

Paths are given in the lossless text form of :mod:`frozenlens.paths` (and
read back from it by :func:`os_path`). Each
front end adds what only it has (the REST API its ``thumbnail_url`` and
``file_url``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import QueryError
from ..paths import from_text, to_text

if TYPE_CHECKING:
    from ..engine import Engine
    from ..store import ImageRecord
    from ..types import Hit
    from .state import IndexJob

#: most failed files listed by :func:`stats_json`
MAX_FAILED_LISTED = 1000


def hit_json(hit: Hit) -> dict[str, object]:
    """One search result: :meth:`Hit.to_dict` with its paths in text form."""
    return {**hit.to_dict(), "path": to_text(hit.path), "duplicates": [to_text(p) for p in hit.duplicates]}


def image_json(r: ImageRecord) -> dict[str, object]:
    """An indexed photo's metadata (the REST API's ``ImageOut`` without its URLs)."""
    return {
        "id": r.id, "path": to_text(r.path), "status": r.status, "size": r.size, "format": r.format,
        "width": r.width, "height": r.height, "taken_at": r.taken_at.isoformat() if r.taken_at else None,
        "date_source": r.taken_at_source if r.taken_at else None, "camera": r.camera, "lens": r.lens,
        "lat": r.lat, "lon": r.lon,
        "captions": [{"text": t, "lang": lang, "source": src} for t, lang, src in r.captions],
        "labels": [{"label": lab, "p": round(p, 6)} for lab, p in r.labels],
        "duplicates": [to_text(d) for d in r.duplicates],
    }


def stats_json(engine: Engine) -> dict[str, object]:
    """What the index holds (the REST API's ``StatsOut``): counts, encoder, vectors, failures."""
    s = engine.stats()
    failed = engine.errors()
    return {
        "images": s.images, "counts": s.counts, "encoder": dict(s.encoder), "factory": s.factory,
        "index_types": dict(s.index_types),
        "vectors": dict(s.vectors), "schema_version": s.schema_version, "bytes_on_disk": s.bytes_on_disk,
        "cameras": dict(s.cameras), "reranker": engine.reranker_path.exists(),
        "failed": [{"path": to_text(f.path), "reason": f.reason, "message": f.message}
                   for f in failed[:MAX_FAILED_LISTED]],
    }


def duplicates_json(engine: Engine, threshold: float | None) -> list[dict[str, object]]:
    """The index's near-duplicate groups (:meth:`Engine.near_duplicates`), largest first, each
    with its members' paths and sizes (best first) and its byte-identical copies."""
    groups = engine.near_duplicates(threshold)
    records = engine.store.images([i for g in groups for i in (*g.members, *(c for c, _ in g.copies))])
    return [
        {"id": g.id, "size": g.size, "similarity": g.similarity,
         "members": [{"id": m, "path": to_text(records[m].path), "width": records[m].width,
                      "height": records[m].height} for m in g.members],
         "copies": [{"id": c, "path": to_text(records[c].path), "copy_of": o} for c, o in g.copies]}
        for g in groups
    ]


def job_json(job: IndexJob) -> dict[str, object]:
    """An indexing job: its folder and message (which may quote paths) in the path text form."""
    return {**vars(job), "path": to_text(job.path), "message": to_text(job.message),
            "started_at": job.started_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None}


def os_path(text: str | None) -> str | None:
    """A path a client sent, in the text form of result paths (:func:`frozenlens.paths.from_text`)."""
    if text is None:
        return None
    try:
        return from_text(text)
    except ValueError as exc:
        raise QueryError(f"not a path in the text form of result paths: {exc}") from None
