"""The ``lite`` projector (version 3): numpy inference equal to the torch network it was trained as,
the packaged file pinned by its digest, damaged files refused, and the blend inside the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from frozenlens.errors import EncoderConfigError
from frozenlens.models.artifact_cache import file_digest
from frozenlens.models.lite import DEFAULT_PROJECTION, PROJECTOR_SHA256, LiteEncoder
from frozenlens.models.lite_forward import unit_rows
from frozenlens.models.lite_projector import gelu, load_projector, projector_path


def _torch_projector(tmp_path: Path, hidden: int, seed: int = 0) -> tuple[Path, torch.nn.Module, dict]:
    """A random network in the bench's layout (bench/lite_projector_quality.network), saved as the packager does."""
    torch.manual_seed(seed)
    if hidden:
        net = torch.nn.Sequential(torch.nn.Linear(1280, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 512))
    else:
        net = torch.nn.Sequential(torch.nn.Linear(1280, 512))
    stats = {"in_mean": torch.rand(1280) * 0.05, "in_sd": torch.rand(1280) * 0.02 + 0.01}
    path = tmp_path / f"p{hidden}.safetensors"
    save_file({**stats, **{k: v.contiguous() for k, v in net.state_dict().items()}}, str(path),
              metadata={"hidden": str(hidden), "lambda": "0.25"})
    return path, net, stats


def test_gelu_matches_torch() -> None:
    x = np.linspace(-8, 8, 20001, dtype=np.float32)
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    # erf's bound 1.5e-7 times |x| ≤ 8, plus float32 rounding
    np.testing.assert_allclose(gelu(x), expected, atol=8 * 1.5e-7 + 1e-7)


@pytest.mark.parametrize("hidden", [0, 64])
def test_numpy_projector_equals_the_torch_network(tmp_path: Path, hidden: int) -> None:
    path, net, stats = _torch_projector(tmp_path, hidden)
    proj = load_projector(path)
    assert proj.weight == 0.25 and len(proj.layers) == (2 if hidden else 1)
    visual = unit_rows(np.random.default_rng(0).random((7, 1280), dtype=np.float32))
    with torch.inference_mode():
        x = (torch.from_numpy(visual) - stats["in_mean"]) / stats["in_sd"]
        want = torch.nn.functional.normalize(net(x), dim=1).numpy()
    np.testing.assert_allclose(proj(visual), want, atol=2e-5)
    conse = unit_rows(np.random.default_rng(1).standard_normal((7, 512)).astype(np.float32))
    np.testing.assert_allclose(proj.blend(conse, visual, 0.5), unit_rows(conse + 0.5 * want), atol=2e-5)


def test_damaged_or_foreign_files_are_refused(tmp_path: Path) -> None:
    path, _, _ = _torch_projector(tmp_path, 64)
    blob = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(EncoderConfigError, match="damaged"):
        load_projector(truncated)
    with pytest.raises(EncoderConfigError, match="another projector"):
        load_projector(path, expect_sha256="0" * 64)
    wrong = tmp_path / "wrong.safetensors"  # metadata says no hidden layer, tensors say one
    save_file({"in_mean": torch.zeros(1280), "in_sd": torch.ones(1280), "0.weight": torch.zeros(64, 1280),
               "0.bias": torch.zeros(64)}, str(wrong), metadata={"hidden": "0", "lambda": "0.25"})
    with pytest.raises(EncoderConfigError, match="shape"):
        load_projector(wrong)


def test_the_packaged_projector_is_the_one_version_3_names() -> None:
    import hashlib

    assert hashlib.sha256(projector_path().read_bytes()).hexdigest() == PROJECTOR_SHA256 == file_digest(projector_path())
    proj = load_projector(expect_sha256=PROJECTOR_SHA256)
    assert proj.weight == DEFAULT_PROJECTION > 0


def test_the_encoder_blends_the_projector_into_conse(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    v3 = LiteEncoder(cache_dir=tmp_path)
    v2 = LiteEncoder(cache_dir=tmp_path, projection=0.0)
    assert (v3.identity.version, v2.identity.version) == ("3", "2")
    assert LiteEncoder(cache_dir=tmp_path, projection=1.0).identity.version.startswith("3+")
    a, b = v3.embed_prepared(batch), v2.embed_prepared(batch)
    np.testing.assert_array_equal(a.visual, b.visual)
    np.testing.assert_array_equal(a.tokens, b.tokens)  # the reranker's region tokens stay ConSE
    proj = load_projector()
    np.testing.assert_allclose(a.semantic, proj.blend(b.semantic, b.visual, DEFAULT_PROJECTION), atol=1e-6)
    assert float(np.min(np.sum(a.semantic * b.semantic, axis=1))) < 0.999  # the blend changes the vectors
    with pytest.raises(ValueError, match="projection"):
        LiteEncoder(cache_dir=tmp_path, projection=-1.0)
