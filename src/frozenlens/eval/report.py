"""Render an :class:`~frozenlens.eval.types.EvalResult` as Markdown and JSON.

Markdown: a short header (dataset, size, encoder, reranked, date) and one
table, rows = languages then the macro mean, columns = images with captions
in the language, captions, T2I R@1/5/10,
I2T R@1/5/10 (percent, one decimal) and the mean rank both ways.
JSON: :meth:`EvalResult.to_dict` (recalls as fractions in [0, 1]).
:func:`write_report` writes both files atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from frozenlens.eval.metrics import RetrievalMetrics
from frozenlens.eval.types import EvalResult

__all__ = ["JSON_NAME", "MARKDOWN_NAME", "to_json", "to_markdown", "write_report"]

MARKDOWN_NAME = "results.md"
JSON_NAME = "results.json"

_HEADER = (
    "| language | images | texts | T2I R@1 | T2I R@5 | T2I R@10 | I2T R@1 | I2T R@5 | I2T R@10 "
    "| T2I mean rank | I2T mean rank |"
)
_RULE = "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"


def _row(label: str, images: str, texts: str, m: RetrievalMetrics) -> str:
    pct = [f"{100 * v:.1f}" for v in (m.t2i_r1, m.t2i_r5, m.t2i_r10, m.i2t_r1, m.i2t_r5, m.i2t_r10)]
    return f"| {label} | {images} | {texts} | {' | '.join(pct)} | {m.t2i_mean_rank:.1f} | {m.i2t_mean_rank:.1f} |"


def to_markdown(result: EvalResult) -> str:
    """The result as a Markdown document (recalls in percent)."""
    enc = result.encoder
    lines = [
        f"# Retrieval evaluation: {result.dataset}",
        "",
        f"- images: {result.n_images}",
        f"- encoder: {enc.get('name')} v{enc.get('version')} (dim {enc.get('dim')})",
        f"- reranked: {'yes' if result.reranked else 'no'}",
        f"- date: {result.created} ({result.seconds:.1f} s)",
        (
            "- recalls in percent; text→image gallery = all images; \"images\" = images with captions"
            " in that language (the image→text queries); ties count against (pessimistic)"
        ),
        "",
        _HEADER,
        _RULE,
    ]
    lines += [_row(r.language, str(r.n_query_images), str(r.n_texts), r.metrics) for r in result.per_language]
    if len(result.per_language) > 1:
        total = sum(r.n_texts for r in result.per_language)
        lines.append(_row(f"**mean ({len(result.per_language)})**", "", str(total), result.mean))
    return "\n".join(lines) + "\n"


def to_json(result: EvalResult) -> str:
    """The result as indented JSON text (UTF-8 safe, non-ASCII kept)."""
    return json.dumps(result.to_dict(), ensure_ascii=False, indent=2) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(result: EvalResult, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.json`` into ``out_dir`` (created) → their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / MARKDOWN_NAME, out / JSON_NAME
    _write_atomic(md, to_markdown(result))
    _write_atomic(js, to_json(result))
    return md, js
