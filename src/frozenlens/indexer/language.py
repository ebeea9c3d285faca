"""Cheap language guess for captions that carry no language tag.

Two steps, both dictionary-free and fast: the Unicode script decides the
languages written in their own script (Japanese kana, Korean Hangul, Chinese
Han, Thai, Arabic, Cyrillic → Russian/Ukrainian, Greek, Hebrew); for Latin
script, counts of very common function words decide among the Latin-script
languages of the multilingual text towers. When the evidence is thin the
answer is ``None`` (unknown) rather than a guess. A tag given by the user
(manifest ``lang``, XMP ``xml:lang``) always wins over detection.
"""

from __future__ import annotations

import re
import unicodedata

_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(["the", "and", "of", "to", "in", "is", "on", "with", "a", "at", "this", "that", "my", "was", "for", "are", "from", "by", "an", "it", "his", "her"]),
    "de": frozenset(["der", "die", "das", "und", "ist", "ein", "eine", "im", "mit", "auf", "den", "dem", "nicht", "ich", "zu", "von", "des", "beim", "wir", "mein", "sich"]),
    "fr": frozenset(["le", "la", "les", "et", "est", "un", "une", "des", "du", "dans", "sur", "avec", "pour", "au", "aux", "ce", "qui", "je", "mon", "ma", "pas"]),
    "es": frozenset(["el", "la", "los", "las", "y", "es", "un", "una", "del", "en", "con", "por", "para", "que", "se", "mi", "al", "su", "lo"]),
    "it": frozenset(["il", "lo", "la", "gli", "le", "e", "è", "un", "una", "del", "della", "di", "che", "con", "per", "nel", "sul", "mio", "mia", "non"]),
    "nl": frozenset(["de", "het", "een", "en", "is", "van", "op", "met", "in", "dat", "die", "voor", "niet", "ik", "mijn", "zijn", "bij", "aan"]),
    "pt": frozenset(["o", "a", "os", "as", "e", "é", "um", "uma", "do", "da", "dos", "das", "em", "com", "para", "que", "no", "na", "meu", "minha", "não"]),
    "pl": frozenset(["i", "w", "na", "z", "jest", "się", "do", "to", "nie", "że", "o", "jak", "po", "ze", "przy", "mój", "moja"]),
    "tr": frozenset(["ve", "bir", "bu", "da", "de", "ile", "için", "çok", "ne", "gibi", "olan", "benim", "ama"]),
}
#: scripts that (for our purposes) name their language
_SCRIPT_LANGUAGE = {"hangul": "ko", "han": "zh", "thai": "th", "arabic": "ar", "greek": "el", "hebrew": "he"}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def _script_counts(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        if "HIRAGANA" in name or "KATAKANA" in name:
            key = "kana"
        elif "HANGUL" in name:
            key = "hangul"
        elif "CJK" in name:
            key = "han"
        else:
            key = name.split(" ")[0].lower()  # latin, cyrillic, arabic, thai, greek, hebrew ...
        counts[key] = counts.get(key, 0) + 1
    return counts


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of ``text``'s language, or ``None`` when unsure."""
    counts = _script_counts(text)
    total = sum(counts.values())
    if total == 0:
        return None
    if counts.get("kana", 0) > 0 and counts.get("kana", 0) + counts.get("han", 0) >= total / 2:
        return "ja"
    script, n = max(counts.items(), key=lambda kv: kv[1])
    if n < total / 2:
        return None
    if script in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[script]
    if script == "cyrillic":
        return "uk" if re.search(r"[іїєґІЇЄҐ]", text) else "ru"
    if script != "latin":
        return None
    words = [w.lower() for w in _WORD.findall(text)]
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    ranked = sorted(scores.values(), reverse=True)
    # need two function words and a clear lead over the runner-up
    if ranked[0] >= 2 and ranked[0] >= 1.5 * ranked[1]:
        return best
    return None
