"""Inference backends: the classifier's forward pass, run by ONNX Runtime or by torch itself.

Both take the same preprocessed (N, 1, S, S) float32 numpy batch and return (N, C) float32 numpy logits;
everything around them (preprocessing, test-time views, temperature, softmax) is shared in
:mod:`fer_core.model.inference`, in numpy, so the app (no torch installed) and training run the same code.

ONNX Runtime is the default: on a CPU it runs this network 4-6x faster than eager torch at batch 1
(``python -m training.benchmark`` prints both, side by side), and it needs no torch. Its graph comes from
``artifacts/model.onnx`` (written beside the checkpoint by :mod:`fer_core.model.onnx_file`), or is exported from a
loaded torch model in memory (about 0.3 s). ``FER_BACKEND=torch`` (or ``--backend torch`` on the command lines)
runs the eager model instead (needs torch). Training and training-time validation always use torch.

Threads: a call runs with :func:`intra_op_threads` threads, a setting of the calling thread
(:func:`set_intra_op_threads`; the live page sets one thread in its stream thread) that also sets torch's, when
torch is loaded, so one knob controls both backends.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import warnings
from typing import Protocol

import numpy as np

from ..onnx_runtime import load_onnxruntime

LOGGER = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "torch")
DEFAULT_BACKEND = "onnxruntime"
BACKEND_ENV = "FER_BACKEND"  # overrides the default for the app and the command lines
BACKEND_HELP = ("how the classifier runs: onnxruntime (default; artifacts/model.onnx, or the same weights exported "
                "in memory; several times faster on a CPU, no torch needed) or torch (eager PyTorch); env FER_BACKEND "
                "sets the default")
ONNX_OPSET = 17

_thread_settings = threading.local()


def set_intra_op_threads(threads: int) -> None:
    """Run the classifier with ``threads`` intra-op threads in the calling thread (torch's too, when loaded)."""
    threads = max(1, int(threads))
    _thread_settings.threads = threads
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def intra_op_threads() -> int:
    """The calling thread's intra-op thread count: :func:`set_intra_op_threads`'s value, else torch's (when
    loaded), else the number of CPUs this process may use."""
    threads = getattr(_thread_settings, "threads", None)
    if threads is not None:
        return threads
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Backend(Protocol):
    name: str

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 preprocessed faces -> (N, C) float32 logits (no gradient)."""
        ...


class TorchBackend:
    """The eager torch model, run in eval mode on its own device (its train/eval mode is restored afterwards)."""

    name = "torch"

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                logits = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(device))
            return logits.float().cpu().numpy()
        finally:
            self.model.train(was_training)


class OnnxRuntimeBackend:
    """An ONNX graph (input "faces", output "logits") run by ONNX Runtime's CPU provider.

    One inference session per thread count (see the module docstring), created on first use; sessions are
    thread-safe, so one backend serves every Streamlit session and the live stream threads.
    """

    name = "onnxruntime"

    def __init__(self, onnx_bytes: bytes):
        load_onnxruntime()  # telemetry off before any session; fails here, not on the first face, when missing

        self.onnx_bytes = onnx_bytes
        self._sessions: dict[int, object] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_model(cls, model, image_size: int = 48) -> "OnnxRuntimeBackend":
        """The backend of a loaded torch model, exported in memory (needs torch and onnx)."""
        return cls(export_onnx(model, image_size))

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

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session(intra_op_threads()).run(None, {"faces": x})[0]


def export_onnx(model, image_size: int = 48) -> bytes:
    """A torch model in eval mode as ONNX bytes, with a dynamic batch dimension (input "faces", output "logits").

    Needs torch and onnx (the training install)."""
    import torch

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


def check_backend(name: str | None) -> str:
    """``name`` checked against BACKENDS, or :func:`default_backend` when None."""
    name = name or default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def make_backend(model, name: str | None = None, image_size: int = 48) -> Backend:
    """The backend called ``name`` (default: :func:`default_backend`) for a loaded torch model.

    When ONNX Runtime cannot take the model (a missing package, an operator the exporter does not know), the
    reason is logged and the eager torch model is used: slower, never wrong.
    """
    if check_backend(name) == "onnxruntime":
        try:
            return OnnxRuntimeBackend.from_model(model, image_size)
        except Exception as e:  # noqa: BLE001 - any export/runtime failure falls back to the same weights in torch
            LOGGER.warning("ONNX Runtime backend unavailable (%s: %s); using torch", type(e).__name__, e)
    return TorchBackend(model)


def as_backend(model_or_backend) -> Backend:
    """A torch module is run by torch as is; a backend is returned unchanged."""
    return TorchBackend(model_or_backend) if hasattr(model_or_backend, "state_dict") else model_or_backend
