"""FLAME text tower: one pass with facet-decoupled attention == separate prompts.

Tiny randomly initialised Llama, Mistral, Qwen2 and Gemma 3 models are built
here (fp32), with a byte-level BPE tokenizer trained in the test; references
are computed by the *unmodified* transformers models (full depth, their own
masks, ``output_hidden_states``), so the tower's truncation, masks and
positions are all checked against the library, not against themselves.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from frozenlens.errors import CaptionTruncatedWarning, EncoderConfigError  # noqa: E402
from frozenlens.models.flame_prompts import LONG, SHORT, PromptTemplate, clean_caption  # noqa: E402
from frozenlens.models.flame_text import FlameTextTower, layer_windows  # noqa: E402

CAPTIONS = [
    "A dog.",
    "Zwei Katzen schlafen auf einem roten Sofa neben dem Fenster, draußen regnet es",
    'Un "grand" bateau?',
    "夕日の海辺で遊ぶ子供たち、遠くに山が見える。" * 3,  # longer than Gemma's window of 16
]
FAMILIES = ("llama", "mistral", "qwen2", "gemma3_text")
TOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [LONG.render(c, i) for c in CAPTIONS for i in range(LONG.k)] * 3
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>")


def tiny_model(family: str, vocab: int, attn: str = "sdpa"):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if family == "llama":
        cfg = transformers.LlamaConfig(**common)
    elif family == "mistral":
        cfg = transformers.MistralConfig(**common, sliding_window=24)
    elif family == "qwen2":
        cfg = transformers.Qwen2Config(**common)
    else:
        cfg = transformers.Gemma3TextConfig(
            **common, head_dim=16, sliding_window=16,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        )
    cfg._attn_implementation = attn
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cfg).eval()
    # random init is tiny-valued; widen it so masking mistakes show up far above the tolerance
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0, 0.1)
    return model


def hf_hidden(model, ids: list[int], layer: int, *, attention_mask=None, index: int = -1) -> np.ndarray:
    """Block ``layer``'s output at ``index`` of one unpadded sequence, by the untouched model."""
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True, use_cache=False,
                    attention_mask=attention_mask)
    return out.hidden_states[layer + 1][0, index].numpy()


def separate_reference(full, tower: FlameTextTower, caption: str, template: PromptTemplate) -> np.ndarray:
    prefix, spans = tower.tokens_of(caption, template)
    return np.stack([hf_hidden(full, prefix + s, tower.layer) for s in spans])


def continue_reference(full, tower: FlameTextTower, caption: str, template: PromptTemplate) -> np.ndarray:
    """Facet k: the whole sequence at its own positions, the other spans masked out (as padding)."""
    prefix, spans = tower.tokens_of(caption, template)
    flat = prefix + [t for s in spans for t in s]
    rows, start = [], len(prefix)
    for s in spans:
        keep = torch.ones((1, len(flat)), dtype=torch.long)
        keep[0, len(prefix):] = 0
        keep[0, start:start + len(s)] = 1
        rows.append(hf_hidden(full, flat, tower.layer, attention_mask=keep, index=start + len(s) - 1))
        start += len(s)
    return np.stack(rows)


def build(family: str, tokenizer, *, mode: str = "restart", attn: str = "sdpa", layer: int = -2):
    full = tiny_model(family, len(tokenizer), attn)
    tower = FlameTextTower.from_model(copy.deepcopy(full), tokenizer, layer=layer, position_mode=mode)
    return full, tower


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", [SHORT, LONG], ids=["short", "long"])
def test_single_pass_restart_equals_separate_prompts(family, template, tokenizer):
    full, tower = build(family, tokenizer)
    got = tower.facet_tokens(CAPTIONS, template, batch_size=len(CAPTIONS))  # unequal lengths, left padded
    assert got.shape == (len(CAPTIONS), template.k, 64)
    for i, cap in enumerate(CAPTIONS):
        ref = separate_reference(full, tower, cap, template)
        np.testing.assert_allclose(got[i], ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_continue_mode_equals_masked_reference(family, tokenizer):
    full, tower = build(family, tokenizer, mode="continue")
    got = tower.facet_tokens(CAPTIONS, LONG, batch_size=3)
    for i, cap in enumerate(CAPTIONS):
        np.testing.assert_allclose(got[i], continue_reference(full, tower, cap, LONG), atol=TOL, rtol=0)
    # continue really differs from restart (positions after the first span move)
    restart = FlameTextTower.from_model(copy.deepcopy(full), tokenizer, layer=-2).facet_tokens(CAPTIONS[:1], LONG)
    np.testing.assert_allclose(got[0, 0], restart[0, 0], atol=TOL, rtol=0)
    assert np.abs(got[0, 1:] - restart[0, 1:]).max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["restart", "continue"])
def test_batch_invariance(family, mode, tokenizer):
    _, tower = build(family, tokenizer, mode=mode)
    alone = np.concatenate([tower.facet_tokens([c], LONG) for c in CAPTIONS])
    together = tower.facet_tokens(CAPTIONS[::-1], LONG, batch_size=4)[::-1]
    pairs = tower.facet_tokens(CAPTIONS, LONG, batch_size=2)
    np.testing.assert_allclose(together, alone, atol=TOL, rtol=0)
    np.testing.assert_allclose(pairs, alone, atol=TOL, rtol=0)


def test_eager_attention_matches_too(tokenizer):
    full, tower = build("gemma3_text", tokenizer, attn="eager")
    got = tower.facet_tokens(CAPTIONS, LONG, batch_size=4)
    np.testing.assert_allclose(got[3], separate_reference(full, tower, CAPTIONS[3], LONG), atol=TOL, rtol=0)


def test_gemma_window_is_kept_not_silently_dropped(tokenizer):
    """A caption longer than the window must differ from the same model with the window off."""
    full, tower = build("gemma3_text", tokenizer)
    assert layer_windows(tower.model.config) == [16, None, 16]
    prefix, spans = tower.tokens_of(CAPTIONS[3], SHORT)
    ids = prefix + spans[0]
    assert len(ids) > 16
    no_window = copy.deepcopy(full)
    no_window.config.sliding_window = 10_000
    for layer in no_window.layers:
        layer.self_attn.sliding_window = None if layer.self_attn.sliding_window is None else 10_000
    got = tower.facet_tokens(CAPTIONS[3:], SHORT)[0, 0]
    np.testing.assert_allclose(got, hf_hidden(full, ids, tower.layer), atol=TOL, rtol=0)
    assert np.abs(got - hf_hidden(no_window, ids, tower.layer)).max() > 1e-3


def test_only_the_needed_blocks_run(tokenizer):
    full, tower = build("llama", tokenizer, layer=1)
    assert len(tower.model.layers) == 2 and tower.model.config.num_hidden_layers == 2
    assert isinstance(tower.model.norm, torch.nn.Identity) and not hasattr(tower.model, "lm_head")
    assert not tower.model._forward_hooks and not any(m._forward_hooks for m in tower.model.modules())
    got = tower.facet_tokens(CAPTIONS[:2], SHORT)
    for i, cap in enumerate(CAPTIONS[:2]):
        np.testing.assert_allclose(got[i], separate_reference(full, tower, cap, SHORT), atol=TOL, rtol=0)
    with pytest.raises(EncoderConfigError, match="layer 9"):
        FlameTextTower.from_model(copy.deepcopy(full), tokenizer, layer=9)


def test_mean_vector_is_normalised(tokenizer):
    _, tower = build("qwen2", tokenizer)
    vec = tower.encode(CAPTIONS, LONG)
    facets = tower.facet_tokens(CAPTIONS, LONG)
    mean = facets.mean(axis=1)
    np.testing.assert_allclose(vec, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)


def test_long_caption_is_cut_with_a_warning_naming_it(tokenizer):
    full = tiny_model("llama", len(tokenizer))
    tower = FlameTextTower.from_model(full, tokenizer, layer=-2, max_length=260)
    long_caption = "Zwei Katzen schlafen auf einem roten Sofa " * 40
    assert tower.count_tokens(long_caption, LONG) > 260 > tower.count_tokens(CAPTIONS[1], LONG)
    with pytest.warns(CaptionTruncatedWarning, match="Zwei Katzen") as seen:
        got = tower.facet_tokens([long_caption, CAPTIONS[1]], LONG)
    assert len(seen) == 1  # only the long one
    prefix, spans = tower.tokens_of(CAPTIONS[1], LONG)
    with pytest.warns(CaptionTruncatedWarning):
        cut_prefix, cut_spans = tower.tokens_of(long_caption, LONG)
    assert cut_spans == spans  # the prompt is whole, only the caption is cut
    assert 200 < len(cut_prefix) + sum(map(len, cut_spans)) <= 260
    assert np.isfinite(got).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a caption that fits is never cut
        tower.facet_tokens(CAPTIONS[:2], LONG)


def test_caption_cleaning_as_flame_does():
    assert clean_caption('a "red" car') == "a 'red' car."
    assert clean_caption("is it a dog?") == "is it a dog."
    assert clean_caption("done.") == "done."
    assert clean_caption("quoted'") == "quoted'"
    assert clean_caption("  spaced  ") == "spaced."
    assert clean_caption("bad \udce9 name") == "bad ? name."
    assert LONG.k == 7 and SHORT.k == 1
    assert all(f.endswith(':"') for f in LONG.facets)
    assert SHORT.render("A dog", 0) == (
        'Image description : "A dog." . After thinking step by step , '
        'this image description means in just one word:"'
    )
