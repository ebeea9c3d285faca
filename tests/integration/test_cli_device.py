"""``frozenlens index --device/--precision`` (issue 14 §4): the encoder's device and precision for one run,
never recorded in the index; typed errors for what cannot run here.

Real CLI runs on real photos with the packaged ``lite`` encoder and a tiny randomly initialised ``openclip:``
ViT (the fixture of tests/unit/test_openclip_encoder.py). No GPU on the build machines: CUDA is only
checked for being refused with the typed error there.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from frozenlens import cli
from frozenlens.cli.exit_codes import EXIT_ERROR, EXIT_USAGE
from frozenlens.cli.parser import build_parser
from frozenlens.engine import Engine
from frozenlens.errors import DeviceUnavailableError, EncoderConfigError
from frozenlens.models.precision import PRECISIONS, run_options
from tests.integration.test_incremental import PHOTOS, library  # noqa: F401 - the fixture


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


no_cuda = pytest.mark.skipif(_cuda(), reason="checks the refusal on a machine without CUDA")


@pytest.fixture
def photos(library):  # noqa: F811 - six real photos of the test data (test_incremental's fixture)
    return library


def _index(photos, index, *extra: str) -> int:
    return cli.main(["index", str(photos), "--index", str(index), "--no-progress", *extra])


def _recorded(index) -> dict[str, object]:
    with Engine.open(index) as engine:
        return json.loads(engine.store.get_meta().get("encoder_options") or "{}")


def _vectors(index) -> np.ndarray:
    with Engine.open(index) as engine:
        ids = engine.store.vector_ids("semantic")
        return engine.store.vectors("semantic", ids.tolist(), engine.identity.dim)


def test_the_options_parse_and_are_checked():
    p = build_parser()
    args = p.parse_args(["index", "x", "--device", "cuda", "--precision", "bf16"])
    assert (args.device, args.precision) == ("cuda", "bf16")
    args = p.parse_args(["index", "x"])
    assert (args.device, args.precision) == (None, None)
    assert PRECISIONS == ("auto", "fp32", "fp16", "bf16")
    for bad in (["--device", "tpu"], ["--precision", "int8"]):
        with pytest.raises(SystemExit) as exc:
            p.parse_args(["index", "x", *bad])
        assert exc.value.code == EXIT_USAGE


def test_run_options_rules():
    assert run_options("lite") == {} and run_options("lite", "cpu", "fp32") == {} and run_options("lite", "auto") == {}
    assert run_options("openclip:x", "cpu", "bf16") == {"device": "cpu", "precision": "bf16"}
    assert run_options("openclip:x", "cpu", "fp32") == {"device": "cpu", "precision": "fp32"}
    assert run_options("openclip:x") == {} and run_options("openclip:x", "auto", "auto") == {}
    with pytest.raises(EncoderConfigError, match="fp16 needs a CUDA device"):
        run_options("openclip:x", "cpu", "fp16")
    for bad in ({"device": "tpu"}, {"precision": "int8"}):
        with pytest.raises(EncoderConfigError, match="unknown"):
            run_options("openclip:x", **bad)
    for name in ("lite", "flame:gemma-3-270m/fl-a"):
        with pytest.raises(EncoderConfigError, match="does not apply"):
            run_options(name, "cpu", "bf16")


@no_cuda
def test_cuda_without_a_gpu_is_the_typed_error():
    with pytest.raises(DeviceUnavailableError, match="no CUDA device"):
        run_options("openclip:x", "cuda")
    with pytest.raises(EncoderConfigError, match="fp16 needs a CUDA device"):
        run_options("openclip:x", "auto", "fp16")  # auto is the CPU here


def test_lite_cpu_fp32_indexes_searches_and_records_nothing(photos, tmp_path, capsys):
    index = tmp_path / "index"
    assert _index(photos, index, "--device", "cpu", "--precision", "fp32") == 0
    assert _recorded(index) == {}
    capsys.readouterr()
    assert cli.main(["search", "a dog", "--index", str(index), "--json"]) == 0  # a later run without the options
    assert len(json.loads(capsys.readouterr().out)) == len(PHOTOS)


@no_cuda
@pytest.mark.parametrize("extra, message", [(["--device", "cuda"], "does not apply to lite"),
                                            (["--precision", "bf16"], "does not apply to lite")])
def test_lite_refuses_a_device_or_precision_it_cannot_run(photos, tmp_path, capsys, extra, message):
    index = tmp_path / "index"
    capsys.readouterr()
    assert _index(photos, index, *extra) == EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("frozenlens: ") and "\n" not in err
    assert not (index / "frozenlens.db").exists()  # refused before anything was created


def test_an_existing_lite_index_is_checked_against_its_recorded_encoder(photos, tmp_path, capsys):
    index = tmp_path / "index"
    assert _index(photos, index) == 0
    capsys.readouterr()
    assert _index(photos, index, "--precision", "bf16") == EXIT_ERROR  # the recorded encoder is lite
    assert "does not apply to lite" in capsys.readouterr().err
