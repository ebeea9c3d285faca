"""FLAME's caption cleaning and prompt templates (torch-free data and string code).

FLAME (Cao, Wei, Ma; CVPR 2025) reads a caption with a frozen LLM through a
prompt that ends in one or more *facet spans*; each span asks for "just one
word" and ends with ``:"``, and the LLM's hidden state at that closing quote is
the facet's embedding. Two templates:

- :data:`SHORT`, one facet: queries and short captions;
- :data:`LONG`, seven facets after one shared prefix: long captions.

:data:`LONG_REFERENCE` is :data:`LONG` with the literal ``<s>`` the reference
code puts before the first facet span, for reproducing FLAME's released
checkpoints (which also number positions straight through the spans: the text
tower's ``continue`` mode).
"""

from __future__ import annotations

from dataclasses import dataclass

#: the seven facet questions of FLAME's long prompt, in order
FACETS: tuple[str, ...] = (
    "this image description means in just one word:\"",
    "the category of the main object in this image means in just one word:\"",
    "the prominent characteristic or pattern of the main object in this image means in just one word:\"",
    "the category of the minor object in this image means in just one word:\"",
    "the prominent characteristic or pattern of the minor object in this image means in just one word:\"",
    "the primary action or event taking place in this image means in just one word:\"",
    "the overall atmosphere or emotion of this image means in just one word:\"",
)


def clean_caption(text: str) -> str:
    """FLAME's caption cleaning.

    Double quotes become single quotes (the prompt quotes the caption); a
    trailing ``?`` becomes ``.``; a ``.`` is appended unless the caption
    already ends in ``.``, ``?``, ``"`` or ``'``. Surrounding white space is
    dropped and lone surrogates (undecodable file-system text) become U+FFFD.
    """
    text = text.encode("utf-8", "replace").decode("utf-8").strip().replace('"', "'")
    if text.endswith("?"):
        text = text[:-1] + "."
    if not text.endswith((".", "?", '"', "'")):
        text += "."
    return text


@dataclass(frozen=True)
class PromptTemplate:
    """A shared prefix (holding ``{caption}``) followed by facet spans.

    Each span starts with its separating space and ends with ``:"``; the text
    tower takes one embedding at each span's last token.
    """

    name: str
    prefix: str
    facets: tuple[str, ...]

    def __post_init__(self) -> None:
        if "{caption}" not in self.prefix:
            raise ValueError(f"prompt {self.name!r}: the prefix has no {{caption}} slot")
        if not self.facets or not all(f.endswith(':"') for f in self.facets):
            raise ValueError(f"prompt {self.name!r}: every facet span must end with ':\"'")

    @property
    def k(self) -> int:
        """How many facets (embeddings) one caption yields."""
        return len(self.facets)

    def render_prefix(self, caption: str) -> str:
        """The prefix with the cleaned caption in place."""
        return self.prefix.replace("{caption}", clean_caption(caption))

    def render(self, caption: str, facet: int) -> str:
        """The prompt of one facet as a text of its own (prefix + that span)."""
        return self.render_prefix(caption) + self.facets[facet]


SHORT = PromptTemplate(
    name="short",
    prefix='Image description : "{caption}" . After thinking step by step ,',
    facets=(" " + FACETS[0],),
)

LONG = PromptTemplate(
    name="long",
    prefix='Detailed Image description : "{caption}" . After thinking step by step ,',
    facets=tuple(" " + f for f in FACETS),
)

LONG_REFERENCE = PromptTemplate(
    name="long-reference",
    prefix=LONG.prefix,
    facets=("<s> " + FACETS[0], *LONG.facets[1:]),
)

TEMPLATES: dict[str, PromptTemplate] = {t.name: t for t in (SHORT, LONG, LONG_REFERENCE)}
