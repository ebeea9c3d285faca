"""Loading open_clip models by name: weights sources, downloads, local files.

Turns the name after ``openclip:`` into a built model, its tokenizer and the
:class:`~frozenlens.models.base.EncoderIdentity` an index records
(:func:`load_openclip`). Names:

- a preset from :data:`~frozenlens.models.presets.PRESETS`, e.g. ``xlm-roberta-base-ViT-B-32``;
- ``<arch>/<pretrained tag>``, e.g. ``ViT-B-32/openai`` (weights through
  open_clip's pretrained table and the Hugging Face Hub cache);
- ``<arch>/<checkpoint file>``, e.g. ``ViT-B-32//models/clip.pt`` (an
  open_clip state dict, ``.pt``/``.bin``/``.safetensors``);
- ``hf-hub:<org>/<repo>``: a Hub repo in open_clip's format
  (``open_clip_config.json`` + weights);
- a local path: a directory in that same format (as written by
  ``open_clip.push_to_hf_hub.save_for_hf``), or a checkpoint file together
  with the ``arch=`` option.

Weights are downloaded through open_clip's normal mechanism (Hugging Face Hub
cache, honouring ``HF_HUB_OFFLINE`` / ``HF_HOME``) when a model is loaded,
never at import. When they are neither cached nor downloadable,
:class:`~frozenlens.errors.WeightsNotFoundError` says in one line what is
missing and how to provide it.

Identity version: the pretrained tag for downloaded tag weights, else a short
hash of the checkpoint bytes (and arch/preprocessing overrides), so a
different checkpoint never matches.

This module imports torch and open_clip only inside its functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from frozenlens.errors import UnknownEncoderError, WeightsNotFoundError
from frozenlens.models.artifact_cache import file_digest
from frozenlens.models.base import EncoderIdentity
from frozenlens.models.openclip_fast import mapped_clip
from frozenlens.models.presets import PREFIX, PRESETS

if TYPE_CHECKING:
    import torch

#: preprocessing keys taken from open_clip's pretrained table / config (size comes from the model)
PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz")
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's default names
_HINT = "pass --weights PATH (weights=) or name a local checkpoint: 'openclip:<arch>/<file>' or 'openclip:<dir>'"


@dataclass(frozen=True)
class LoadedModel:
    """A built open_clip model, its tokenizer and the identity an index records.

    ``model`` is a ``torch.nn.Module`` with ``encode_text`` (token ids (b, ctx)
    → (b, dim)) and ``encode_image`` ((b, 3, S, S) → (b, dim)); ``tokenizer``
    maps a list of texts to int64 token ids (b, ctx).
    """

    model: Any
    tokenizer: Any
    identity: EncoderIdentity
    #: the files the weights (and config) were read from; empty for a model built in memory
    files: tuple[Path, ...] = ()


def load_openclip(
    spec: str,
    *,
    device: torch.device,
    arch: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    preprocess: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Build the model named ``spec`` (the part after ``openclip:``) on ``device``.

    ``arch`` names the architecture of a bare checkpoint file; ``weights`` is a
    local checkpoint replacing the download of a preset or ``<arch>/<tag>``;
    ``preprocess`` overrides preprocessing facts (keys :data:`PREPROCESS_KEYS`).
    Raises :class:`UnknownEncoderError`, :class:`WeightsNotFoundError` or
    ``ValueError`` (contradicting options).
    """
    check_preprocess(preprocess)
    source = _parse(spec, arch)
    if weights is not None and source.kind != "tag":
        raise ValueError("weights= replaces the download of a preset or '<arch>/<tag>'; name the checkpoint directly")
    if arch is not None and source.arch not in (None, arch):
        raise ValueError(f"arch={arch!r} contradicts the model name ({source.arch})")
    cache = str(cache_dir) if cache_dir is not None else None
    local = Path(weights).expanduser() if weights is not None else None
    model, tokenizer, embed_dim, version, files = _load(source, spec, device, local, cache, dict(preprocess or {}))
    return LoadedModel(model, tokenizer, EncoderIdentity(PREFIX + spec, version, embed_dim, embed_dim), files)


def built_model(model: torch.nn.Module, tokenizer: Any, *, name: str, version: str) -> LoadedModel:
    """Wrap an already built open_clip model (e.g. trained in memory); the embedding dim is probed."""
    dim = _probe_dim(model, tokenizer)
    return LoadedModel(model, tokenizer, EncoderIdentity(name, version, dim, dim))


def check_preprocess(preprocess: Mapping[str, Any] | None) -> None:
    """``ValueError`` unless every key of ``preprocess`` is one of :data:`PREPROCESS_KEYS`."""
    bad = set(preprocess or {}) - set(PREPROCESS_KEYS)
    if bad:
        raise ValueError(f"unknown preprocess keys {sorted(bad)}; allowed: {', '.join(PREPROCESS_KEYS)}")


def _split_hub(hub: str) -> tuple[str, str]:
    """open_clip's ``hf_hub`` entry → (repo id, file); "org/repo/" means the default weights file ("")."""
    return (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)


def preset_cached(arch: str, pretrained: str) -> bool:
    """Whether the weights of ``<arch>/<pretrained>`` lie in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from open_clip import get_pretrained_cfg
    except ImportError:
        return False
    hub = get_pretrained_cfg(arch, pretrained).get("hf_hub", "")
    if not hub:
        return False
    repo, filename = _split_hub(hub)
    names = [filename] if filename else list(_HUB_WEIGHTS)
    return any(isinstance(try_to_load_from_cache(repo, n), str) for n in names)


# ---------------------------------------------------------------- name parsing
@dataclass(frozen=True)
class _Source:
    """Where a model comes from. kind: tag | hub | dir | file."""

    kind: str
    arch: str | None = None
    tag: str | None = None
    hub_id: str | None = None
    path: Path | None = None


def _parse(spec: str, arch: str | None) -> _Source:
    import open_clip

    if spec in PRESETS:
        p = PRESETS[spec]
        return _Source("tag", arch=p.arch, tag=p.pretrained)
    if spec.startswith("hf-hub:"):
        return _Source("hub", hub_id=spec[len("hf-hub:") :].strip("/"))
    spec = spec.removeprefix("local-dir:")
    path = Path(spec).expanduser()
    if path.is_dir():
        return _Source("dir", path=path)
    if path.is_file():
        if not arch:
            raise UnknownEncoderError(
                f"checkpoint {spec!r} needs its architecture: pass arch=<name> or use 'openclip:<arch>/{spec}'"
            )
        _check_arch(arch)
        return _Source("file", arch=arch, path=path)
    head, _, tail = spec.partition("/")
    if tail and head in open_clip.list_models():
        if open_clip.get_pretrained_cfg(head, tail):
            return _Source("tag", arch=head, tag=tail)
        if Path(tail).expanduser().is_file():
            return _Source("file", arch=head, path=Path(tail).expanduser())
        if _looks_like_path(tail):
            raise WeightsNotFoundError(f"checkpoint file not found: {tail}; {_HINT}")
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(head)) or "none"
        raise UnknownEncoderError(f"unknown pretrained tag {tail!r} for {head}; known tags: {tags}")
    if _looks_like_path(spec):
        raise WeightsNotFoundError(f"checkpoint not found: {spec}; {_HINT}")
    if spec in open_clip.list_models():
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(spec)) or "none"
        raise UnknownEncoderError(f"name the weights: 'openclip:{spec}/<tag>' (tags: {tags}) or '<arch>/<file>'")
    presets = ", ".join(PRESETS)
    raise UnknownEncoderError(
        f"unknown open_clip model {spec!r}; use a preset ({presets}), '<arch>/<tag>', 'hf-hub:<repo>' or a path"
    )


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.endswith(_WEIGHT_SUFFIXES)


def _check_arch(arch: str) -> None:
    import open_clip

    if arch not in open_clip.list_models():
        raise UnknownEncoderError(f"unknown open_clip architecture {arch!r} (see open_clip.list_models())")


# ------------------------------------------------------------------ digests
def _short_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# -------------------------------------------------------------------- loading
def _load(
    source: _Source,
    spec: str,
    device: torch.device,
    weights: Path | None,
    cache_dir: str | None,
    preprocess: dict[str, Any],
) -> tuple[torch.nn.Module, Any, int, str, tuple[Path, ...]]:
    """Build (model, tokenizer, embed_dim, version, files read) for ``source``."""
    import open_clip

    what = f"{PREFIX}{spec}"
    if source.kind in ("tag", "file"):
        arch = source.arch
        assert arch is not None
        model_cfg = open_clip.get_model_config(arch) or {}
        if source.kind == "tag":
            assert source.tag is not None
            tag_cfg = open_clip.get_pretrained_cfg(arch, source.tag)
            pp = {k: tag_cfg[k] for k in PREPROCESS_KEYS if k in tag_cfg}
            quick_gelu = bool(tag_cfg.get("quick_gelu", False))
            if weights is None:
                ckpt = _download_tag(what, arch, source.tag, tag_cfg, cache_dir)
                version = source.tag
            else:
                if not weights.is_file():
                    raise WeightsNotFoundError(f"weights file not found: {weights}")
                ckpt = weights
                version = f"{source.tag}+{_short_hash([file_digest(weights), quick_gelu])}"
        else:
            assert source.path is not None
            ckpt, pp, quick_gelu = source.path, arch_preprocess(arch), False
            version = _short_hash([arch, file_digest(ckpt)])
        if preprocess:
            version += "+pp" + _short_hash(preprocess)
        with _hub_errors(what, model_cfg):
            # on the CPU, a plain CLIP is built uninitialised with its weights mapped from the file
            model = mapped_clip(arch, Path(ckpt), quick_gelu=quick_gelu, preprocess_cfg={**pp, **preprocess},
                                cache_dir=cache_dir) if device.type == "cpu" else None
            if model is None:
                model = open_clip.create_model(
                    arch, pretrained=str(ckpt), device=device, force_quick_gelu=quick_gelu,
                    force_preprocess_cfg={**pp, **preprocess}, cache_dir=cache_dir,
                )  # fmt: skip
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
        dim = int(model_cfg.get("embed_dim") or _probe_dim(model, tokenizer))
        return model, tokenizer, dim, version, (Path(ckpt),)

    if source.kind == "dir":
        assert source.path is not None
        cfg_path = source.path / "open_clip_config.json"
        if not cfg_path.is_file():
            raise WeightsNotFoundError(f"{cfg_path} is missing: a model directory needs open_clip_config.json + weights")
        files = sorted(p for p in source.path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
        if not files:
            raise WeightsNotFoundError(f"no weights (*.safetensors, *.bin, *.pth) in {source.path}; {_HINT}")
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
        version = _short_hash([file_digest(cfg_path), *(file_digest(f) for f in files), preprocess])
        name = f"local-dir:{source.path}"
        read = (cfg_path, *files)
    else:
        assert source.hub_id is not None
        config_file, weights_file = _download_hub(what, source.hub_id, cache_dir)
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        version = _short_hash([file_digest(Path(config_file)), file_digest(Path(weights_file)), preprocess])
        name = f"hf-hub:{source.hub_id}"
        read = (Path(config_file), Path(weights_file))
    model_cfg = config.get("model_cfg", config)
    with _hub_errors(what, model_cfg):
        model = open_clip.create_model(
            name, device=device, force_preprocess_cfg=preprocess or None, cache_dir=cache_dir
        )
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    return model, tokenizer, int(model_cfg.get("embed_dim") or _probe_dim(model, tokenizer)), version, read


def _download_tag(what: str, arch: str, tag: str, tag_cfg: dict[str, Any], cache_dir: str | None) -> Path:
    from open_clip.pretrained import download_pretrained

    hub = tag_cfg.get("hf_hub", "")
    if hub:
        repo, filename = _split_hub(hub)
        where = f"hf-hub:{repo}, file {filename or ' or '.join(_HUB_WEIGHTS)}"
    else:
        where = tag_cfg.get("url") or "?"
    try:
        path = download_pretrained(tag_cfg, cache_dir=cache_dir)
    except Exception as exc:
        raise WeightsNotFoundError(_missing(what, f"weights {arch}/{tag} (from {where})", exc)) from exc
    if not path or not Path(path).is_file():
        raise WeightsNotFoundError(_missing(what, f"weights {arch}/{tag} (from {where})", None))
    return Path(path)


def _download_hub(what: str, hub_id: str, cache_dir: str | None) -> tuple[str, str]:
    from open_clip.pretrained import download_pretrained_from_hf

    try:
        config = download_pretrained_from_hf(hub_id, filename="open_clip_config.json", cache_dir=cache_dir)
    except Exception as exc:
        raise WeightsNotFoundError(_missing(what, f"open_clip_config.json of hf-hub:{hub_id}", exc)) from exc
    try:
        weights = download_pretrained_from_hf(hub_id, cache_dir=cache_dir)
    except Exception as exc:
        thing = f"weights of hf-hub:{hub_id} ({' or '.join(_HUB_WEIGHTS)})"
        raise WeightsNotFoundError(_missing(what, thing, exc)) from exc
    return config, weights


@contextlib.contextmanager
def _hub_errors(what: str, model_cfg: dict[str, Any]) -> Iterator[None]:
    """Turn "cannot fetch the HF text tower's config / tokenizer" (OSError) into WeightsNotFoundError."""
    try:
        yield
    except WeightsNotFoundError:
        raise
    except OSError as exc:
        text = model_cfg.get("text_cfg", {})
        names = sorted({str(text[k]) for k in ("hf_model_name", "hf_tokenizer_name") if text.get(k)})
        thing = f"Hugging Face files {', '.join(names)}" if names else "tokenizer files"
        raise WeightsNotFoundError(_missing(what, thing, exc)) from exc


def _missing(what: str, thing: str, exc: BaseException | None) -> str:
    try:
        from huggingface_hub import constants

        offline = bool(constants.is_offline_mode())
    except (ImportError, AttributeError):
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    reason = "offline (HF_HUB_OFFLINE set) and not cached" if offline else "not cached and could not be downloaded"
    detail = f" [{type(exc).__name__}]" if exc is not None else ""
    return f"{what}: {thing} {reason}{detail}; {_HINT}"


def arch_preprocess(arch: str) -> dict[str, Any]:
    """Preprocessing shared by all of ``arch``'s pretrained tags (e.g. SigLIP's 0.5 mean/std)."""
    import open_clip

    cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch)]
    facts = [{k: c[k] for k in PREPROCESS_KEYS if k in c} for c in cfgs]
    if facts and all(f == facts[0] for f in facts):
        return facts[0]
    return {}


def _probe_dim(model: torch.nn.Module, tokenizer: Any) -> int:
    import torch

    with torch.inference_mode():
        return int(model.encode_text(tokenizer(["a"]).to(next(model.parameters()).device)).shape[-1])



__all__ = [
    "PREPROCESS_KEYS",
    "LoadedModel",
    "arch_preprocess",
    "built_model",
    "check_preprocess",
    "file_digest",
    "load_openclip",
    "preset_cached",
]
