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


class UploadSizeLimit:
    """Pure ASGI middleware: refuse request bodies over ``max_bytes`` on ``paths``
    before they are parsed or spooled to a temp file (HTTP 413).

    A declared ``Content-Length`` over the limit is refused at once; a body
    without one (chunked) is counted as it streams in, and cut off (the app
    sees a disconnect, the client gets the 413) as soon as it passes the limit.
    """

    def __init__(self, app, max_bytes: int, paths: tuple[str, ...]) -> None:  # noqa: ANN001 - any ASGI app
        self.app, self.max_bytes, self.paths = app, max_bytes, paths

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen, exceeded, started = 0, False, False

        async def counted():  # noqa: ANN202
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                exceeded = True
                return {"type": "http.disconnect"}  # the app stops reading
            return message

        async def guarded(message) -> None:  # noqa: ANN001
            nonlocal started
            if exceeded:
                return  # drop the app's own reply to a cut-off body
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, guarded)
        if exceeded and not started:
            await _too_large(send, self.max_bytes)


async def _too_large(send, max_bytes: int) -> None:  # noqa: ANN001
    import json

    body = json.dumps({"error": {"status": 413, "code": "too-large",
                                 "message": f"the request body is larger than {max_bytes} bytes"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
