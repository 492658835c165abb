"""fer_core: the facial-expression-recognition library behind the dashboard, the command lines and training.

What a user imports::

    from fer_core import Predictor, make_detector, load_image, analyse_image
    predictor = Predictor.from_checkpoint()            # the shipped model (ONNX Runtime, no torch)
    result = analyse_image(predictor, make_detector(), "photo.jpg", name="photo.jpg")
    for face in result.faces:                           # left to right
        print(face.box, face.label, face.confidence)

The wings, lowest floor first (a module imports only from its own wing and the floors below it):

- ground: ``labels`` (the one class order), ``files``, ``locations``, ``onnx_runtime``
- ``faces/``: image reading, face detection, alignment, preprocessing, drawing
- ``model/``: the network, checkpoints, ONNX files, backends, the Predictor, calibration, explanations, artifacts
- ``video/`` (frames, tracking, live, video files) and ``analysis/`` (datasets, photo results, evaluation, metrics,
  comparison, label issues, runs), side by side
- ``jobs/``: batch processing (process pool, Ray)
- ``ui/``: the Streamlit glue; and the commands ``predict``, ``batch``, ``video``

Importing this package has no side effects (no model is built, no weights are read, no camera is opened) and
loads nothing heavy: each name below is imported on first use (PEP 562), so a page pays only for what it uses.
"""

from __future__ import annotations

import importlib

__version__ = "1.0.0"

_HOMES = {  # public name -> the module that defines it
    "EMOTIONS": "fer_core.labels",
    "Face": "fer_core.faces.detection",
    "FaceDetector": "fer_core.faces.detection",
    "make_detector": "fer_core.faces.detection",
    "face_crop": "fer_core.faces.alignment",
    "load_image": "fer_core.faces.images",
    "ImageLoadError": "fer_core.faces.images",
    "PreprocessConfig": "fer_core.faces.preprocessing",
    "Predictor": "fer_core.model.inference",
    "FacePrediction": "fer_core.model.inference",
    "CheckpointError": "fer_core.model.weights",
    "analyse_image": "fer_core.analysis.photos",
    "ImageResult": "fer_core.analysis.photos",
    "evaluate_folder": "fer_core.analysis.evaluation",
    "classification_summary": "fer_core.analysis.metrics",
    "analyse_video": "fer_core.video.analyse",
    "FramePipeline": "fer_core.video.frames",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'fer_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
