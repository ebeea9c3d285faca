"""Opening an index directory: its database, its recorded encoder, a new index's settings.

An index records the identity of the encoder it was built with (name,
version, dimensions) and the options that rebuild it (e.g. ``--weights
PATH``); opening it with another encoder raises
:class:`EncoderMismatchError`. Opening loads no model: the facade creates
the encoder on first use.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import EncoderMismatchError, IndexNotFoundError
from ..models.base import Encoder, EncoderIdentity
from ..models.registry import create_encoder, options_for
from ..retriever.choice import AutoPolicy
from ..store import Store
from .index_dir import ensure_identity
from .index_type import POLICY_KEY
from .readonly import open_store

DEFAULT_ENCODER = "lite"
#: index type of a new index: ``auto`` re-decides as the collection grows (see retriever/choice.py)
DEFAULT_FACTORY = "auto"


@dataclass(frozen=True)
class OpenedIndex:
    """What :func:`open_index` found: the pieces the :class:`~frozenlens.engine.Engine` is made of.

    encoder: the encoder instance passed in or made for a new index, else
        ``None`` (created on first use from ``encoder_options``).
    read_only: why the index cannot be written, or ``None``.
    """

    root: Path
    store: Store
    meta: dict[str, str]
    encoder: Encoder | None
    encoder_options: dict[str, object]
    read_only: str | None


def open_index(
    index_dir: str | os.PathLike[str],
    *,
    encoder: str | Encoder | None = None,
    create: bool = False,
    database_url: str | None = None,
    factory: str | None = None,
    encoder_options: dict[str, object] | None = None,
    index_policy: AutoPolicy | None = None,
) -> OpenedIndex:
    """Open (``create=True``: or initialise) the index at ``index_dir``; arguments as :meth:`Engine.open`."""
    root = Path(index_dir).expanduser().absolute()
    store, read_only = open_store(root, create=create, database_url=database_url)
    meta = store.get_meta()
    enc_obj = encoder if isinstance(encoder, Encoder) else None
    if "encoder_name" not in meta:
        if not create:
            raise IndexNotFoundError(f"index at {root} was never initialised; run `frozenlens index`")
        enc_obj = enc_obj or create_encoder(encoder or DEFAULT_ENCODER, **(encoder_options or {}))
        ident = enc_obj.identity
        store.set_meta(
            {
                "encoder_options": options_json(encoder_options),
                "encoder_name": ident.name,
                "encoder_version": ident.version,
                "dim": str(ident.dim),
                "visual_dim": str(ident.visual_dim),
                "factory": factory or DEFAULT_FACTORY,
                POLICY_KEY: json.dumps((index_policy or AutoPolicy.default()).to_json()),
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        )
        meta = store.get_meta()
    recorded = identity_of(meta)
    requested: EncoderIdentity | None = None
    if enc_obj is not None:
        requested = enc_obj.identity
    elif isinstance(encoder, str) and encoder != recorded.name:
        requested = EncoderIdentity(encoder, "?", 0, 0)
    if requested is not None and requested != recorded:
        store.close()
        raise EncoderMismatchError(
            f"index at {root} was built with encoder {recorded.describe()}, "
            f"but {requested.name if requested.version == '?' else requested.describe()} was requested; "
            "use the index's encoder or build a new index"
        )
    if encoder_options is None:  # reuse what the index was built with (e.g. --weights PATH)
        encoder_options = json.loads(meta.get("encoder_options") or "{}")
    encoder_options = options_for(recorded, encoder_options or {})  # an older recipe of the encoder
    meta = ensure_identity(store, meta, read_only=read_only is not None)
    return OpenedIndex(root, store, meta, enc_obj, encoder_options or {}, read_only)


def identity_of(meta: dict[str, str]) -> EncoderIdentity:
    """The encoder identity an index records in its meta table."""
    return EncoderIdentity(meta["encoder_name"], meta["encoder_version"], int(meta["dim"]), int(meta["visual_dim"]))


def options_json(options: dict[str, object] | None) -> str:
    """Encoder options recorded in the index so later opens rebuild the same encoder.

    Only JSON-representable values are kept (paths become strings).
    """
    clean = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in (options or {}).items()}
    try:
        return json.dumps(clean, sort_keys=True)
    except TypeError:
        return "{}"
