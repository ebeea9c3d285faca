"""ONNX Runtime as an encoder runtime: every runtime gives the torch reference's vectors, the
exported graphs are cached by the weights' digest and rebuilt when damaged, and a missing
onnxruntime falls back to torch (``auto``) or is a typed error (asked for explicitly).

Real components: the packaged ``lite`` weights, a tiny randomly initialised open_clip ViT
(pretrained CLIPs cannot be downloaded here), real photos, real ONNX Runtime sessions.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from frozenlens.errors import RuntimeUnavailableError
from frozenlens.models.lite import LiteEncoder, resize_center_crop

pytest.importorskip("onnxruntime")

PHOTOS = ("chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png", "motorcycle_left.png")


@pytest.fixture(scope="module")
def batch(testdata: Path) -> np.ndarray:
    images = [Image.open(testdata / "photos" / n).convert("RGB") for n in PHOTOS]
    return np.stack([resize_center_crop(im) for im in images])


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum(-1).min())


@pytest.fixture(scope="module")
def lite_eager(model_cache: Path, batch: np.ndarray):
    return LiteEncoder(cache_dir=model_cache, runtime="eager").embed_prepared(batch)


# ---------------------------------------------------------------------- lite
@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_lite_runtimes_give_the_reference_vectors(model_cache: Path, batch, lite_eager, runtime: str) -> None:
    enc = LiteEncoder(cache_dir=model_cache, runtime=runtime)  # type: ignore[arg-type]
    got = enc.embed_prepared(batch)
    floor = 0.9999 if runtime == "onnx" else 0.99
    assert _min_cos(got.semantic, lite_eager.semantic) >= floor
    assert _min_cos(got.visual, lite_eager.visual) >= floor
    assert _min_cos(got.tokens, lite_eager.tokens) >= floor
    assert [lab[0][0] for lab in got.labels] == [lab[0][0] for lab in lite_eager.labels]
    if runtime == "onnx":  # the same vectors: the same identity, indexes stay valid
        assert enc.identity == LiteEncoder(cache_dir=model_cache, runtime="eager").identity
        np.testing.assert_allclose(got.semantic, lite_eager.semantic, atol=2e-4)
    else:  # int8 weights are other vectors: another version
        assert enc.identity.version.endswith("+int8")


_LITE_IMAGES = """
import json, sys
import numpy as np
from frozenlens.models.lite import LiteEncoder
enc = LiteEncoder(cache_dir=sys.argv[1])
out = enc.embed_prepared(np.load(sys.argv[2]))
print(json.dumps({"runtime": enc.runtime, "semantic": out.semantic.tolist(), "visual": out.visual.tolist(),
                  "labels": [lab[0][0] for lab in out.labels], "torch": "torch" in sys.modules}))
"""


def test_lite_onnx_embeds_images_without_importing_torch(model_cache: Path, batch, lite_eager, tmp_path) -> None:
    """The default runtime's image side is numpy + ONNX Runtime only (checked in a fresh process)."""
    import subprocess

    LiteEncoder(cache_dir=model_cache).embed_prepared(batch[:1])  # the graph in the cache, as after a first run
    np.save(tmp_path / "batch.npy", batch)
    done = subprocess.run([sys.executable, "-c", _LITE_IMAGES, str(model_cache), str(tmp_path / "batch.npy")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["runtime"] == "onnx" and run["torch"] is False
    np.testing.assert_allclose(np.asarray(run["semantic"], np.float32), lite_eager.semantic, atol=2e-4)
    np.testing.assert_allclose(np.asarray(run["visual"], np.float32), lite_eager.visual, atol=2e-4)
    assert run["labels"] == [lab[0][0] for lab in lite_eager.labels]


def test_lite_default_runtime_is_onnx_where_installed(model_cache: Path) -> None:
    assert LiteEncoder(cache_dir=model_cache).runtime == "onnx"


def test_lite_graph_is_cached_keyed_and_rebuilt_when_damaged(tmp_path: Path, batch, lite_eager, caplog) -> None:
    from frozenlens.models.lite_onnx import lite_graph

    first = LiteEncoder(cache_dir=tmp_path, runtime="onnx")
    ref = first.embed_prepared(batch[:2])
    graph = first._net.graph
    assert graph.builds == 1 and graph.path.is_file()

    again = LiteEncoder(cache_dir=tmp_path, runtime="onnx")
    np.testing.assert_array_equal(again.embed_prepared(batch[:2]).semantic, ref.semantic)
    assert again._net.graph.builds == 0  # from the cache, not exported again

    def weights_file() -> Path:  # the graph's external data file (one, after every write)
        (found,) = graph.path.parent.glob(graph.path.name + ".*.data")
        return found

    # the weights live beside the graph, not in it
    assert weights_file().stat().st_size > 10 * graph.path.stat().st_size

    # truncated, then same size but other bytes, of the graph or of its weights: detected, logged, rebuilt,
    # same vectors; the rebuilt weights get a new file, the old one is removed
    for damage, target in [(lambda b: b[: len(b) // 2], lambda: graph.path),
                           (lambda b: b[:100] + bytes(len(b) - 100), lambda: graph.path),
                           (lambda b: b[: len(b) - 8], weights_file),
                           (lambda b: b[:100] + bytes(len(b) - 100), weights_file)]:
        before = weights_file()
        file = target()
        file.write_bytes(damage(file.read_bytes()))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="frozenlens.models.onnx_runtime"):
            fixed = LiteEncoder(cache_dir=tmp_path, runtime="onnx")
            out = fixed.embed_prepared(batch[:2])
        assert fixed._net.graph.builds == 1
        assert "unusable" in caplog.text
        np.testing.assert_array_equal(out.semantic, ref.semantic)
        assert weights_file() != before

    # other weights: another key, another file, their own vectors
    import torch

    from frozenlens.models.efficientnet_lite import default_weights_path

    state = torch.load(default_weights_path(), map_location="cpu", weights_only=True)
    state["_fc.bias"] = state["_fc.bias"] + torch.linspace(-3, 3, state["_fc.bias"].numel())
    other = tmp_path / "other.pth"
    torch.save(state, other)
    g_other = lite_graph(first._cache, other, int8=False, micro_batch=4, threads=1)
    assert g_other.path != graph.path
    changed = LiteEncoder(cache_dir=tmp_path, runtime="onnx", weights=other).embed_prepared(batch[:2])
    eager_changed = LiteEncoder(cache_dir=tmp_path, runtime="eager", weights=other).embed_prepared(batch[:2])
    assert _min_cos(changed.semantic, eager_changed.semantic) >= 0.9999
    assert _min_cos(changed.semantic, ref.semantic) < 0.999  # not the old graph's answer


def test_missing_onnxruntime_falls_back_or_is_a_typed_error(model_cache: Path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with caplog.at_level(logging.INFO, logger="frozenlens.models.onnx_runtime"):
        enc = LiteEncoder(cache_dir=model_cache)
    assert enc.runtime == "jit" and "onnxruntime is not installed" in caplog.text
    for runtime in ("onnx", "onnx-int8"):
        with pytest.raises(RuntimeUnavailableError, match="onnxruntime"):
            LiteEncoder(cache_dir=model_cache, runtime=runtime)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown runtime"):
        LiteEncoder(cache_dir=model_cache, runtime="tensorrt")  # type: ignore[arg-type]



@pytest.mark.parametrize("package", ["onnx", "onnxscript", "onnx_ir"])
def test_a_missing_exporter_package_makes_the_onnx_runtimes_unavailable(package: str, monkeypatch) -> None:
    """The graphs are exported through onnx, onnxscript and onnx-ir: without one, "auto" means torch (the
    rule's one owner, ``missing_for``) rather than a traceback from inside torch's exporter."""
    from frozenlens.models.onnx_runtime import missing_for

    assert missing_for("onnx") is None
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    for runtime in ("onnx", "onnx-int8"):
        assert package.replace("_", "-") in missing_for(runtime)
    assert missing_for("torch") is None


# ------------------------------------------------------------------ openclip
@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    """A tiny random open_clip ViT with open_clip's text transformer and BPE tokenizer, as a .pt file."""
    open_clip = pytest.importorskip("open_clip")
    import torch

    root = tmp_path_factory.mktemp("tiny-ort")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    (root / "fl-ort-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "fl-ort-vit.json")
    torch.manual_seed(0)
    torch.save(open_clip.create_model("fl-ort-vit").state_dict(), root / "a.pt")
    return root / "a.pt"


TEXTS = ["a photo of a cat", "un chat sur le canapé", "猫が寝ている", "собака", "a " * 60, "", "🙂 &amp; <b>x</b>"]


def _openclip(ckpt: Path, runtime: str):
    from frozenlens.models.openclip import OpenClipEncoder

    return OpenClipEncoder(str(ckpt), arch="fl-ort-vit", device="cpu", runtime=runtime, batch_size=3)


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_openclip_runtimes_give_the_reference_vectors(tiny_vit, testdata, tmp_path, monkeypatch, runtime) -> None:
    monkeypatch.setenv("FROZENLENS_CACHE", str(tmp_path))
    ref, enc = _openclip(tiny_vit, "torch"), _openclip(tiny_vit, runtime)
    images = [Image.open(testdata / "photos" / n).convert("RGB") for n in PHOTOS]
    batch = np.stack([ref.prepare(im) for im in images])
    want, got = ref.embed_prepared(batch), enc.embed_prepared(batch)
    floor = 0.9999 if runtime == "onnx" else 0.99
    assert _min_cos(got.semantic, want.semantic) >= floor
    assert _min_cos(got.tokens, want.tokens) >= floor
    assert _min_cos(enc.encode_texts(TEXTS), ref.encode_texts(TEXTS)) >= floor
    assert enc._onnx.text.loaded and enc._onnx.image.loaded
    if runtime == "onnx":
        assert enc.identity == ref.identity
    else:
        assert enc.identity.version == ref.identity.version + "+int8"


def test_openclip_text_calls_build_only_the_text_session_and_reuse_the_cache(tiny_vit, tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENLENS_CACHE", str(tmp_path))
    first = _openclip(tiny_vit, "auto")
    assert first.runtime == "onnx"
    vecs = first.encode_texts(TEXTS)
    assert first._onnx.text.builds == 1 and not first._onnx.image.loaded  # no image export for a text call
    again = _openclip(tiny_vit, "auto")
    np.testing.assert_array_equal(again.encode_texts(TEXTS), vecs)
    assert again._onnx.text.builds == 0


def test_openclip_missing_onnxruntime(tiny_vit, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with caplog.at_level(logging.INFO, logger="frozenlens.models.onnx_runtime"):
        assert _openclip(tiny_vit, "auto").runtime == "torch"
    assert "onnxruntime is not installed" in caplog.text
    with pytest.raises(RuntimeUnavailableError):
        _openclip(tiny_vit, "onnx")


def test_remembered_file_digests_follow_every_write(tmp_path: Path) -> None:
    import hashlib
    import os

    from frozenlens.models.artifact_cache import ArtifactCache

    cache = ArtifactCache(tmp_path / "cache")
    f = tmp_path / "weights.bin"
    f.write_bytes(b"a" * 1000)
    assert cache.file_digest(f) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list(cache.root.glob("file-digest-*.fla"))) == 1
    assert cache.file_digest(f) == hashlib.sha256(b"a" * 1000).hexdigest()  # remembered, same entry
    assert len(list(cache.root.glob("file-digest-*.fla"))) == 1
    st = f.stat()
    with f.open("r+b") as fh:  # same size, other bytes, modification time put back: the ctime still moves
        fh.write(b"b")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.file_digest(f) == hashlib.sha256(b"b" + b"a" * 999).hexdigest()


def test_concurrent_builders_of_one_graph_export_it_once(tmp_path: Path) -> None:
    """Two encoders (or processes) building the same graph: one exports, the other waits for the build
    lock and finds the files made (a second export would also delete the first one's weights file)."""
    import threading
    import time

    import torch

    from frozenlens.models.artifact_cache import ArtifactCache
    from frozenlens.models.onnx_runtime import OnnxGraph, export_onnx

    calls: list[int] = []

    def export(dest: Path, data: Path) -> None:
        calls.append(1)
        time.sleep(0.5)  # long enough for the other builder to arrive
        export_onnx(torch.nn.Linear(64, 8).eval(), (torch.zeros(2, 64),), ("x",), ("y",), dest, data)

    cache = ArtifactCache(tmp_path)
    graphs = [OnnxGraph(cache, "toy", ["w"], export) for _ in range(2)]
    outs: list[np.ndarray] = []
    threads = [threading.Thread(target=lambda g=g: outs.append(g.run({"x": np.ones((1, 64), np.float32)})[0]))
               for g in graphs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sum(g.builds for g in graphs) == 1
    assert len(outs) == 2 and np.array_equal(outs[0], outs[1])
    assert len(list(tmp_path.rglob("toy-*.data"))) == 1


def test_an_export_lets_go_of_the_modules_tensors(tmp_path: Path) -> None:
    """After the export, nothing holds the module's tensors: neither the exporter's graph optimiser (which
    keeps the last graph it matched) nor the graph's record of removed inputs (a parameter the graph never
    uses). Before this was mended a ViT-B/32's whole checkpoint stayed resident for the process."""
    import gc
    import weakref

    import onnxruntime as ort
    import torch

    from frozenlens.models.onnx_runtime import export_onnx

    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = torch.nn.Linear(64, 8)
            self.unused = torch.nn.Linear(64, 64)  # lifted by the exporter, pruned from the graph

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x).relu()

    tower = Tower().eval()
    refs = [weakref.ref(p) for p in tower.parameters()]
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    with torch.no_grad():
        want = tower(torch.from_numpy(x)).numpy()
    dest, data = tmp_path / "t.onnx", tmp_path / "t.onnx.w.data"
    export_onnx(tower, (torch.zeros(2, 64),), ("x",), ("y",), dest, data)
    del tower
    gc.collect()
    assert [r() for r in refs] == [None] * len(refs)
    got = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-5)  # and the graph, its weights in `data`, is whole
    assert data.stat().st_size >= 64 * 8 * 4 and b"t.onnx.w.data" in dest.read_bytes()
