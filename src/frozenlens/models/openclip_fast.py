"""Building an open_clip CLIP from a local checkpoint without initialising it first, weights mapped from disk.

open_clip's ``create_model(arch, pretrained=<file>)`` initialises every
parameter randomly (~1 s for a ViT-B/32), reads the whole checkpoint into
memory and copies it into the parameters: two copies of the weights at the
peak, all of them resident, even when a call needs only the text tower.

:func:`mapped_clip` builds the module on the ``meta`` device (no memory, no
initialisation), maps the checkpoint (``torch.load(mmap=True)``) and assigns
its tensors as the parameters. Pages are read when first touched: a text
query pages in the text tower, never the image tower's weights. It only takes
the cases it can prove right — a plain ``open_clip.CLIP`` on the CPU whose
checkpoint holds exactly the model's keys and shapes — and returns ``None``
for anything else (the caller then uses open_clip's own loading). The one
non-persistent buffer of a CLIP, the text tower's causal mask, is rebuilt as
open_clip builds it. tests/unit/test_openclip_encoder.py checks that both
ways give the same embeddings.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_TORCH_FILES = (".pt", ".pth", ".bin")


def mapped_clip(arch: str, checkpoint: Path, *, quick_gelu: bool, preprocess_cfg: dict[str, Any],
                cache_dir: str | None) -> Any | None:
    """A CLIP whose parameters are the checkpoint's tensors mapped from disk, or ``None`` (not applicable)."""
    import open_clip
    import torch

    if checkpoint.suffix not in _TORCH_FILES:
        return None
    cfg = open_clip.get_model_config(arch) or {}
    text_cfg = cfg.get("text_cfg", {})
    if cfg.get("custom_text") or "hf_model_name" in text_cfg or "multimodal_cfg" in cfg:
        return None
    try:
        state = torch.load(checkpoint, mmap=True, weights_only=True, map_location="cpu")
    except (RuntimeError, OSError, ValueError) as exc:  # not a zip-format torch file (e.g. a TorchScript archive)
        log.debug("%s cannot be mapped (%s): loading it whole", checkpoint, exc)
        return None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        return None
    state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"), _quiet_random_init():
        model = open_clip.create_model(arch, pretrained=None, device="meta", force_quick_gelu=quick_gelu,
                                       force_preprocess_cfg=preprocess_cfg, cache_dir=cache_dir)
    if type(model) is not open_clip.CLIP:
        return None
    expected = model.state_dict()
    if set(expected) != set(state) or any(
        not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape or state[k].dtype != v.dtype
        for k, v in expected.items()
    ):
        return None
    model.load_state_dict(state, strict=True, assign=True)
    mask = getattr(model, "attn_mask", None)
    if isinstance(mask, torch.Tensor) and mask.is_meta:
        n = mask.shape[0]
        model.attn_mask = torch.empty(n, n).fill_(float("-inf")).triu_(1)  # open_clip's build_causal_mask
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    return model


class _quiet_random_init:
    """open_clip warns "initialized randomly" for a model built without weights; here they follow at once.

    A filter on open_clip's records only, added and removed around the call
    (the root logger's level and other records are left alone).
    """

    def __enter__(self) -> None:
        self._filter = _DropRandomInit()
        logging.getLogger().addFilter(self._filter)

    def __exit__(self, *exc: object) -> None:
        logging.getLogger().removeFilter(self._filter)


class _DropRandomInit(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


__all__ = ["mapped_clip"]
