"""CLIP-family encoders through open_clip: ``openclip:<model>``.

Names (the part after ``openclip:``):

- a preset from :data:`PRESETS`, e.g. ``xlm-roberta-base-ViT-B-32``;
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
cache, honouring ``HF_HUB_OFFLINE`` / ``HF_HOME``) when the encoder is
constructed, never at import. When they are neither cached nor downloadable,
:class:`~frozenlens.errors.WeightsNotFoundError` says in one line what is
missing and how to provide it.

Images go through the model's *own* eval preprocessing (size, mean/std,
resize mode, interpolation: ``model.visual.preprocess_cfg``), reimplemented
with PIL so that :meth:`OpenClipEncoder.prepare` can run in decoder threads;
normalisation happens in :meth:`OpenClipEncoder.embed_prepared`. CLIP image
embeddings serve both text→image and image→image search.

This module imports torch and open_clip only when an encoder is built.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from frozenlens.errors import UnknownEncoderError, WeightsNotFoundError
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

PREFIX = "openclip:"
Precision = Literal["auto", "fp32", "fp16", "bf16"]

#: preprocessing keys taken from open_clip's pretrained table / config (size comes from the model)
_PP_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz")
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's default names
_HINT = "pass --weights PATH (weights=) or name a local checkpoint: 'openclip:<arch>/<file>' or 'openclip:<dir>'"


# --------------------------------------------------------------------- presets
@dataclass(frozen=True)
class OpenClipPreset:
    """A named, known-good open_clip model (``openclip:<name>``)."""

    name: str
    arch: str
    pretrained: str
    dim: int
    image_size: int
    context_length: int
    languages: str
    download_mb: int  # approximate (fp32 weights; HF text configs/tokenizers add a few MB)
    license: str


#: ISO 639-1 (and Crossmodal-3600) language tags → NLLB-200 source-language codes
NLLB_CODES: dict[str, str] = {
    "ar": "arb_Arab", "bn": "ben_Beng", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "fa": "pes_Arab", "fi": "fin_Latn",
    "fil": "tgl_Latn", "fr": "fra_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn",
    "hu": "hun_Latn", "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang",
    "mi": "mri_Latn", "nl": "nld_Latn", "no": "nob_Latn", "nb": "nob_Latn", "pl": "pol_Latn",
    "pt": "por_Latn", "quz": "quy_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sv": "swe_Latn",
    "sw": "swh_Latn", "te": "tel_Telu", "th": "tha_Thai", "tr": "tur_Latn", "uk": "ukr_Cyrl",
    "vi": "vie_Latn", "zh": "zho_Hans", "zh-Hant": "zho_Hant", "ca": "cat_Latn", "gl": "glg_Latn",
    "eu": "eus_Latn", "af": "afr_Latn", "bg": "bul_Cyrl", "sk": "slk_Latn", "sl": "slv_Latn",
    "sr": "srp_Cyrl", "lt": "lit_Latn", "lv": "lvs_Latn", "et": "est_Latn", "ka": "kat_Geor",
    "hy": "hye_Armn", "ur": "urd_Arab", "ta": "tam_Taml", "mr": "mar_Deva", "ms": "zsm_Latn",
}

PRESETS: dict[str, OpenClipPreset] = {
    p.name: p
    for p in (
        OpenClipPreset(
            "xlm-roberta-base-ViT-B-32", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k",
            512, 224, 77, "~100 (XLM-R)", 1470, "MIT (LAION)",
        ),
        OpenClipPreset(
            "nllb-clip-base-siglip", "nllb-clip-base-siglip", "v1",
            768, 384, 77, "201 (NLLB-200)", 2030, "CC-BY-NC-4.0 (non-commercial, NLLB text tower)",
        ),
        OpenClipPreset(
            "nllb-clip-large-siglip", "nllb-clip-large-siglip", "v1",
            1152, 384, 77, "201 (NLLB-200)", 5200, "CC-BY-NC-4.0 (non-commercial, NLLB text tower)",
        ),
        OpenClipPreset(
            "ViT-B-16-SigLIP-i18n-256", "ViT-B-16-SigLIP-i18n-256", "webli",
            768, 256, 64, "~100 (WebLI, mC4 vocabulary)", 1480, "Apache-2.0",
        ),
        OpenClipPreset("ViT-B-32", "ViT-B-32", "openai", 512, 224, 77, "English", 605, "MIT (OpenAI)"),
        OpenClipPreset("ViT-L-14", "ViT-L-14", "openai", 768, 224, 77, "English", 1710, "MIT (OpenAI)"),
    )
}


@dataclass(frozen=True)
class ModelRow:
    """One line of ``frozenlens models``: an encoder name and what it costs."""

    name: str  # what to pass as --encoder, e.g. "openclip:ViT-B-32"
    source: str  # "<arch>/<pretrained tag>"
    dim: int
    image_size: int
    context_length: int
    languages: str
    download_mb: int
    license: str
    cached: bool | None  # weights in the local Hugging Face cache (None: not checked)


def list_presets(*, check_cache: bool = False) -> list[ModelRow]:
    """Rows describing :data:`PRESETS`; ``check_cache`` looks into the HF cache (no network)."""
    return [
        ModelRow(
            name=PREFIX + p.name,
            source=f"{p.arch}/{p.pretrained}",
            dim=p.dim,
            image_size=p.image_size,
            context_length=p.context_length,
            languages=p.languages,
            download_mb=p.download_mb,
            license=p.license,
            cached=_preset_cached(p) if check_cache else None,
        )
        for p in PRESETS.values()
    ]


def _split_hub(hub: str) -> tuple[str, str]:
    """open_clip's ``hf_hub`` entry → (repo id, file); "org/repo/" means the default weights file ("")."""
    return (hub.rstrip("/"), "") if hub.endswith("/") else os.path.split(hub)


def _preset_cached(preset: OpenClipPreset) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
        from open_clip import get_pretrained_cfg
    except ImportError:
        return False
    hub = get_pretrained_cfg(preset.arch, preset.pretrained).get("hf_hub", "")
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
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes, memoised by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _short_hash(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# --------------------------------------------------------------- preprocessing
def prepare_image(
    image: Image.Image,
    size: int,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
    fill_color: int = 0,
) -> np.ndarray:
    """open_clip's eval resize/crop with PIL only → uint8 (size, size, 3). Thread-safe.

    shortest: shorter side → size, centre-crop; squash: resize to size×size;
    longest: longer side → size, centre-pad with ``fill_color``.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    resample = Image.Resampling.BILINEAR if interpolation == "bilinear" else Image.Resampling.BICUBIC
    w, h = image.size
    if resize_mode == "squash":
        image = image.resize((size, size), resample)
    elif resize_mode == "longest":
        ratio = max(h / size, w / size)
        nw, nh = max(1, round(w / ratio)), max(1, round(h / ratio))
        image = image.resize((nw, nh), resample)
        if (nw, nh) != (size, size):
            canvas = Image.new("RGB", (max(nw, size), max(nh, size)), (fill_color,) * 3)
            canvas.paste(image, (max(size - nw, 0) // 2, max(size - nh, 0) // 2))
            image = canvas
            w, h = image.size
            top, left = round((h - size) / 2.0), round((w - size) / 2.0)
            image = image.crop((left, top, left + size, top + size))
    elif resize_mode == "shortest":
        # torchvision Resize(int): shorter side → size, longer side truncated
        nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        image = image.resize((nw, nh), resample)
        top, left = round((nh - size) / 2.0), round((nw - size) / 2.0)
        image = image.crop((left, top, left + size, top + size))
    else:
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    return np.array(image, dtype=np.uint8)  # (size, size, 3)


# --------------------------------------------------------------------- encoder
class OpenClipEncoder(Encoder):
    """An open_clip image tower + text tower pair (CLIP, SigLIP, XLM-R/NLLB CLIP ...).

    Args:
        model: the name after ``openclip:`` (see the module docstring); a
            leading ``openclip:`` is accepted too.
        arch: architecture of a bare checkpoint file (``openclip:<file>``).
        weights: a local checkpoint used instead of downloading the weights
            of a preset or ``<arch>/<tag>`` (the tag's preprocessing is kept).
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ...; default CUDA if available.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``,
            ``"fp16"`` (CUDA only) or ``"bf16"`` autocast. Outputs are float32.
        batch_size: texts per forward pass in :meth:`encode_texts`.
        image_batch_size: images per forward pass in :meth:`embed_prepared`.
        cache_dir: download cache (default: the Hugging Face Hub cache).
        threads: torch CPU threads (process-wide; default: leave torch's).
        preprocess: overrides of the preprocessing facts (``mean``, ``std``,
            ``resize_mode``, ``interpolation``, ``fill_color``); changes the version.
        language: source language for tokenizers that need one (NLLB: ``"eng_Latn"``).

    Identity: name ``openclip:<model>``; version = the pretrained tag for
    downloaded tag weights, else a short hash of the checkpoint bytes (and
    arch/preprocessing overrides), so a different checkpoint never matches.

    Threads: every method may be called from several threads at once. The
    shared tokenizer is not safe for that (an NLLB tokenizer keeps its source
    language as state; Hugging Face fast tokenizers may reconfigure their
    backend inside a call), so tokenising — set language, tokenise, reset —
    runs under a lock; the forward passes run outside it and change nothing.
    """

    def __init__(
        self,
        model: str,
        *,
        arch: str | None = None,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        precision: Precision = "auto",
        batch_size: int = 64,
        image_batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        preprocess: dict[str, Any] | None = None,
        language: str | None = None,
    ) -> None:
        import torch

        spec = model.removeprefix(PREFIX)
        if not spec:
            raise UnknownEncoderError("empty open_clip model name")
        if threads is not None:
            if threads < 1:
                raise ValueError("threads must be >= 1")
            torch.set_num_threads(threads)
        bad = set(preprocess or {}) - set(_PP_KEYS)
        if bad:
            raise ValueError(f"unknown preprocess keys {sorted(bad)}; allowed: {', '.join(_PP_KEYS)}")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        _check_precision(precision, dev)  # before a long load
        source = _parse(spec, arch)
        if weights is not None and source.kind != "tag":
            raise ValueError("weights= replaces the download of a preset or '<arch>/<tag>'; name the checkpoint directly")
        if arch is not None and source.arch not in (None, arch):
            raise ValueError(f"arch={arch!r} contradicts the model name ({source.arch})")
        cache = str(cache_dir) if cache_dir is not None else None
        net, tokenizer, embed_dim, version = _load(
            source, spec, dev, Path(weights).expanduser() if weights is not None else None, cache, preprocess or {},
        )
        if language:
            if not hasattr(tokenizer, "set_lang_fn"):  # only NLLB-style HF tokenizers take a source language
                raise ValueError(f"language= does not apply: the tokenizer of {spec!r} has no source languages")
            tokenizer.set_language(language)
        self._language = language
        self._setup(
            net, tokenizer,
            identity=EncoderIdentity(PREFIX + spec, version, embed_dim, embed_dim),
            device=dev, precision=precision, batch_size=batch_size, image_batch_size=image_batch_size,
        )  # fmt: skip

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        name: str,
        version: str,
        device: str | None = None,
        precision: Precision = "auto",
        batch_size: int = 64,
        image_batch_size: int = 32,
    ) -> OpenClipEncoder:
        """Wrap an already built open_clip model and tokenizer (e.g. trained in memory).

        ``name``/``version`` become the identity; the embedding dim is probed.
        """
        import torch

        dev = torch.device(device or next(model.parameters()).device.type)
        model = model.to(dev)
        dim = _probe_dim(model, tokenizer)
        self = cls.__new__(cls)
        self._setup(
            model, tokenizer, identity=EncoderIdentity(name, version, dim, dim), device=dev,
            precision=precision, batch_size=batch_size, image_batch_size=image_batch_size,
        )  # fmt: skip
        return self

    def _setup(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        identity: EncoderIdentity,
        device: torch.device,
        precision: Precision,
        batch_size: int,
        image_batch_size: int,
    ) -> None:
        import open_clip
        import torch

        if batch_size < 1 or image_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        _check_precision(precision, device)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()
        self.identity = identity
        self.device = device
        self.batch_size = batch_size
        self.image_batch_size = image_batch_size
        self.image_tokens = TOKEN_GRID * TOKEN_GRID if _has_patch_tokens(self.model) else 0
        # the image tower that also returns its patch tokens: a shallow copy sharing
        # the weights, made once, instead of toggling ``output_tokens`` per call
        self._visual_with_tokens: Any = None
        if self.image_tokens:
            self._visual_with_tokens = copy.copy(self.model.visual)
            self._visual_with_tokens.output_tokens = True
        self._autocast: torch.dtype | None = {
            "fp32": None,
            "fp16": torch.float16,
            "bf16": torch.bfloat16,
            "auto": torch.float16 if device.type == "cuda" else None,
        }[precision]

        pp = dict(open_clip.get_model_preprocess_cfg(model))
        size = pp.get("size", 224)
        if isinstance(size, (tuple, list)):
            if len(set(size)) != 1:
                raise ValueError(f"non-square model input {tuple(size)} is not supported")
            size = size[0]
        #: the model's own preprocessing facts (size, mean, std, interpolation, resize_mode, fill_color)
        self.preprocess_cfg: dict[str, Any] = {
            "size": int(size),
            "mean": tuple(float(v) for v in _triple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN))),
            "std": tuple(float(v) for v in _triple(pp.get("std", open_clip.OPENAI_DATASET_STD))),
            "interpolation": pp.get("interpolation") or "bicubic",
            "resize_mode": pp.get("resize_mode") or "shortest",
            "fill_color": int(pp.get("fill_color") or 0),
        }
        self.input_size = int(size)
        self.draft_size = int(size)
        ctx = getattr(tokenizer, "context_length", None) or getattr(model, "context_length", None) or 77
        self.max_text_tokens = int(ctx)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.preprocess_cfg["mean"], device=device).view(shape)
        self._std = torch.tensor(self.preprocess_cfg["std"], device=device).view(shape)

    # --------------------------------------------------------------- texts
    @property
    def context_length(self) -> int:
        """Tokens the text tower reads (longer texts are truncated by the tokenizer)."""
        return self.max_text_tokens or 77

    def count_tokens(self, text: str) -> int:
        """Tokens the model's tokenizer makes of ``text`` before truncation, special tokens included."""
        with self._tokenizer_lock:
            return _count_tokens(self.tokenizer, text)

    def encode_texts_in(self, texts: Sequence[str], lang: str | None) -> np.ndarray:
        """Like :meth:`encode_texts`; NLLB tokenizers get ``lang`` as source language.

        ``lang`` is an ISO 639-1 tag (``"de"``, ``"zh-Hant"`` ...), mapped with
        :data:`NLLB_CODES`; unknown or ``None`` keeps the encoder's default.
        """
        code = NLLB_CODES.get(lang or "") or NLLB_CODES.get((lang or "").split("-")[0])
        if code is None or not hasattr(self.tokenizer, "set_lang_fn"):
            code = None
        return self._encode_texts(texts, code)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts → float32 (n, dim), L2-normalised (truncated to :attr:`context_length`)."""
        return self._encode_texts(texts, None)

    def _encode_texts(self, texts: Sequence[str], code: str | None) -> np.ndarray:
        import torch

        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        out = []
        with torch.inference_mode(), self._autocast_ctx():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenize(texts[start : start + self.batch_size], code).to(self.device)  # (b, ctx)
                out.append(self.model.encode_text(tokens).float())  # (b, dim)
        return _normalised(torch.cat(out))

    def _tokenize(self, texts: list[str], code: str | None) -> torch.Tensor:
        """Token ids (b, ctx) of ``texts`` in NLLB source language ``code`` (None: the default).

        The language is this call's alone: set, tokenise and reset happen under
        the tokenizer lock, so a concurrent call never sees it.
        """
        with self._tokenizer_lock:
            if code is None:
                return self.tokenizer(texts)
            self.tokenizer.set_language(code)
            try:
                return self.tokenizer(texts)
            finally:
                self.tokenizer.set_language(getattr(self, "_language", None) or NLLB_CODES["en"])

    # -------------------------------------------------------------- images
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize/crop as the model's eval transform does → uint8 (S, S, 3). Thread-safe."""
        cfg = self.preprocess_cfg
        return prepare_image(image, cfg["size"], cfg["resize_mode"], cfg["interpolation"], cfg["fill_color"])

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        """uint8 (n, S, S, 3) → semantic = visual float32 (n, dim), L2-normalised; labels None."""
        import torch

        batch = np.asarray(batch)
        s = self.input_size
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (s, s, 3):
            raise ValueError(f"expected uint8 (n, {s}, {s}, 3), got {batch.dtype} {batch.shape}")
        if batch.shape[0] == 0:
            empty = np.zeros((0, self.identity.dim), np.float32)
            return ImageEmbeddings(semantic=empty, visual=empty.copy(), labels=None)
        if not batch.flags.c_contiguous or not batch.flags.writeable:
            batch = np.array(batch, order="C", copy=True)
        out, toks = [], []
        with torch.inference_mode(), self._autocast_ctx():
            for start in range(0, batch.shape[0], self.image_batch_size):
                x = torch.from_numpy(batch[start : start + self.image_batch_size]).to(self.device)
                x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (b, 3, S, S) in [0, 1]
                x = (x - self._mean) / self._std
                if self._visual_with_tokens is not None:
                    pooled, grid = _vit_with_grid_tokens(self._visual_with_tokens, x)
                    out.append(pooled.float())  # (b, dim)
                    toks.append(grid.float())  # (b, G*G, dim)
                else:
                    out.append(self.model.encode_image(x).float())  # (b, dim)
        vecs = _normalised(torch.cat(out))
        tokens = None
        if toks:
            t = torch.nn.functional.normalize(torch.cat(toks), dim=-1)
            tokens = t.cpu().numpy().astype(np.float32, copy=False)  # (n, G*G, dim)
        return ImageEmbeddings(semantic=vecs, visual=vecs.copy(), labels=None, tokens=tokens)

    def _autocast_ctx(self) -> Any:
        import torch

        if self._autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._autocast)


#: side of the grid the ViT's patch tokens are average-pooled to (reranker tokens)
TOKEN_GRID = 2


def _has_patch_tokens(model: Any) -> bool:
    """True for open_clip ``VisionTransformer`` towers whose patch tokens can be
    projected into the shared space (no attentional pooler)."""
    visual = getattr(model, "visual", None)
    grid = getattr(visual, "grid_size", None)
    return (
        visual is not None
        and hasattr(visual, "output_tokens")
        and getattr(visual, "attn_pool", None) is None
        and isinstance(grid, (tuple, list))
        and len(grid) == 2
    )


def _vit_with_grid_tokens(visual: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an open_clip ViT once → (pooled float (b, dim), region tokens float (b, G*G, dim)).

    ``visual`` has ``output_tokens`` set (the encoder's own copy of the tower; no
    per-call toggling of the shared one). The patch tokens (after ``ln_post``) go
    through the same projection as the pooled embedding (as in MaskCLIP-style
    dense features) and are average-pooled to a :data:`TOKEN_GRID` square grid.
    """
    import torch.nn.functional as F

    pooled, tokens = visual(x)  # (b, dim), (b, N, width)
    gh, gw = visual.grid_size
    b, n, width = tokens.shape
    if n != gh * gw:  # e.g. register tokens: fall back to the mean patch token per cell
        tokens = tokens[:, -gh * gw :, :]
    proj = getattr(visual, "proj", None)
    if proj is not None:
        tokens = tokens @ proj  # (b, N, dim)
    grid = tokens.reshape(b, gh, gw, -1).permute(0, 3, 1, 2)  # (b, dim, gh, gw)
    cells = F.adaptive_avg_pool2d(grid, TOKEN_GRID).flatten(2).transpose(1, 2)  # (b, G*G, dim)
    return pooled, cells


# -------------------------------------------------------------------- loading
def _load(
    source: _Source,
    spec: str,
    device: torch.device,
    weights: Path | None,
    cache_dir: str | None,
    preprocess: dict[str, Any],
) -> tuple[torch.nn.Module, Any, int, str]:
    """Build (model, tokenizer, embed_dim, version) for ``source``."""
    import open_clip

    what = f"{PREFIX}{spec}"
    if source.kind in ("tag", "file"):
        arch = source.arch
        assert arch is not None
        model_cfg = open_clip.get_model_config(arch) or {}
        if source.kind == "tag":
            assert source.tag is not None
            tag_cfg = open_clip.get_pretrained_cfg(arch, source.tag)
            pp = {k: tag_cfg[k] for k in _PP_KEYS if k in tag_cfg}
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
            ckpt, pp, quick_gelu = source.path, _arch_preprocess(arch), False
            version = _short_hash([arch, file_digest(ckpt)])
        if preprocess:
            version += "+pp" + _short_hash(preprocess)
        with _hub_errors(what, model_cfg):
            model = open_clip.create_model(
                arch, pretrained=str(ckpt), device=device, force_quick_gelu=quick_gelu,
                force_preprocess_cfg={**pp, **preprocess}, cache_dir=cache_dir,
            )  # fmt: skip
            tokenizer = open_clip.get_tokenizer(arch, cache_dir=cache_dir)
        return model, tokenizer, int(model_cfg.get("embed_dim") or _probe_dim(model, tokenizer)), version

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
    else:
        assert source.hub_id is not None
        config_file, weights_file = _download_hub(what, source.hub_id, cache_dir)
        config = json.loads(Path(config_file).read_text(encoding="utf-8"))
        version = _short_hash([file_digest(Path(config_file)), file_digest(Path(weights_file)), preprocess])
        name = f"hf-hub:{source.hub_id}"
    model_cfg = config.get("model_cfg", config)
    with _hub_errors(what, model_cfg):
        model = open_clip.create_model(
            name, device=device, force_preprocess_cfg=preprocess or None, cache_dir=cache_dir
        )
        tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    return model, tokenizer, int(model_cfg.get("embed_dim") or _probe_dim(model, tokenizer)), version


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


def _arch_preprocess(arch: str) -> dict[str, Any]:
    """Preprocessing shared by all of ``arch``'s pretrained tags (e.g. SigLIP's 0.5 mean/std)."""
    import open_clip

    cfgs = [open_clip.get_pretrained_cfg(arch, t) for t in open_clip.list_pretrained_tags_by_model(arch)]
    facts = [{k: c[k] for k in _PP_KEYS if k in c} for c in cfgs]
    if facts and all(f == facts[0] for f in facts):
        return facts[0]
    return {}


def _check_precision(precision: str, device: torch.device) -> None:
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, fp16 or bf16")
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")


def _probe_dim(model: torch.nn.Module, tokenizer: Any) -> int:
    import torch

    with torch.inference_mode():
        return int(model.encode_text(tokenizer(["a"]).to(next(model.parameters()).device)).shape[-1])


def _count_tokens(tokenizer: Any, text: str) -> int:
    from open_clip.tokenizer import (
        HFTokenizer,
        SigLipTokenizer,
        SimpleTokenizer,
        basic_clean,
        canonicalize_text,
    )

    if isinstance(tokenizer, SimpleTokenizer):
        return len(tokenizer.encode(text)) + 2  # <start_of_text> ... <end_of_text>
    if isinstance(tokenizer, HFTokenizer):
        cleaned = tokenizer.clean_fn(text)
        if tokenizer.tokenizer_mode == "clips":  # bos + tokens + eos + cls
            return len(tokenizer.tokenizer(cleaned, add_special_tokens=False, verbose=False).input_ids) + 3
        return len(tokenizer.tokenizer(cleaned, verbose=False).input_ids)
    if isinstance(tokenizer, SigLipTokenizer):
        return len(tokenizer.tokenizer(canonicalize_text(basic_clean(text)), verbose=False).input_ids)
    ids = tokenizer([text])[0]  # unknown tokenizer: count non-padding ids (truncated)
    return int((ids != 0).sum())


def _triple(v: Any) -> tuple[float, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (float(v),) * 3


def _normalised(x: torch.Tensor) -> np.ndarray:
    import torch

    return torch.nn.functional.normalize(x.float(), dim=-1).cpu().numpy().astype(np.float32, copy=False)


__all__ = [
    "PRESETS",
    "ModelRow",
    "OpenClipEncoder",
    "OpenClipPreset",
    "file_digest",
    "list_presets",
    "prepare_image",
]

