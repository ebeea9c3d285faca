"""EXIF metadata of a photo: capture time, camera, lens, GPS and orientation.

:func:`photo_metadata` turns the ``PIL.Image.Exif`` of an opened image (or
None) into a :class:`PhotoMetadata`; :func:`orientation` gives the EXIF
orientation (1-8) that the decoder applies to the pixels. Camera data is
untrusted: every malformed, missing or out-of-range value becomes None (or
orientation 1), never an exception.

:func:`read_exif` calls Pillow's parser, which may emit warnings; the caller
(:mod:`frozenlens.indexer.decode`) captures them under its header lock, since
``warnings.catch_warnings`` is process-global state.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import Image

__all__ = ["PhotoMetadata", "orientation", "photo_metadata", "read_exif"]

log = logging.getLogger(__name__)

# EXIF tags used (numbers from the EXIF 2.3 / TIFF 6 specifications).
_TAG_MAKE, _TAG_MODEL, _TAG_ORIENTATION, _TAG_DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_IFD_EXIF, _IFD_GPS = 0x8769, 0x8825
_TAG_DATETIME_ORIGINAL, _TAG_DATETIME_DIGITIZED, _TAG_LENS_MODEL = 0x9003, 0x9004, 0xA434
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4


@dataclass(frozen=True)
class PhotoMetadata:
    """Facts about the original file, independent of any draft reduction.

    ``width``/``height`` are of the full-size image after EXIF orientation;
    ``format`` is Pillow's name (``"JPEG"`` also for camera MPO files).
    ``taken_at`` is EXIF DateTimeOriginal, else DateTimeDigitized, else
    DateTime, as naive local time the camera wrote. ``lat``/``lon`` are
    decimal degrees (south/west negative); both None when absent, malformed,
    out of range or exactly (0, 0) (what GPS units write without a fix).
    """

    width: int
    height: int
    format: str
    taken_at: datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    lat: float | None = None
    lon: float | None = None


def read_exif(im: Image.Image, name: str) -> Image.Exif | None:
    """The image's EXIF, or None when it cannot be parsed (``name`` is for logs)."""
    try:
        return im.getexif()
    except Exception:
        log.debug("%s: unreadable EXIF", name, exc_info=True)
        return None


def photo_metadata(exif: Image.Exif | None, width: int, height: int, fmt: str) -> PhotoMetadata:
    """Metadata from ``exif``; ``width``/``height`` are the stored (pre-orientation) size."""
    if orientation(exif) in (5, 6, 7, 8):
        width, height = height, width
    if exif is None:
        return PhotoMetadata(width=width, height=height, format=fmt)
    sub = _sub_ifd(exif, _IFD_EXIF)
    gps = _sub_ifd(exif, _IFD_GPS)
    taken = (
        _parse_exif_datetime(sub.get(_TAG_DATETIME_ORIGINAL))
        or _parse_exif_datetime(sub.get(_TAG_DATETIME_DIGITIZED))
        or _parse_exif_datetime(exif.get(_TAG_DATETIME))
    )
    lat = _gps_coordinate(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), 90.0, "S")
    lon = _gps_coordinate(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), 180.0, "W")
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        lat = lon = None
    return PhotoMetadata(
        width=width,
        height=height,
        format=fmt,
        taken_at=taken,
        camera_make=_text(exif.get(_TAG_MAKE)),
        camera_model=_text(exif.get(_TAG_MODEL)),
        lens=_text(sub.get(_TAG_LENS_MODEL)),
        lat=lat,
        lon=lon,
    )


def orientation(exif: Image.Exif | None) -> int:
    """EXIF orientation tag (1 = upright); 1 when absent or malformed."""
    if exif is None:
        return 1
    try:
        value = exif.get(_TAG_ORIENTATION, 1)
        return int(value[0] if isinstance(value, tuple) else value)
    except (TypeError, ValueError, IndexError):
        return 1


def _sub_ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:
        log.debug("unreadable EXIF IFD 0x%04x", tag, exc_info=True)
        return {}


def _text(value: Any, max_len: int = 200) -> str | None:
    """A clean EXIF ASCII string, or None for missing/blank values."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.split("\x00", 1)[0].strip()
    return value[:max_len] or None


_DATETIME_RE = re.compile(
    r"\s*(\d{4})[:\-/](\d{1,2})[:\-/](\d{1,2})(?:[ T]+(\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)


def _parse_exif_datetime(value: Any) -> datetime | None:
    """Parse ``YYYY:MM:DD HH:MM:SS`` (tolerating '-' and missing parts)."""
    text = _text(value)
    if text is None:
        return None
    m = _DATETIME_RE.match(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(p) if p else 0 for p in m.groups())
    if year < 1800:  # 0000:00:00 and other placeholders
        return None
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:  # month 0, day 0, 25:61 ...
        return None


def _rational(value: Any) -> float | None:
    try:
        if isinstance(value, tuple) and len(value) == 2:
            num, den = float(value[0]), float(value[1])
            result = num / den if den else math.nan
        else:
            result = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return result if math.isfinite(result) else None


def _gps_coordinate(value: Any, ref: Any, bound: float, negative_ref: str) -> float | None:
    """Degrees/minutes/seconds rationals + hemisphere ref -> signed degrees."""
    if value is None:
        return None
    parts = list(value) if isinstance(value, (tuple, list)) else [value]
    if not 1 <= len(parts) <= 3:
        return None
    degrees = 0.0
    for i, part in enumerate(parts):  # degrees, minutes, seconds
        number = _rational(part)
        if number is None:
            return None
        degrees += number / 60.0**i
    hemisphere = _text(ref)
    if hemisphere and hemisphere[:1].upper() == negative_ref:
        degrees = -abs(degrees)
    if not -bound <= degrees <= bound:
        return None
    return degrees
