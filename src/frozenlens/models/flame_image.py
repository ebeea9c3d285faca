"""FLAME's image tower: an open_clip ViT read before ``ln_post``, a per-token projector, a patch mean.

How a batch of pixels becomes one vector per image (FLAME, CVPR 2025; the
reference code is the open_clip fork ``MIV-XJTU/FLAME``, ``CustomTextCLIP.encode_image``):

1. The open_clip ``VisionTransformer`` runs its patch embedding (``conv1``),
   prepends the class token, adds the positional embedding, applies
   ``patch_dropout`` (a no-op in eval mode) and ``ln_pre``, then the
   transformer. ``ln_post``, ``proj`` and any attention pooling are NOT used:
   the tower drops them (:func:`build_flame_image_tower`).
2. Every token, the class token included, goes through the projector
   ``Linear(width, hidden) -> GELU -> Linear(hidden, H) -> LayerNorm(H)``
   (the fork's ``mm.0``, ``mm.2``, ``mm.3``; ``hidden = max(H, 4096)`` there,
   so ``H`` is read from ``mm.2``, ``hidden`` from ``mm.0``).
3. The image embedding is the mean over the patch tokens (``[:, 1:]``, the
   class token excluded); :meth:`FlameImageTower.embed` L2-normalises it and
   also pools the projected patch map on a 2x2 grid into region tokens.

Checkpoints (:func:`load_flame_checkpoint`) are the fork's training
checkpoints: ``{"epoch", "name", "state_dict", "optimizer", ...}`` whose
``state_dict`` keys carry DDP's ``module.`` prefix: ``visual.*`` (the open_clip
ViT, ``visual.proj`` and ``visual.ln_post.*`` included though unused),
``mm.{0,2,3}.*`` (the projector, at the top level beside ``visual``),
``logit_scale``, ``logit_bias`` and possibly the LLM (``text.*``). Only
``visual.*`` and ``mm.*`` are read; everything else is ignored.

Preprocessing is the released model's eval transform: shorter side to the
ViT's image size (bicubic), centre crop, OpenAI CLIP mean/std.

This module imports open_clip (slow) only when a tower is built; the tower is
safe to call from several threads (nothing is changed per call).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from frozenlens.errors import EncoderConfigError, WeightsNotFoundError

#: OpenAI CLIP normalisation, as FLAME's released checkpoints expect
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
#: region tokens per image: the projected patch map pooled to a TOKEN_GRID x TOKEN_GRID grid
TOKEN_GRID = 2
#: prefix of a checkpoint name that lives on the Hugging Face Hub
HUB_PREFIX = "hf-hub:"

_VISION = "visual."
_PROJECTOR = "mm."
#: ViT parameters FLAME never uses (kept in the fork's checkpoints): dropped before loading
_UNUSED_VISION = ("proj", "ln_post.weight", "ln_post.bias")


class FlameImageTower(torch.nn.Module):
    """An open_clip ViT without ``ln_post``/``proj`` + FLAME's token projector.

    ``visual`` is an open_clip ``VisionTransformer`` (batch-first transformer,
    open_clip >= 3); ``projector`` a ``Sequential`` of Linear(width, hidden),
    GELU, Linear(hidden, dim), LayerNorm(dim), so that its state-dict keys are
    the fork's ``mm.0.weight`` ... ``mm.3.bias``.
    """

    def __init__(self, visual: torch.nn.Module, projector: torch.nn.Sequential) -> None:
        super().__init__()
        self.visual = visual
        self.mm = projector
        size = tuple(visual.image_size)  # type: ignore[arg-type]
        if size[0] != size[1]:
            raise EncoderConfigError(f"FLAME's image tower needs a square input, this ViT takes {size}")
        #: side of the square input (pixels)
        self.image_size = int(size[0])
        #: patch grid (rows, cols)
        self.grid_size: tuple[int, int] = (int(visual.grid_size[0]), int(visual.grid_size[1]))  # type: ignore[index]
        #: embedding dimension H (the LLM's hidden size for released checkpoints)
        self.dim = int(projector[3].normalized_shape[0])  # type: ignore[index]

    @property
    def hidden_size(self) -> int:
        """The embedding dimension H (alias of :attr:`dim`: the LLM's hidden size it was trained for)."""
        return self.dim

    # ------------------------------------------------------------------ torch
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised pixels (N, 3, S, S) → pooled (N, H), patch tokens (N, n_patches, H).

        ``pooled`` is the mean of the patch tokens, not L2-normalised.
        """
        v = self.visual
        x = v.conv1(pixels)  # (N, width, gh, gw)
        x = x.flatten(2).transpose(1, 2)  # (N, P, width)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (N, 1, width)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (N, 1+P, width)
        x = v.patch_dropout(x)  # identity in eval mode
        x = v.ln_pre(x)
        x = v.transformer(x)  # open_clip >= 3: (N, L, D) in and out, whatever its internal layout
        x = self.mm(x)  # (N, 1+P, H): every token, the class token included
        tokens = x[:, 1:]  # (N, P, H)
        return tokens.mean(dim=1), tokens

    # ------------------------------------------------------------------ numpy
    def prepare(self, image: Image.Image) -> np.ndarray:
        """One PIL image → float32 (3, S, S): RGB, shorter side to S (bicubic), centre crop,
        [0, 1], OpenAI CLIP mean/std. Pure; safe to call from decoder threads."""
        from frozenlens.models.clip_preprocess import prepare_image

        pixels = prepare_image(image, self.image_size, "shortest", "bicubic")  # uint8 (S, S, 3)
        x = pixels.astype(np.float32) / np.float32(255.0)
        x = (x - np.asarray(OPENAI_MEAN, np.float32)) / np.asarray(OPENAI_STD, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)  # (3, S, S)

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Prepared float32 (N, 3, S, S) → (vectors float32 (N, H), regions float32 (N, 4, H)).

        Both L2-normalised: vectors are the patch means, regions the projected
        patch map average-pooled on a 2x2 grid (row-major: top-left, top-right,
        bottom-left, bottom-right). Thread-safe.
        """
        batch = np.asarray(batch)
        s = self.image_size
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise ValueError(f"expected a float32 batch (n, 3, {s}, {s}), got {batch.dtype} {batch.shape}")
        n_regions = TOKEN_GRID * TOKEN_GRID
        if batch.shape[0] == 0:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, n_regions, self.dim), np.float32)
        param = self.mm[0].weight  # type: ignore[index]
        with torch.inference_mode():
            x = torch.as_tensor(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(device=param.device, dtype=param.dtype)
            pooled, tokens = self(x)  # (N, H), (N, P, H)
            gh, gw = self.grid_size
            grid = tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, gh, gw)  # (N, H, gh, gw)
            cells = F.adaptive_avg_pool2d(grid, TOKEN_GRID).flatten(2).transpose(1, 2)  # (N, 4, H)
            vecs = F.normalize(pooled.float(), dim=-1)
            regions = F.normalize(cells.float(), dim=-1)
            return vecs.cpu().numpy(), regions.cpu().numpy()


# ---------------------------------------------------------------- building
def build_projector(width: int, hidden: int, dim: int) -> torch.nn.Sequential:
    """FLAME's projector: Linear(width, hidden), GELU, Linear(hidden, dim), LayerNorm(dim)."""
    return torch.nn.Sequential(
        torch.nn.Linear(width, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, dim),
        torch.nn.LayerNorm(dim),
    )


def vision_config(arch: str | Mapping[str, Any]) -> dict[str, Any]:
    """The open_clip model config of ``arch``: a registered name (``"ViT-B-16"``) or a
    config dict as in open_clip's ``model_configs/*.json`` (``embed_dim``, ``vision_cfg``)."""
    if isinstance(arch, Mapping):
        cfg = dict(arch)
    else:
        import open_clip

        found = open_clip.get_model_config(arch)
        if found is None:
            raise EncoderConfigError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")
        cfg = dict(found)
    vision = cfg.get("vision_cfg")
    if (
        not isinstance(vision, Mapping)
        or vision.get("timm_model_name")
        or not isinstance(vision.get("layers", 12), int)
    ):
        raise EncoderConfigError(f"FLAME's image tower needs an open_clip ViT; {_arch_name(arch)} is not one")
    return cfg


def build_flame_image_tower(arch: str | Mapping[str, Any], *, dim: int, hidden: int | None = None) -> FlameImageTower:
    """A randomly initialised tower: ``arch``'s ViT + a projector to ``dim``
    (``hidden`` defaults to ``dim``). In eval mode, gradients off, on the CPU."""
    from open_clip.model import _build_vision_tower  # the builder open_clip.create_model uses

    cfg = vision_config(arch)
    vision = dict(cfg["vision_cfg"])
    if vision.get("attentional_pool"):
        raise EncoderConfigError(f"FLAME's image tower has no attention pooling; {_arch_name(arch)} uses it")
    visual = _build_vision_tower(int(cfg.get("embed_dim", 512)), vision, bool(cfg.get("quick_gelu", False)))
    visual.ln_post = torch.nn.Identity()  # unused by FLAME
    visual.proj = None
    width = int(visual.conv1.out_channels)
    tower = FlameImageTower(visual, build_projector(width, hidden or dim, dim))
    tower.eval()
    tower.requires_grad_(False)
    return tower


# ----------------------------------------------------------------- loading
def load_flame_checkpoint(
    path: str | os.PathLike[str],
    *,
    arch: str | Mapping[str, Any] | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> FlameImageTower:
    """Load a FLAME image tower (ViT + projector) from a ``.pt`` checkpoint.

    ``path``: a local file, or ``hf-hub:<org>/<repo>/<file>`` (downloaded
    through the Hugging Face Hub cache, ``cache_dir`` if given). ``arch``: the
    open_clip ViT the checkpoint was trained with (``"ViT-B-16"``,
    ``"ViT-L-14"``) or a model config dict. The embedding size H is read from
    the projector. ``arch=None`` reads the ViT from the checkpoint's shapes
    (:func:`infer_arch`). The tower comes back in eval mode on ``device``.

    Raises :class:`WeightsNotFoundError` when the file is missing or cannot be
    downloaded, :class:`EncoderConfigError` (one line, naming the first
    offending key) when the checkpoint cannot be read safely
    (``torch.load(weights_only=True)``) or does not fit ``arch`` + projector.
    """
    file = _resolve(path, cache_dir)
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe pickle, truncated or not a torch file
        raise EncoderConfigError(f"cannot read FLAME checkpoint {file}: {_load_error(exc)}") from exc
    vision, projector = split_flame_state_dict(raw, str(file))
    if arch is None:
        arch = infer_arch(vision, str(file))
    hidden = _shape(projector, "0.weight")[0]  # mm.0: (hidden, width)
    dim = _shape(projector, "2.weight")[0]  # mm.2: (H, hidden)
    tower = build_flame_image_tower(arch, dim=dim, hidden=hidden)
    state = {f"{_VISION}{k}": v for k, v in vision.items()} | {f"{_PROJECTOR}{k}": v for k, v in projector.items()}
    _check_fits(tower, state, arch, str(file))
    try:
        tower.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # _check_fits should have caught it
        raise EncoderConfigError(f"{file} does not fit {_arch_name(arch)}: {_first_line(exc)}") from exc
    return tower.to(torch.device(device))


#: (width, patch, blocks, image size) of the ViTs FLAME was released with → open_clip names
_KNOWN_VITS: dict[tuple[int, int, int, int], str] = {
    (768, 16, 12, 224): "ViT-B-16", (768, 32, 12, 224): "ViT-B-32",
    (1024, 14, 24, 224): "ViT-L-14", (1024, 14, 24, 336): "ViT-L-14-336",
}


def infer_arch(vision: Mapping[str, torch.Tensor], where: str = "checkpoint") -> str:
    """The open_clip ViT name whose shapes a checkpoint's ViT state dict has (``conv1.``, ``positional_embedding``...)."""
    conv, pos = vision.get("conv1.weight"), vision.get("positional_embedding")
    blocks = {k.split(".")[2] for k in vision if k.startswith("transformer.resblocks.")}
    if conv is None or pos is None or conv.ndim != 4:
        raise EncoderConfigError(f"{where}: no ViT patch embedding (visual.conv1) to read the architecture from")
    side = round((pos.shape[0] - 1) ** 0.5) * int(conv.shape[-1])
    key = (int(conv.shape[0]), int(conv.shape[-1]), len(blocks), side)
    if key not in _KNOWN_VITS:
        raise EncoderConfigError(
            f"{where}: a ViT of width {key[0]}, patch {key[1]}, {key[2]} blocks, {key[3]} px is not a known "
            "FLAME architecture; pass arch= (an open_clip name or model config)"
        )
    return _KNOWN_VITS[key]


def split_flame_state_dict(
    checkpoint: Any, where: str = "checkpoint"
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A loaded FLAME checkpoint → (ViT state dict, projector state dict), prefixes stripped.

    Unwraps ``{"state_dict": ...}``, strips DDP's ``module.`` prefix, keeps
    ``visual.*`` (less ``proj``/``ln_post``, unused by FLAME) and ``mm.*``;
    ignores everything else (``text.*`` LLM weights, ``logit_scale`` ...).
    """
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise EncoderConfigError(f"{where} holds a {type(checkpoint).__name__}, not a state dict")
    vision: dict[str, torch.Tensor] = {}
    projector: dict[str, torch.Tensor] = {}
    for key, value in checkpoint.items():
        name = str(key).removeprefix("module.")
        if name.startswith(_VISION):
            target, name = vision, name[len(_VISION) :]
            if name in _UNUSED_VISION:
                continue
        elif name.startswith(_PROJECTOR):
            target, name = projector, name[len(_PROJECTOR) :]
        else:
            continue
        if not isinstance(value, torch.Tensor):
            raise EncoderConfigError(f"{where}: {key} is a {type(value).__name__}, not a tensor")
        target[name] = value
    if not vision:
        raise EncoderConfigError(f"{where} holds no image tower (no 'visual.*' keys): not a FLAME checkpoint")
    if not projector:
        raise EncoderConfigError(f"{where} holds no projector (no 'mm.*' keys): not a FLAME checkpoint")
    return vision, projector


def _resolve(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None) -> Path:
    """A local checkpoint file, downloading ``hf-hub:<org>/<repo>/<file>`` first."""
    name = os.fspath(path)
    if name.startswith(HUB_PREFIX):
        parts = name[len(HUB_PREFIX) :].strip("/").split("/")
        if len(parts) < 3 or not all(parts):
            raise EncoderConfigError(f"{name!r}: a hub checkpoint is named 'hf-hub:<org>/<repo>/<file>'")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        from huggingface_hub import hf_hub_download

        try:
            local = hf_hub_download(repo_id, filename, cache_dir=os.fspath(cache_dir) if cache_dir else None)
        except Exception as exc:  # offline, not cached, no such repo/file, HTTP errors
            raise WeightsNotFoundError(
                f"FLAME checkpoint {name} is not cached and could not be downloaded "
                f"[{type(exc).__name__}]; download it and pass its path"
            ) from exc
        return Path(local)
    file = Path(name).expanduser()
    if not file.is_file():
        raise WeightsNotFoundError(f"FLAME checkpoint not found: {file}")
    return file


def _check_fits(tower: FlameImageTower, state: Mapping[str, torch.Tensor], arch: Any, where: str) -> None:
    """Raise a one-line :class:`EncoderConfigError` at the first key that is missing,
    unexpected or of another shape."""
    expected = tower.state_dict()
    what = f"FLAME {_arch_name(arch)} + projector ({tower.mm[0].in_features}→{tower.mm[0].out_features}→{tower.dim})"
    hint = _vit_hint(state)
    for key, want in expected.items():
        if key not in state:
            raise EncoderConfigError(f"{where} does not fit {what}: key {key} is missing{hint}")
        got = tuple(state[key].shape)
        if got != tuple(want.shape):
            raise EncoderConfigError(
                f"{where} does not fit {what}: {key} has shape {got}, expected {tuple(want.shape)}{hint}"
            )
    for key in state:
        if key not in expected:
            raise EncoderConfigError(f"{where} does not fit {what}: unexpected key {key}{hint}")


def _vit_hint(state: Mapping[str, torch.Tensor]) -> str:
    """``" (the checkpoint's ViT: width 1024, patch 14, 24 blocks)"`` when it can be read."""
    conv = state.get(f"{_VISION}conv1.weight")
    if conv is None or conv.ndim != 4:
        return ""
    blocks = {k.split(".")[3] for k in state if k.startswith(f"{_VISION}transformer.resblocks.")}
    return f" (the checkpoint's ViT: width {conv.shape[0]}, patch {conv.shape[-1]}, {len(blocks)} blocks)"


def _shape(projector: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    """The shape of the 2-D projector weight ``mm.<key>``, or a one-line error."""
    if key not in projector:
        raise EncoderConfigError(
            f"the checkpoint's projector has no {_PROJECTOR}{key}; FLAME's is "
            "mm.0 Linear, mm.1 GELU, mm.2 Linear, mm.3 LayerNorm"
        )
    shape = tuple(int(s) for s in projector[key].shape)
    if len(shape) != 2:
        raise EncoderConfigError(f"the checkpoint's {_PROJECTOR}{key} has shape {shape}, expected a 2-D Linear weight")
    return shape


def _arch_name(arch: str | Mapping[str, Any]) -> str:
    return arch if isinstance(arch, str) else "the given ViT config"


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message, at most 200 characters."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _load_error(exc: BaseException) -> str:
    """torch.load's failure in one short line (its weights-only refusals run to a paragraph)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        paragraph = text.split(marker, 1)[1].strip().split("\n\n", 1)[0]
        detail = " ".join(paragraph.split())  # whitespace collapsed
        detail = detail.split(". ", 1)[0].rstrip(".")
        return _first_line(ValueError(f"refused by torch.load(weights_only=True): {detail}"))
    return _first_line(ValueError(text.split(". ", 1)[0]))
