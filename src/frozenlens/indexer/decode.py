"""Hardened image decoding: one photo file (or upload) in, an RGB image out.

:func:`decode_file` and :func:`decode_bytes` turn anything a photo archive or
an upload form may contain into a fully loaded ``PIL.Image.Image`` in mode
``RGB`` with EXIF orientation applied, plus :class:`PhotoMetadata` (read by
:mod:`frozenlens.indexer.exif`, re-exported here), or raise
:class:`~frozenlens.errors.DecodeError` with one of these ``reason`` tags:

``"empty"``            zero bytes
``"too-large"``        more bytes than ``DecodeLimits.max_file_bytes``
``"not-an-image"``     no image signature (text, PDF, a directory, a FIFO ...)
``"unsupported"``      an image format we do not decode (HEIC without
                       ``pillow_heif``, JPEG XL, EPS, PSD, ...)
``"truncated"``        the data ends early
``"corrupt"``          header or pixel data are damaged
``"too-many-pixels"``  width x height from the header exceeds
                       ``DecodeLimits.max_pixels`` (decompression bombs)
``"unreadable"``       the OS refused to read (permission, I/O error)
``"vanished"``         the file no longer exists

Hardening decisions:

- The pixel limit is checked on the header's size *before* any pixel is
  decoded. Pillow's own global ``MAX_IMAGE_PIXELS`` is never changed; its
  ``DecompressionBombError`` maps to ``"too-many-pixels"``; its
  ``DecompressionBombWarning`` is captured and logged at debug level, because
  our explicit ``max_pixels`` is the policy (so the effective limit is
  ``min(max_pixels, 2 * PIL.Image.MAX_IMAGE_PIXELS)``).
- Only photo formats are probed (JPEG/MPO, PNG, GIF, WebP, BMP, TIFF, plus
  AVIF/HEIF when a decoder exists): a hostile ``.jpg`` holding PostScript is
  never handed to Ghostscript by Pillow's EPS plugin.
- ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone (False): truncated data
  raises instead of being padded with grey.
- Header parsing runs inside ``warnings.catch_warnings`` (to capture Pillow's
  warnings); since that is process-global state in Python < 3.14, a module
  lock serialises those few milliseconds. Pixel decoding runs outside it, so
  threads still decode in parallel.
- Transparent pixels are composited onto white (:data:`BACKGROUND_RGB`):
  cut-outs, logos and stamps are most often shown on white, and dark text or
  line art on a transparent background stays legible.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from typing import IO

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from frozenlens.errors import DecodeError
from frozenlens.indexer.exif import (
    PhotoMetadata,
    orientation,
    photo_metadata,
    read_exif,
)

__all__ = [
    "BACKGROUND_RGB",
    "DecodeLimits",
    "DecodedImage",
    "PhotoMetadata",
    "decode_bytes",
    "decode_file",
]

log = logging.getLogger(__name__)

#: Colour that transparent pixels are composited onto.
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

#: Pillow format names we are willing to open (others are "unsupported").
_WANTED_FORMATS: tuple[str, ...] = (
    "JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF", "HEIF",
)

#: EXIF orientation -> transpose that makes the image upright (as ImageOps.exif_transpose).
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_header_lock = threading.Lock()


@dataclass(frozen=True)
class DecodeLimits:
    """Resource limits applied before decoding.

    ``max_pixels`` defaults to 178,956,970 (Pillow's own hard error
    threshold, 2 x 89.5 MP): it admits the largest single-shot cameras
    (150 MP medium format) and big scans, while one decoded RGB image stays
    under ~540 MB. ``max_file_bytes`` (1 GiB) stops huge non-photo files
    early.
    """

    max_pixels: int = 178_956_970
    max_file_bytes: int = 1 << 30



@dataclass
class DecodedImage:
    """A decoded photo: ``image`` is loaded, mode ``RGB``, upright."""

    image: Image.Image
    metadata: PhotoMetadata


def decode_file(
    path: str | os.PathLike[str],
    *,
    draft_size: int | None = 256,
    limits: DecodeLimits = DecodeLimits(),
) -> DecodedImage:
    """Decode the image file at ``path``.

    With ``draft_size`` the image is decoded at reduced size (JPEG DCT
    scaling via ``Image.draft``, then an integer box reduction for every
    format) while its shorter side stays >= ``draft_size``; ``None`` keeps
    full resolution. The file is closed before returning. Raises
    :class:`~frozenlens.errors.DecodeError`.
    """
    name = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise DecodeError("vanished", f"{name}: file not found") from exc
    except PermissionError as exc:
        raise DecodeError("unreadable", f"{name}: permission denied") from exc
    except OSError as exc:
        raise DecodeError("unreadable", f"{name}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not-an-image", f"{name}: not a regular file")
        _check_byte_size(st.st_size, limits, name)
        fp = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fp:
        return _decode_stream(fp, name, draft_size, limits)


def decode_bytes(
    data: bytes,
    *,
    draft_size: int | None = 256,
    limits: DecodeLimits = DecodeLimits(),
    name: str = "<bytes>",
) -> DecodedImage:
    """Decode an image held in memory (e.g. an uploaded query image).

    Same behaviour and errors as :func:`decode_file`; ``name`` (e.g. the file
    the bytes were read from) starts error messages.
    """
    _check_byte_size(len(data), limits, name)
    return _decode_stream(io.BytesIO(data), name, draft_size, limits)


def _check_byte_size(size: int, limits: DecodeLimits, name: str) -> None:
    if size == 0:
        raise DecodeError("empty", f"{name}: zero bytes")
    if size > limits.max_file_bytes:
        raise DecodeError(
            "too-large", f"{name}: {size} bytes exceeds the limit of {limits.max_file_bytes}"
        )


@functools.cache
def _allowed_formats() -> tuple[str, ...]:
    """Registered Pillow formats among :data:`_WANTED_FORMATS` (computed once)."""
    if importlib.util.find_spec("pillow_heif") is not None:
        try:  # registering is the plugin's documented way to extend Pillow
            import pillow_heif  # type: ignore[import-not-found]

            pillow_heif.register_heif_opener()
        except Exception:
            log.warning("pillow_heif is installed but failed to load", exc_info=True)
    Image.init()
    if "AVIF" not in Image.OPEN and importlib.util.find_spec("pillow_avif") is not None:
        try:
            import pillow_avif  # type: ignore[import-not-found]  # noqa: F401
        except Exception:
            log.warning("pillow_avif is installed but failed to load", exc_info=True)
    return tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)


def _decode_stream(
    fp: IO[bytes], name: str, draft_size: int | None, limits: DecodeLimits
) -> DecodedImage:
    prefix = fp.read(32)
    fp.seek(0)
    formats = _allowed_formats()
    with _header_lock, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            im = Image.open(fp, formats=list(formats))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DecodeError("too-many-pixels", f"{name}: {exc}") from exc
        except UnidentifiedImageError as exc:
            reason = _sniff_unidentified(prefix)
            raise DecodeError(reason, f"{name}: {_REASON_TEXT[reason]}") from exc
        except Exception as exc:
            raise _pixel_error(exc, name) from exc
    _log_warnings(caught, name)
    with im:
        width, height = im.size
        if width <= 0 or height <= 0:
            raise DecodeError("corrupt", f"{name}: image has no pixels ({width}x{height})")
        if width * height > limits.max_pixels:
            raise DecodeError(
                "too-many-pixels",
                f"{name}: {width}x{height} exceeds the limit of {limits.max_pixels} pixels",
            )
        fmt = "JPEG" if im.format == "MPO" else (im.format or "unknown")
        if draft_size:
            try:
                im.draft("RGB", (draft_size, draft_size))
            except Exception:
                log.debug("%s: draft failed", name, exc_info=True)
        try:
            im.load()
        except Image.DecompressionBombError as exc:
            raise DecodeError("too-many-pixels", f"{name}: {exc}") from exc
        except Exception as exc:
            raise _pixel_error(exc, name) from exc
        with _header_lock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exif = read_exif(im, name)
        _log_warnings(caught, name)
        icc = im.info.get("icc_profile")
        metadata = photo_metadata(exif, width, height, fmt)
        try:
            rgb = _to_rgb(im, icc if isinstance(icc, bytes) else None)
        except DecodeError:
            raise
        except Exception as exc:
            raise _pixel_error(exc, name) from exc
    method = _ORIENTATION_TRANSPOSE.get(orientation(exif))
    if method is not None:
        rgb = rgb.transpose(method)
    if draft_size:
        factor = min(rgb.size) // draft_size
        if factor >= 2:
            rgb = rgb.reduce(factor)
    return DecodedImage(image=rgb, metadata=metadata)


_REASON_TEXT = {
    "unsupported": "image format not supported",
    "corrupt": "image header is damaged",
    "not-an-image": "not an image file",
}


def _sniff_unidentified(prefix: bytes) -> str:
    """Reason for data Pillow (restricted to photo formats) could not open."""
    if prefix[4:8] == b"ftyp":  # ISO-BMFF: HEIC/HEIF/AVIF
        brand = prefix[8:12]
        if brand in {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis",
                     b"mif1", b"msf1", b"avif", b"avis"}:
            return "unsupported"
    if prefix.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):  # JPEG XL
        return "unsupported"
    if prefix.startswith((b"%!PS", b"\xc5\xd0\xd3\xc6", b"8BPS", b"\x00\x00\x01\x00")):
        return "unsupported"  # EPS, DOS EPS, PSD, ICO: images, but not photos we decode
    if prefix.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a",
                          b"BM", b"II*\x00", b"MM\x00*")) or (
        prefix[:4] == b"RIFF" and prefix[8:12] == b"WEBP"
    ):
        return "corrupt"
    return "not-an-image"


def _pixel_error(exc: BaseException, name: str) -> DecodeError:
    """Map an exception raised while parsing or decoding to a DecodeError."""
    if isinstance(exc, FileNotFoundError):
        return DecodeError("vanished", f"{name}: file disappeared while reading")
    if isinstance(exc, OSError) and exc.errno is not None:
        return DecodeError("unreadable", f"{name}: {exc.strerror or exc}")
    text = str(exc)
    if isinstance(exc, EOFError) or "truncated" in text.lower():
        return DecodeError("truncated", f"{name}: data ends early ({text})")
    if isinstance(exc, MemoryError):
        return DecodeError("too-many-pixels", f"{name}: out of memory while decoding")
    return DecodeError("corrupt", f"{name}: {type(exc).__name__}: {text}")


def _log_warnings(caught: list[warnings.WarningMessage], name: str) -> None:
    for w in caught:
        log.debug("%s: %s: %s", name, w.category.__name__, w.message)


# ---------------------------------------------------------------- conversion


def _to_rgb(im: Image.Image, icc: bytes | None) -> Image.Image:
    """A new, independent ``RGB`` image from a loaded image of any mode."""
    mode = im.mode
    transparent = "transparency" in im.info
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        transparent and mode in ("P", "L", "RGB", "1")
    ):
        return _composite(im.convert("RGBA"))
    if mode == "CMYK":
        return _icc_to_srgb(im, icc) or im.convert("RGB")
    if mode == "RGB":
        return _icc_to_srgb(im, icc) or im.copy()
    if mode.startswith("I;16") or mode == "I":
        return Image.fromarray(_int_to_uint8(np.asarray(im)), mode="L").convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(im)), mode="L").convert("RGB")
    try:  # 1, L, P, YCbCr, RGBX, LAB, HSV
        return im.convert("RGB")
    except ValueError as exc:
        raise DecodeError("unsupported", f"cannot convert mode {mode} to RGB") from exc


def _composite(rgba: Image.Image) -> Image.Image:
    background = Image.new("RGB", rgba.size, BACKGROUND_RGB)
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def _int_to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit (or 32-bit int) samples to 8 bits by scaling, never clipping.

    Values within 0..65535 are treated as 16-bit (0 -> 0, 65535 -> 255);
    anything else is stretched from its own min..max.
    """
    a = arr.astype(np.int64)
    lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
    if lo >= 0 and hi <= 65535:
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    return _stretch(a.astype(np.float64), lo, hi)


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float samples to 8 bits: 0..1 data scaled, other ranges (HDR) stretched."""
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    finite = np.isfinite(arr)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(arr[finite].min()), float(arr[finite].max())
    if lo >= 0.0 and hi <= 1.0:
        return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    a = np.where(finite, a, lo)
    return _stretch(a, lo, hi)


def _stretch(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _icc_to_srgb(im: Image.Image, icc: bytes | None) -> Image.Image | None:
    """Convert RGB/CMYK pixels with an embedded non-sRGB ICC profile to sRGB.

    Returns None (caller falls back to a plain conversion) when there is no
    profile, it already is sRGB, or LittleCMS rejects it.
    """
    if not icc:
        return None
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(src).lower():
            return None
        out = ImageCms.profileToProfile(im, src, _srgb_profile(), outputMode="RGB")
    except Exception:
        log.debug("ICC conversion failed; using plain conversion", exc_info=True)
        return None
    return out if isinstance(out, Image.Image) else None


@functools.cache
def _srgb_profile() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
