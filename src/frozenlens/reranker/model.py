"""The FrEVL fusion head: a small network over frozen embeddings that scores
(query, image) pairs for reranking.

After Bourigault & Bourigault, *FrEVL* (arXiv 2508.04469), with one change the
paper's public code needs: it feeds one pooled vector per modality, so its
attention has a single key and collapses to a linear map. Here both sides are
real token sequences:

* image side (I tokens): the image's global semantic embedding, optionally its
  visual (image→image) embedding, and the encoder's region tokens (a 2x2 grid
  pooled from the image tower's feature map, stored fp16 beside the index);
* text side (M tokens): the query's global embedding and the embeddings of its
  sentences (long queries) or words (short ones), embedded by the same frozen
  text tower (see :mod:`frozenlens.reranker.features`).

Each token is projected to ``d_model`` by a GELU linear layer, tagged with a
learned slot embedding, then L layers of **bidirectional cross-attention**
(image tokens query text tokens and text tokens query image tokens, both from
the previous layer's states; pre-norm residual blocks; optional self-attention;
a feed-forward block) mix the two. The global slots' outputs h_v, h_t are fused
as ``[h_v; h_t; h_v * h_t; |h_v - h_t|]`` and a 2-layer MLP with dropout gives
a correction ``delta``. The head's score is

    score = w * cos(query, image) + delta      (``residual_score=True``, default)
    score = delta                              (``residual_score=False``)

with a learned weight ``w`` (initially 1) and ``delta`` initially 0: the head
learns how to *correct* the frozen first-stage cosine, a head that has
learned nothing leaves the first-stage order intact, and the score stays on
the cosine scale (``min_score`` keeps its meaning). Training
turns scores into logits with a learned temperature (``logit_scale``).

Shapes: B pairs, I image tokens, M text tokens, d = d_model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

# the presets' owner is the torch-free options module; preset_config below reads them
from frozenlens.reranker.options import PRESETS

Fusion = Literal["full", "concat"]

#: tokens per side the slot embeddings are sized for
MAX_IMAGE_SLOTS = 8
MAX_TEXT_SLOTS = 16


@dataclass(frozen=True)
class RerankerConfig:
    """Architecture of a head. ``dim``/``visual_dim``/``encoder`` are filled
    from the encoder the head is trained for; the rest comes from a preset."""

    dim: int  # semantic dimension: query, text tokens, image global and region tokens
    visual_dim: int  # image→image dimension (used only when use_visual)
    encoder: dict[str, Any] = field(default_factory=dict)  # EncoderIdentity.as_dict()
    preset: str = "cpu"
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 2
    mlp_hidden: int = 128
    dropout: float = 0.1
    self_attention: bool = False
    cross_attention: bool = True  # ablation: False = no cross-attention at all
    fusion: Fusion = "full"  # ablation: "concat" = [h_v; h_t] only
    use_tokens: bool = True  # ablation: False = length-1 sequences (the paper's code)
    use_visual: bool = True
    residual_score: bool = True

    def __post_init__(self) -> None:
        if self.dim < 1 or self.visual_dim < 0 or self.d_model < 1 or self.layers < 0:
            raise ValueError("dimensions must be positive")
        if self.heads < 1 or self.d_model % self.heads:
            raise ValueError(f"d_model {self.d_model} must be a multiple of heads {self.heads}")
        if self.fusion not in ("full", "concat"):
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown reranker config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def preset_config(name: str, *, dim: int, visual_dim: int, encoder: dict[str, Any], **overrides: Any) -> RerankerConfig:
    """A :class:`RerankerConfig` from a preset name plus the encoder's facts and overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown reranker preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(RerankerConfig(dim=dim, visual_dim=visual_dim, encoder=dict(encoder), preset=name,
                                  **PRESETS[name]), **overrides)


@dataclass
class PairBatch:
    """B (query, image) pairs as padded token tensors (float32 unless noted).

    text:        (B, M, dim)   slot 0 = the query's global embedding
    text_mask:   (B, M) bool   True = real token
    image:       (B, I, dim)   slot 0 = image global embedding, then region tokens
    image_mask:  (B, I) bool
    visual:      (B, visual_dim) or None
    cosine:      (B,)          first-stage cos(query, image)
    """

    text: torch.Tensor
    text_mask: torch.Tensor
    image: torch.Tensor
    image_mask: torch.Tensor
    visual: torch.Tensor | None
    cosine: torch.Tensor


class Projection(nn.Module):
    """GELU linear projection of frozen embeddings to d_model."""

    def __init__(self, d_in: int, d_model: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(x))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, mult: int, dropout: float) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_model * mult)
        self.down = nn.Linear(d_model * mult, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Attend(nn.Module):
    """x attends to y (pre-norm residual): x + MHA(LN(x), LN(y), LN(y)).

    Pre-norm: the post-norm variant did not train here (a 2-layer head stayed
    at chance on the synthetic matching task that a pre-norm one solves)."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, heads, dropout=dropout, batch_first=True)
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_pad: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(y)
        out, _ = self.attn(self.norm_q(x), kv, kv, key_padding_mask=y_pad, need_weights=False)  # (B, Lx, d)
        return x + self.dropout(out)


class ModalityBlock(nn.Module):
    """One modality's half of a layer: [self-attention], cross-attention, feed-forward."""

    def __init__(self, cfg: RerankerConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = Attend(d, cfg.heads, cfg.dropout) if cfg.self_attention else None
        self.cross_attn = Attend(d, cfg.heads, cfg.dropout) if cfg.cross_attention else None
        self.ffn = FeedForward(d, cfg.ffn_mult, cfg.dropout)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, x_pad: torch.Tensor, other: torch.Tensor, other_pad: torch.Tensor) -> torch.Tensor:
        if self.self_attn is not None:
            x = self.self_attn(x, x, x_pad)
        if self.cross_attn is not None:
            x = self.cross_attn(x, other, other_pad)  # this modality queries the other
        return x + self.ffn(self.norm(x))


class CrossLayer(nn.Module):
    """Bidirectional cross-attention: both sides read the other's previous state."""

    def __init__(self, cfg: RerankerConfig) -> None:
        super().__init__()
        self.image = ModalityBlock(cfg)
        self.text = ModalityBlock(cfg)

    def forward(
        self, v: torch.Tensor, v_pad: torch.Tensor, t: torch.Tensor, t_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(v, v_pad, t, t_pad), self.text(t, t_pad, v, v_pad)


class FusionHead(nn.Module):
    """The FrEVL reranking head (see the module docstring)."""

    def __init__(self, cfg: RerankerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.text_proj = Projection(cfg.dim, d)
        self.image_proj = Projection(cfg.dim, d)
        self.visual_proj = Projection(cfg.visual_dim, d) if cfg.use_visual and cfg.visual_dim else None
        self.image_slots = nn.Embedding(MAX_IMAGE_SLOTS, d)  # 0 global, 1 visual, 2.. regions
        self.text_slots = nn.Embedding(2, d)  # 0 global, 1 sentence/word token
        self.layers = nn.ModuleList(CrossLayer(cfg) for _ in range(cfg.layers))
        self.norm_v = nn.LayerNorm(d)  # final norms of the pre-norm stack
        self.norm_t = nn.LayerNorm(d)
        fused = 4 * d if cfg.fusion == "full" else 2 * d
        self.mlp = nn.Sequential(
            nn.Linear(fused, cfg.mlp_hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.mlp_hidden, 1)
        )
        self.cosine_weight = nn.Parameter(torch.tensor(1.0))  # how much of the first-stage cosine to keep
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.05)))  # training temperature
        self.align_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # contrastive term temperature
        # small slot embeddings: at N(0, 1) they drown the projected content
        # (unit-norm inputs give small projections) and the head does not train
        nn.init.normal_(self.image_slots.weight, std=0.02)
        nn.init.normal_(self.text_slots.weight, std=0.02)
        nn.init.zeros_(self.mlp[-1].weight)  # start as the identity correction: delta = bias = 0
        nn.init.zeros_(self.mlp[-1].bias)

    # -- building the sequences ------------------------------------------------
    def embed_sides(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ (v (B, I', d), v_pad (B, I') bool, t (B, M', d), t_pad (B, M') bool); pad True = ignore."""
        cfg = self.cfg
        image, image_mask, text, text_mask = batch.image, batch.image_mask, batch.text, batch.text_mask
        if not cfg.use_tokens:  # ablation: one vector per modality
            image, image_mask = image[:, :1], image_mask[:, :1]
            text, text_mask = text[:, :1], text_mask[:, :1]
        v = self.image_proj(image)  # (B, I, d)
        slots = [0] + list(range(2, 1 + image.shape[1]))  # global, regions (slot 1 = visual)
        pads = [~image_mask]
        if self.visual_proj is not None and batch.visual is not None:
            v = torch.cat([v[:, :1], self.visual_proj(batch.visual)[:, None], v[:, 1:]], dim=1)  # (B, I+1, d)
            slots = [0, 1] + slots[1:]
            pads = [~image_mask[:, :1], torch.zeros_like(image_mask[:, :1]), ~image_mask[:, 1:]]
        if len(slots) > MAX_IMAGE_SLOTS:
            raise ValueError(f"at most {MAX_IMAGE_SLOTS} image tokens, got {len(slots)}")
        v = v + self.image_slots(torch.tensor(slots, device=v.device))  # (B, I', d)
        text_slot = torch.ones(text.shape[1], dtype=torch.long, device=text.device)
        text_slot[0] = 0
        t = self.text_proj(text) + self.text_slots(text_slot)  # (B, M, d)
        return v, torch.cat(pads, dim=1), t, ~text_mask

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """→ float32 (B,) scores on the cosine scale (see module docstring)."""
        v, v_pad, t, t_pad = self.embed_sides(batch)
        for layer in self.layers:
            v, t = layer(v, v_pad, t, t_pad)
        h_v, h_t = self.norm_v(v[:, 0]), self.norm_t(t[:, 0])  # (B, d) the global slots
        if self.cfg.fusion == "full":
            fused = torch.cat([h_v, h_t, h_v * h_t, (h_v - h_t).abs()], dim=-1)  # (B, 4d)
        else:
            fused = torch.cat([h_v, h_t], dim=-1)  # (B, 2d)
        delta = self.mlp(fused).squeeze(-1)  # (B,)
        return self.cosine_weight * batch.cosine + delta if self.cfg.residual_score else delta

    def alignment_logits(self, batch: PairBatch) -> torch.Tensor:
        """Contrastive term input: (B, B) scaled cosines of the projected global
        embeddings of B matching pairs (before any cross-attention)."""
        zv = F.normalize(self.image_proj(batch.image[:, 0]), dim=-1)  # (B, d)
        zt = F.normalize(self.text_proj(batch.text[:, 0]), dim=-1)  # (B, d)
        return self.align_scale.exp().clamp(max=100) * zt @ zv.T


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: total and per part (projections, cross-attention
    blocks incl. their feed-forward layers, fusion MLP)."""
    parts = {"total": 0, "projections": 0, "cross_attention_blocks": 0, "fusion_mlp": 0, "other": 0}
    for name, p in model.named_parameters():
        n = p.numel()
        parts["total"] += n
        if name.startswith(("text_proj", "image_proj", "visual_proj", "image_slots", "text_slots")):
            parts["projections"] += n
        elif name.startswith("layers"):
            parts["cross_attention_blocks"] += n
        elif name.startswith("mlp"):
            parts["fusion_mlp"] += n
        else:
            parts["other"] += n
    return parts
