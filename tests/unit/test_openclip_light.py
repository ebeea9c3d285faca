"""Text queries on ``openclip:`` encoders without torch: the torch-free BPE tokenizer gives open_clip's
token ids, and a fresh process answers a text search from the cached text graph with neither torch
nor open_clip imported (checked in a subprocess), with the full encoder's vectors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("onnxruntime")

from frozenlens.models.clip_bpe import ClipBpe  # noqa: E402

ODD = [
    "a dog on the beach", "A DOG   on\tthe\nbeach ", "", " ", "l'été 2019 à Paris, c'est génial!",
    "猫が寝ている", "一只猫在沙发上睡觉", "собака бежит по траве", "كلب على الشاطئ", "कुत्ता समुद्र तट पर",
    "🙂🐶 emoji only 👍🏽", "&amp;lt;b&amp;gt; html &quot;entities&quot;", "<start_of_text> literal <end_of_text>",
    "mojibake: Ã©tÃ©", "numbers 1234567890 3.14 1e-9", "it's they're we've I'm you'll he'd",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ", "zero\u200bwidth\u00adsoft", "x" * 400, "word " * 120,
    "Ünïcödé çåsé ßtraße", "tab\tand\r\nnewlines", "a-b_c/d\\e|f~g^h", "😀" * 50,
]  # fmt: skip


@pytest.mark.parametrize("context_length", [77, 24])
def test_clip_bpe_ids_equal_open_clips(context_length: int) -> None:
    from open_clip.tokenizer import SimpleTokenizer

    theirs = SimpleTokenizer(context_length=context_length)
    ours = ClipBpe(context_length=context_length)
    np.testing.assert_array_equal(ours(ODD), theirs(ODD).numpy())
    for text in ODD:
        assert ours.encode(text) == theirs.encode(text)


CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_SUBPROCESS = """
import json, sys
import numpy as np
from frozenlens.models import create_encoder
enc = create_encoder(sys.argv[1])
vecs = enc.encode_texts(json.loads(sys.argv[2]))
print(json.dumps({"type": type(enc).__name__, "identity": enc.identity.as_dict(), "vecs": vecs.tolist(),
                  "heavy": sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)}))
"""


def test_a_fresh_process_encodes_texts_without_torch(tmp_path: Path, monkeypatch) -> None:
    import torch

    from frozenlens.models import create_encoder
    from frozenlens.models.openclip import OpenClipEncoder
    from frozenlens.models.openclip_light import LightOpenClipEncoder

    (tmp_path / "fl-light-vit.json").write_text(json.dumps(CFG))
    open_clip.add_model_config(tmp_path / "fl-light-vit.json")
    torch.manual_seed(3)
    ckpt = tmp_path / "m.pt"
    torch.save(open_clip.create_model("fl-light-vit").state_dict(), ckpt)
    cache = tmp_path / "cache"
    monkeypatch.setenv("FROZENLENS_CACHE", str(cache))
    name = f"openclip:fl-light-vit/{ckpt}"
    texts = ODD[:8]

    # nothing cached: the full encoder exports both graphs and the manifest, and is then let go for the
    # light encoder over those graphs (the torch model is not held for the process)
    first = create_encoder(name)
    assert isinstance(first, LightOpenClipEncoder) and first._full is None
    full = OpenClipEncoder(f"fl-light-vit/{ckpt}")  # the same weights: the cached graphs, nothing exported again
    assert full.runtime == "onnx" and full._onnx.text.path.is_file() and full._onnx.image.path.is_file()
    assert not full._onnx.text.loaded and not full._onnx.image.loaded  # no session built yet
    np.testing.assert_allclose(first.encode_texts(texts), full.encode_texts(texts), atol=1e-6)
    assert full._onnx.text.builds == 0 and first._full is None
    want = full.encode_texts(texts)
    reference = OpenClipEncoder(f"fl-light-vit/{ckpt}", runtime="torch").encode_texts(texts)

    def fresh() -> dict:
        env = {**os.environ, "FROZENLENS_CACHE": str(cache)}
        done = subprocess.run([sys.executable, "-c", _SUBPROCESS, name, json.dumps(texts)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    run = fresh()
    assert run["type"] == "LightOpenClipEncoder" and run["heavy"] == []
    assert run["identity"] == full.identity.as_dict()
    got = np.asarray(run["vecs"], np.float32)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert float((got * reference).sum(1).min()) >= 0.9999  # and torch's reference vectors

    # in process too: the light encoder answers texts (and images, below) without the full one
    light = create_encoder(name)
    assert isinstance(light, LightOpenClipEncoder)
    np.testing.assert_allclose(light.encode_texts(texts), want, atol=1e-5)
    assert light._full is None
    assert light.count_tokens("a dog") == full.count_tokens("a dog")
    batch = np.zeros((2, 64, 64, 3), np.uint8)
    np.testing.assert_allclose(light.embed_prepared(batch).semantic, full.embed_prepared(batch).semantic, atol=1e-5)
    assert light._full is None  # the full encoder exported the image graph too, when it wrote the manifest

    # now that the full encoder exported the image graph, a fresh light encoder embeds images without it
    rng = np.random.default_rng(0)
    photos = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    want_img = full.embed_prepared(photos)
    again = create_encoder(name)
    assert isinstance(again, LightOpenClipEncoder)
    got_img = again.embed_prepared(photos)
    assert again._full is None
    np.testing.assert_allclose(got_img.semantic, want_img.semantic, atol=1e-5)
    np.testing.assert_allclose(got_img.tokens, want_img.tokens, atol=1e-5)
    from PIL import Image

    odd = Image.fromarray(rng.integers(0, 256, (37, 91, 3), dtype=np.uint8))
    np.testing.assert_array_equal(again.prepare(odd), full.prepare(odd))

    # a damaged image graph is never trusted: image calls build the full encoder (which rewrites the graph)
    image_graph = full._onnx.image.path
    image_graph.write_bytes(image_graph.read_bytes()[:-10])
    damaged = create_encoder(name)
    assert isinstance(damaged, LightOpenClipEncoder)
    np.testing.assert_allclose(damaged.embed_prepared(photos).semantic, want_img.semantic, atol=1e-5)
    assert damaged._full is not None

    # a damaged text graph is never trusted: text calls build the full encoder (which exports it again)
    graph = full._onnx.text.path
    graph.write_bytes(graph.read_bytes()[:1000])
    damaged = create_encoder(name)
    assert isinstance(damaged, LightOpenClipEncoder)
    np.testing.assert_allclose(damaged.encode_texts(texts), want, atol=1e-5)
    assert damaged._full is not None

    # other weights, same file name: another key, no light encoder from the old manifest
    torch.manual_seed(4)
    torch.save(open_clip.create_model("fl-light-vit").state_dict(), ckpt)
    other = create_encoder(name)  # built and exported anew (then light, over the new graphs)
    assert other.identity != full.identity
    assert not np.allclose(other.encode_texts(texts), want, atol=1e-3)


def _tiny_checkpoint(tmp_path: Path, arch: str, seed: int, monkeypatch) -> Path:
    """A random tiny ViT registered as ``arch``, saved to ``tmp_path/m.pt``; the artefact cache in ``tmp_path``."""
    import torch

    (tmp_path / f"{arch}.json").write_text(json.dumps(CFG))
    open_clip.add_model_config(tmp_path / f"{arch}.json")
    torch.manual_seed(seed)
    ckpt = tmp_path / "m.pt"
    torch.save(open_clip.create_model(arch).state_dict(), ckpt)
    monkeypatch.setenv("FROZENLENS_CACHE", str(tmp_path / "cache"))
    return ckpt


_SEARCH = """
import json, sys
from frozenlens.engine import Engine
from frozenlens.request import SearchRequest
with Engine.open(sys.argv[1]) as engine:
    hits = engine.search(SearchRequest(query=sys.argv[2], k=3))
    print(json.dumps({"hits": [h.path for h in hits], "type": type(engine.encoder).__name__,
                      "heavy": sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)}))
"""


_INDEX = """
import json, sys
from frozenlens.engine import Engine
with Engine.open(sys.argv[1]) as engine:
    report = engine.index([sys.argv[2]])
    print(json.dumps({"added": report.encoded, "type": type(engine.encoder).__name__,
                      "heavy": sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)}))
"""


_CLI_INDEX = """
import json, sys
from frozenlens.cli import main
code = main(["index", sys.argv[2], "--index", sys.argv[1], "--no-progress"])
print(json.dumps({"code": code,
                  "heavy": sorted(m for m in ("torch", "open_clip", "torchvision") if m in sys.modules)}))
"""


def test_a_fresh_text_search_on_an_openclip_index_imports_no_torch(tmp_path: Path, testdata: Path,
                                                                   monkeypatch) -> None:
    import shutil

    from frozenlens.engine import Engine
    from frozenlens.request import SearchRequest

    ckpt = _tiny_checkpoint(tmp_path, "fl-light-vit2", 5, monkeypatch)
    folder = tmp_path / "photos"
    shutil.copytree(testdata / "photos", folder)
    with Engine.open(tmp_path / "index", create=True, encoder=f"openclip:fl-light-vit2/{ckpt}") as engine:
        engine.index([folder])
        want = [h.path for h in engine.search(SearchRequest(query="a cat on a sofa", k=3))]

    env = {**os.environ, "FROZENLENS_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", _SEARCH, str(tmp_path / "index"), "a cat on a sofa"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["type"] == "LightOpenClipEncoder" and run["heavy"] == []
    assert run["hits"] == want

    # indexing new photos in a fresh process: the cached image graph, no torch, the full encoder's vectors
    extra = sorted(p for p in (testdata / "photos").rglob("*.jpg"))[:2]
    newdir = tmp_path / "photos" / "new"
    newdir.mkdir()
    from PIL import Image, ImageOps

    for i, p in enumerate(extra):  # new content (a copy would be a duplicate, not encoded)
        with Image.open(p) as im:
            ImageOps.mirror(im.convert("RGB")).save(newdir / f"n{i}.jpg", quality=90)
    done = subprocess.run([sys.executable, "-c", _INDEX, str(tmp_path / "index"), str(folder)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["type"] == "LightOpenClipEncoder" and run["heavy"] == [] and run["added"] == 2
    # and `frozenlens index` itself, with the default --device/--precision (asking torch whether CUDA is
    # there would import it: +0.5 s and +0.24 GB for a default run that needs neither)
    done = subprocess.run([sys.executable, "-c", _CLI_INDEX, str(tmp_path / "index"), str(folder)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run == {"code": 0, "heavy": []}
    from frozenlens.models.openclip import OpenClipEncoder

    full = OpenClipEncoder(f"fl-light-vit2/{ckpt}")
    with Engine.open(tmp_path / "index") as engine:
        for i in range(2):
            with Image.open(newdir / f"n{i}.jpg") as im:  # this process's (light) encoder = the full one
                np.testing.assert_allclose(engine.encoder.embed_images([im]).semantic,
                                           full.embed_images([im]).semantic, atol=1e-5)
            hits = engine.search(Path(newdir / f"n{i}.jpg"), 1)  # the vector the fresh process stored
            assert hits[0].path.endswith(f"n{i}.jpg") and hits[0].score > 0.9999


def test_a_manifest_naming_an_older_export_is_rewritten(tmp_path: Path, monkeypatch) -> None:
    """A manifest written for the graphs of an older export recipe (another GRAPH_FORMAT / OPSET in their
    keys) names graphs this version does not use: the full encoder built in its place writes it anew, so
    only that one process pays for torch, not every later one."""

    from frozenlens.models import create_encoder
    from frozenlens.models.artifact_cache import ArtifactCache
    from frozenlens.models.openclip_light import MANIFEST, LightOpenClipEncoder, manifest_key

    ckpt = _tiny_checkpoint(tmp_path, "fl-light-vit3", 6, monkeypatch)
    name = f"openclip:fl-light-vit3/{ckpt}"
    texts = ODD[:4]
    want = create_encoder(name).encode_texts(texts)  # the first use: graphs exported, manifest written

    cache = ArtifactCache()
    key = manifest_key(f"fl-light-vit3/{ckpt}", {}, "onnx")
    manifest = json.loads(bytes(cache.read(MANIFEST, key)))
    current = manifest["graph"]
    cache.write(MANIFEST, key, json.dumps({**manifest, "graph": [current[0], "0" * 32]}).encode())

    stale = create_encoder(name)
    assert isinstance(stale, LightOpenClipEncoder)
    np.testing.assert_allclose(stale.encode_texts(texts), want, atol=1e-5)
    assert stale._full is not None  # this process had to load the torch model ...
    assert json.loads(bytes(cache.read(MANIFEST, key)))["graph"] == current  # ... and mended the manifest
    mended = create_encoder(name)
    np.testing.assert_allclose(mended.encode_texts(texts), want, atol=1e-5)
    assert mended._full is None
