"""The ``lite`` projector: the image features straight into the USE text space, blended with ConSE.

ConSE places an image in the text space through ImageNet's 1000 class names
only, so whatever ImageNet has no class for stays out of reach. The projector
is a small network trained on captioned images that ship offline (the Tux Paint
training stamps and the emoji of :mod:`frozenlens.eval.emoji`, in USE's 16
languages; ``bench/lite_projector_quality.py`` says how, and how its settings
were chosen on validation data only). ``lite`` version 3 blends it in:

    semantic = L2-normalise(ConSE + λ · L2-normalise(projector(visual)))

where ``visual`` is the L2-normalised pooled 1280-d feature vector ``lite``
already computes and λ is :attr:`LiteProjector.weight` (stored with the
weights). Numpy only: the ONNX image path stays torch-free.

The packaged file (:data:`PROJECTOR_FILE`, safetensors) holds ``in_mean`` and
``in_sd`` (float32, the training features' statistics), the layers ``0.weight``,
``0.bias`` and, with a hidden layer, ``2.weight``, ``2.bias`` (float16), and in
its metadata ``hidden``, ``lambda`` and how it was trained. The stamps it was
trained on are GPL artwork, so the weights are GPL-2.0-or-later (the emoji are
Noto Color Emoji, OFL-1.1, named by Unicode CLDR data).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from frozenlens.errors import EncoderConfigError
from frozenlens.models.artifact_cache import file_digest
from frozenlens.models.lite_forward import unit_rows

__all__ = ["PROJECTOR_FILE", "LiteProjector", "gelu", "load_projector", "projector_path"]

PROJECTOR_FILE = "lite0-projector.safetensors"
_IN, _OUT = 1280, 512


def projector_path() -> Path:
    """The packaged projector file."""
    return Path(str(resources.files("frozenlens") / "data" / PROJECTOR_FILE))


def gelu(x: np.ndarray) -> np.ndarray:
    """GELU with the exact erf (torch's default), erf by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7)."""
    z = np.abs(x) / np.float32(np.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)


@dataclass(frozen=True)
class LiteProjector:
    """A loaded projector (read-only arrays; safe to call from many threads)."""

    mean: np.ndarray  # float32 (1280,)
    sd: np.ndarray  # float32 (1280,)
    layers: tuple[tuple[np.ndarray, np.ndarray], ...]  # (weight (out, in), bias (out,)) float32
    weight: float  # λ, the blend weight it was chosen with

    def __call__(self, visual: np.ndarray) -> np.ndarray:
        """float32 (n, 1280) L2-normalised features → float32 (n, 512) unit rows."""
        h = (np.asarray(visual, np.float32) - self.mean) / self.sd
        for i, (w, b) in enumerate(self.layers):
            if i:
                h = gelu(h)
            h = h @ w.T + b
        return unit_rows(h)

    def blend(self, conse: np.ndarray, visual: np.ndarray, weight: float) -> np.ndarray:
        """``unit(conse + weight · self(visual))`` for float32 (n, 512) ConSE vectors."""
        return unit_rows(np.asarray(conse, np.float32) + np.float32(weight) * self(visual))


def load_projector(path: Path | str | None = None, *, expect_sha256: str | None = None) -> LiteProjector:
    """The packaged projector (or the file at ``path``), checked; :class:`EncoderConfigError` (a
    ``ValueError``) when it is missing or malformed or, with ``expect_sha256``, another file than the
    one expected (its vectors would differ)."""
    from safetensors import safe_open

    path = Path(path) if path is not None else projector_path()
    if not path.is_file():
        raise EncoderConfigError(f"lite projector file not found: {path}")
    digest = file_digest(path)
    if expect_sha256 is not None and digest != expect_sha256:
        raise EncoderConfigError(f"lite projector file has SHA-256 {digest[:12]}…, expected {expect_sha256[:12]}…: "
                                 "another projector than the one this encoder version names")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - a safetensors handle
        hidden, weight = int(meta["hidden"]), float(meta["lambda"])
    except Exception as exc:  # safetensors raises its own, untyped errors for damaged files
        raise EncoderConfigError(f"lite projector file is damaged: {exc}") from exc
    names = [("0.weight", "0.bias")] + ([("2.weight", "2.bias")] if hidden else [])
    try:
        layers = tuple((tensors[w].astype(np.float32), tensors[b].astype(np.float32)) for w, b in names)
        mean, sd = tensors["in_mean"].astype(np.float32), tensors["in_sd"].astype(np.float32)
    except KeyError as exc:
        raise EncoderConfigError(f"lite projector file lacks tensor {exc}") from exc
    dims = [_IN, *([hidden] if hidden else []), _OUT]
    for (w, b), d_in, d_out in zip(layers, dims[:-1], dims[1:], strict=True):
        if w.shape != (d_out, d_in) or b.shape != (d_out,):
            raise EncoderConfigError(f"lite projector layer has shape {w.shape}/{b.shape}, expected ({d_out}, {d_in})")
    if mean.shape != (_IN,) or sd.shape != (_IN,) or not np.all(sd > 0) or not weight >= 0:
        raise EncoderConfigError("lite projector statistics or blend weight are malformed")
    if not all(np.all(np.isfinite(a)) for layer in layers for a in layer):
        raise EncoderConfigError("lite projector weights are not finite")
    return LiteProjector(mean, sd, layers, weight)
