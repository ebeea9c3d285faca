"""``frozenlens index --device cpu --precision ...`` with a tiny randomly initialised ``openclip:`` ViT, end to
end through the CLI on real photos: the options apply to the run, are never recorded, and a later run
without them reads the same vector space (issue 14 §4)."""

from __future__ import annotations

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.cli.exit_codes import EXIT_ERROR
from frozenlens.engine import Engine
from frozenlens.models import create_encoder
from tests.integration.test_cli_device import PHOTOS, _index, _recorded, _vectors, no_cuda, photos  # noqa: F401
from tests.integration.test_incremental import library  # noqa: F401 - the fixture photos() reads
from tests.unit.test_openclip_encoder import VIT_ARCH, tiny  # noqa: F401 - the module's fixture


@pytest.fixture
def name(tiny):  # noqa: F811
    return f"openclip:{VIT_ARCH}/{tiny['a']}"


def test_cpu_bf16_and_fp32_runs_are_not_recorded_and_share_one_space(photos, tmp_path, name, capsys):  # noqa: F811
    fp32, bf16 = tmp_path / "fp32", tmp_path / "bf16"
    assert _index(photos, fp32, "--encoder", name, "--device", "cpu", "--precision", "fp32") == 0
    assert _index(photos, bf16, "--encoder", name, "--device", "cpu", "--precision", "bf16") == 0
    assert _recorded(fp32) == {} and _recorded(bf16) == {}  # neither device nor precision
    a, b = _vectors(fp32), _vectors(bf16)
    assert a.shape == b.shape == (len(PHOTOS), 32) and not np.array_equal(a, b)  # bf16 did run
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos  # the same space, within bf16 rounding
    plain = create_encoder(name, device="cpu", precision="fp32", runtime="torch")  # what a later open builds
    with Engine.open(bf16) as engine:
        assert engine.encoder.identity == plain.identity  # rebuilt from the recorded (empty) options
        assert len(engine.search("a dog", k=3)) == 3
    capsys.readouterr()
    assert cli.main(["search", "a dog", "--index", str(bf16)]) == 0  # a later CPU run, no options


@no_cuda
@pytest.mark.parametrize("extra, message", [(["--device", "cuda"], "no CUDA device"),
                                            (["--device", "cpu", "--precision", "fp16"], "fp16 needs a CUDA device")])
def test_what_cannot_run_here_is_a_typed_one_line_error(photos, tmp_path, name, capsys, extra, message):  # noqa: F811
    index = tmp_path / "index"
    capsys.readouterr()
    assert _index(photos, index, "--encoder", name, *extra) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (index / "frozenlens.db").exists()
