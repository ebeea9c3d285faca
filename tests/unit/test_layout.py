"""The layout rules of DESIGN.md that no linter checks: every module of the package stays
under 500 lines (split by responsibility when one grows)."""

from __future__ import annotations

from pathlib import Path

import frozenlens

MAX_LINES = 500


def test_no_module_over_500_lines() -> None:
    root = Path(frozenlens.__file__).resolve().parent
    too_long = {
        str(p.relative_to(root)): n
        for p in sorted(root.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them by responsibility): {too_long}"
