"""A small Python client of the FrozenLens REST API, with the engine's method names.

    from frozenlens.client import Client

    with Client("http://127.0.0.1:7860", token=None) as fl:
        for hit in fl.search("un chien sur la plage", k=5):
            print(hit.score, hit.path)
        fl.similar(hits[0].id)            # images like an indexed one
        fl.search(Path("query.jpg"))      # by example (uploaded)
        fl.stats(); fl.get_image(12); fl.thumbnail(12)  # bytes

Results are the same :class:`~frozenlens.types.Hit` values the engine
returns. Server errors raise :class:`ApiError` (``status``, ``code``,
``message``). Only ``httpx`` is needed, not the server's dependencies.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from .errors import FrozenLensError
from .paths import from_text, to_text
from .request import DEFAULT_K, QueryTerm
from .types import CaptionInfo, Hit, SearchFilters

API = "/api/v1"


class ApiError(FrozenLensError):
    """The server answered with an error (``status`` is the HTTP status)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Client:
    """A connection to ``frozenlens serve`` at ``base_url``.

    token: the server's API token (default: ``$FROZENLENS_API_TOKEN`` when set).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:7860", *, token: str | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        token = token if token is not None else (os.environ.get("FROZENLENS_API_TOKEN") or None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the engine's methods ------------------------------------------------
    def search(
        self,
        query: str | os.PathLike[str] | bytes | None,
        k: int = DEFAULT_K,
        *,
        filters: SearchFilters | None = None,
        min_score: float | None = None,
        rerank: bool | None = None,
        sort: str = "relevance",
        terms: Sequence[QueryTerm] = (),
        collapse: bool = False,
    ) -> list[Hit]:
        """Top-``k`` hits for a text query, or for an example image (a path or encoded bytes);
        ``collapse``: each near-duplicate group once (``Hit.group_size``).

        ``terms``: more weighted terms (a composed query, ``POST /search/composed``);
        ``query`` is then its first term (weight 1), or ``None``.
        The server checks the request (:mod:`frozenlens.request`'s limits);
        its refusal raises :class:`ApiError`.
        """
        fields = _filter_fields(filters)
        fields.update({"k": k, "sort": sort, "min_score": min_score, "collapse": "true" if collapse else None})
        if terms:
            first = [] if query is None else [QueryTerm(text=query) if isinstance(query, str) else QueryTerm(image=query)]
            body = {key: v for key, v in {**fields, "rerank": rerank}.items() if v is not None}
            body.update({"collapse": True} if collapse else {})
            body["terms"] = [_term_json(t) for t in (*first, *terms)]
            data = self._json("POST", f"{API}/search/composed", json=body)
        elif isinstance(query, str):
            body = {key: v for key, v in {**fields, "q": query, "rerank": rerank}.items() if v is not None}
            body.update({"collapse": True} if collapse else {})
            data = self._json("POST", f"{API}/search", json=body)
        elif query is None:
            raise ValueError("give a query, or terms")
        else:
            payload = Path(query).read_bytes() if isinstance(query, os.PathLike) else bytes(query)
            form = {key: str(v) for key, v in fields.items() if v is not None}
            data = self._json("POST", f"{API}/search/image", data=form, files={"file": ("query", payload)})
        return [hit_from_json(h) for h in data["hits"]]

    def similar(self, image_id: int, k: int = DEFAULT_K, *, filters: SearchFilters | None = None,
                min_score: float | None = None, sort: str = "relevance", collapse: bool = False) -> list[Hit]:
        """Images most like the indexed image ``image_id`` (itself excluded)."""
        params = {key: v for key, v in {**_filter_fields(filters), "k": k, "min_score": min_score,
                                         "sort": sort, "collapse": "true" if collapse else None}.items() if v is not None}
        data = self._json("GET", f"{API}/images/{int(image_id)}/similar", params=params)
        return [hit_from_json(h) for h in data["hits"]]

    def near_duplicates(self, threshold: float | None = None) -> list[dict[str, Any]]:
        """Groups of near-identical photos (JSON objects of ``GET /api/v1/duplicates``), largest first."""
        params = {} if threshold is None else {"threshold": threshold}
        return list(self._json("GET", f"{API}/duplicates", params=params)["groups"])

    def get_image(self, image_id: int) -> dict[str, Any]:
        """An indexed image's metadata (JSON object)."""
        return self._json("GET", f"{API}/images/{int(image_id)}")

    def thumbnail(self, image_id: int) -> bytes:
        """The 256-px WebP thumbnail."""
        return self._bytes(f"{API}/images/{int(image_id)}/thumbnail")

    def image_file(self, image_id: int) -> bytes:
        """The original photo file."""
        return self._bytes(f"{API}/images/{int(image_id)}/file")

    def stats(self) -> dict[str, Any]:
        return self._json("GET", f"{API}/stats")

    def health(self) -> dict[str, Any]:
        return self._json("GET", f"{API}/health")

    # -- plumbing ------------------------------------------------------------
    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        response = self._http.request(method, url, **kw)
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                raise ApiError(int(err["status"]), str(err["code"]), str(err["message"]))
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "http", response.text[:200]) from None
        return response

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        return self._send(method, url, **kw).json()

    def _bytes(self, url: str) -> bytes:
        return self._send("GET", url).content


def _filter_fields(filters: SearchFilters | None) -> dict[str, Any]:
    f = filters or SearchFilters()
    if f.min_width is not None or f.min_height is not None:
        raise ValueError("the REST API has no min_width/min_height filters")
    return {
        "after": f.after.isoformat() if f.after else None,
        "before": f.before.isoformat() if f.before else None,
        "camera": f.camera,
        "under": None if f.under is None else to_text(f.under),  # paths travel in their text form
    }


def _term_json(term: QueryTerm) -> dict[str, Any]:
    """A composed query's term as the API's JSON: text, image_id, or the photo's bytes in base64."""
    if term.text is not None:
        return {"text": term.text, "weight": term.weight}
    if isinstance(term.image, int):
        return {"image_id": term.image, "weight": term.weight}
    if isinstance(term.image, os.PathLike | bytes):
        data = Path(term.image).read_bytes() if isinstance(term.image, os.PathLike) else term.image
        return {"image": base64.b64encode(data).decode("ascii"), "weight": term.weight}
    raise ValueError("send a photo term as a file path or its bytes, not a decoded image")


def hit_from_json(h: dict[str, Any]) -> Hit:
    """A :class:`Hit` from the API's JSON form of one result."""
    taken = h.get("taken_at")
    return Hit(
        id=int(h["id"]), path=from_text(h["path"]), score=float(h["score"]),  # the OS path, as the engine's
        image_score=h.get("image_score"), caption_score=h.get("caption_score"),
        taken_at=dt.datetime.fromisoformat(taken) if taken else None,
        camera=h.get("camera"), lens=h.get("lens"), width=h.get("width"), height=h.get("height"),
        lat=h.get("lat"), lon=h.get("lon"),
        captions=tuple(CaptionInfo(c["text"], c.get("lang"), c["source"]) for c in h.get("captions", [])),
        labels=tuple((lab["label"], float(lab["p"])) for lab in h.get("labels", [])),
        duplicates=tuple(from_text(d) for d in h.get("duplicates", [])),
        first_stage_image_score=h.get("first_stage_image_score"), reranked=bool(h.get("reranked", False)),
        date_source=h.get("date_source"), group_size=int(h.get("group_size", 1)), group_id=h.get("group_id"),
    )
