"""CLIP-family encoders through open_clip: ``openclip:<model>``.

:class:`OpenClipEncoder` wraps an open_clip image tower + text tower pair
(CLIP, SigLIP, XLM-R/NLLB CLIP ...). It is created by name through the
registry (``create_encoder("openclip:<model>", **options)``); the names, the
weights sources and the downloads are :mod:`frozenlens.models.loading`'s
business, the presets and language tables :mod:`frozenlens.models.presets`'.

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
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from frozenlens.errors import UnknownEncoderError
from frozenlens.models.base import Encoder, ImageEmbeddings
from frozenlens.models.clip_preprocess import checked_pixels, no_images, prepare_image
from frozenlens.models.loading import LoadedModel, built_model, check_preprocess, load_openclip
from frozenlens.models.precision import Precision, check_precision
from frozenlens.models.presets import NLLB_CODES, PREFIX, nllb_code

if TYPE_CHECKING:
    import torch



# --------------------------------------------------------------------- encoder
class OpenClipEncoder(Encoder):
    """An open_clip image tower + text tower pair (CLIP, SigLIP, XLM-R/NLLB CLIP ...).

    One constructor: ``model`` is either a name, loaded by
    :func:`~frozenlens.models.loading.load_openclip` (what the registry's
    ``create_encoder("openclip:<name>", **options)`` does), or an already
    built :class:`~frozenlens.models.loading.LoadedModel` (what
    :meth:`from_model` passes).

    Args:
        model: the name after ``openclip:`` (see :mod:`frozenlens.models.loading`;
            a leading ``openclip:`` is accepted too), or a ``LoadedModel``.
        arch: architecture of a bare checkpoint file (``openclip:<file>``).
        weights: a local checkpoint used instead of downloading the weights
            of a preset or ``<arch>/<tag>`` (the tag's preprocessing is kept).
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` ...; default CUDA if
            available (a ``LoadedModel``: the device its weights are on).
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``,
            ``"fp16"`` (CUDA only) or ``"bf16"`` autocast. Outputs are float32.
        batch_size: texts per forward pass in :meth:`encode_texts`.
        image_batch_size: images per forward pass in :meth:`embed_prepared` on torch (ONNX graphs run
            :data:`~frozenlens.models.openclip_onnx.IMAGE_MICRO_BATCH` at a time).
        cache_dir: download cache (default: the Hugging Face Hub cache).
        threads: torch CPU threads (process-wide; default: leave torch's).
        preprocess: overrides of the preprocessing facts (``mean``, ``std``,
            ``resize_mode``, ``interpolation``, ``fill_color``); changes the version.
        language: source language for tokenizers that need one (NLLB: ``"eng_Latn"``).
        runtime: ``"auto"`` (ONNX Runtime on the CPU where installed, else torch),
            ``"torch"`` (the reference), ``"onnx"`` (the same vectors) or ``"onnx-int8"``
            (int8 weights: other vectors, version ``+int8``); the ONNX runtimes are
            CPU-only and fp32 (:mod:`frozenlens.models.openclip_onnx`).

    ``arch``, ``weights``, ``cache_dir`` and ``preprocess`` describe how to
    load a name; with a ``LoadedModel`` they raise ``ValueError``.

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
        model: str | LoadedModel,
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
        runtime: str = "auto",
    ) -> None:
        try:
            import open_clip
        except ImportError as exc:
            raise UnknownEncoderError(f"openclip: encoders need open_clip: pip install 'frozenlens[clip]' "
                                      f"({exc.name} is missing)") from exc
        import torch

        if isinstance(model, LoadedModel):
            given = {"arch": arch, "weights": weights, "cache_dir": cache_dir, "preprocess": preprocess}
            extra = sorted(k for k, v in given.items() if v is not None)
            if extra:
                raise ValueError(f"{', '.join(extra)}: options for loading a model by name, not for a built one")
            spec = ""
        else:
            spec = model.removeprefix(PREFIX)
            if not spec:
                raise UnknownEncoderError("empty open_clip model name")
        if threads is not None:
            if threads < 1:
                raise ValueError("threads must be >= 1")
            torch.set_num_threads(threads)
        check_preprocess(preprocess)
        if batch_size < 1 or image_batch_size < 1:
            raise ValueError("batch sizes must be >= 1")
        if isinstance(model, LoadedModel):
            dev = torch.device(device or next(model.model.parameters()).device.type)
            check_precision(precision, dev.type)
            self.runtime = _resolve_runtime(runtime, dev, precision)
            loaded = LoadedModel(model.model.to(dev), model.tokenizer, model.identity, model.files)
        else:
            dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            check_precision(precision, dev.type)  # before a long load
            self.runtime = _resolve_runtime(runtime, dev, precision)
            loaded = load_openclip(
                spec, device=dev, arch=arch, weights=weights, cache_dir=cache_dir, preprocess=preprocess
            )
        tokenizer = loaded.tokenizer
        if language:
            if not hasattr(tokenizer, "set_lang_fn"):  # only NLLB-style HF tokenizers take a source language
                raise ValueError(
                    f"language= does not apply: the tokenizer of {spec or loaded.identity.name!r} has no source languages"
                )
            tokenizer.set_language(language)
        self._language = language
        self.model = loaded.model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._tokenizer_lock = threading.Lock()
        self.identity = loaded.identity
        if self.runtime == "onnx-int8":  # int8 weights give other vectors: another version
            self.identity = replace(self.identity, version=self.identity.version + "+int8")
        self.device = dev
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
            "auto": torch.float16 if dev.type == "cuda" else None,
        }[precision]

        pp = dict(open_clip.get_model_preprocess_cfg(self.model))
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
        ctx = getattr(tokenizer, "context_length", None) or getattr(self.model, "context_length", None) or 77
        self.max_text_tokens = int(ctx)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.preprocess_cfg["mean"], device=dev).view(shape)
        self._std = torch.tensor(self.preprocess_cfg["std"], device=dev).view(shape)
        self._onnx: Any = None  # the ONNX Runtime towers (runtime onnx / onnx-int8)
        if self.runtime != "torch":
            from frozenlens.models.openclip_onnx import onnx_towers

            self._onnx = onnx_towers(self, loaded, _vit_with_grid_tokens)
            if spec:  # a later process may answer text queries without torch (openclip_light)
                from frozenlens.models.openclip_light import write_manifest

                given = {"arch": arch, "weights": weights, "device": device, "preprocess": preprocess,
                         "language": language, "precision": None if precision == "auto" else precision}
                write_manifest(self, spec, {k: v for k, v in given.items() if v is not None})

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
        language: str | None = None,
    ) -> OpenClipEncoder:
        """Wrap an already built open_clip model and tokenizer (e.g. trained in memory).

        ``name``/``version`` become the identity; the embedding dim is probed
        (on ``device``, default: where the weights are). Goes through the one
        constructor: ``OpenClipEncoder(built_model(...), ...)``.
        """
        import torch

        dev = torch.device(device or next(model.parameters()).device.type)
        loaded = built_model(model.to(dev), tokenizer, name=name, version=version)
        return cls(
            loaded, device=str(dev), precision=precision, batch_size=batch_size,
            image_batch_size=image_batch_size, language=language,
        )  # fmt: skip

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
        code = nllb_code(lang)
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
                tokens = self._tokenize(texts[start : start + self.batch_size], code)  # (b, ctx)
                if self._onnx is not None:
                    out.append(torch.from_numpy(self._onnx.encode_tokens(tokens.numpy())))  # (b, dim)
                else:
                    out.append(self.model.encode_text(tokens.to(self.device)).float())  # (b, dim)
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
                self.tokenizer.set_language(self._language or NLLB_CODES["en"])

    # -------------------------------------------------------------- images
    def prepare(self, image: Image.Image) -> np.ndarray:
        """Resize/crop as the model's eval transform does → uint8 (S, S, 3). Thread-safe."""
        cfg = self.preprocess_cfg
        return prepare_image(image, cfg["size"], cfg["resize_mode"], cfg["interpolation"], cfg["fill_color"])

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        """uint8 (n, S, S, 3) → semantic = visual float32 (n, dim), L2-normalised; labels None."""
        import torch

        batch = checked_pixels(batch, self.input_size)
        if batch.shape[0] == 0:
            return no_images(self.identity.dim)
        if not batch.flags.c_contiguous or not batch.flags.writeable:
            batch = np.array(batch, order="C", copy=True)
        out, toks = [], []
        with torch.inference_mode(), self._autocast_ctx():
            for start in range(0, batch.shape[0], self.image_batch_size):
                if self._onnx is not None:
                    pooled, grid = self._onnx.encode_pixels(batch[start : start + self.image_batch_size])
                    out.append(torch.from_numpy(pooled))  # (b, dim)
                    if grid is not None:
                        toks.append(torch.from_numpy(grid))  # (b, G*G, dim)
                    continue
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
    import torch

    pooled, tokens = visual(x)  # (b, dim), (b, N, width)
    gh, gw = visual.grid_size
    b, n, width = tokens.shape
    if n != gh * gw:  # e.g. register tokens: fall back to the mean patch token per cell
        tokens = tokens[:, -gh * gw :, :]
    proj = getattr(visual, "proj", None)
    if proj is not None:
        tokens = tokens @ proj  # (b, N, dim)
    grid = tokens.reshape(b, gh, gw, -1)  # (b, gh, gw, dim)
    # adaptive average pooling to G x G, its bins spelt out (static slices: ONNX-exportable)
    cells = torch.stack([grid[:, r0:r1, c0:c1, :].mean(dim=(1, 2)) for r0, r1 in _bins(gh) for c0, c1 in _bins(gw)],
                        dim=1)  # (b, G*G, dim), row-major
    return pooled, cells


def _bins(n: int) -> list[tuple[int, int]]:
    """The :data:`TOKEN_GRID` bins of adaptive average pooling over ``n`` cells: [floor(i n / G), ceil((i + 1) n / G))."""
    return [(i * n // TOKEN_GRID, -(-(i + 1) * n // TOKEN_GRID)) for i in range(TOKEN_GRID)]


def _resolve_runtime(runtime: str, device: torch.device, precision: str) -> str:
    """The runtime an encoder on ``device`` uses for ``runtime`` (see :func:`~frozenlens.models.onnx_runtime.resolve_runtime`):
    the ONNX runtimes are CPU and fp32 only, so ``"auto"`` is torch elsewhere."""
    from frozenlens.models.onnx_runtime import RUNTIMES, resolve_runtime

    if device.type != "cpu" or precision not in ("auto", "fp32"):
        if runtime in ("auto", "torch"):
            return "torch"
        raise ValueError(f"runtime {runtime!r} runs on the CPU in fp32 only (device {device}, precision {precision})")
    return resolve_runtime(runtime, auto="onnx", fallback="torch", allowed=RUNTIMES, what="openclip encoder")


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


__all__ = ["OpenClipEncoder", "Precision", "prepare_image"]
