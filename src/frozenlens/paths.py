"""File paths as text: one lossless, reversible, valid-UTF-8 form.

Inside Python a path stays what the OS gave (:func:`os.fsdecode`: a ``str``
in which every byte that is not valid UTF-8 is a lone surrogate
U+DC80..U+DCFF), so it always reopens the same file. SQLite, PostgreSQL,
JSON and a terminal cannot carry such a string, nor show a newline or a
right-to-left override in a name unambiguously, so everything that leaves
Python — the database, the CLI, the JSON API, the page, log lines — uses
:func:`to_text`, and :func:`from_text` gives the exact path back.

The text form (the same characters for storing and for showing):

=========================================  =====================================
in the path                                in the text
=========================================  =====================================
``\\`` (backslash)                          ``\\\\``
newline, tab, carriage return              ``\\n`` ``\\t`` ``\\r``
a byte that is not UTF-8 (U+DC80..U+DCFF)   ``\\xNN`` (the byte, e.g. ``\\xe9``)
other ASCII controls 0x00-0x1F, 0x7F       ``\\xNN``
C1 controls U+0080..U+009F, other lone     ``\\uNNNN``
surrogates, U+2028 U+2029 (line/paragraph
separators), U+202A..U+202E and
U+2066..U+2069 (bidirectional controls)
anything else                              itself
=========================================  =====================================

Hex digits are written in lower case. Every backslash in the text starts one
of these escapes, so the form is unambiguous; an ordinary path is its own
text (only backslashes and control characters change). The text has no
control characters, no lone surrogates and no bidi/line-separator controls.
:func:`from_text` accepts exactly what :func:`to_text` writes (hex digits in
either case) and raises :class:`ValueError` on anything else.

The ``\\xNN``, ``\\n``, ``\\t``, ``\\r`` and ``\\\\`` escapes are those of bash's
``$'...'`` quoting, so a path printed by the CLI can be pasted back as
``$'<text>'``. For bytes: ``os.fsencode(from_text(text))``.
"""

from __future__ import annotations

import os
import re

__all__ = ["OS_PATH_TEXT_PATTERN", "TEXT_PATTERN", "from_text", "from_user", "to_text"]

#: A regular expression (Python ``re``, Rust ``regex`` and ECMA-262 alike) that
#: matches exactly the texts :func:`from_text` accepts, lone surrogates aside
#: (those cannot reach a UTF-8 API): for schemas of fields holding a path text.
def _text_pattern(x_escapes: str) -> str:
    return (
        r"^(?:[^\\\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]"
        r"|\\[\\ntr]"
        rf"|\\x(?:{x_escapes})"
        r"|\\u(?:00[89][0-9a-fA-F]|[dD][89abAB][0-9a-fA-F]{2}|[dD][cC][0-7][0-9a-fA-F]|[dD][d-fD-F][0-9a-fA-F]{2}"
        r"|202[89a-eA-E]|206[6-9]))*$"
    )


_X_NOT_NUL = r"0[1-8bBcCeEfF]|1[0-9a-fA-F]|7[fF]|[89a-fA-F][0-9a-fA-F]"
TEXT_PATTERN = _text_pattern("00|" + _X_NOT_NUL)
#: :data:`TEXT_PATTERN` without ``\x00``: the text of a path the OS can hold (no
#: NUL byte), for request fields that name a real file or folder.
OS_PATH_TEXT_PATTERN = _text_pattern(_X_NOT_NUL)

#: characters that :func:`to_text` escapes
_NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028-\u202e\u2066-\u2069]")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_SHORT_BACK = {"\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    short = _SHORT.get(ch)
    if short is not None:
        return short
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # an undecodable byte (surrogateescape)
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}"


def to_text(path: str | bytes) -> str:
    """The text form of an OS path (``str`` from :func:`os.fsdecode`, or ``bytes``).

    Valid UTF-8, no control characters; :func:`from_text` inverts it.
    """
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if _NEEDS_ESCAPE.search(path) is None:
        return path
    return _NEEDS_ESCAPE.sub(_escape, path)


def _is_u_escaped(cp: int) -> bool:
    """Code points written as ``\\uNNNN`` (never ``\\xNN`` nor themselves)."""
    return (
        0x80 <= cp <= 0x9F
        or (0xD800 <= cp <= 0xDFFF and not 0xDC80 <= cp <= 0xDCFF)
        or 0x2028 <= cp <= 0x202E
        or 0x2066 <= cp <= 0x2069
    )


def from_text(text: str) -> str:
    """The OS path (surrogateescape ``str``) whose :func:`to_text` is ``text``.

    Raises :class:`ValueError` naming the position of a malformed or
    non-canonical escape, or of a character that must have been escaped.
    """
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "\\":
            if _NEEDS_ESCAPE.match(ch):
                raise ValueError(f"unescaped control character U+{ord(ch):04X} at position {i} of a path text")
            out.append(ch)
            i += 1
            continue
        kind = text[i + 1 : i + 2]
        if kind in _SHORT_BACK:
            out.append(_SHORT_BACK[kind])
            i += 2
            continue
        width = {"x": 2, "u": 4}.get(kind)
        digits = text[i + 2 : i + 2 + width] if width else ""
        if not width or len(digits) != width or not set(digits) <= _HEX:
            raise ValueError(f"malformed escape {text[i : i + 6]!r} at position {i} of a path text")
        cp = int(digits, 16)
        if kind == "x":
            if cp >= 0x80:
                out.append(chr(0xDC00 + cp))
            elif (cp < 0x20 or cp == 0x7F) and chr(cp) not in _SHORT:
                out.append(chr(cp))
            else:
                raise ValueError(f"escape {text[i : i + 4]!r} at position {i} is not used for that character")
        elif _is_u_escaped(cp):
            out.append(chr(cp))
        else:
            raise ValueError(f"escape {text[i : i + 6]!r} at position {i} is not used for that character")
        i += 2 + width
    return "".join(out)


def from_user(arg: str) -> str:
    """A path the user typed: the OS path itself when it exists, else its text
    form (as printed by the CLI) when that parses; otherwise ``arg`` unchanged."""
    if os.path.lexists(arg):
        return arg
    try:
        return from_text(arg)
    except ValueError:
        return arg
