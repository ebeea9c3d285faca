"""The terms of a composed query's JSON body as :class:`frozenlens.request.QueryTerm` values.

Uploaded photos (base64 in the body) go through the same hardened in-memory
decoder and limits as ``POST /search/image``; every problem with a term is a
:class:`QueryTermError` (HTTP 422, code ``bad-term``), and the term rules
themselves (weights, counts, texts) are :mod:`frozenlens.request`'s.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from ...errors import QueryError, QueryTermError
from ...request import QueryTerm
from ..settings import Limits
from ..uploads import PayloadTooLargeError, decode_upload
from .models import IdTermIn, PhotoTermIn, TermIn


def query_terms(terms: Sequence[TermIn], limits: Limits) -> tuple[QueryTerm, ...]:
    """The body's terms, in order; uploads decoded (their bytes together at most ``limits.max_upload_bytes``)."""
    out, budget = [], limits.max_upload_bytes
    for n, t in enumerate(terms, 1):
        try:
            if isinstance(t, PhotoTermIn):
                data = _base64(t.image, n)
                budget -= len(data)
                if budget < 0:
                    raise PayloadTooLargeError(f"the uploaded photos are larger than {limits.max_upload_bytes} bytes")
                out.append(QueryTerm(image=decode_upload(data, limits.max_upload_bytes, limits.max_upload_pixels),
                                     weight=t.weight))
            elif isinstance(t, IdTermIn):
                out.append(QueryTerm(image=t.image_id, weight=t.weight))
            else:
                out.append(QueryTerm(text=t.text, weight=t.weight))
        except PayloadTooLargeError:
            raise
        except QueryError as exc:
            raise QueryTermError(f"term {n}: {exc}") from None
    return tuple(out)


def _base64(text: str, n: int) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise QueryTermError(f"term {n}: image is not base64-encoded data") from None
