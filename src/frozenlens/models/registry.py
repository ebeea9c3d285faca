"""Create encoders by name.

Two kinds of entries:

- an exact name (``"lite"``): ``create_encoder("lite", **options)`` calls
  ``factory(**options)``;
- a prefix ending in ``":"`` (``"openclip:"``): ``create_encoder("openclip:ViT-B-32")``
  calls ``factory("ViT-B-32", **options)``. The longest matching prefix wins.

Built-in factories import their implementation module only when called, so
importing this module (or :mod:`frozenlens.models`) never imports torch, and
:func:`list_models` (what ``frozenlens models`` prints) reads only the
torch-free catalogue in :mod:`frozenlens.models.presets`.

There is one way to build an encoder: ``create_encoder(name, **options)``,
which calls the registered factory, which calls the encoder's one constructor
(``LiteEncoder(**options)``, ``OpenClipEncoder(model, **options)``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import replace

from frozenlens.errors import UnknownEncoderError
from frozenlens.models.base import Encoder, EncoderIdentity
from frozenlens.models.presets import LEGACY_OPTIONS, LITE, PREFIX, PRESETS, ModelRow, list_presets

logger = logging.getLogger(__name__)

EncoderFactory = Callable[..., Encoder]


def _create_lite(**options: object) -> Encoder:
    """Factory of the offline default encoder (imports torch on call)."""
    from frozenlens.models.lite import LiteEncoder

    return LiteEncoder(**options)  # type: ignore[arg-type]


def _create_openclip(model: str, **options: object) -> Encoder:
    """Factory of ``openclip:<model>`` (imports torch and open_clip on call, unless a text-only
    encoder can be built from the artefact cache: :mod:`frozenlens.models.openclip_light`)."""
    from frozenlens.models.openclip_light import light_encoder

    def full() -> Encoder:
        from frozenlens.models.openclip import OpenClipEncoder

        return OpenClipEncoder(model, **options)  # type: ignore[arg-type]

    light = light_encoder(model, options, full)
    if light is not None:
        return light
    built = full()
    # A first use exported both graphs and wrote the manifest: the light encoder runs them, and the torch
    # model (the whole checkpoint, resident after the export) is let go rather than held for the process.
    light = light_encoder(model, options, full)
    if light is None:
        return built
    del built
    gc.collect()  # the model's reference cycles: freed now, not at some later collection
    return light


def _create_flame(model: str, **options: object) -> Encoder:
    """Factory of ``flame:<llm>/<checkpoint>`` (imports torch and transformers on call)."""
    from frozenlens.models.flame_presets import LITE_PROJECTORS, parse_flame_name

    if parse_flame_name(model).checkpoint in LITE_PROJECTORS:  # the packaged projector over EfficientNet-Lite0
        from frozenlens.models.flame_lite import FlameLiteEncoder

        return FlameLiteEncoder(model, **options)
    from frozenlens.models.flame import FlameEncoder

    return FlameEncoder(model, **options)  # type: ignore[arg-type]


_NAMED: dict[str, EncoderFactory] = {"lite": _create_lite}
_PREFIXED: dict[str, EncoderFactory] = {"openclip:": _create_openclip, "flame:": _create_flame}


def register_encoder(name: str, factory: EncoderFactory, *, replace: bool = False) -> None:
    """Register ``factory`` under ``name``.

    A ``name`` ending in ``":"`` is a prefix: its factory receives the rest of
    the requested name as first positional argument. Registering a taken name
    raises ``ValueError`` unless ``replace`` is true.
    """
    if not name or name != name.strip():
        raise ValueError(f"invalid encoder name: {name!r}")
    table = _PREFIXED if name.endswith(":") else _NAMED
    if name in table and not replace and table[name] is not factory:
        raise ValueError(f"encoder {name!r} is already registered (pass replace=True)")
    table[name] = factory
    logger.debug("registered encoder %r", name)


def encoder_names() -> list[str]:
    """Registered names, sorted; prefixes are listed with their trailing ``":"``."""
    return sorted([*_NAMED, *_PREFIXED])


def create_encoder(name: str, **options: object) -> Encoder:
    """Build the encoder registered under ``name`` with ``options``.

    Raises :class:`UnknownEncoderError` (listing the known names) when nothing
    matches, or when a prefix is given without a model name after it.
    """
    factory = _NAMED.get(name)
    if factory is not None:
        return factory(**options)
    prefixes = sorted((p for p in _PREFIXED if name.startswith(p)), key=len, reverse=True)
    if prefixes:
        prefix = prefixes[0]
        rest = name[len(prefix) :]
        if not rest:
            raise UnknownEncoderError(
                f"encoder name {name!r} needs a model after {prefix!r}, e.g. '{prefix}<model>'"
            )
        return _PREFIXED[prefix](rest, **options)
    known = ", ".join(encoder_names())
    raise UnknownEncoderError(f"unknown encoder {name!r}; known encoders: {known}")


def options_for(identity: EncoderIdentity, options: dict[str, object]) -> dict[str, object]:
    """``options`` completed with what rebuilds ``identity`` when it is an older recipe of its
    encoder (:data:`~frozenlens.models.presets.LEGACY_OPTIONS`); explicit options win."""
    version = identity.version.removesuffix("+int8")  # the int8 runtime of the same recipe
    return {**LEGACY_OPTIONS.get((identity.name, version), {}), **options}


def list_models(*, check_cache: bool = False) -> list[ModelRow]:
    """The built-in encoders with their sizes, languages and download costs: ``lite``, then the open_clip presets.

    Torch-free (the catalogue is plain data). ``check_cache`` fills in
    ``cached`` for the presets by looking into the local Hugging Face cache
    (no network; imports open_clip, and says not cached without the ``clip``
    extra). Other ``openclip:`` names (``<arch>/<tag>``, ``hf-hub:<repo>``, a
    local checkpoint) and encoders added with :func:`register_encoder` are not listed.
    """
    from frozenlens.models.flame_presets import flame_rows

    rows = [LITE, *list_presets(), *flame_rows()]
    if not check_cache:
        return rows
    from frozenlens.models.loading import preset_cached  # open_clip only when asked

    cached = {PREFIX + p.name: preset_cached(p.arch, p.pretrained) for p in PRESETS.values()}
    return [replace(r, cached=cached[r.name]) if r.name in cached else r for r in rows]
