"""The ``openclip:`` encoder, exercised with tiny randomly initialised open_clip models.

Pretrained CLIP weights cannot be downloaded on the build machines, so the
loading code runs on tiny models of two architectures built here and saved as
local checkpoints:

- ``fl-tiny-vit``: a ViT image tower (64 px, patch 16) + open_clip's own text
  transformer and BPE tokenizer, saved as a bare ``.pt`` state dict;
- ``fl-tiny-xlmr``: a ViT image tower (48 px, patch 8) + a Hugging Face
  XLM-RoBERTa text tower with a Unigram tokenizer trained here on a few
  sentences, saved in open_clip's Hub directory format (``save_for_hf``),
  with SigLIP-like preprocessing (mean/std 0.5, squash, bilinear).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")

import torch  # noqa: E402

from frozenlens.engine import Engine  # noqa: E402
from frozenlens.errors import EncoderMismatchError, UnknownEncoderError, WeightsNotFoundError  # noqa: E402
from frozenlens.models import create_encoder, encoder_names  # noqa: E402
from frozenlens.models.loading import arch_preprocess as _arch_preprocess  # noqa: E402
from frozenlens.models.openclip import OpenClipEncoder, prepare_image  # noqa: E402
from frozenlens.models.presets import PRESETS, list_presets  # noqa: E402

VIT_ARCH = "fl-tiny-vit"
XLMR_ARCH = "fl-tiny-xlmr"
PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")
CORPUS = [
    "a photo of a cat",
    "un chat sur le canapé",
    "ein Hund im Park",
    "a red motorcycle on the road",
    "une tasse de café noir",
    "el gato duerme en la cama",
    "a rocket launch at night",
    "the astronaut in space",
    "猫が寝ている",
    "собака бежит по траве",
]


# ----------------------------------------------------------------- fixtures
def _build_tokenizer(dest: Path) -> int:
    """Train a tiny Unigram tokenizer with XLM-R's special tokens; save it for AutoTokenizer."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4 as in XLM-R
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", cls_token="<s>", sep_token="</s>",
    )  # fmt: skip
    fast.save_pretrained(dest)
    return tok.get_vocab_size()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Configs registered with open_clip, checkpoints A and B of fl-tiny-vit, one fl-tiny-xlmr directory."""
    from open_clip.push_to_hf_hub import save_for_hf
    from transformers import XLMRobertaConfig

    root = tmp_path_factory.mktemp("tiny-openclip")
    vit_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (root / f"{VIT_ARCH}.json").write_text(json.dumps(vit_cfg))
    open_clip.add_model_config(root / f"{VIT_ARCH}.json")
    for seed, name in ((0, "a.pt"), (1, "b.pt")):
        torch.manual_seed(seed)
        torch.save(open_clip.create_model(VIT_ARCH).state_dict(), root / name)

    text_dir = root / "xlmr-text"
    vocab = _build_tokenizer(text_dir)
    XLMRobertaConfig(
        vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=40, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ).save_pretrained(text_dir)  # fmt: skip
    xlmr_cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 48, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {
            "hf_model_name": str(text_dir),
            "hf_tokenizer_name": str(text_dir),
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
            "context_length": 32,
        },
    }
    (root / f"{XLMR_ARCH}.json").write_text(json.dumps(xlmr_cfg))
    open_clip.add_model_config(root / f"{XLMR_ARCH}.json")
    torch.manual_seed(2)
    siglip_like = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "resize_mode": "squash", "interpolation": "bilinear"}
    model = open_clip.create_model(XLMR_ARCH, pretrained_text=False, force_preprocess_cfg=siglip_like)
    save_for_hf(model, open_clip.get_tokenizer(XLMR_ARCH), xlmr_cfg, root / "xlmr-model", safe_serialization=True)
    return {"root": root, "a": root / "a.pt", "b": root / "b.pt", "xlmr": root / "xlmr-model"}


@pytest.fixture(scope="module")
def vit(tiny) -> OpenClipEncoder:
    return OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu", batch_size=3)


@pytest.fixture(scope="module")
def xlmr(tiny) -> OpenClipEncoder:
    return create_encoder(f"openclip:{tiny['xlmr']}", device="cpu", batch_size=3)  # type: ignore[return-value]


@pytest.fixture(params=["vit", "xlmr"])
def encoder(request) -> OpenClipEncoder:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def photos(testdata) -> list[Image.Image]:
    return [Image.open(testdata / "photos" / name).convert("RGB") for name in PHOTOS]


# -------------------------------------------------------------------- tests
def test_load_by_path_in_every_form(tiny, vit, xlmr):
    assert vit.identity.name == f"openclip:{tiny['a']}"
    assert (vit.identity.dim, vit.identity.visual_dim) == (32, 32)
    assert (vit.input_size, vit.draft_size) == (64, 64)
    same = create_encoder(f"openclip:{VIT_ARCH}/{tiny['a']}", device="cpu")  # <arch>/<checkpoint file>
    assert same.identity.name == f"openclip:{VIT_ARCH}/{tiny['a']}"
    assert same.identity.version == vit.identity.version
    assert xlmr.identity.name == f"openclip:{tiny['xlmr']}"
    assert (xlmr.identity.dim, xlmr.input_size, xlmr.draft_size) == (32, 48, 48)
    # the model's own preprocessing facts, read from the saved preprocess config
    assert xlmr.preprocess_cfg == {
        "size": 48, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "interpolation": "bilinear", "resize_mode": "squash", "fill_color": 0,
    }  # fmt: skip
    assert vit.preprocess_cfg["mean"] == tuple(open_clip.OPENAI_DATASET_MEAN)
    assert vit.preprocess_cfg["resize_mode"] == "shortest"


def test_outputs_are_unit_norm_float32(encoder, photos):
    texts = ["a cat", "un chat", "eine Katze", "猫"]
    t = encoder.encode_texts(texts)
    assert t.dtype == np.float32 and t.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    emb = encoder.embed_images(photos)
    assert emb.labels is None
    for vecs in (emb.semantic, emb.visual):
        assert vecs.dtype == np.float32 and vecs.shape == (len(photos), 32)
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(emb.semantic, emb.visual)
    assert encoder.encode_texts([]).shape == (0, 32)
    empty = encoder.embed_prepared(np.zeros((0, encoder.input_size, encoder.input_size, 3), np.uint8))
    assert empty.semantic.shape == (0, 32)
    with pytest.raises(ValueError, match="expected uint8"):
        encoder.embed_prepared(np.zeros((1, 7, 7, 3), np.uint8))
    with pytest.raises(TypeError):
        encoder.encode_texts("one string")


def test_vit_region_tokens_are_projected_patch_quadrants(tiny, photos):
    """Reranker tokens: the ViT's patch tokens, projected like the pooled
    embedding and averaged per quadrant of the patch grid, unit length."""
    enc = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu")
    assert enc.image_tokens == 4
    emb = enc.embed_images(photos)
    assert emb.tokens is not None and emb.tokens.shape == (len(photos), 4, 32)
    np.testing.assert_allclose(np.linalg.norm(emb.tokens, axis=2), 1.0, atol=1e-5)
    visual = enc.model.visual
    x = torch.from_numpy(np.stack([enc.prepare(p) for p in photos])).permute(0, 3, 1, 2).float() / 255
    x = (x - enc._mean) / enc._std
    with torch.inference_mode():
        visual.output_tokens = True
        _, patches = visual(x)
        visual.output_tokens = False
    gh, gw = visual.grid_size  # 4 x 4 patches at 64 px / 16
    grid = (patches @ visual.proj).reshape(len(photos), gh, gw, -1).numpy()
    top_left = grid[:, : gh // 2, : gw // 2].mean(axis=(1, 2))
    bottom_right = grid[:, gh // 2 :, gw // 2 :].mean(axis=(1, 2))
    for ref, got in ((top_left, emb.tokens[:, 0]), (bottom_right, emb.tokens[:, 3])):
        np.testing.assert_allclose(got, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)


def test_batch_and_single_agree(encoder, photos):
    prepared = np.stack([encoder.prepare(p) for p in photos])
    batch = encoder.embed_prepared(prepared).semantic
    single = np.concatenate([encoder.embed_prepared(prepared[i : i + 1]).semantic for i in range(len(photos))])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    texts = ["a cat", "un chat sur le canapé, très long texte pour varier la longueur", "猫", "ein Hund"]
    together = encoder.encode_texts(texts)  # batch_size=3: two forward passes with padding
    alone = np.concatenate([encoder.encode_texts([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize(
    ("resize_mode", "interpolation"),
    [("shortest", "bicubic"), ("squash", "bilinear"), ("longest", "bicubic"), ("shortest", "bilinear")],
)
def test_prepare_matches_open_clip_eval_transform(tiny, photos, resize_mode, interpolation):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    enc = OpenClipEncoder(
        str(tiny["a"]), arch=VIT_ARCH, device="cpu",
        preprocess={"resize_mode": resize_mode, "interpolation": interpolation, "fill_color": 17},
    )  # fmt: skip
    cfg = enc.preprocess_cfg
    transform = image_transform_v2(
        PreprocessCfg(size=cfg["size"], mean=cfg["mean"], std=cfg["std"], interpolation=interpolation,
                      resize_mode=resize_mode, fill_color=17),
        is_train=False,
    )  # fmt: skip
    odd = [photos[0], photos[2].resize((97, 251)), photos[1].crop((0, 0, 300, 61)), photos[3].convert("L")]
    mean = np.array(cfg["mean"], np.float32)
    std = np.array(cfg["std"], np.float32)
    for image in odd:
        ours = enc.prepare(image)
        assert ours.dtype == np.uint8 and ours.shape == (64, 64, 3)
        theirs = transform(image).numpy().transpose(1, 2, 0)  # (S, S, 3) normalised
        np.testing.assert_allclose((ours / np.float32(255) - mean) / std, theirs, atol=1e-5)
        # and the embedding through our path equals open_clip's own
        with torch.inference_mode():
            ref = enc.model.encode_image(transform(image)[None]).numpy()[0]
        ref /= np.linalg.norm(ref)
        np.testing.assert_allclose(enc.embed_images([image]).semantic[0], ref, atol=1e-5)
    assert prepare_image(photos[0], 32, resize_mode).shape == (32, 32, 3)


def test_count_tokens_and_context_length(vit, xlmr):
    assert vit.context_length == vit.max_text_tokens == 24
    assert xlmr.context_length == xlmr.max_text_tokens == 32
    long = " ".join(CORPUS)
    for enc, pad in ((vit, 0), (xlmr, 1)):
        for text in ("a cat", "un chat sur le canapé", "猫が寝ている"):
            ids = enc.tokenizer([text])[0]
            assert enc.count_tokens(text) == int((ids != pad).sum())  # short: nothing truncated
        assert enc.count_tokens(long) > enc.context_length
        assert enc.tokenizer([long]).shape == (1, enc.context_length)
    assert vit.count_tokens("") == 2  # <start_of_text> <end_of_text>
    assert xlmr.count_tokens("") == 2  # <s> </s>


def test_identity_differs_between_checkpoints(tiny, vit):
    other = OpenClipEncoder(str(tiny["b"]), arch=VIT_ARCH, device="cpu")
    assert other.identity.version != vit.identity.version
    again = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu")
    assert again.identity == vit.identity
    copy = tiny["root"] / "a-copy.pt"
    shutil.copyfile(tiny["a"], copy)  # same bytes elsewhere: same version, other name
    assert OpenClipEncoder(str(copy), arch=VIT_ARCH, device="cpu").identity.version == vit.identity.version
    tweaked = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu", preprocess={"resize_mode": "squash"})
    assert tweaked.identity.version != vit.identity.version


def _offline(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_missing_weights_offline_is_one_line_naming_the_file(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    for name in ("openclip:ViT-B-32/openai", "openclip:ViT-B-32"):
        with pytest.raises(WeightsNotFoundError) as exc:
            create_encoder(name, cache_dir=tmp_path / "empty-cache")
        msg = str(exc.value)
        assert "\n" not in msg
        assert "ViT-B-32/openai" in msg and "timm/vit_base_patch32_clip_224.openai" in msg
        assert "open_clip_pytorch_model.bin" in msg and "--weights PATH" in msg and "offline" in msg
    with pytest.raises(WeightsNotFoundError, match="open_clip_config.json of hf-hub:org/not-cached"):
        create_encoder("openclip:hf-hub:org/not-cached", cache_dir=tmp_path / "empty-cache")
    missing = tmp_path / "nowhere" / "model.safetensors"
    with pytest.raises(WeightsNotFoundError, match="not found: .*model.safetensors"):
        create_encoder(f"openclip:{VIT_ARCH}/{missing}")
    with pytest.raises(WeightsNotFoundError, match="weights file not found"):
        create_encoder("openclip:ViT-B-32", weights=missing)


def test_missing_hf_text_tower_offline_names_it(monkeypatch, tmp_path, tiny):
    _offline(monkeypatch, tmp_path)
    model_dir = tmp_path / "needs-hub"
    shutil.copytree(tiny["xlmr"], model_dir)
    config = json.loads((model_dir / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["hf_model_name"] = "frozenlens-test/no-such-text-tower"
    (model_dir / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsNotFoundError) as exc:
        create_encoder(f"openclip:{model_dir}")
    assert "frozenlens-test/no-such-text-tower" in str(exc.value) and "\n" not in str(exc.value)
    empty = tmp_path / "no-weights"
    empty.mkdir()
    (empty / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsNotFoundError, match="no weights"):
        create_encoder(f"openclip:{empty}")


def test_bad_names_are_clear_errors(tiny):
    with pytest.raises(UnknownEncoderError, match="unknown open_clip model 'no-such'"):
        create_encoder("openclip:no-such")
    with pytest.raises(UnknownEncoderError, match="unknown pretrained tag 'nope' for ViT-B-32; known tags: openai"):
        create_encoder("openclip:ViT-B-32/nope")
    with pytest.raises(UnknownEncoderError, match="needs its architecture"):
        create_encoder(f"openclip:{tiny['a']}")
    with pytest.raises(UnknownEncoderError, match="unknown open_clip architecture"):
        create_encoder(f"openclip:{tiny['a']}", arch="no-such-arch")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        create_encoder(f"openclip:{tiny['a']}", arch=VIT_ARCH, device="cpu", precision="fp16")


def test_presets_match_open_clip_tables():
    rows = list_presets()
    assert [r.name for r in rows] == [f"openclip:{p}" for p in PRESETS]
    for row, preset in zip(rows, PRESETS.values(), strict=True):
        assert open_clip.get_pretrained_cfg(preset.arch, preset.pretrained), row.source
        cfg = open_clip.get_model_config(preset.arch)
        assert cfg["embed_dim"] == preset.dim == row.dim
        assert cfg["vision_cfg"]["image_size"] == preset.image_size
        assert cfg["text_cfg"].get("context_length", 77) == preset.context_length
        assert row.cached is None and row.download_mb > 0 and row.languages and row.license
    # SigLIP checkpoints loaded from a bare file still get SigLIP's preprocessing
    assert _arch_preprocess("ViT-B-16-SigLIP-i18n-256")["resize_mode"] == "squash"
    assert _arch_preprocess("ViT-B-16-SigLIP-i18n-256")["mean"] == (0.5, 0.5, 0.5)


def test_importing_the_models_stays_light():
    code = (
        "import sys, frozenlens.models, frozenlens.models.openclip, frozenlens.models.presets as oc; oc.list_presets();"
        "print(sorted(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "openclip:" in encoder_names()


def test_from_model_wraps_a_built_model(tiny):
    torch.manual_seed(0)
    model = open_clip.create_model(VIT_ARCH)
    enc = OpenClipEncoder.from_model(model, open_clip.get_tokenizer(VIT_ARCH), name="openclip:mine", version="1")
    assert enc.identity.describe() == "openclip:mine v1 (dim 32, visual 32)"
    assert enc.encode_texts(["a cat"]).shape == (1, 32)


@pytest.mark.slow
def test_engine_end_to_end_and_mismatch(tmp_path, testdata, tiny):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(testdata / "photos" / name, folder / name)
    checkpoint = tmp_path / "model.pt"
    shutil.copyfile(tiny["a"], checkpoint)
    enc = OpenClipEncoder(str(checkpoint), arch=VIT_ARCH, device="cpu")
    index = tmp_path / "index"
    with Engine.open(index, encoder=enc, create=True) as eng:
        report = eng.index([folder], workers=1)
        assert report.failed == 0 and report.encoded == len(PHOTOS)
        hits = eng.search("a photo of a cat", k=3)
        assert len(hits) == 3 and all(Path(h.path).parent == folder for h in hits)
        by_image = eng.search(folder / "coffee.png", k=2)  # image query: the identical photo first
        assert Path(by_image[0].path).name == "coffee.png" and by_image[0].score > 0.999
        assert eng.stats()["encoder"] == enc.identity.as_dict()
    # reopened by name: the engine rebuilds the encoder from the recorded name (+ options)
    with Engine.open(index, encoder_options={"arch": VIT_ARCH, "device": "cpu"}) as eng:
        assert [h.id for h in eng.search(folder / "coffee.png", k=2)] == [h.id for h in by_image]
    # a different tiny checkpoint is refused ...
    other = OpenClipEncoder(str(tiny["b"]), arch=VIT_ARCH, device="cpu")
    with pytest.raises(EncoderMismatchError, match=other.identity.version):
        Engine.open(index, encoder=other)
    # ... also when it replaced the file under the recorded name
    shutil.copyfile(tiny["b"], checkpoint)
    with (
        Engine.open(index, encoder_options={"arch": VIT_ARCH, "device": "cpu"}) as eng,
        pytest.raises(EncoderMismatchError),
    ):
        eng.search("a cat", k=1)


def test_pretrained_tag_from_the_hub_cache_and_weights_override(monkeypatch, tmp_path, tiny, vit):
    """A pretrained tag resolves through open_clip's table and the HF cache; weights= replaces the download."""
    from open_clip import pretrained

    tag_cfg = pretrained._pcfg(hf_hub="frozenlens-test/tiny-vit/", mean=(0.5,) * 3, std=(0.5,) * 3)
    monkeypatch.setitem(pretrained._PRETRAINED, VIT_ARCH, {"tiny": tag_cfg})
    _offline(monkeypatch, tmp_path)
    cache = tmp_path / "hub-cache"
    with pytest.raises(WeightsNotFoundError, match=f"{VIT_ARCH}/tiny .*frozenlens-test/tiny-vit.*--weights PATH"):
        create_encoder(f"openclip:{VIT_ARCH}/tiny", cache_dir=cache)
    # the same file placed where huggingface_hub caches downloads: found offline, version = the tag
    snapshot = cache / "models--frozenlens-test--tiny-vit" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    shutil.copyfile(tiny["a"], snapshot / "open_clip_pytorch_model.bin")
    (cache / "models--frozenlens-test--tiny-vit" / "refs").mkdir()
    (cache / "models--frozenlens-test--tiny-vit" / "refs" / "main").write_text("0" * 40)
    cached = create_encoder(f"openclip:{VIT_ARCH}/tiny", cache_dir=cache, device="cpu")
    assert cached.identity.version == "tiny"
    assert cached.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)  # the tag's preprocessing, not the default
    # weights= : the same tag with a local file; a content hash marks the version
    local = create_encoder(f"openclip:{VIT_ARCH}/tiny", weights=tiny["a"], device="cpu")
    assert local.identity.version.startswith("tiny+")
    texts = ["a cat", "un chat"]
    np.testing.assert_allclose(local.encode_texts(texts), cached.encode_texts(texts), atol=1e-6)
    np.testing.assert_allclose(local.encode_texts(texts), vit.encode_texts(texts), atol=1e-6)
    other = create_encoder(f"openclip:{VIT_ARCH}/tiny", weights=tiny["b"], device="cpu")
    assert other.identity.version != local.identity.version
    with pytest.raises(ValueError, match="language= does not apply"):
        create_encoder(f"openclip:{VIT_ARCH}/tiny", weights=tiny["a"], language="eng_Latn")


def test_reindex_round_trip_lite_to_openclip_and_back(tmp_path, testdata, tiny, lite_encoder):
    """Dimension-changing re-index: lite (512/1280) → tiny CLIP (32) → lite."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        shutil.copy(testdata / "photos" / name, folder / name)
    (folder / "coffee.png.txt").write_text("Morning coffee. " * 60, encoding="utf-8")  # chunked differently per tower
    clip = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu")
    index = tmp_path / "index"
    with Engine.open(index, encoder=lite_encoder, create=True) as eng:
        eng.index([folder], workers=1)
        lite_hit = eng.search(folder / "coffee.png", k=1)[0]
        report = eng.reindex(clip)
        assert report.swapped and report.images == len(PHOTOS) and report.failed == 0
        assert eng.stats()["encoder"] == clip.identity.as_dict()
        assert eng.stats()["vectors"]["semantic"] == len(PHOTOS)
        assert eng.spaces["semantic"].dim == clip.identity.dim
        # long caption re-chunked for the 77-token tower
        assert eng.stats()["vectors"]["caption"] > 1
        hit = eng.search(folder / "coffee.png", k=1)[0]
        assert hit.id == lite_hit.id and hit.score > 0.999  # same row, new vectors
        assert eng.search("morning coffee", k=1)[0].path.endswith("coffee.png")
    with pytest.raises(EncoderMismatchError):
        Engine.open(index, encoder=lite_encoder)
    with Engine.open(index, encoder=clip) as eng:
        eng.reindex(lite_encoder)
        assert eng.identity == lite_encoder.identity
        assert Path(eng.search("un chat", k=1)[0].path).name == "chelsea.png"
    assert sorted(p.name for p in index.glob("*.faiss")) == ["caption.e2.faiss", "semantic.e2.faiss", "visual.e2.faiss"]


def test_cli_with_a_local_checkpoint_encoder(tmp_path, testdata, tiny, capsys):
    """`index --encoder openclip:<arch>/<file>` then `search` reopens the same encoder by name."""
    from frozenlens import cli

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS[:3]:
        shutil.copy(testdata / "photos" / name, folder / name)
    weights = tmp_path / "vitb32-local.pt"
    shutil.copyfile(tiny["a"], weights)
    index = str(tmp_path / "index")
    argv = ["index", str(folder), "--index", index, "--encoder", f"openclip:{VIT_ARCH}/{weights}", "--no-progress"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main(["search", "--image", str(folder / PHOTOS[0]), "-k", "1", "--json", "--index", index]) == 0
    import json

    assert Path(json.loads(capsys.readouterr().out)[0]["path"]).name == PHOTOS[0]


class _RecordingNllbTokenizer:
    """Stands in for the NLLB tokenizer (hub-only, not available offline): it
    records the source language set for each call and delegates tokenising."""

    def __init__(self, inner):
        self.inner = inner
        self.current = "eng_Latn"
        self.seen: list[tuple[str, int]] = []

    def set_lang_fn(self, code):  # presence marks an NLLB-style tokenizer
        self.current = code

    def set_language(self, code):
        self.set_lang_fn(code)

    def __call__(self, texts, *args, **kwargs):
        self.seen.append((self.current, len(texts)))
        return self.inner(texts, *args, **kwargs)


def test_caption_language_reaches_nllb_style_tokenizers(tmp_path, testdata, tiny):
    from frozenlens.models.presets import NLLB_CODES

    enc = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu")
    enc.tokenizer = _RecordingNllbTokenizer(enc.tokenizer)
    base = enc.encode_texts(["ein Hund"])
    np.testing.assert_allclose(enc.encode_texts_in(["ein Hund"], "de"), base, atol=1e-6)
    assert enc.tokenizer.seen[-1] == ("deu_Latn", 1) and enc.tokenizer.current == "eng_Latn"  # restored
    enc.encode_texts_in(["x"], "zh-Hant")
    assert enc.tokenizer.seen[-1][0] == NLLB_CODES["zh-Hant"] == "zho_Hant"
    enc.encode_texts_in(["x"], None)
    assert enc.tokenizer.seen[-1][0] == "eng_Latn"
    # indexing: captions are embedded per language
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(testdata / "photos" / "chelsea.png", folder / "cat.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        '{"path": "photos/cat.png", "text": "Eine Katze auf dem Sofa", "lang": "de"}\n'
        '{"path": "photos/cat.png", "text": "猫がソファで寝ています"}\n', encoding="utf-8")
    enc.tokenizer.seen.clear()
    with Engine.open(tmp_path / "index", encoder=enc, create=True) as eng:
        eng.index([folder], captions=manifest, workers=1)
        langs = {code for code, _ in enc.tokenizer.seen}
        assert {"deu_Latn", "jpn_Jpan"} <= langs  # the Japanese one by detection
        eng.search("Le chat dort sur le canapé", k=1)
        assert enc.tokenizer.seen[-1][0] == "fra_Latn"


def test_mapped_weights_equal_open_clips_own_loading(tiny, photos):
    """The CPU fast path (uninitialised build, checkpoint mapped from disk) gives open_clip's embeddings."""
    from frozenlens.models.openclip_fast import mapped_clip

    fast = mapped_clip(VIT_ARCH, tiny["a"], quick_gelu=False, preprocess_cfg={}, cache_dir=None)
    assert fast is not None
    assert _mapped_from(fast.visual.conv1.weight, tiny["a"])  # mapped, not read into memory
    reference = open_clip.create_model(VIT_ARCH, pretrained=str(tiny["a"])).eval()
    fast.eval()
    tokens = open_clip.get_tokenizer(VIT_ARCH)(CORPUS)
    pixels = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(fast.encode_text(tokens), reference.encode_text(tokens))
        assert torch.equal(fast.encode_image(pixels), reference.encode_image(pixels))
    assert torch.equal(fast.attn_mask, reference.attn_mask)
    # the encoder built by name takes that path on the CPU
    enc = OpenClipEncoder(str(tiny["a"]), arch=VIT_ARCH, device="cpu")
    assert _mapped_from(enc.model.visual.conv1.weight, tiny["a"])
    assert not _mapped_from(reference.visual.conv1.weight, tiny["a"])  # the check can fail: a loaded copy


def _mapped_from(tensor, path: Path) -> bool:
    """Whether the tensor's memory lies in a mapping of the file ``path`` (/proc/self/maps)."""
    ptr = tensor.untyped_storage().data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == str(path):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= ptr < hi:
                return True
    return False


def test_mapping_declines_what_it_cannot_prove(tiny, tmp_path):
    from frozenlens.models.openclip_fast import mapped_clip

    # another architecture's checkpoint (keys/shapes differ): None, so open_clip's own loader reports it
    assert mapped_clip(XLMR_ARCH, tiny["a"], quick_gelu=False, preprocess_cfg={}, cache_dir=None) is None
    partial = tmp_path / "partial.pt"
    state = torch.load(tiny["a"], weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, partial)
    assert mapped_clip(VIT_ARCH, partial, quick_gelu=False, preprocess_cfg={}, cache_dir=None) is None
    not_torch = tmp_path / "junk.pt"
    not_torch.write_bytes(b"not a checkpoint")
    assert mapped_clip(VIT_ARCH, not_torch, quick_gelu=False, preprocess_cfg={}, cache_dir=None) is None


def test_missing_open_clip_is_a_typed_error_naming_the_extra(monkeypatch) -> None:
    """A `make setup` install has no open_clip: a clear error, not a traceback (CLI exit 1)."""
    from frozenlens.errors import UnknownEncoderError

    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if not installed
    with pytest.raises(UnknownEncoderError, match=r"frozenlens\[clip\]"):
        OpenClipEncoder("ViT-B-32/some.pt")
