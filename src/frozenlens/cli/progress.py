"""Progress bars (tqdm) fed by the library's progress callbacks; drawn on stderr."""

from __future__ import annotations

import os
import sys
from typing import Any

from ..progress import Progress


def wanted(no_progress: bool, *, forced_by_env: bool = False) -> bool:
    """Draw a bar unless ``--no-progress`` or stderr is not a terminal
    (``forced_by_env``: ``$FROZENLENS_PROGRESS`` draws one anyway)."""
    if no_progress:
        return False
    return sys.stderr.isatty() or (forced_by_env and bool(os.environ.get("FROZENLENS_PROGRESS")))


class IndexBar:
    """One bar over the images of an indexing run (the scan stage is not drawn).

    The scan streams into the decoders, so the total is ``None`` (a counter)
    until the scan ends; the bar gets its total then."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None

    def __call__(self, p: Progress) -> None:
        if p.stage == "scan":
            return
        if self.bar is None:
            self.bar = self._tqdm(total=p.total, unit="img", desc="indexing", dynamic_ncols=True)
        elif p.total is not None and self.bar.total != p.total:
            self.bar.total = p.total
        self.bar.n = p.done
        self.bar.set_postfix(new=p.new, changed=p.changed, skipped=p.skipped, failed=p.failed, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StageBar:
    """A bar that restarts for every progress stage (e.g. each epoch)."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bar: Any = None
        self.stage: str | None = None

    def __call__(self, p: Progress) -> None:
        if p.stage != self.stage:
            self.close()
            self.stage = p.stage
            self.bar = self._tqdm(total=p.total, desc=p.stage, dynamic_ncols=True, leave=False)
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
