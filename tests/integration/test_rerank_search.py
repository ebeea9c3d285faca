"""Reranking inside search, on the real KPhotoAlbum archive with the real
`lite` encoder: stored region tokens, a head trained from the index's own
captions through the CLI, search with and without the head, the documented
score combination, refusal of a head for another encoder, eval --rerank."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from frozenlens import cli
from frozenlens.engine import Engine, fuse_scores
from frozenlens.errors import RerankerError, RerankerMismatchError
from frozenlens.models.base import EncoderIdentity
from frozenlens.reranker.features import ImageTokens, encode_texts_with_units
from frozenlens.reranker.head import Reranker
from frozenlens.reranker.model import FusionHead, preset_config
from tests.conftest import index_kphotoalbum


@pytest.fixture(scope="module")
def archive(tmp_path_factory, testdata, shared_lite):
    return index_kphotoalbum(tmp_path_factory.mktemp("rerank"), testdata)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def random_head(identity: EncoderIdentity, seed: int = 0) -> Reranker:
    """A head with a non-trivial (random) correction, so reranking visibly changes scores."""
    torch.manual_seed(seed)
    model = FusionHead(preset_config("cpu", dim=identity.dim, visual_dim=identity.visual_dim,
                                     encoder=identity.as_dict()))
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.3)
    return Reranker(model.eval())


def test_indexer_stores_region_tokens(archive, shared_lite):
    _, index = archive
    with Engine.open(index) as eng:
        ids = eng.store.vector_ids("semantic").tolist()
        toks = eng.store.tokens(ids, 512)
        assert sorted(toks) == sorted(ids) and len(ids) >= 20
        for i in ids[:5]:
            assert toks[i].shape == (4, 512)
            np.testing.assert_allclose(np.linalg.norm(toks[i], axis=1), 1.0, atol=2e-3)  # fp16 storage


def test_search_with_and_without_the_head(archive, shared_lite, tmp_path):
    photos, index = archive
    work = tmp_path / "index"
    shutil.copytree(index, work)
    query = "a dog lying on the grass"
    with Engine.open(work) as eng:
        before = eng.search(query, k=10)
        assert not any(h.reranked for h in before)
        with pytest.raises(RerankerError, match="no reranker head"):
            eng.search(query, k=5, rerank=True)
        head = random_head(eng.identity)
        head.save(work)
        after = eng.search(query, k=10)  # default: reranked once a head exists
        plain = eng.search(query, k=10, rerank=False)
        assert [(h.id, h.score) for h in plain] == [(h.id, h.score) for h in before]
        assert all(h.reranked for h in after)
        assert [h.id for h in after] != [h.id for h in before]  # the random head reorders

        # the documented combination: image_score = head score of (query, image),
        # first_stage_image_score = the cosine, score = fuse(max) with caption_score
        ids = [h.id for h in after]
        enc = eng.encoder
        sem = eng.store.vectors("semantic", ids, 512)
        vis = eng.store.vectors("visual", ids, 1280)
        toks = eng.store.tokens(ids, 512)
        images = ImageTokens.build(sem, vis, np.stack([toks[i] for i in ids]))
        from frozenlens.indexer.language import detect_language

        q = encode_texts_with_units(enc, [query], [detect_language(query)])
        expected = head.score(q, images)
        np.testing.assert_allclose([h.image_score for h in after], expected, atol=1e-4)
        np.testing.assert_allclose([h.first_stage_image_score for h in after], sem @ q.global_[0], atol=1e-4)
        s_cap = np.array([np.nan if h.caption_score is None else h.caption_score for h in after])
        np.testing.assert_allclose([h.score for h in after], fuse_scores(expected.astype(np.float64), s_cap, "max"),
                                   atol=1e-4)
        assert [h.score for h in after] == sorted((h.score for h in after), reverse=True)

        # K' bounds the candidates: with K' = 3 only first-stage top-3 can come back
        top3 = {h.id for h in eng.search(query, k=3, rerank=False)}
        assert {h.id for h in eng.search(query, k=3, rerank_candidates=3)} == top3
        # image queries are never reranked
        assert not any(h.reranked for h in eng.search(photos / "spiff.jpg", k=3))


def test_head_for_another_encoder_is_refused(archive, shared_lite, tmp_path):
    _, index = archive
    work = tmp_path / "index"
    shutil.copytree(index, work)
    random_head(EncoderIdentity("openclip:ViT-B-32/openai", "openai", 512, 512)).save(work)
    with Engine.open(work) as eng:
        with pytest.raises(RerankerMismatchError, match="trained for openclip:ViT-B-32/openai"):
            eng.search("a dog", k=3)
        assert eng.search("a dog", k=3, rerank=False)  # still searchable without it
    rc, _, err = run_cli_search(work)
    assert rc == 1 and "trained for openclip" in err and "train-reranker" in err


def run_cli_search(index: Path) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["search", "a dog", "--index", str(index)])
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.slow
def test_cli_train_info_search_and_eval(archive, shared_lite, tmp_path, capsys, testdata):
    photos, index = archive
    work = tmp_path / "index"
    shutil.copytree(index, work)
    rc, out, err = run(capsys, "train-reranker", "--index", str(work), "--epochs", "2", "--seed", "1", "--max-steps-per-epoch", "3",
                       "--val-fraction", "0.25", "--no-progress")
    assert rc == 0, err
    assert "trained on" in out and "validation R@1" in out and (work / "reranker.json").is_file()

    rc, out, _ = run(capsys, "reranker", "info", "--index", str(work))
    assert rc == 0 and "preset:     cpu" in out and "parameters:" in out
    assert "paper" in out and "68," in out  # the paper preset's ~68 M parameters for 512-d
    rc, out, _ = run(capsys, "reranker", "info", "--index", str(work), "--json")
    doc = json.loads(out)
    assert doc["head"]["parameters"]["total"] == doc["presets"]["cpu"]["total"]

    rc, out, _ = run(capsys, "search", "snow", "--index", str(work), "--json")
    assert rc == 0 and all(h["reranked"] for h in json.loads(out))
    rc, out, _ = run(capsys, "search", "snow", "--index", str(work), "--json", "--no-rerank")
    assert rc == 0 and not any(h["reranked"] for h in json.loads(out))
    rc, out, _ = run(capsys, "search", "snow", "--index", str(work), "--explain", "-k", "2")
    assert "reranked: image" in out

    # the harness with the head, on the archive's descriptions as an eval manifest
    manifest = tmp_path / "eval.jsonl"
    with manifest.open("w", encoding="utf-8") as f:
        for line in (photos / "captions.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["kind"] == "description":
                f.write(json.dumps({"image": str(photos / row["path"]), "captions": {"en": [row["text"]]}}) + "\n")
    rc, out, err = run(capsys, "eval", str(manifest), "--rerank", str(work), "--json")
    assert rc == 0, err
    assert json.loads(out)["reranked"] is True
    rc, out, err = run(capsys, "eval", str(manifest), "--rerank", str(tmp_path / "nowhere"))
    assert rc == 1 and "no reranker head" in err

    # a second run resumes nothing (no checkpoint left) and overwrites the head atomically
    assert not (work / "reranker.train.pt").exists()
    rc, _, err = run(capsys, "train-reranker", "--index", str(work), "--dataset", str(tmp_path / "missing.jsonl"),
                     "--no-progress")
    assert rc == 1 and "missing.jsonl" in err
    assert Reranker.load(work, shared_lite.identity)  # the old head is intact
