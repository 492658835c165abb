"""ONNX Runtime, imported with its telemetry off.

The onnxruntime wheel carries Microsoft's telemetry: importing it writes a device id and an event database under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` unless ``ORT_DISABLE_TELEMETRY`` is set before the import, and
its telemetry events stay on until ``disable_telemetry_events()`` is called. The app runs offline and keeps
nothing about its users, so every ONNX Runtime user in fer_core (the face detector, the classifier backend)
imports it through :func:`load_onnxruntime`.
"""

from __future__ import annotations

import os

TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def load_onnxruntime():
    """The ``onnxruntime`` module with telemetry disabled (``ORT_DISABLE_TELEMETRY=0`` in the environment keeps
    the library's default). Raises ImportError when onnxruntime is not installed."""
    os.environ.setdefault(TELEMETRY_ENV, "1")  # read by the library when it is first imported
    import onnxruntime

    if os.environ[TELEMETRY_ENV] != "0":
        onnxruntime.disable_telemetry_events()
    return onnxruntime
