"""Shared step of the scripts that package a trained projector into ``src/frozenlens/data/``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def read_config(source: Path) -> dict:
    """The training settings saved beside ``source`` (its ``.json``)."""
    return json.loads(source.with_suffix(".json").read_text())


def package(source: Path, out: Path, *, float32: tuple[str, ...], meta: dict[str, str],
            drop_prefix: str | None = None) -> str:
    """Write the safetensors ``source`` to ``out`` with ``meta`` as its metadata: float16 tensors
    except the names in ``float32``, those starting with ``drop_prefix`` left out → the file's SHA-256."""
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(source))
    kept = {k: (v.float() if k in float32 else v.to(torch.float16)).contiguous()
            for k, v in state.items() if drop_prefix is None or not k.startswith(drop_prefix)}
    save_file(kept, str(out), metadata=meta)
    return hashlib.sha256(out.read_bytes()).hexdigest()
