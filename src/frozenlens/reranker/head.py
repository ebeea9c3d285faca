"""A trained head on disk and at query time: save, load (refusing a head
trained for another encoder), and score candidates in one batched pass.

Files (in the index directory by default): ``reranker.safetensors`` (the
weights) and ``reranker.json`` (config, encoder identity, the weights'
SHA-256, training summary). Both are written to temp files and moved into
place, weights first; the JSON names the weights' hash, so a half-replaced
pair is detected on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from frozenlens.errors import RerankerError, RerankerMismatchError
from frozenlens.models.base import EncoderIdentity
from frozenlens.reranker import CONFIG_NAME, WEIGHTS_NAME
from frozenlens.reranker.features import ImageTokens, TextTokens, pair_batch
from frozenlens.reranker.model import FusionHead, RerankerConfig, count_parameters

FORMAT = 1


@dataclass
class Reranker:
    """A FusionHead in eval mode plus what it was trained for."""

    model: FusionHead
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> RerankerConfig:
        return self.model.cfg

    def check_encoder(self, identity: EncoderIdentity) -> None:
        """Raise :class:`RerankerMismatchError` unless the head was trained for ``identity``."""
        want = self.config.encoder
        if want != identity.as_dict():
            name = f"{want.get('name')} v{want.get('version')}" if want else "an unknown encoder"
            raise RerankerMismatchError(
                f"the reranker head was trained for {name}, but the index uses {identity.describe()}; "
                "train a new head with `frozenlens train-reranker`"
            )

    def parameters(self) -> dict[str, int]:
        return count_parameters(self.model)

    def score(self, text: TextTokens, images: ImageTokens, *, batch_size: int = 512) -> np.ndarray:
        """Scores of one query (``text`` with one row) against n images → float32 (n,)."""
        if len(text) != 1:
            raise ValueError("score() takes exactly one query")
        return self.score_pairs(text, np.zeros(len(images), np.int64), images, np.arange(len(images)),
                                batch_size=batch_size)

    def score_pairs(self, text: TextTokens, text_idx: np.ndarray, images: ImageTokens, image_idx: np.ndarray,
                    *, batch_size: int = 512) -> np.ndarray:
        """Scores of pairs (text_idx[b], image_idx[b]) → float32 (B,)."""
        self.model.eval()
        out = []
        with torch.inference_mode():
            for s in range(0, len(text_idx), batch_size):
                batch = pair_batch(text, text_idx[s : s + batch_size], images, image_idx[s : s + batch_size])
                out.append(self.model(batch).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    # -- persistence -----------------------------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the weights and config into ``directory``; returns the config path."""
        from safetensors.torch import save_file

        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        weights_tmp = _temp(root, WEIGHTS_NAME)
        try:
            save_file(state, str(weights_tmp), metadata={"format": str(FORMAT)})
            digest = _sha256(weights_tmp)
            doc = {"format": FORMAT, "config": self.config.as_dict(), "weights_sha256": digest,
                   "summary": self.summary}
            config_tmp = _temp(root, CONFIG_NAME)
            config_tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(weights_tmp, root / WEIGHTS_NAME)
            os.replace(config_tmp, root / CONFIG_NAME)
        finally:
            for leftover in root.glob(".reranker*.tmp"):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        return root / CONFIG_NAME

    @classmethod
    def exists(cls, directory: str | os.PathLike[str]) -> bool:
        return (Path(directory) / CONFIG_NAME).is_file()

    @classmethod
    def load(cls, directory: str | os.PathLike[str], identity: EncoderIdentity | None = None) -> Reranker:
        """Load a head; with ``identity``, refuse one trained for another encoder."""
        from safetensors.torch import load_file

        root = Path(directory)
        cfg_path, weights_path = root / CONFIG_NAME, root / WEIGHTS_NAME
        if not cfg_path.is_file():
            raise RerankerError(f"no reranker head in {root} (train one with `frozenlens train-reranker`)")
        try:
            doc = json.loads(cfg_path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT:
                raise RerankerError(f"{cfg_path}: unsupported reranker format {doc.get('format')!r}")
            config = RerankerConfig.from_dict(doc["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RerankerError(f"{cfg_path}: unreadable reranker config ({exc})") from exc
        head = cls(FusionHead(config), dict(doc.get("summary") or {}))
        if identity is not None:
            head.check_encoder(identity)
        if not weights_path.is_file():
            raise RerankerError(f"reranker weights missing: {weights_path}")
        if _sha256(weights_path) != doc.get("weights_sha256"):
            raise RerankerError(f"{weights_path} does not match {cfg_path} (interrupted save?); train again")
        try:
            state = load_file(str(weights_path))
            head.model.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, ValueError) as exc:
            raise RerankerError(f"{weights_path}: cannot load reranker weights ({exc})") from exc
        head.model.eval()
        return head


def _temp(root: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
