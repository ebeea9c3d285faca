"""FLAME's text tower: a frozen decoder-only LLM, read after one block, K facets in one pass.

How a batch of captions becomes (B, K, H) facet embeddings:

1. Each caption is rendered into a prompt (:mod:`frozenlens.models.flame_prompts`):
   a shared *prefix* holding the caption, then K *facet spans*, each ending
   with ``:"``. The prefix and every span are tokenised on their own, so a
   span's tokens are the same whatever precedes it.
2. The rows are laid out left-padded: ``[pad ... | prefix | span 1 | ... | span K]``.
   Every token carries a segment (0 for the prefix, k for span k) and a
   position id.
3. **Facet-decoupled attention**: an additive float mask of shape (B, 1, L, L)
   — 0 where attention is allowed, ``finfo(dtype).min`` elsewhere — lets a
   query see a key only if the key is a real token (padding is masked on the
   *key* axis), is not later in the sequence (causal), and lies in the prefix
   or in the query's own span. Layers with a sliding window also require
   ``pos(query) - pos(key) < window``, measured in position ids. A padding
   query sees itself only, so no row of the mask is empty.
4. Position ids: in ``restart`` mode every span continues from the end of the
   prefix, so one pass equals K separate prompts exactly; in ``continue`` mode
   they run on through the spans, as FLAME's released checkpoints were trained.
5. Only blocks ``0..layer`` exist in the model (the rest and the LM head are
   never loaded or run; the final norm is not applied), so the model's last
   hidden state *is* the output of block ``layer`` (FLAME: block 38 of
   Mistral-Nemo's 40, ``hidden_states[39]``). The embedding of facet k is the
   hidden state at span k's last token.

How the mask reaches the model follows transformers 5.x: a 4-D mask is used as
given; a model whose layers mix full and sliding-window attention (``layer_types``,
e.g. Gemma 3, Qwen2 with windows) takes a mapping ``{"full_attention": ...,
"sliding_attention": ...}`` — handing it one 4-D mask would silently turn the
window off.

Nothing here is changed per call: the tower may be called from several threads.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from frozenlens.errors import CaptionTruncatedWarning, EncoderConfigError
from frozenlens.models.flame_prompts import SHORT, PromptTemplate

PositionMode = Literal["restart", "continue"]
POSITION_MODES: tuple[str, ...] = ("restart", "continue")
#: model families whose masks and layers this module was checked against (tests build each)
CHECKED_FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2", "gemma3_text")


def resolve_layer(layer: int, n_layers: int) -> int:
    """A block index (negative counts from the end: -2 is the second-to-last) as 0..n_layers-1."""
    idx = layer + n_layers if layer < 0 else layer
    if not 0 <= idx < n_layers:
        raise EncoderConfigError(f"layer {layer} does not exist: the model has {n_layers} blocks")
    return idx


def truncate_config(config: Any, layer: int) -> Any:
    """Make ``config`` describe blocks 0..layer only (before the model is built or loaded)."""
    n = resolve_layer(layer, int(config.num_hidden_layers)) + 1
    config.num_hidden_layers = n
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[:n]
    return config


def layer_windows(config: Any) -> list[int | None]:
    """The sliding window of every block (None: full causal attention)."""
    n = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if types is not None:
        return [window if t == "sliding_attention" else None for t in list(types)[:n]]
    if window is not None and getattr(config, "use_sliding_window", True):
        return [int(window)] * n
    return [None] * n


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor  # (B, L)
    position_ids: torch.Tensor  # (B, L)
    segments: torch.Tensor  # (B, L): -1 padding, 0 prefix, k span k
    ends: torch.Tensor  # (B, K): index in the padded row of each span's last token


class FlameTextTower:
    """A frozen decoder-only LLM read after block ``layer``, yielding FLAME facet embeddings.

    Build it with :func:`frozenlens.models.flame_loading.load_text_tower`
    (hub names and local paths) or :meth:`from_model` (a model already built).
    """

    def __init__(self, model: Any, tokenizer: Any, *, layer: int, position_mode: PositionMode = "restart",
                 max_length: int | None = None, family: str | None = None) -> None:
        """Take ownership of ``model`` (a transformers base model with blocks 0..layer only).

        Use :meth:`from_model` to hand over a full-depth model.
        """
        if position_mode not in POSITION_MODES:
            raise EncoderConfigError(f"position mode must be one of {POSITION_MODES}, not {position_mode!r}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.layer = int(layer)
        self.position_mode: PositionMode = position_mode
        self.family = family or str(getattr(model.config, "model_type", "?"))
        config = model.config
        self.hidden_size = int(config.hidden_size)
        context = int(getattr(config, "max_position_embeddings", 0) or 0) or 8192
        self.max_length = min(int(max_length), context) if max_length else context
        self._windows = layer_windows(config)
        self._mixed = len(set(self._windows)) > 1
        pad = getattr(tokenizer, "pad_token_id", None)
        self._pad_id = int(pad if pad is not None else (getattr(tokenizer, "eos_token_id", None) or 0))
        self._tok_lock = threading.Lock()
        self._span_cache: dict[str, list[int]] = {}

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, *, layer: int = -2, **options: Any) -> FlameTextTower:
        """Cut a full-depth model down to blocks 0..layer and wrap it (the model is changed in place).

        Keeps the embedding, the first ``layer + 1`` blocks and the rotary
        tables; drops later blocks, the final norm and any LM head.
        """
        base = model.get_decoder() if hasattr(model, "get_decoder") and hasattr(model, "lm_head") else model
        n_total = int(base.config.num_hidden_layers)
        idx = resolve_layer(layer, n_total)
        base.layers = torch.nn.ModuleList(list(base.layers)[: idx + 1])
        truncate_config(base.config, idx)
        base.norm = torch.nn.Identity()
        return cls(base, tokenizer, layer=idx, **options)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- tokens ---------------------------------------------------------------

    def _ids(self, text: str, *, special: bool) -> list[int]:
        with self._tok_lock:  # fast tokenizers are not safe to call from several threads at once
            return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def _span_ids(self, span: str) -> list[int]:
        ids = self._span_cache.get(span)
        if ids is None:
            ids = self._ids(span, special=False)
            if not ids:
                raise EncoderConfigError(f"facet span {span!r} tokenises to nothing")
            self._span_cache = {**self._span_cache, span: ids}  # replaced, never mutated in place
        return ids

    def _prefix_ids(self, caption: str, template: PromptTemplate, budget: int) -> list[int]:
        ids = self._ids(template.render_prefix(caption), special=True)
        if len(ids) <= budget:
            return ids
        # Too long: cut the caption (never the prompt) and say which caption it was.
        words = caption.split()
        lo, hi = 0, len(words)
        while lo < hi:  # the longest word prefix that fits
            mid = (lo + hi + 1) // 2
            if len(self._ids(template.render_prefix(" ".join(words[:mid])), special=True)) <= budget:
                lo = mid
            else:
                hi = mid - 1
        cut = " ".join(words[:lo])
        ids = self._ids(template.render_prefix(cut), special=True)
        if len(ids) > budget:
            raise EncoderConfigError(
                f"the prompt {template.name!r} alone needs more than {self.max_length} tokens"
            )
        shown = caption if len(caption) <= 80 else caption[:77] + "..."
        warnings.warn(
            CaptionTruncatedWarning(
                f"caption truncated to {lo} of {len(words)} words to fit {self.max_length} tokens: {shown!r}"
            ),
            stacklevel=3,
        )
        return ids

    def tokens_of(self, caption: str, template: PromptTemplate = SHORT) -> tuple[list[int], list[list[int]]]:
        """(prefix ids, one id list per facet span) of one caption."""
        spans = [self._span_ids(s) for s in template.facets]
        prefix = self._prefix_ids(caption, template, self.max_length - sum(len(s) for s in spans))
        return prefix, spans

    def _positions(self, n_prefix: int, spans: Sequence[Sequence[int]]) -> list[int]:
        pos = list(range(n_prefix))
        start = n_prefix
        for s in spans:
            pos.extend(range(start, start + len(s)))
            if self.position_mode == "continue":
                start += len(s)
        return pos

    def _batch(self, captions: Sequence[str], template: PromptTemplate) -> _Batch:
        rows = [self.tokens_of(c, template) for c in captions]
        length = max(len(p) + sum(len(s) for s in spans) for p, spans in rows)
        b, k = len(rows), template.k
        ids = torch.full((b, length), self._pad_id, dtype=torch.long)
        pos = torch.zeros((b, length), dtype=torch.long)
        seg = torch.full((b, length), -1, dtype=torch.long)
        ends = torch.zeros((b, k), dtype=torch.long)
        for r, (prefix, spans) in enumerate(rows):
            flat = prefix + [t for s in spans for t in s]
            off = length - len(flat)  # left padding
            ids[r, off:] = torch.tensor(flat)
            pos[r, off:] = torch.tensor(self._positions(len(prefix), spans))
            segs = [0] * len(prefix) + [i + 1 for i, s in enumerate(spans) for _ in s]
            seg[r, off:] = torch.tensor(segs)
            at = off + len(prefix)
            for i, s in enumerate(spans):
                at += len(s)
                ends[r, i] = at - 1
        return _Batch(ids, pos, seg, ends)

    # -- masks ----------------------------------------------------------------

    def _allowed(self, batch: _Batch, window: int | None) -> torch.Tensor:
        seg, pos = batch.segments, batch.position_ids
        length = seg.shape[1]
        idx = torch.arange(length)
        causal = idx[None, :] <= idx[:, None]  # (L, L): key j <= query i
        real_key = (seg >= 0)[:, None, :]
        same_facet = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
        allowed = causal[None] & real_key & same_facet
        if window is not None:
            allowed &= (pos[:, :, None] - pos[:, None, :]) < window
        pad_query = (seg < 0)[:, :, None] & torch.eye(length, dtype=torch.bool)[None]
        return (allowed | pad_query)[:, None]  # (B, 1, L, L)

    def attention_masks(self, batch: _Batch) -> torch.Tensor | dict[str, torch.Tensor]:
        """The additive float mask(s) the model gets for ``batch``."""
        dtype, device = self.dtype, self.device
        low = torch.finfo(dtype).min

        def additive(window: int | None) -> torch.Tensor:
            allowed = self._allowed(batch, window).to(device)
            zero = torch.zeros((), dtype=dtype, device=device)
            return torch.where(allowed, zero, torch.tensor(low, dtype=dtype, device=device))

        if not self._mixed:
            return additive(self._windows[0] if self._windows else None)
        sliding = [w for w in self._windows if w is not None]
        return {"full_attention": additive(None), "sliding_attention": additive(sliding[0])}

    # -- forward --------------------------------------------------------------

    def facet_tokens(self, captions: Sequence[str], template: PromptTemplate = SHORT,
                     *, batch_size: int = 8) -> np.ndarray:
        """(B, K, H) hidden states at each facet span's closing quote (not normalised).

        float32, or float64 for a float64 model (used to check equivalence exactly).
        """
        wide = self.dtype == torch.float64
        out = np.zeros((len(captions), template.k, self.hidden_size), dtype=np.float64 if wide else np.float32)
        for start in range(0, len(captions), batch_size):
            chunk = list(captions[start:start + batch_size])
            out[start:start + len(chunk)] = self._forward(chunk, template)
        return out

    def _forward(self, captions: list[str], template: PromptTemplate) -> np.ndarray:
        batch = self._batch(captions, template)
        device = self.device
        with torch.inference_mode():
            hidden = self.model(
                input_ids=batch.input_ids.to(device),
                attention_mask=self.attention_masks(batch),
                position_ids=batch.position_ids.to(device),
                use_cache=False,
            ).last_hidden_state
            rows = torch.arange(hidden.shape[0], device=device)[:, None]
            picked = hidden[rows, batch.ends.to(device)]  # (B, K, H)
        return (picked if picked.dtype == torch.float64 else picked.float()).cpu().numpy()

    def encode(self, captions: Sequence[str], template: PromptTemplate = SHORT, *, batch_size: int = 8) -> np.ndarray:
        """float32 (B, H): the facets averaged, then L2-normalised."""
        facets = self.facet_tokens(captions, template, batch_size=batch_size)
        mean = facets.mean(axis=1)
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    def count_tokens(self, caption: str, template: PromptTemplate = SHORT) -> int:
        """How many tokens one caption's prompt takes (prefix + all spans), before any cut."""
        return len(self._ids(template.render_prefix(caption), special=True)) + sum(
            len(self._span_ids(s)) for s in template.facets
        )
