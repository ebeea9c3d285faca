"""Captions for photos: sidecar files beside them and a JSONL manifest.

Sidecars (found by :func:`frozenlens.indexer.scan.scan`) are read by
:func:`read_sidecar_captions`:

- ``.txt``  the whole file, stripped, is one caption (UTF-8, else Latin-1);
  language unknown.
- ``.json`` an object whose ``"caption"``, ``"description"``, ``"text"`` and
  ``"title"`` keys each hold a string, a ``{lang: text}`` object, or a list of
  strings / ``{"text": ..., "lang": ...}`` objects / ``{lang: text}``
  objects; a top-level ``"lang"`` string applies to plain strings.
- ``.xmp``  ``dc:description`` and ``dc:title`` (``rdf:Alt`` language
  alternatives give one caption per ``xml:lang``; ``x-default`` has language
  None and is dropped when the same text also appears under a real
  language). Parsed with defusedxml.

Sidecars larger than :data:`MAX_TEXT_SIDECAR_BYTES` (``.txt``/``.json``) or
:data:`MAX_XMP_SIDECAR_BYTES` (``.xmp``: editors store edit history there),
unreadable or malformed are logged and skipped: sidecars never raise.

A caption manifest (:func:`load_caption_manifest`) is a JSONL file, one
``{"path": ..., "text": ..., "lang": ...}`` object per line; it is written by
a person or a script, so malformed lines raise :class:`ManifestError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from frozenlens.errors import ManifestError
from frozenlens.indexer.scan import FileEntry, SidecarRef

__all__ = [
    "MAX_TEXT_SIDECAR_BYTES",
    "MAX_XMP_SIDECAR_BYTES",
    "Caption",
    "captions_signature",
    "load_caption_manifest",
    "read_sidecar_captions",
]

log = logging.getLogger(__name__)

MAX_TEXT_SIDECAR_BYTES = 64 * 1024
MAX_XMP_SIDECAR_BYTES = 1024 * 1024

#: JSON sidecar keys holding captions, in the order they are read.
JSON_CAPTION_KEYS: tuple[str, ...] = ("caption", "description", "text", "title")

_DC = "{http://purl.org/dc/elements/1.1/}"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


@dataclass(frozen=True)
class Caption:
    """One caption of a photo.

    ``lang`` is a language tag as written (``"en"``, ``"de-DE"``) or None
    when unknown; ``source`` is ``"sidecar-txt"``, ``"sidecar-json"``,
    ``"xmp"``, ``"manifest"`` or ``"exif"``.
    """

    text: str
    lang: str | None
    source: str


# ------------------------------------------------------------------ sidecars


def read_sidecar_captions(entry: FileEntry) -> list[Caption]:
    """All captions from ``entry``'s sidecars, in sidecar order, deduplicated."""
    captions: list[Caption] = []
    for ref in entry.sidecars:
        ext = os.path.splitext(ref.path)[1].lower()
        try:
            if ext == ".txt":
                found = _read_txt(ref)
            elif ext == ".json":
                found = _read_json(ref)
            elif ext == ".xmp":
                found = _read_xmp(ref)
            else:
                continue
        except _SkipSidecar as exc:
            log.warning("ignoring caption sidecar %s: %s", ref.path, exc)
            continue
        for caption in found:
            if caption not in captions:
                captions.append(caption)
    return captions


class _SkipSidecar(Exception):
    """Internal: this sidecar is unusable (reason in the message)."""


def _read_bytes(ref: SidecarRef, limit: int) -> bytes:
    try:
        with open(ref.path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise _SkipSidecar(f"cannot read: {exc}") from exc
    if len(data) > limit:
        raise _SkipSidecar(f"larger than {limit} bytes")
    return data


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


#: lone UTF-16 surrogates (a JSON sidecar may spell "\ud800"): no text encoder can take them
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean(text: Any) -> str | None:
    """A caption's text, stripped, with lone surrogates replaced by U+FFFD; None if empty."""
    if not isinstance(text, str):
        return None
    text = _LONE_SURROGATE.sub("\ufffd", text).strip()
    return text or None


def _lang(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return None if not value or value.lower() == "x-default" else value


def _read_txt(ref: SidecarRef) -> list[Caption]:
    text = _clean(_decode_text(_read_bytes(ref, MAX_TEXT_SIDECAR_BYTES)))
    return [Caption(text, None, "sidecar-txt")] if text else []


def _read_json(ref: SidecarRef) -> list[Caption]:
    raw = _read_bytes(ref, MAX_TEXT_SIDECAR_BYTES)
    try:
        doc = json.loads(_decode_text(raw))
    except ValueError as exc:
        raise _SkipSidecar(f"invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _SkipSidecar("top level is not a JSON object")
    default_lang = _lang(doc.get("lang"))
    captions: list[Caption] = []
    for key in JSON_CAPTION_KEYS:
        if key in doc:
            for text, lang in _json_values(doc[key], default_lang):
                captions.append(Caption(text, lang, "sidecar-json"))
    return captions


def _json_values(value: Any, default_lang: str | None) -> Iterator[tuple[str, str | None]]:
    """(text, lang) pairs from a string, a lang map, or a list of either."""
    if isinstance(value, str):
        text = _clean(value)
        if text:
            yield text, default_lang
    elif isinstance(value, dict):
        if "text" in value:  # {"text": ..., "lang": ...}
            text = _clean(value.get("text"))
            if text:
                yield text, _lang(value.get("lang")) if "lang" in value else default_lang
        else:  # {lang: text}
            for lang, text in value.items():
                cleaned = _clean(text)
                if cleaned:
                    yield cleaned, _lang(lang)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (str, dict)):
                yield from _json_values(item, default_lang)
    else:
        log.debug("ignoring JSON caption value of type %s", type(value).__name__)


def _read_xmp(ref: SidecarRef) -> list[Caption]:
    raw = _read_bytes(ref, MAX_XMP_SIDECAR_BYTES)
    try:
        root = SafeET.fromstring(raw)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise _SkipSidecar(f"malformed XMP: {exc}") from exc
    captions: list[Caption] = []
    for prop in ("description", "title"):
        for text, lang in _xmp_property(root, _DC + prop):
            captions.append(Caption(text, lang, "xmp"))
    return _drop_redundant_defaults(captions)


def _xmp_property(root: Element, tag: str) -> Iterator[tuple[str, str | None]]:
    """(text, lang) pairs of one XMP property, element or attribute form."""
    for el in root.iter(tag):
        items = list(el.iter(_RDF + "li"))
        if items:
            for li in items:
                text = _clean("".join(li.itertext()))
                if text:
                    yield text, _lang(li.get(_XML_LANG))
        else:
            text = _clean("".join(el.itertext()))
            if text:
                yield text, _lang(el.get(_XML_LANG))
    for desc in root.iter(_RDF + "Description"):  # <rdf:Description dc:title="...">
        text = _clean(desc.get(tag))
        if text:
            yield text, None


def _drop_redundant_defaults(captions: list[Caption]) -> list[Caption]:
    """Drop language-less captions whose text also has a language tag."""
    tagged = {c.text for c in captions if c.lang is not None}
    return [c for c in captions if c.lang is not None or c.text not in tagged]


# ------------------------------------------------------------------ manifest


def load_caption_manifest(path: str | os.PathLike[str]) -> dict[str, list[Caption]]:
    """Read a JSONL caption manifest into ``{absolute image path: captions}``.

    Each non-blank line is ``{"path": str, "text": str, "lang": str | null}``
    (``lang`` optional; other keys are ignored). A relative ``path`` is
    relative to the manifest's directory; all paths are normalised with
    ``os.path.abspath`` (not symlink-resolved, matching
    :class:`~frozenlens.indexer.scan.FileEntry`). A path may have several
    lines; lines with blank text are skipped. Raises
    :class:`~frozenlens.errors.ManifestError` naming the file and line.
    """
    manifest = os.path.abspath(os.fspath(path))
    base = os.path.dirname(manifest)
    result: dict[str, list[Caption]] = {}
    try:
        f = open(manifest, "rb")  # noqa: SIM115 - closed by the `with f:` below (the open error has its own message)
    except OSError as exc:
        raise ManifestError(f"cannot read caption manifest: {exc.strerror or exc}",
                            path=manifest) from exc
    with f:
        for lineno, raw in enumerate(f, start=1):
            parsed = _parse_manifest_line(raw, manifest, lineno)
            if parsed is None:
                continue
            image, caption = parsed
            image_path = os.path.abspath(os.path.join(base, image))
            bucket = result.setdefault(image_path, [])
            if caption not in bucket:
                bucket.append(caption)
    return result


def _parse_manifest_line(
    raw: bytes, manifest: str, lineno: int
) -> tuple[str, Caption] | None:
    try:
        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8: {exc}", path=manifest, line=lineno) from exc
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise ManifestError(f"invalid JSON: {exc}", path=manifest, line=lineno) from exc
    if not isinstance(obj, dict):
        raise ManifestError("expected a JSON object", path=manifest, line=lineno)
    image, text, lang = obj.get("path"), obj.get("text"), obj.get("lang")
    if not isinstance(image, str) or not image.strip():
        raise ManifestError('"path" must be a non-empty string', path=manifest, line=lineno)
    if not isinstance(text, str):
        raise ManifestError('"text" must be a string', path=manifest, line=lineno)
    if lang is not None and not isinstance(lang, str):
        raise ManifestError('"lang" must be a string or null', path=manifest, line=lineno)
    cleaned = _clean(text)
    if cleaned is None:
        log.debug("%s:%d: blank caption skipped", manifest, lineno)
        return None
    return image, Caption(cleaned, _lang(lang), "manifest")


# ----------------------------------------------------------------- signature


def captions_signature(entry: FileEntry, manifest_captions: list[Caption]) -> str:
    """A short stable hash of everything captions are made from.

    Covers each sidecar's (path, size, mtime_ns) and the manifest captions'
    (text, lang, source), so a changed sidecar or manifest line changes the
    signature while the image itself is untouched. Order-independent; 16 hex
    characters.
    """
    payload = {
        "v": 1,
        "sidecars": sorted([s.path, s.size, s.mtime_ns] for s in entry.sidecars),
        "manifest": sorted([c.text, c.lang or "", c.source] for c in manifest_captions),
    }
    blob = json.dumps(payload, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("ascii")).hexdigest()[:16]
