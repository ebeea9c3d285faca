"""FrozenLens: multilingual image search on frozen pretrained encoders.

The first line a new user types::

    from frozenlens import Engine, SearchFilters, Hit

    with Engine.open("my-index", create=True) as engine:
        engine.index(["~/Pictures"])
        hits: list[Hit] = engine.search("un chien sur la plage", k=10,
                                        filters=SearchFilters(camera="canon"))

Importing this package has no side effects and loads nothing heavy: no model
is loaded, nothing is read from or written to disk, nothing touches the
network, and neither torch, numpy, FAISS nor SQLAlchemy is imported. The
names below are resolved on first use (PEP 562), each from the one module
that owns it; ``Engine`` is the only one that pulls in the heavy stack.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the module that owns it (imported when the name is first used)
_EXPORTS: dict[str, str] = {
    "Engine": "frozenlens.engine",
    "SearchFilters": "frozenlens.types",
    "Hit": "frozenlens.types",
    "IndexReport": "frozenlens.types",
    "SearchRequest": "frozenlens.request",
    "FrozenLensError": "frozenlens.errors",
}

__all__ = ["Engine", "FrozenLensError", "Hit", "IndexReport", "SearchFilters", "SearchRequest", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from frozenlens.engine import Engine
    from frozenlens.errors import FrozenLensError
    from frozenlens.request import SearchRequest
    from frozenlens.types import Hit, IndexReport, SearchFilters


def __getattr__(name: str) -> Any:
    """Import ``name``'s owning module on first access and cache the value here."""
    owner = _EXPORTS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(owner), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
