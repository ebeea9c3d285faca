"""The Gradio search page, mounted at ``/`` by :func:`frozenlens.server.app.create_app`.

Importing this package is cheap: Gradio is imported by :func:`build_ui` only.
Layout and wiring live in :mod:`.page`, what the buttons do in :mod:`.actions`,
the HTML in :mod:`.format` and the styles in :mod:`.styles`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import gradio

    from ..state import ServerState

__all__ = ["build_ui", "mount_options"]


def build_ui(state: ServerState) -> gradio.Blocks:
    """The search page over one server's state."""
    from .page import build

    return build(state)


def mount_options(state: ServerState) -> dict[str, object]:
    """Keyword arguments for ``gradio.mount_gradio_app`` (Gradio 6 takes page-wide options there).

    Gradio's own upload route gets the server's upload byte limit; the page
    keeps no run history in the browser, shows no Gradio footer links and
    renders in the browser (no Node server).
    """
    return {
        "max_file_size": state.settings.limits.max_upload_bytes,
        "footer_links": [],
        "run_history": False,
        "ssr_mode": False,
    }
