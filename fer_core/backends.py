"""Inference backends: the classifier's forward pass, run by torch itself or by ONNX Runtime.

Both take the same preprocessed (N, 1, S, S) float32 batch and return (N, C) float32 logits; everything around
them (preprocessing, test-time views, temperature, softmax) is shared in :mod:`fer_core.inference`.

ONNX Runtime is the default for inference: on a CPU it runs this network 4-6x faster than eager torch at batch 1
(``python -m training.benchmark`` prints both, side by side). Its graph is exported from the loaded torch model
in memory when a :class:`~fer_core.inference.Predictor` is built (about 0.3 s), so it always matches the weights
being served; ``FER_BACKEND=torch`` (or ``--backend torch`` on the command lines) keeps the eager model.
Training and training-time validation always use torch.

Threads: a call runs with as many intra-op threads as ``torch.get_num_threads()`` in the calling thread, for
both backends (the live page sets one thread in its stream thread), so one knob controls both.
"""

from __future__ import annotations

import io
import logging
import os
import threading
import warnings
from typing import Protocol

import numpy as np
import torch
from torch import nn

from .onnx_runtime import load_onnxruntime

LOGGER = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")
DEFAULT_BACKEND = "onnxruntime"
BACKEND_ENV = "FER_BACKEND"  # overrides the default for the app and the command lines
BACKEND_HELP = ("how the classifier runs: onnxruntime (default; the same weights, exported in memory, several "
                "times faster on a CPU) or torch (eager PyTorch); env FER_BACKEND sets the default")
ONNX_OPSET = 17


class Backend(Protocol):
    name: str

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 1, S, S) float32 preprocessed faces -> (N, C) float32 logits (no gradient)."""
        ...


class TorchBackend:
    """The eager torch model, run in eval mode (its train/eval mode is restored afterwards)."""

    name = "torch"

    def __init__(self, model: nn.Module):
        self.model = model

    @torch.no_grad()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(batch).float()
        finally:
            self.model.train(was_training)


class OnnxRuntimeBackend:
    """The torch model exported to ONNX (in memory) and run by ONNX Runtime's CPU provider.

    One inference session per thread count (see the module docstring), created on first use; sessions are
    thread-safe, so one backend serves every Streamlit session and the live stream threads.
    """

    name = "onnxruntime"

    def __init__(self, model: nn.Module, image_size: int = 48):
        load_onnxruntime()  # telemetry off before any session; fails here, not on the first face, when missing

        self.onnx_bytes = export_onnx(model, image_size)
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    def session(self, threads: int):
        """The inference session that uses ``threads`` intra-op threads (created once, then reused)."""
        ort = load_onnxruntime()

        threads = max(1, int(threads))
        with self._lock:
            if threads not in self._sessions:
                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # Worker threads that spin while idle would take a core from the face detector, the video
                # decoder and Streamlit on a small machine.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.log_severity_level = 3  # errors only
                self._sessions[threads] = ort.InferenceSession(self.onnx_bytes, options,
                                                               providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        logits = self.session(torch.get_num_threads()).run(None, {"faces": x})[0]
        return torch.from_numpy(logits)


def export_onnx(model: nn.Module, image_size: int = 48) -> bytes:
    """The model in eval mode as ONNX bytes, with a dynamic batch dimension (input "faces", output "logits")."""
    was_training = model.training
    model.eval()
    channels = getattr(getattr(model, "config", None), "in_channels", 1)
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
            torch.onnx.export(model, torch.zeros(1, channels, image_size, image_size), buffer, dynamo=False,
                              input_names=["faces"], output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={"faces": {0: "n"}, "logits": {0: "n"}})
    finally:
        model.train(was_training)
    return buffer.getvalue()


def default_backend() -> str:
    """FER_BACKEND if set (checked), else DEFAULT_BACKEND."""
    name = os.environ.get(BACKEND_ENV, "").strip().lower() or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={name!r} is not a backend; choose one of {', '.join(BACKENDS)}")
    return name


def make_backend(model: nn.Module, name: str | None = None, image_size: int = 48) -> Backend:
    """The backend called ``name`` (default: :func:`default_backend`) for a loaded model.

    When ONNX Runtime cannot take the model (a missing package, an operator the exporter does not know), the
    reason is logged and the eager torch model is used: slower, never wrong.
    """
    name = name or default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        try:
            return OnnxRuntimeBackend(model, image_size)
        except Exception as e:  # noqa: BLE001 - any export/runtime failure falls back to the same weights in torch
            LOGGER.warning("ONNX Runtime backend unavailable (%s: %s); using torch", type(e).__name__, e)
    return TorchBackend(model)


def as_backend(model_or_backend) -> Backend:
    """An nn.Module is run by torch as is; a backend is returned unchanged."""
    return TorchBackend(model_or_backend) if isinstance(model_or_backend, nn.Module) else model_or_backend
