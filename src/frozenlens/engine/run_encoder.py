"""Opening an index whose encoder runs on a chosen device and precision for one run (``frozenlens index
--device/--precision``), without recording them in the index.

:func:`open_for_run` builds the encoder itself -- the index's recorded encoder and options (a new index:
the requested ones) plus the run-only options of :func:`~frozenlens.models.precision.run_options` -- and
hands the instance to :meth:`Engine.open`, which records only the options it is given (``--weights``),
as it always does. A later open of the index, on any machine, rebuilds the encoder from those.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import IndexNotFoundError
from ..models.precision import nothing_asked, run_options
from ..models.registry import create_encoder
from .facade import Engine
from .opening import DEFAULT_ENCODER, open_index


def open_for_run(index_dir: str | os.PathLike[str], *, device: str | None = None, precision: str | None = None,
                 encoder: str | None = None, encoder_options: dict[str, object] | None = None,
                 database_url: str | None = None, **open_args: Any) -> Engine:
    """``Engine.open(index_dir, create=True, encoder=..., encoder_options=..., database_url=..., **open_args)``
    with its encoder on ``device`` in ``precision`` (``None``/``auto``: as the encoder decides) for this
    run only. Errors as :func:`~frozenlens.models.precision.run_options` and :meth:`Engine.open`."""
    if nothing_asked(device, precision):  # no need to read the index's recorded encoder first
        return Engine.open(index_dir, encoder=encoder, create=True, database_url=database_url,
                           encoder_options=encoder_options, **open_args)
    name, options = encoder or DEFAULT_ENCODER, encoder_options or {}
    try:
        found = open_index(index_dir, encoder=encoder, database_url=database_url, encoder_options=encoder_options)
    except IndexNotFoundError:
        pass
    else:
        found.store.close()
        name, options = found.meta["encoder_name"], found.encoder_options
    run = run_options(name, device, precision)
    enc = create_encoder(name, **{**options, **run}) if run else encoder
    return Engine.open(index_dir, encoder=enc, create=True, database_url=database_url,
                       encoder_options=encoder_options, **open_args)
