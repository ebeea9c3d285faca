"""Generate good and hostile image files for decoder tests (Pillow + numpy only).

:func:`make_hostile_corpus` writes the files into a directory and returns
``{file name: expected outcome}`` where the outcome is ``"ok"`` or the
:class:`~frozenlens.errors.DecodeError` reason the decoder must raise.

Permissions: a ``chmod 000`` file is only unreadable for a non-root user, and
these tests often run as root (containers, CI). The ``unreadable.jpg`` entry
is therefore generated only when not running as root; the decoder's
permission path is additionally tested with a monkeypatched ``os.open``.

Facts the tests check beyond the outcome are in module constants below.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: Size of large.jpg (for the draft test).
LARGE_SIZE = (4000, 3000)
#: Stored (pre-rotation) size of rotated.jpg, which has EXIF orientation 6.
ROTATED_STORED_SIZE = (300, 200)
#: Declared size of the decompression bombs.
BOMB_SIZE = (30000, 30000)
#: CMYK quadrants of cmyk.jpg (top-left, top-right, bottom-left, bottom-right)
#: and the RGB each should roughly become.
CMYK_QUADRANTS = (
    ((0, 255, 255, 0), (255, 0, 0)),  # red
    ((255, 0, 255, 0), (0, 255, 0)),  # green
    ((255, 255, 0, 0), (0, 0, 255)),  # blue
    ((0, 0, 0, 0), (255, 255, 255)),  # white
)


def _save(img: Image.Image, path: Path, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    data = buf.getvalue()
    path.write_bytes(data)
    return data


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def bomb_png(width: int, height: int, *, terminated: bool = True) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` grey pixels.

    Its zlib stream holds only four rows. If ``terminated`` the stream ends
    properly (Pillow then zero-fills the missing rows without complaint);
    otherwise it is cut, which Pillow reports as truncated.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 4, 9)
    if not terminated:
        idat = idat[:-6]
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _bomb_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF0 header is patched to ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 20, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _cmyk_image() -> Image.Image:
    arr = np.zeros((200, 200, 4), np.uint8)
    for i, (cmyk, _) in enumerate(CMYK_QUADRANTS):
        y, x = divmod(i, 2)
        arr[y * 100:(y + 1) * 100, x * 100:(x + 1) * 100] = cmyk
    return Image.fromarray(arr, mode="CMYK")


def make_hostile_corpus(dir: Path) -> dict[str, str]:
    """Write the corpus into ``dir`` (created if needed); return expected outcomes."""
    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}
    rng = np.random.default_rng(1234)

    # --- bad files ---------------------------------------------------------
    (dir / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty"

    (dir / "text.jpg").write_text("This is not a photo, just some text.\n" * 20)
    expected["text.jpg"] = "not-an-image"

    noise = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    full = _save(noise, dir / "_tmp.jpg", "JPEG", quality=90)
    (dir / "_tmp.jpg").unlink()
    (dir / "truncated.jpg").write_bytes(full[: len(full) // 2])
    expected["truncated.jpg"] = "truncated"

    png_full = _save(noise, dir / "_tmp.png", "PNG")
    (dir / "_tmp.png").unlink()
    (dir / "truncated.png").write_bytes(png_full[: len(png_full) * 2 // 3])
    expected["truncated.png"] = "truncated"

    (dir / "bomb.png").write_bytes(bomb_png(*BOMB_SIZE))
    expected["bomb.png"] = "too-many-pixels"

    (dir / "bomb.jpg").write_bytes(_bomb_jpeg(60000, 60000))
    expected["bomb.jpg"] = "too-many-pixels"

    (dir / "bad_header.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 200,
                                                                               dtype=np.uint8)))
    expected["bad_header.png"] = "corrupt"

    (dir / "postscript.jpg").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n")
    expected["postscript.jpg"] = "unsupported"

    if importlib.util.find_spec("pillow_heif") is None:
        (dir / "phone.heic").write_bytes(
            b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
        expected["phone.heic"] = "unsupported"

    if os.name == "posix" and os.geteuid() != 0:
        Image.new("RGB", (8, 8)).save(dir / "unreadable.jpg")
        os.chmod(dir / "unreadable.jpg", 0)
        expected["unreadable.jpg"] = "unreadable"

    # --- good files that need care ------------------------------------------
    _save(_cmyk_image(), dir / "cmyk.jpg", "JPEG", quality=95)
    expected["cmyk.jpg"] = "ok"

    _save(_cmyk_image(), dir / "cmyk_bad_icc.jpg", "JPEG", quality=95,
          icc_profile=b"this is not an ICC profile" * 8)
    expected["cmyk_bad_icc.jpg"] = "ok"

    ramp = np.tile(np.linspace(0, 65535, 512).round().astype(np.uint16), (64, 1))
    _save(Image.fromarray(ramp), dir / "gray16.png", "PNG")
    expected["gray16.png"] = "ok"

    hdr = np.tile(np.linspace(0.0, 1000.0, 256, dtype=np.float32), (32, 1))
    _save(Image.fromarray(hdr, mode="F"), dir / "hdr_float.tif", "TIFF")
    expected["hdr_float.tif"] = "ok"

    frames = [Image.new("RGB", (64, 48), c) for c in ((255, 0, 0), (0, 0, 255), (0, 0, 255))]
    frames[0].save(dir / "animated.gif", "GIF", save_all=True, append_images=frames[1:],
                   duration=100, loop=0)
    expected["animated.gif"] = "ok"
    frames[0].save(dir / "animated.webp", "WEBP", save_all=True, append_images=frames[1:],
                   duration=100, loop=0, lossless=True)
    expected["animated.webp"] = "ok"

    rotated = Image.new("RGB", ROTATED_STORED_SIZE, (0, 0, 255))
    rotated.paste((255, 0, 0), (0, 0, 60, 40))  # red marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6
    _save(rotated, dir / "rotated.jpg", "JPEG", quality=95, exif=exif.tobytes())
    expected["rotated.jpg"] = "ok"

    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 32, 64))  # left half red, right half index 0 = transparent green
    _save(pal, dir / "palette_transparent.png", "PNG", transparency=0)
    expected["palette_transparent.png"] = "ok"

    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[:, :32] = (255, 0, 0, 255)  # opaque red left, fully transparent right
    _save(Image.fromarray(rgba, mode="RGBA"), dir / "rgba.png", "PNG")
    expected["rgba.png"] = "ok"

    la = np.zeros((32, 32, 2), np.uint8)
    la[..., 0] = 40
    la[:16, :, 1] = 255
    _save(Image.fromarray(la, mode="LA"), dir / "gray_alpha.png", "PNG")
    expected["gray_alpha.png"] = "ok"

    gray = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    _save(Image.fromarray(gray, mode="L"), dir / "gray.jpg", "JPEG", quality=90)
    expected["gray.jpg"] = "ok"

    bilevel = Image.fromarray((np.indices((50, 50)).sum(0) % 2 * 255).astype(np.uint8))
    _save(bilevel.convert("1"), dir / "bilevel.png", "PNG")
    expected["bilevel.png"] = "ok"

    yy, xx = np.mgrid[0:LARGE_SIZE[1], 0:LARGE_SIZE[0]]
    big = np.stack([(xx * 255 // LARGE_SIZE[0]), (yy * 255 // LARGE_SIZE[1]),
                    ((xx + yy) % 256)], axis=-1).astype(np.uint8)
    _save(Image.fromarray(big), dir / "large.jpg", "JPEG", quality=85)
    expected["large.jpg"] = "ok"

    _save(Image.new("RGB", (40, 30), (0, 128, 0)), dir / "png_named.jpg", "PNG")
    expected["png_named.jpg"] = "ok"

    _save(Image.new("RGB", (40, 30), (200, 100, 50)), dir / "UPPER.JPEG", "JPEG")
    expected["UPPER.JPEG"] = "ok"

    return expected
