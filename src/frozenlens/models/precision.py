"""Where and in which precision an encoder runs: the one list of precisions and devices, and the
options that put an encoder on them for one run.

``openclip:`` encoders take ``device=`` and ``precision=`` (:class:`~frozenlens.models.openclip.OpenClipEncoder`):
``auto`` runs fp16 autocast on CUDA and fp32 on the CPU; ``bf16`` autocast runs on CUDA and on the CPU
(torch's CPU autocast: slow without bf16 hardware, but allowed, vectors within bf16 rounding of fp32's);
``fp16`` needs CUDA. The other encoders (``lite``, ``flame:``) run on the CPU in fp32 here: asking them
for the CPU or fp32 changes nothing (allowed, a no-op), anything else is an :class:`EncoderConfigError`.

:func:`run_options` turns ``frozenlens index --device/--precision`` into encoder options for *this run*;
they never go into the index's recorded encoder options (the vectors are the same model's, in the same
space, so a later CPU search of the index reads them as usual).

No torch at import; :func:`run_options` imports it only to see whether CUDA is there, and only when a
device or precision other than ``auto`` is asked (a default run of a cached ``openclip:`` graph imports none).
"""

from __future__ import annotations

from typing import Literal, get_args

from frozenlens.errors import DeviceUnavailableError, EncoderConfigError
from frozenlens.models.presets import PREFIX

Precision = Literal["auto", "fp32", "fp16", "bf16"]
#: the precisions an ``openclip:`` encoder runs in (``auto``: fp16 on CUDA, fp32 on the CPU)
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: the devices a run may ask for (``auto``: CUDA when there is one, else the CPU)
DEVICES = ("auto", "cpu", "cuda")
#: what an encoder without these options always does
_PLAIN = {"device": ("auto", "cpu"), "precision": ("auto", "fp32")}


def check_precision(precision: str, device_type: str) -> None:
    """:class:`EncoderConfigError` unless ``precision`` is one of :data:`PRECISIONS` that runs on ``device_type``."""
    if precision not in PRECISIONS:
        raise EncoderConfigError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp16" and device_type != "cuda":
        raise EncoderConfigError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def nothing_asked(device: str | None, precision: str | None) -> bool:
    """True when neither a device nor a precision is asked (``None`` or ``auto``): the encoder decides."""
    return (device or "auto") == "auto" and (precision or "auto") == "auto"


def run_options(encoder_name: str, device: str | None = None, precision: str | None = None) -> dict[str, object]:
    """Encoder options that run ``encoder_name`` on ``device`` (:data:`DEVICES`) in ``precision``
    (:data:`PRECISIONS`) for one run: ``{}`` when nothing is asked beyond the defaults.

    Raises :class:`DeviceUnavailableError` for ``cuda`` without a CUDA device, and
    :class:`EncoderConfigError` for an unknown value, fp16 on the CPU, or a device / precision an
    encoder other than ``openclip:`` cannot run on (module doc).
    """
    if nothing_asked(device, precision):
        return {}  # the encoder decides, and torch is not imported to ask (a cached graph needs none)
    device, precision = device or "auto", precision or "auto"
    if device not in DEVICES:
        raise EncoderConfigError(f"unknown device {device!r}; use {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        check_precision(precision, "cpu")
    if not encoder_name.startswith(PREFIX):
        if device not in _PLAIN["device"] or precision not in _PLAIN["precision"]:
            raise EncoderConfigError(f"--device {device} --precision {precision} does not apply to {encoder_name}: "
                                     "it runs on the CPU in fp32 (device and precision are for openclip: encoders)")
        return {}
    cuda = _cuda_available() if device != "cpu" else False
    if device == "cuda" and not cuda:
        raise DeviceUnavailableError("--device cuda: no CUDA device is available here (torch sees none); "
                                     "use --device cpu or auto")
    check_precision(precision, "cuda" if cuda else "cpu")
    out: dict[str, object] = {} if device == "auto" else {"device": device}
    return out | ({} if precision == "auto" else {"precision": precision})


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
