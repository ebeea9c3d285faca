"""Uploaded query photos: size limits, then the indexer's hardened decoder, in memory."""

from __future__ import annotations

from PIL import Image

from ..errors import DecodeError, QueryError
from ..indexer.decode import DecodeLimits, decode_bytes

#: uploads are decoded at reduced size (shorter side >= this), enough for any image tower
UPLOAD_DRAFT = 512


class PayloadTooLargeError(QueryError):
    """An upload exceeds the server's byte or pixel limit (HTTP 413)."""


def decode_upload(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """An RGB, upright image from uploaded bytes; never touches the disk.

    Raises :class:`PayloadTooLargeError` over ``max_bytes`` or ``max_pixels``
    and :class:`QueryError` for anything that is not a decodable photo.
    """
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the upload is larger than {max_bytes} bytes")
    try:
        limits = DecodeLimits(max_pixels=max_pixels, max_file_bytes=max(max_bytes, 1))
        return decode_bytes(data, draft_size=UPLOAD_DRAFT, limits=limits).image
    except DecodeError as exc:
        if exc.reason == "too-many-pixels":
            raise PayloadTooLargeError(f"the uploaded image has too many pixels (limit {max_pixels:,})") from exc
        raise QueryError(f"cannot read the uploaded image: {exc} [{exc.reason}]") from exc
