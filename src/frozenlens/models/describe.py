"""The encoders FrozenLens can use, as JSON rows and as a text table (``frozenlens models``).

Torch-free: it reads only the catalogue of :func:`frozenlens.models.registry.list_models`
(plain data), so listing encoders needs neither torch nor open_clip. Nothing
here prints; the CLI prints :func:`model_lines`, and the server or docs can
show the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from frozenlens.models.presets import PREFIX, ModelRow
from frozenlens.models.registry import list_models

#: encoder names the table cannot list (any open_clip model), said under it
OTHER_NAMES = (
    f"Also: {PREFIX}<arch>/<pretrained>, {PREFIX}hf-hub:<org>/<repo>, {PREFIX}<local checkpoint>;\n"
    "      flame:<llm>/<checkpoint> with <llm> gemma-3-270m (packaged, CPU), mistral-nemo or <org>/<model>,\n"
    "      and <checkpoint> a FLAME checkpoint file or hf-hub:<org>/<repo>/<file> (or --weights)"
)


def model_json(rows: Sequence[ModelRow] | None = None) -> list[dict[str, object]]:
    """One dict per encoder (default: :func:`list_models`): name, dim, image_size,
    languages, download_mb (0: packaged), source, license."""
    return [{"name": r.name, "dim": r.dim, "image_size": r.image_size, "languages": r.languages,
             "download_mb": r.download_mb, "source": r.source, "license": r.license, "hardware": r.hardware}
            for r in (list_models() if rows is None else rows)]


def model_lines(rows: Sequence[ModelRow] | None = None) -> list[str]:
    """The encoders as a text table (name, dimension, image size, download, languages), then :data:`OTHER_NAMES`."""
    out = [f"{'encoder':40s} {'dim':>4s} {'px':>4s} {'download':>9s}  languages"]
    for r in list_models() if rows is None else rows:
        size = "packaged" if not r.download_mb else f"{r.download_mb / 1000:.1f} GB"
        out.append(f"{r.name:40s} {r.dim:4d} {r.image_size:4d} {size:>9s}  {r.languages}")
    notes = [f"{r.name}: {r.hardware}" for r in (list_models() if rows is None else rows) if r.hardware]
    return [*out, "", *notes, *([""] if notes else []), *OTHER_NAMES.split("\n")]


__all__ = ["OTHER_NAMES", "model_json", "model_lines"]
