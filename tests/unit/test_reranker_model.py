"""The FrEVL head: shapes, masks, presets, learning on a synthetic matching
task, save/load round trip and refusal of a head trained for another encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from frozenlens.errors import RerankerError, RerankerMismatchError
from frozenlens.models.base import EncoderIdentity
from frozenlens.reranker.features import ImageTokens, TextTokens, pair_batch, text_units
from frozenlens.reranker.head import Reranker
from frozenlens.reranker.model import (
    FusionHead,
    PairBatch,
    count_parameters,
    preset_config,
)
from frozenlens.reranker.train import (
    TrainingSet,
    TrainOptions,
    ranking_metrics,
    train_reranker,
)

IDENT = EncoderIdentity("synthetic", "1", 16, 24)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def batch(b: int = 5, m: int = 4, i: int = 5, dim: int = 16, vdim: int = 24, seed: int = 0) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    return PairBatch(
        text=torch.randn(b, m, dim, generator=g), text_mask=torch.ones(b, m, dtype=torch.bool),
        image=torch.randn(b, i, dim, generator=g), image_mask=torch.ones(b, i, dtype=torch.bool),
        visual=torch.randn(b, vdim, generator=g), cosine=torch.randn(b, generator=g),
    )


def head(**overrides) -> FusionHead:
    torch.manual_seed(0)
    cfg = preset_config("cpu", dim=16, visual_dim=24, encoder=IDENT.as_dict(), **overrides)
    model = FusionHead(cfg)
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.5)  # a non-trivial output for the mask tests
    return model.eval()


def test_shapes_and_zero_initial_correction():
    cfg = preset_config("cpu", dim=16, visual_dim=24, encoder=IDENT.as_dict())
    b = batch()
    fresh = FusionHead(cfg).eval()
    with torch.no_grad():
        out = fresh(b)
    assert out.shape == (5,) and out.dtype == torch.float32
    # a new head starts as "first stage unchanged": score == cosine
    torch.testing.assert_close(out, b.cosine)
    with torch.no_grad():
        assert fresh.alignment_logits(b).shape == (5, 5)


def test_padding_is_ignored_on_both_sides():
    model = head()
    b = batch()
    b.text_mask[:, 2:] = False
    b.image_mask[:, 3:] = False
    with torch.no_grad():
        ref = model(b)
        b.text[:, 2:] = 1e3  # garbage in padded slots changes nothing
        b.image[:, 3:] = -1e3
        torch.testing.assert_close(model(b), ref)
        # ... while a real token does change the score
        b.text_mask[:, 2] = True
        assert not torch.allclose(model(b), ref)


def test_length_one_ablation_ignores_tokens_and_attention_can_be_removed():
    model = head(use_tokens=False)
    b = batch()
    with torch.no_grad():
        ref = model(b)
        b.text[:, 1:] += 5.0
        b.image[:, 1:] += 5.0
        torch.testing.assert_close(model(b), ref)
    no_cross = head(cross_attention=False)
    assert not any("cross_attn" in n for n, _ in no_cross.named_parameters())
    concat = head(fusion="concat")
    assert concat.mlp[0].in_features == 2 * concat.cfg.d_model


def test_preset_sizes():
    paper = count_parameters(FusionHead(preset_config("paper", dim=512, visual_dim=512, encoder={})))
    assert 66e6 < paper["total"] < 70e6  # the published 68.4 M
    assert paper["cross_attention_blocks"] / paper["total"] > 0.75  # "77 % in cross-attention"
    cpu = count_parameters(FusionHead(preset_config("cpu", dim=512, visual_dim=1280, encoder={})))
    assert cpu["total"] < 2e6
    with pytest.raises(ValueError, match="unknown reranker preset"):
        preset_config("huge", dim=8, visual_dim=8, encoder={})
    with pytest.raises(ValueError, match="multiple of heads"):
        preset_config("cpu", dim=8, visual_dim=8, encoder={}, heads=3)


def test_text_units():
    assert text_units("cat") == []
    assert text_units("a red car on the beach") == ["red", "car", "on", "the", "beach"]
    assert text_units("A dog runs. It is happy! Then it sleeps.") == ["A dog runs.", "It is happy!", "Then it sleeps."]
    assert text_units("一只猫在沙发上") == ["一只", "猫在", "沙发", "上"]
    assert len(text_units(" ".join(f"word{i}" for i in range(20)))) == 7


def synthetic(n_concepts: int, seed: int, dim: int = 16, vdim: int = 24) -> tuple[TrainingSet, np.ndarray]:
    """Texts and images of the same concepts, related by a fixed random linear
    map the head must learn (first-stage cosine is near chance): concept c's
    image vector is unit(c), its text vector unit(R c + noise)."""
    rng = np.random.default_rng(seed)
    rot = np.random.default_rng(99).normal(size=(dim, dim))
    concepts = rng.normal(size=(n_concepts, dim))
    img = unit(concepts)
    regions = unit(concepts[:, None, :] + 0.3 * rng.normal(size=(n_concepts, 4, dim)))
    visual = unit(np.concatenate([concepts, rng.normal(size=(n_concepts, vdim - dim))], axis=1))
    images = ImageTokens.build(img, visual, regions)
    texts_per = 2
    owners = np.repeat(np.arange(n_concepts), texts_per)
    t = unit(concepts[owners] @ rot.T + 0.2 * rng.normal(size=(owners.size, dim)))
    tokens = np.stack([t, unit(t + 0.3 * rng.normal(size=t.shape))], axis=1)
    text = TextTokens(t, tokens, np.ones(tokens.shape[:2], bool))
    data = TrainingSet(text, tuple(["xx"] * owners.size), images, tuple(np.array([o]) for o in owners))
    return data, owners


@pytest.mark.slow
def test_head_learns_a_synthetic_matching_task(tmp_path):
    train, _ = synthetic(200, seed=1)
    val, _ = synthetic(40, seed=2)
    first = ranking_metrics(val.first_stage(), val.positives, 40)
    opts = TrainOptions(epochs=15, batch_size=32, hard_negatives=7, in_batch=8, patience=15, seed=0)
    trained, report = train_reranker(train, val, IDENT, opts)
    assert first["r1"] < 0.15  # the frozen cosine alone is near chance (1/40)
    assert report.val_first_stage["r1"] == pytest.approx(first["r1"])
    assert report.val_reranked["r1"] > 0.8, report.history
    assert report.best_epoch >= 1 and report.epochs_run <= 15

    # save → load gives identical scores
    trained.save(tmp_path)
    loaded = Reranker.load(tmp_path, IDENT)
    ti = np.repeat(np.arange(len(val)), 3)
    ii = np.tile(np.arange(3), len(val))
    np.testing.assert_array_equal(trained.score_pairs(val.texts, ti, val.images, ii),
                                  loaded.score_pairs(val.texts, ti, val.images, ii))
    assert loaded.summary["report"]["val_reranked"]["r1"] == report.val_reranked["r1"]


def test_training_is_seeded_and_resumable(tmp_path):
    train, _ = synthetic(40, seed=1)
    val, _ = synthetic(10, seed=2)
    opts = TrainOptions(epochs=3, batch_size=16, patience=5, seed=3)
    a, _ = train_reranker(train, val, IDENT, opts)
    b, _ = train_reranker(train, val, IDENT, opts)
    ti, ii = np.arange(len(val)), np.arange(len(val)) % len(val.images)
    np.testing.assert_array_equal(a.score_pairs(val.texts, ti, val.images, ii), b.score_pairs(val.texts, ti, val.images, ii))

    # stop after 2 epochs (checkpoint kept), then resume to 3: same result as straight through
    ckpt = tmp_path / "ckpt.pt"
    opts2 = TrainOptions(epochs=3, batch_size=16, patience=5, seed=3)

    class Stop(Exception):
        pass

    def interrupt(p):
        if p.stage.startswith("train epoch 3"):
            raise Stop

    with pytest.raises(Stop):
        train_reranker(train, val, IDENT, opts2, progress=interrupt, checkpoint=ckpt)
    assert ckpt.is_file()
    resumed, report = train_reranker(train, val, IDENT, opts2, checkpoint=ckpt)
    assert report.resumed_from_epoch == 2 and not ckpt.exists()
    np.testing.assert_allclose(resumed.score_pairs(val.texts, ti, val.images, ii),
                               a.score_pairs(val.texts, ti, val.images, ii), atol=1e-6)


def test_load_refuses_other_encoder_and_damaged_files(tmp_path):
    model = head()
    Reranker(model).save(tmp_path)
    assert Reranker.load(tmp_path, IDENT).config == model.cfg
    with pytest.raises(RerankerMismatchError, match="trained for synthetic v1"):
        Reranker.load(tmp_path, EncoderIdentity("lite", "1", 512, 1280))
    with pytest.raises(RerankerMismatchError):
        Reranker.load(tmp_path, EncoderIdentity("synthetic", "2", 16, 24))
    weights = tmp_path / "reranker.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7] + b"garbage")
    with pytest.raises(RerankerError, match="does not match"):
        Reranker.load(tmp_path)
    (tmp_path / "reranker.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RerankerError, match="unreadable reranker config"):
        Reranker.load(tmp_path)
    with pytest.raises(RerankerError, match="no reranker head"):
        Reranker.load(tmp_path / "elsewhere")
    doc = {"format": 99}
    (tmp_path / "reranker.json").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(RerankerError, match="unsupported reranker format"):
        Reranker.load(tmp_path)


def test_pair_batch_gathers_rows():
    data, _ = synthetic(6, seed=0)
    b = pair_batch(data.texts, np.array([0, 3]), data.images, np.array([5, 1]))
    assert b.text.shape == (2, 2, 16) and b.image.shape == (2, 5, 16) and b.visual.shape == (2, 24)
    np.testing.assert_allclose(b.cosine.numpy(), [data.texts.global_[0] @ data.images.semantic[5],
                                                  data.texts.global_[3] @ data.images.semantic[1]], rtol=1e-5)
