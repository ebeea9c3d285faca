"""CLIP's byte-level BPE tokenizer without torch: the token ids of open_clip's ``SimpleTokenizer``.

open_clip's tokenizer module imports torch (its ``__call__`` returns a
tensor), which costs seconds in a fresh process whose only job is one text
query. :class:`ClipBpe` is the same algorithm (OpenAI's CLIP tokenizer, MIT
licence, as open_clip ships it), returning numpy int64 ids: ``ftfy`` fix,
HTML unescape, whitespace collapse, lower case; words split by CLIP's
pattern; byte-level BPE with the merges of ``bpe_simple_vocab_16e6.txt.gz``;
``<start_of_text>`` … ``<end_of_text>``, zero-padded or truncated to the
context length with ``<end_of_text>`` kept last.

Only the default configuration is reproduced (clean ``"lower"``, no extra
special tokens, no reduction mask); tests/unit/test_clip_bpe.py checks the ids
equal open_clip's on multilingual, long and odd strings. The vocabulary file
is open_clip's own, found without importing open_clip (:func:`default_vocab`).
Thread-safe: the word cache is a dict filled with deterministic values.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2


def default_vocab() -> Path | None:
    """open_clip's BPE vocabulary file, located without importing open_clip (``None`` if not installed)."""
    try:
        spec = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE
    return path if path.is_file() else None


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _clean(text: str) -> str:
    """open_clip's ``_clean_lower``: ftfy, HTML unescape (twice), collapse whitespace, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipBpe:
    """Token ids of open_clip's default ``SimpleTokenizer`` (numpy, no torch).

    Args:
        vocab: the gzipped merges file (default: open_clip's :func:`default_vocab`).
        context_length: ids per text (CLIP: 77).
    """

    def __init__(self, vocab: Path | None = None, context_length: int = 77) -> None:
        import regex

        path = vocab or default_vocab()
        if path is None:
            raise FileNotFoundError(f"{VOCAB_FILE} not found (it ships with open_clip_torch)")
        with gzip.open(path) as f:
            merges = f.read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]
        pairs = [tuple(m.split()) for m in merges]
        byte_chars = list(_bytes_to_unicode().values())
        vocab_list = byte_chars + [v + "</w>" for v in byte_chars] + ["".join(p) for p in pairs]
        specials = ["<start_of_text>", "<end_of_text>"]
        vocab_list += specials
        self.encoder = {tok: i for i, tok in enumerate(vocab_list)}
        self.bpe_ranks = {p: i for i, p in enumerate(pairs)}
        self._cache = {t: t for t in specials}
        self._pat = regex.compile(
            "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""", regex.IGNORECASE
        )
        self.sot, self.eot = self.encoder[specials[0]], self.encoder[specials[1]]
        self.context_length = context_length
        self.vocab_size = len(self.encoder)

    def _bpe(self, token: str) -> str:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = (*token[:-1], token[-1] + "</w>")
        pairs = set(zip(word, word[1:], strict=False))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:], strict=False))
        out = " ".join(word)
        self._cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """BPE ids of ``text`` without the start/end tokens."""
        byte_map = _bytes_to_unicode()
        ids: list[int] = []
        for token in self._pat.findall(_clean(text)):
            token = "".join(byte_map[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """int64 (n, context_length): ``<start_of_text>`` ids ``<end_of_text>``, zero-padded or truncated."""
        out = np.zeros((len(texts), self.context_length), np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            out[row, : len(ids)] = ids
        return out


__all__ = ["ClipBpe", "default_vocab"]
