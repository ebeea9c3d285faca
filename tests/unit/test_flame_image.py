"""FLAME's image tower: checkpoint loading in the fork's key layout, forward pass, preprocessing.

Real open_clip ViTs with random weights (FLAME's released weights cannot be had
offline). Checkpoints are written the way MIV-XJTU/FLAME's training script
saves them: ``{"epoch", "name", "state_dict", "optimizer"}`` with DDP's
``module.`` prefix on ``visual.*`` (the open_clip ViT, ``proj``/``ln_post``
included), ``mm.{0,2,3}.*`` (the projector), ``logit_scale``/``logit_bias``
and text/LLM keys that must be ignored. The expected outputs come from a
forward pass written here from the raw tensors (float64), not from open_clip.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from frozenlens.errors import EncoderConfigError, WeightsNotFoundError
from frozenlens.models.flame_image import (
    OPENAI_MEAN,
    OPENAI_STD,
    FlameImageTower,
    build_flame_image_tower,
    load_flame_checkpoint,
)

open_clip = pytest.importorskip("open_clip")
from open_clip.model import _build_vision_tower  # noqa: E402 - open_clip's own ViT builder

#: a tiny open_clip ViT (224 px, 4x4 patches of 56 px, 2 blocks of width 64, 2 heads)
TINY = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32, "patch_size": 56},
}
DIM, HIDDEN = 32, 48  # the fork uses hidden = max(H, 4096): hidden and H differ


# ------------------------------------------------------------------ helpers
def fork_state_dict(embed_dim: int, vision_cfg: dict, *, dim: int = DIM, hidden: int = HIDDEN, seed: int = 0) -> dict:
    """Random weights named as in the fork's ``CustomTextCLIP.state_dict()`` (ViT + projector)."""
    torch.manual_seed(seed)
    visual = _build_vision_tower(embed_dim, vision_cfg)
    projector = torch.nn.Sequential(
        torch.nn.Linear(visual.conv1.out_channels, hidden),
        torch.nn.GELU(),
        torch.nn.Linear(hidden, dim),
        torch.nn.LayerNorm(dim),
    )
    state = {f"visual.{k}": v.clone() for k, v in visual.state_dict().items()}
    state |= {f"mm.{k}": v.clone() for k, v in projector.state_dict().items()}
    for key, value in state.items():  # LayerNorms away from 1/0, so that ln_pre/ln_post/mm.3 all matter
        if ".ln_" in key or key.startswith(("visual.ln_", "mm.3.")):
            value.copy_(torch.randn_like(value) * 0.5 + (1.0 if key.endswith("weight") else 0.0))
    assert "visual.proj" in state and "visual.ln_post.weight" in state  # the fork saves them (unused)
    return state


def llm_extras() -> dict:
    """Keys a FLAME/open_clip checkpoint may carry besides the image tower."""
    return {
        "logit_scale": torch.tensor(math.log(10.0)),
        "logit_bias": torch.tensor(-10.0),
        "text.model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8),
        "text.model.embed_tokens.weight": torch.randn(10, 8),
        "text.lm_head.weight": torch.randn(10, 8),
        "transformer.resblocks.0.attn.in_proj_weight": torch.randn(24, 8),  # a CLIP text tower at top level
        "token_embedding.weight": torch.randn(10, 8),
        "text_projection": torch.randn(8, 4),
    }


def training_checkpoint(state: dict) -> dict:
    """As ``src/training/main.py`` of the fork saves it (DDP-wrapped model)."""
    return {
        "epoch": 1,
        "name": "flame-test",
        "state_dict": {f"module.{k}": v for k, v in state.items()},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
    }


def reference_forward(
    state: dict, pixels: torch.Tensor, heads: int, *, ln_post: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAME's image embedding from raw tensors, float64: no ln_post, no proj, mean over patches.

    ``ln_post=True`` applies the ViT's ``ln_post`` before the projector (what FLAME does NOT do).
    """

    def t(key: str) -> torch.Tensor:
        return state[key].double()

    conv = t("visual.conv1.weight")
    width, patch = conv.shape[0], conv.shape[-1]
    x = F.conv2d(pixels.double(), conv, stride=patch).flatten(2).transpose(1, 2)  # (N, P, W)
    x = torch.cat([t("visual.class_embedding").expand(x.shape[0], 1, -1), x], dim=1)
    x = x + t("visual.positional_embedding")
    x = F.layer_norm(x, (width,), t("visual.ln_pre.weight"), t("visual.ln_pre.bias"))
    n_blocks = len({k.split(".")[3] for k in state if k.startswith("visual.transformer.resblocks.")})
    d = width // heads
    for i in range(n_blocks):
        p = f"visual.transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), t(p + "ln_1.weight"), t(p + "ln_1.bias"))
        q, k, v = (h @ t(p + "attn.in_proj_weight").T + t(p + "attn.in_proj_bias")).chunk(3, dim=-1)
        q, k, v = (z.reshape(z.shape[0], z.shape[1], heads, d).transpose(1, 2) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v  # (N, heads, L, d)
        a = a.transpose(1, 2).reshape(x.shape)
        x = x + a @ t(p + "attn.out_proj.weight").T + t(p + "attn.out_proj.bias")
        h = F.layer_norm(x, (width,), t(p + "ln_2.weight"), t(p + "ln_2.bias"))
        h = F.gelu(h @ t(p + "mlp.c_fc.weight").T + t(p + "mlp.c_fc.bias"))
        x = x + h @ t(p + "mlp.c_proj.weight").T + t(p + "mlp.c_proj.bias")
    if ln_post:
        x = F.layer_norm(x, (width,), t("visual.ln_post.weight"), t("visual.ln_post.bias"))
    y = F.gelu(x @ t("mm.0.weight").T + t("mm.0.bias"))
    y = y @ t("mm.2.weight").T + t("mm.2.bias")
    y = F.layer_norm(y, (y.shape[-1],), t("mm.3.weight"), t("mm.3.bias"))  # (N, 1+P, H)
    return y[:, 1:].mean(dim=1), y[:, 1:]


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def assert_one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.fixture(scope="module")
def tiny_state() -> dict:
    return fork_state_dict(TINY["embed_dim"], TINY["vision_cfg"])


@pytest.fixture(scope="module")
def tiny_tower(tiny_state, tmp_path_factory) -> FlameImageTower:
    path = tmp_path_factory.mktemp("flame") / "tiny.pt"
    torch.save(training_checkpoint(tiny_state | llm_extras()), path)
    return load_flame_checkpoint(path, arch=TINY)


# ------------------------------------------------------- loading + forward
@pytest.mark.slow
def test_vit_b16_fork_checkpoint_matches_reference(tmp_path):
    """FLAME-CC3M-ViT-B-16.pt's layout: wrapped, ``module.``-prefixed, with LLM keys."""
    cfg = open_clip.get_model_config("ViT-B-16")
    state = fork_state_dict(cfg["embed_dim"], cfg["vision_cfg"], seed=1)
    path = tmp_path / "FLAME-CC3M-ViT-B-16.pt"
    torch.save(training_checkpoint(state | llm_extras()), path)
    del cfg

    tower = load_flame_checkpoint(path)  # arch defaults to ViT-B-16
    assert (tower.hidden_size, tower.mm[0].out_features) == (DIM, HIDDEN)
    assert (tower.grid_size, tower.image_size) == ((14, 14), 224)
    assert not tower.training and not any(p.requires_grad for p in tower.parameters())

    x = pixels(1, seed=1)
    with torch.inference_mode():
        pooled, tokens = tower(x)
    ref_pooled, ref_tokens = reference_forward(state, x, heads=12)
    assert pooled.shape == (1, DIM) and tokens.shape == (1, 196, DIM)
    torch.testing.assert_close(pooled.double(), ref_pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.double(), ref_tokens, atol=1e-5, rtol=0)


def test_tiny_forward_matches_reference_without_ln_post_or_proj(tiny_tower, tiny_state):
    names = set(tiny_tower.state_dict())
    assert not any("ln_post" in k or k == "visual.proj" for k in names)
    assert {k for k in names if k.startswith("mm.")} == {f"mm.{i}.{w}" for i in (0, 2, 3) for w in ("weight", "bias")}
    x = pixels(3)
    with torch.inference_mode():
        pooled, tokens = tiny_tower(x)
    ref_pooled, ref_tokens = reference_forward(tiny_state, x, heads=2)
    torch.testing.assert_close(pooled.double(), ref_pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens.double(), ref_tokens, atol=1e-5, rtol=0)
    # ln_post would have changed the result: FLAME reads the transformer's raw output
    with_ln_post, _ = reference_forward(tiny_state, x, heads=2, ln_post=True)
    assert (pooled.double() - with_ln_post).abs().max() > 1e-2


@pytest.mark.parametrize("layout", ["plain", "module-prefix", "wrapped-no-prefix"])
def test_checkpoint_layouts_load_the_same_weights(layout, tiny_state, tiny_tower, tmp_path):
    state = tiny_state | llm_extras()
    obj = {
        "plain": state,
        "module-prefix": {f"module.{k}": v for k, v in state.items()},
        "wrapped-no-prefix": {"state_dict": state, "epoch": 3},
    }[layout]
    torch.save(obj, tmp_path / "c.pt")
    tower = load_flame_checkpoint(tmp_path / "c.pt", arch=TINY)
    got, want = tower.state_dict(), tiny_tower.state_dict()
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=0, rtol=0)


def test_embed_vectors_and_region_tokens(tiny_tower, tiny_state):
    x = pixels(2, seed=3)
    vecs, regions = tiny_tower.embed(x.numpy())
    assert vecs.dtype == regions.dtype == np.float32
    assert vecs.shape == (2, DIM) and regions.shape == (2, 4, DIM)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(regions, axis=2), 1.0, atol=1e-5)
    ref_pooled, ref_tokens = reference_forward(tiny_state, x, heads=2)
    np.testing.assert_allclose(vecs, F.normalize(ref_pooled, dim=-1).numpy(), atol=1e-5)
    grid = ref_tokens.reshape(2, 4, 4, DIM)  # (N, rows, cols, H) on the 4x4 patch grid
    cells = [grid[:, r : r + 2, c : c + 2].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 2)]  # row-major 2x2
    np.testing.assert_allclose(regions, F.normalize(torch.stack(cells, 1), dim=-1).numpy(), atol=1e-5)


def test_embed_empty_and_wrong_shapes(tiny_tower):
    vecs, regions = tiny_tower.embed(np.zeros((0, 3, 224, 224), np.float32))
    assert vecs.shape == (0, DIM) and regions.shape == (0, 4, DIM)
    with pytest.raises(ValueError, match="224"):
        tiny_tower.embed(np.zeros((1, 224, 224, 3), np.float32))


def test_embed_is_thread_safe(tiny_tower):
    batches = [pixels(2, seed=s).numpy() for s in range(4)]
    serial = [tiny_tower.embed(b) for b in batches]
    results: dict[int, tuple] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = tiny_tower.embed(batches[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for i, (vecs, regions) in enumerate(serial):
        np.testing.assert_allclose(results[i][0], vecs, atol=1e-6)
        np.testing.assert_allclose(results[i][1], regions, atol=1e-6)


# ----------------------------------------------------------------- errors
def test_wrong_projector_width_is_a_one_line_config_error(tiny_state, tmp_path):
    state = dict(tiny_state)
    state["mm.0.weight"] = torch.randn(HIDDEN, 32)  # projector built for a ViT of width 32, not 64
    torch.save(training_checkpoint(state), tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch=TINY)
    text = assert_one_line(exc)
    assert "mm.0.weight" in text and "(48, 32)" in text and "(48, 64)" in text


def test_mismatched_projector_layers_are_a_config_error(tiny_state, tmp_path):
    state = dict(tiny_state)
    state["mm.3.weight"] = torch.ones(DIM + 1)  # LayerNorm of another width than mm.2's output
    torch.save(state, tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch=TINY)
    assert "mm.3.weight" in assert_one_line(exc)


def test_vit_l14_checkpoint_for_b16_is_a_config_error(tmp_path):
    cfg = open_clip.get_model_config("ViT-L-14")
    with torch.device("meta"):  # shapes only: no 300 M parameters in memory or on disk
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
    state = {f"visual.{k}": torch.zeros(()).expand(v.shape) for k, v in visual.state_dict().items()}
    state |= {"mm.0.weight": torch.zeros(DIM, 1024), "mm.0.bias": torch.zeros(DIM)}
    state |= {"mm.2.weight": torch.zeros(DIM, DIM), "mm.2.bias": torch.zeros(DIM)}
    state |= {"mm.3.weight": torch.ones(DIM), "mm.3.bias": torch.zeros(DIM)}
    torch.save(training_checkpoint(state), tmp_path / "l14.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "l14.pt", arch="ViT-B-16")
    text = assert_one_line(exc)
    assert "visual.class_embedding" in text and "(1024,)" in text and "(768,)" in text
    assert "width 1024, patch 14, 24 blocks" in text


def test_tiny_checkpoint_for_b16_names_the_first_offending_key(tiny_state, tmp_path):
    torch.save(tiny_state, tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch="ViT-B-16")
    assert "visual.class_embedding has shape (64,), expected (768,)" in assert_one_line(exc)


def test_missing_or_extra_vit_keys_are_a_config_error(tiny_state, tmp_path):
    state = {k: v for k, v in tiny_state.items() if not k.startswith("visual.transformer.resblocks.1.")}
    torch.save(state, tmp_path / "missing.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "missing.pt", arch=TINY)
    assert "visual.transformer.resblocks.1.ln_1.weight is missing" in assert_one_line(exc)
    torch.save(tiny_state | {"visual.attn_pool.latent": torch.zeros(1, 64)}, tmp_path / "extra.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "extra.pt", arch=TINY)
    assert "unexpected key visual.attn_pool.latent" in assert_one_line(exc)


@pytest.mark.parametrize(
    ("drop", "needle"),
    [("mm.", "no projector"), ("visual.", "no image tower"), ("mm.2.", "no mm.2.weight")],
)
def test_missing_parts_are_a_config_error(drop, needle, tiny_state, tmp_path):
    state = {k: v for k, v in tiny_state.items() if not k.startswith(drop)} | llm_extras()
    torch.save(training_checkpoint(state), tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch=TINY)
    assert needle in assert_one_line(exc)


@pytest.mark.parametrize(
    ("arch", "needle"), [("ViT-Q-99", "unknown open_clip architecture"), ("RN50", "needs an open_clip ViT")]
)
def test_unknown_or_non_vit_arch_is_a_config_error(arch, needle, tiny_state, tmp_path):
    torch.save(tiny_state, tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch=arch)
    assert needle in assert_one_line(exc)


def test_not_a_state_dict_is_a_config_error(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "c.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "c.pt", arch=TINY)
    assert "not a state dict" in assert_one_line(exc)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    torch.save({"visual.x": torch.zeros(1000)}, tmp_path / "whole.pt")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:300])
    for name in ("junk.pt", "truncated.pt"):
        with pytest.raises(EncoderConfigError) as exc:
            load_flame_checkpoint(tmp_path / name, arch=TINY)
        assert f"cannot read FLAME checkpoint {tmp_path / name}" in assert_one_line(exc)


def test_missing_file_is_weights_not_found(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="not found"):
        load_flame_checkpoint(tmp_path / "FLAME-CC3M-ViT-B-16.pt")
    with pytest.raises(WeightsNotFoundError):
        load_flame_checkpoint(tmp_path)  # a folder is not a checkpoint


def test_hub_name_offline_is_weights_not_found(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    name = "hf-hub:caj/FLAME-Mistral-Nemo-ViT-B-16-CC3M/FLAME-CC3M-ViT-B-16.pt"
    with pytest.raises(WeightsNotFoundError) as exc:
        load_flame_checkpoint(name, cache_dir=tmp_path)
    assert name in assert_one_line(exc)
    with pytest.raises(EncoderConfigError, match="hf-hub:<org>/<repo>/<file>"):
        load_flame_checkpoint("hf-hub:caj/FLAME-Mistral-Nemo-ViT-B-16-CC3M", cache_dir=tmp_path)


_UNPICKLED: list[str] = []


def _side_effect(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    """Runs ``_side_effect`` when unpickled by a full (unsafe) unpickler."""

    def __reduce__(self) -> tuple:
        return (_side_effect, ("ran",))


def test_arbitrary_pickles_are_refused(tiny_state, tmp_path):
    torch.save(training_checkpoint(tiny_state) | {"extra": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(EncoderConfigError) as exc:
        load_flame_checkpoint(tmp_path / "evil.pt", arch=TINY)
    text = assert_one_line(exc)
    assert "refused by torch.load(weights_only=True): Unsupported global" in text and "_side_effect" in text
    assert _UNPICKLED == []  # weights_only=True: the payload never ran
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the file really carries it
    assert _UNPICKLED == ["ran"]


# ---------------------------------------------------------- preprocessing
@pytest.fixture(scope="module")
def photo() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.fromarray(skimage_data.chelsea())  # a real photo, 451x300 RGB


def manual_prepare(image: Image.Image, resample: Image.Resampling) -> np.ndarray:
    w, h = image.size  # landscape: height → 224, width truncated as torchvision's Resize does
    nw = int(224 * w / h)
    small = image.convert("RGB").resize((nw, 224), resample)
    left = round((nw - 224) / 2)
    arr = np.asarray(small.crop((left, 0, left + 224, 224)), np.float64) / 255.0
    return ((arr - np.array(OPENAI_MEAN)) / np.array(OPENAI_STD)).transpose(2, 0, 1)


def test_prepare_bicubic_centre_crop_openai_mean_std(tiny_tower, photo):
    assert photo.size == (451, 300)
    x = tiny_tower.prepare(photo)
    assert x.dtype == np.float32 and x.shape == (3, 224, 224) and x.flags.c_contiguous
    np.testing.assert_allclose(x, manual_prepare(photo, Image.Resampling.BICUBIC), atol=1e-5)
    assert np.abs(x - manual_prepare(photo, Image.Resampling.BILINEAR)).max() > 0.05  # bicubic, not bilinear
    # the same as open_clip's own eval transform (torchvision) with OpenAI's mean/std
    transform = open_clip.image_transform(224, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    np.testing.assert_allclose(x, transform(photo).numpy(), atol=1e-5)


def test_prepare_converts_to_rgb_and_uses_the_vits_size(photo):
    small = build_flame_image_tower(
        {
            "embed_dim": 8,
            "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        },
        dim=8,
    )
    for image in (photo.convert("L"), photo.convert("RGBA"), photo.convert("P")):
        x = small.prepare(image)
        assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert small.embed(np.stack([small.prepare(photo)]))[0].shape == (1, 8)


def test_prepared_photo_embeds(tiny_tower, photo):
    vecs, regions = tiny_tower.embed(np.stack([tiny_tower.prepare(photo), tiny_tower.prepare(photo.rotate(90))]))
    assert vecs.shape == (2, DIM) and regions.shape == (2, 4, DIM) and np.isfinite(vecs).all()


@pytest.mark.slow  # a fresh interpreter importing torch
def test_importing_the_module_loads_no_open_clip():
    code = (
        "import sys, frozenlens.models.flame_image\n"
        "print(sorted(m for m in ('open_clip', 'huggingface_hub', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_architecture_is_read_from_the_checkpoint():
    from frozenlens.models.flame_image import infer_arch

    def vit(width: int, patch: int, blocks: int, px: int) -> dict:
        state = {"conv1.weight": torch.empty(width, 3, patch, patch),
                 "positional_embedding": torch.empty((px // patch) ** 2 + 1, width)}
        state |= {f"transformer.resblocks.{i}.ln_1.weight": torch.empty(width) for i in range(blocks)}
        return state

    assert infer_arch(vit(768, 16, 12, 224)) == "ViT-B-16"
    assert infer_arch(vit(1024, 14, 24, 224)) == "ViT-L-14"
    assert infer_arch(vit(1024, 14, 24, 336)) == "ViT-L-14-336"
    with pytest.raises(EncoderConfigError, match="width 64, patch 56, 2 blocks, 224 px is not a known"):
        infer_arch(vit(64, 56, 2, 224))
    with pytest.raises(EncoderConfigError, match="no ViT patch embedding"):
        infer_arch({})
