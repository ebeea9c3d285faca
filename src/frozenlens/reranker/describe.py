"""What a reranker head is, in words and as JSON: ``frozenlens reranker info``, the server, docs.

:func:`describe_head` reads a head directory (an index, or a training
``--out`` folder) and counts the parameters of every :data:`PRESETS` size for
the head's encoder; :class:`HeadDescription` gives the result as JSON
(:meth:`~HeadDescription.to_json`) and as lines of text
(:meth:`~HeadDescription.lines`). Nothing here prints. Counting parameters
builds the networks, so this imports torch when called (not when imported).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frozenlens.models.base import EncoderIdentity
from frozenlens.reranker import CONFIG_NAME
from frozenlens.reranker.options import PRESETS

#: the encoder presets are sized for when neither a head nor an index names one: the packaged ``lite``
DEFAULT_IDENTITY = EncoderIdentity("lite", "1", 512, 1280)


@dataclass(frozen=True)
class HeadDescription:
    """A head (or its absence) in ``directory``, and the preset sizes for its encoder.

    head: the head's config file, config, parameter counts and training summary
        (``None``: no head there); encoder: the encoder the head (or the
        index) uses; presets: per preset name, its parameter counts
        (``total``, ``cross_attention_blocks``, ...) for that encoder.
    """

    directory: Path
    head: dict[str, Any] | None
    encoder: EncoderIdentity
    presets: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        """``{"head": ..., "encoder": ..., "presets": ...}`` (values JSON-ready but paths: ``default=str``)."""
        return {"head": self.head, "encoder": self.encoder.as_dict(), "presets": self.presets}

    def lines(self) -> list[str]:
        """The description as lines of text (``frozenlens reranker info``)."""
        out: list[str] = []
        if self.head is None:
            out.append(f"no reranker head in {self.directory}")
        else:
            c = self.head["config"]
            out.append(f"head:       {self.head['path']}")
            out.append(f"encoder:    {self.encoder.describe()}")
            out.append(f"preset:     {c['preset']} (d_model {c['d_model']}, {c['layers']} layers, {c['heads']} heads)")
            out.append(f"parameters: {self.head['parameters']['total']:,}")
            rep = self.head["summary"].get("report") or {}
            if rep:
                out.append(f"validation: R@1 {rep['val_first_stage'].get('r1', 0):.3f} (first stage) -> "
                           f"{rep['val_reranked'].get('r1', 0):.3f} (reranked)")
        out.append(f"presets for {self.encoder.describe()}:")
        for name, counts in self.presets.items():
            out.append(f"  {name:6s} {counts['total']:>12,} parameters "
                       f"({counts['cross_attention_blocks']:,} in cross-attention blocks)")
        return out


def has_head(directory: str | os.PathLike[str]) -> bool:
    """True when ``directory`` holds a head's config file."""
    return (Path(directory) / CONFIG_NAME).is_file()


def describe_head(directory: str | os.PathLike[str], index_identity: EncoderIdentity | None = None) -> HeadDescription:
    """The head in ``directory`` (if any) and the preset sizes for its encoder.

    The encoder is the head's own; without a head, ``index_identity`` (the
    encoder of the index in ``directory``, which the caller knows), else
    :data:`DEFAULT_IDENTITY`.
    """
    from frozenlens.reranker.head import Reranker
    from frozenlens.reranker.model import FusionHead, count_parameters, preset_config

    where = Path(directory)
    head_doc: dict[str, Any] | None = None
    if has_head(where):
        head = Reranker.load(where)
        enc = head.config.encoder
        identity = EncoderIdentity(enc.get("name", "?"), enc.get("version", "?"), head.config.dim,
                                   head.config.visual_dim)
        head_doc = {"path": str(where / CONFIG_NAME), "config": head.config.as_dict(),
                    "parameters": head.parameters(), "summary": head.summary}
    else:
        identity = index_identity or DEFAULT_IDENTITY
    presets = {
        name: count_parameters(FusionHead(preset_config(name, dim=identity.dim, visual_dim=identity.visual_dim,
                                                        encoder=identity.as_dict())))
        for name in PRESETS
    }
    return HeadDescription(where, head_doc, identity, presets)
