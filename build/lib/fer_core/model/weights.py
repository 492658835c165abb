"""Where the model files are, and the error for one that cannot be used. Imports nothing heavy (no torch).

The shipped classifier is two files: ``artifacts/model.pt`` (the PyTorch checkpoint: training, calibration,
fine-tuning) and ``artifacts/model.onnx`` beside it (the same network for ONNX Runtime, with everything needed to
use it; see :mod:`fer_core.model.onnx_file`). The app and the command-line inference read the ``.onnx`` and run without
PyTorch; reading the ``.pt`` itself needs the training install.
"""

from __future__ import annotations

from ..locations import ARTIFACTS

DEFAULT_WEIGHTS = ARTIFACTS / "model.pt"
TRAIN_INSTALL = "pip install -r requirements-train.txt"  # the install with PyTorch (training, .pt files, tests)


class CheckpointError(RuntimeError):
    """A weights file that is missing, unreadable or does not describe an expression model."""


class ModelOutputError(CheckpointError):
    """A model that loaded but answers a face with NaN or infinite scores (extreme weights or statistics)."""


TEMPERATURE_KEYS = ("temperature", "temperature_no_tta")  # calibrated with and without test-time augmentation
TEMPERATURE_RANGE = (0.01, 100.0)  # fitted ones are near 1; beyond this, probabilities are one-hot or uniform


def check_temperatures(meta: dict) -> None:
    """ValueError unless each calibrated temperature in ``meta`` (when present) is a finite number within
    :data:`TEMPERATURE_RANGE`: the probabilities are softmax(logits / T), so 1e-300 divides by zero and 1e300 makes
    every face 14 % of everything."""
    low, high = TEMPERATURE_RANGE
    for key in TEMPERATURE_KEYS:
        value = meta.get(key)
        if key in meta and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                and low <= value <= high):
            raise ValueError(f"meta {key!r} must be a number from {low} to {high:g} (a calibrated temperature), "
                             f"got {value!r:.40}")


def import_torch(purpose: str, alternative: str = ""):
    """The ``torch`` module, or a :class:`CheckpointError` that says what to install to get it.

    ``purpose`` completes the sentence "PyTorch is needed to ...", e.g. "read the checkpoint artifacts/x.pt";
    ``alternative`` (optional) ends the message with another way out, e.g. "or use the .onnx file".
    """
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"PyTorch is needed to {purpose}, and it is not installed here (the app's install, "
                              f"requirements.txt, runs on ONNX Runtime without it). Install the training "
                              f"profile: `{TRAIN_INSTALL}`" + (f"; {alternative}." if alternative else ".")) from None
    return torch
