"""Inference: images -> one prediction per face.

:func:`probabilities_from_view_logits` is the single place where logits become probabilities (the mean over
the test-time views of softmax(logits / T), T the calibrated temperature); :func:`predict_probabilities`,
training-time evaluation, ``training.evaluate``, the CLI and the app pages all go through it.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..faces.alignment import face_crop
from ..faces.detection import Face, FaceDetector, make_detector
from ..faces.images import load_image
from ..faces.preprocessing import PreprocessConfig, faces_to_array, to_gray
from .backends import Backend, OnnxRuntimeBackend, as_backend, check_backend, make_backend
from .onnx_file import current_onnx, onnx_path_for, read_onnx_model
from .weights import DEFAULT_WEIGHTS, CheckpointError, ModelOutputError, import_torch

LOGGER = logging.getLogger(__name__)

# Test-time augmentation: each face is seen at these zoom factors (1.1 = 10 % closer), each also mirrored,
# and the probabilities of the views are averaged (measured gain: docs/model.md).
TTA_ZOOMS = (1.0, 1.1, 0.9)
TTA_VIEWS = 2 * len(TTA_ZOOMS)  # views per face, see tta_views
NO_TTA_HELP = "disable test-time augmentation (mirror + zoom views, fer_core.model.inference.TTA_ZOOMS)"  # CLIs' --no-tta
# An image whose sides are all within this range (pixels) is taken to be one face when no face is found in it
# (a pre-cropped face such as a 48x48 FER2013 image), without the user asking.
FACE_CROP_SIDES = (24, 96)
# Images (faces x views) per forward pass: enough to keep the CPU's vector units busy, few enough that the
# activations stay in its caches (3,072 at a time cost more time in page faults than in arithmetic).
BATCH_IMAGES = 128


@functools.lru_cache(maxsize=16)
def _zoom_matrix(size: int, factor: float) -> np.ndarray:
    """(S, S) float32 bilinear resampling matrix of a zoom by ``factor`` about the centre, borders replicated.

    Row i holds the weights of the source pixels for output pixel i: the same sampling as torch's
    ``F.grid_sample(..., mode="bilinear", padding_mode="border", align_corners=False)`` on a scaled grid, but
    separable, so a view costs two small matrix products instead of a 2-D gather.
    """
    out = np.arange(size, dtype=np.float64)
    source = ((2 * out + 1) / size - 1) / factor  # normalised source coordinate of each output pixel
    pos = np.clip(((source + 1) * size - 1) / 2, 0, size - 1)  # in pixels; border padding clamps
    lower = np.floor(pos).astype(np.int64)
    upper = np.minimum(lower + 1, size - 1)
    weight = pos - lower
    matrix = np.zeros((size, size), dtype=np.float64)
    np.add.at(matrix, (out.astype(np.int64), lower), 1 - weight)
    np.add.at(matrix, (out.astype(np.int64), upper), weight)
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False  # shared by every caller through the cache
    return matrix


def as_array(batch) -> np.ndarray:
    """A (N, 1, S, S) batch as a float32 numpy array (a torch tensor, on any device, is copied to the CPU)."""
    if hasattr(batch, "detach"):
        batch = batch.detach().cpu().numpy()
    return np.asarray(batch, dtype=np.float32)


def zoom(batch: np.ndarray, factor: float) -> np.ndarray:
    """(N, 1, S, S) float32 faces magnified by ``factor`` about the centre (< 1 shrinks; borders replicated)."""
    if factor == 1.0:
        return batch
    rows = _zoom_matrix(batch.shape[-2], float(factor))
    cols = rows if batch.shape[-1] == batch.shape[-2] else _zoom_matrix(batch.shape[-1], float(factor))
    return rows @ batch @ cols.T


def tta_views(batch: np.ndarray) -> list[np.ndarray]:
    """The test-time views of a (N, 1, S, S) batch: every zoom in TTA_ZOOMS, each as is and mirrored left-right."""
    views = []
    for factor in TTA_ZOOMS:
        zoomed = zoom(batch, factor)
        views += [zoomed, zoomed[..., ::-1]]
    return views


def predict_view_logits(model: Backend, batch: np.ndarray, tta: bool = True,
                        batch_size: int = BATCH_IMAGES) -> np.ndarray:
    """(N, 1, S, S) preprocessed faces -> (V, N, C) float32 logits, one slice per view.

    ``model`` is a :mod:`fer_core.model.backends` backend or a torch module (run in eval mode); ``batch`` a float32
    array (or a torch tensor, copied to the CPU). V = TTA_VIEWS with ``tta`` (the views of :func:`tta_views`, in
    that order), else 1. ``batch_size`` bounds the images (faces x views) per forward pass.
    """
    backend = as_backend(model)
    batch = as_array(batch)
    chunk = max(1, batch_size // TTA_VIEWS) if tta else batch_size
    n_views = TTA_VIEWS if tta else 1
    out = []
    for start in range(0, len(batch), chunk):
        x = batch[start:start + chunk]
        views = tta_views(x) if tta else [x]
        logits = np.asarray(backend(np.concatenate(views)), np.float32)  # all views of the chunk in one pass
        out.append(logits.reshape(len(views), len(x), -1))
    if not out:
        return np.zeros((n_views, 0, getattr(getattr(model, "config", None), "num_classes", 7)), np.float32)
    logits = np.concatenate(out, axis=1)
    if not np.isfinite(logits).all():  # extreme weights or statistics: "angry (nan%)" would be a lie
        bad = int((~np.isfinite(logits)).any(axis=(0, 2)).sum())
        raise ModelOutputError(f"The model answers {bad} of {logits.shape[1]} face(s) with NaN or infinite scores: "
                               "its weights are unusable (extreme values), so it gives no expression for them.")
    return logits


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax along ``axis`` in float32 (the maximum is subtracted first, so large logits cannot overflow)."""
    logits = np.asarray(logits, np.float32)
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def probabilities_from_view_logits(view_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(V, N, C) logits -> (N, C) float32 probabilities: the mean over views of softmax(logits / temperature).

    ``temperature`` (> 0) is the calibration fitted by ``training.calibrate`` (1.0 = uncalibrated).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = np.asarray(view_logits, np.float32) / np.float32(temperature)
    return softmax(logits, axis=2).mean(axis=0).astype(np.float32)


def predict_probabilities(model: Backend, batch: np.ndarray, tta: bool = True,
                          batch_size: int = BATCH_IMAGES,
                          temperature: float = 1.0) -> np.ndarray:
    """(N, 1, S, S) preprocessed faces -> (N, C) float32 softmax probabilities.

    With ``tta`` the probabilities of the views from :func:`tta_views` (mirror images and zooms) are averaged;
    each view's logits are divided by ``temperature`` before its softmax (see
    :func:`probabilities_from_view_logits`). ``batch_size`` bounds the images (faces x views) per forward pass.
    """
    return probabilities_from_view_logits(predict_view_logits(model, batch, tta, batch_size), temperature)


def is_face_crop_sized(gray: np.ndarray) -> bool:
    """True for an image the size of a pre-cropped face (every side within FACE_CROP_SIDES)."""
    low, high = FACE_CROP_SIDES
    return all(low <= side <= high for side in gray.shape[:2])


@dataclass
class FacePrediction:
    """One face: the detected :class:`Face` (box, score, landmarks), all class probabilities and the top label."""

    face: Face
    probabilities: dict[str, float]
    label: str
    confidence: float
    whole_image: bool = False  # True when no face was detected and the whole image was classified

    @property
    def box(self) -> tuple[int, int, int, int]:  # x, y, w, h
        return self.face.box

    def to_dict(self) -> dict:
        return {"box": list(self.box), "label": self.label, "confidence": self.confidence,
                "probabilities": dict(self.probabilities), "whole_image": self.whole_image,
                "detector_score": round(self.face.score, 4),
                "landmarks": self.face.to_dict()["landmarks"]}


class Predictor:
    """The shared, read-only classifier plus its preprocessing. Thread-safe for inference.

    Built from the ``.onnx`` beside a checkpoint (:meth:`from_checkpoint`; no torch needed) or from a loaded torch
    model. Face detectors hold OpenCV state, so they are passed in per call (one per session / thread).
    """

    def __init__(self, model, preprocess: PreprocessConfig, class_names: tuple[str, ...],
                 meta: dict | None = None, backend: str | Backend | None = None, weights: str | Path | None = None,
                 parameters: int | None = None):
        """``model``: a loaded torch module, or None when ``backend`` is a ready :class:`~fer_core.model.backends.Backend`
        (then :attr:`model` is read from ``weights`` on first use). ``backend``: a backend name (default:
        FER_BACKEND, else ONNX Runtime) for ``model``, or a backend. ``parameters``: the network's parameter count
        when known without the torch model."""
        if model is None and (backend is None or isinstance(backend, str)):
            raise ValueError("a Predictor without a torch model needs a ready backend")
        self._model = model.eval() if model is not None else None
        # What runs the forward pass: fer_core.model.backends (ONNX Runtime by default, FER_BACKEND / ``backend``).
        self.backend = (make_backend(self._model, backend, preprocess.image_size)
                        if backend is None or isinstance(backend, str) else backend)
        self.weights = Path(weights) if weights is not None else None
        self._parameters = parameters
        self.preprocess = preprocess
        self.class_names = tuple(class_names)
        self.meta = meta or {}
        # Calibration (training.calibrate): each view's logits are divided by it; 1.0 for older checkpoints. Fitted
        # separately with and without test-time augmentation: the mean of six views' softmaxes is less peaked
        # than one view's, so one temperature cannot suit both.
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.temperature_no_tta = float(self.meta.get("temperature_no_tta", 1.0))

    @property
    def model(self):
        """The torch module (training tools, benchmarks, tests), read from the checkpoint on first use when the
        predictor runs an ONNX file. Needs torch; without it, a CheckpointError says what to install."""
        if self._model is None:
            if self.weights is None or self.weights.suffix == ".onnx":
                raise CheckpointError("this predictor runs an ONNX file alone; there is no torch model to give")
            import_torch(f"read the checkpoint {self.weights}")
            from .checkpoint import load_checkpoint

            self._model = load_checkpoint(self.weights)[0]
        return self._model

    @property
    def parameters(self) -> int:
        """Number of parameters of the network (from the ONNX metadata, or counted on the torch model)."""
        if self._parameters is None:
            from .network import count_parameters

            self._parameters = count_parameters(self.model)
        return self._parameters

    def temperature_for(self, tta: bool) -> float:
        """The calibrated temperature of the probabilities with (``tta``) or without test-time augmentation."""
        return self.temperature if tta else self.temperature_no_tta

    def uncertain_below_for(self, tta: bool) -> float | None:
        """The default "uncertain" threshold that ``training.calibrate --write`` stored for probabilities with
        (``tta``) or without test-time augmentation: the confidence below which a calibration face was more often
        wrong than right (:func:`fer_core.model.calibration.uncertain_threshold`). None when the weights carry none."""
        value = self.meta.get("uncertain_below" if tta else "uncertain_below_no_tta")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            return None  # absent (older weights) or unusable: the pages fall back to their own default
        return float(value)

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_WEIGHTS, backend: str | None = None) -> "Predictor":
        """The classifier of a checkpoint ``path`` (``.pt``) or of an exported ``.onnx`` file.

        With the ONNX Runtime backend (the default) a ``.pt`` is served through the ``.onnx`` beside it when that
        was exported from exactly this file (:func:`fer_core.model.onnx_file.current_onnx`), or alone when there is no
        ``.pt``: no torch needed. Otherwise the ``.pt`` is read with torch (and, for ONNX Runtime, exported in
        memory); without torch that is a CheckpointError that says what to install.
        """
        path = Path(path)
        name = check_backend(backend)
        if path.suffix == ".onnx":
            if name != "onnxruntime":
                raise CheckpointError(f"{path} is an ONNX file: it runs on ONNX Runtime only, not {name}.")
            return cls.from_onnx(read_onnx_model(path))
        if not path.is_file():
            if name == "onnxruntime" and onnx_path_for(path).is_file():  # an install that ships the .onnx alone
                return cls.from_onnx(onnx_path_for(path))
            raise CheckpointError(f"Model weights not found at {path}. Train one with `python -m training.train` "
                                  f"or restore artifacts/model.pt from the repository.")
        why = ""
        if name == "onnxruntime":
            exported, why = current_onnx(path)
            if exported is not None:
                return cls.from_onnx(exported, weights=path)
        import_torch(f"read the checkpoint {path}" + (f" ({why})" if why else ""),
                     f"or, where torch is installed, write the .onnx beside it: `python -m fer_core.model.onnx_file {path}`")
        if why:
            LOGGER.warning("%s: %s; exporting it in memory", path, why)
        from .checkpoint import load_checkpoint

        model, preprocess, names, meta = load_checkpoint(path)
        return cls(model, preprocess, names, meta, backend=name, weights=path)

    @classmethod
    def from_bytes(cls, data: bytes, name: str, backend: str | None = None) -> "Predictor":
        """The classifier of a model file held in memory (an upload): an ``.onnx`` by its name, else a ``.pt``
        checkpoint (read with torch, run by ``backend``), with the same checks as files on disk; ``name`` is what
        errors call it."""
        if Path(name).suffix.lower() == ".onnx":
            from .onnx_file import onnx_model_from_bytes

            return cls.from_onnx(onnx_model_from_bytes(data, name))
        from .checkpoint import load_checkpoint_bytes

        model, preprocess, names, meta = load_checkpoint_bytes(data, name)
        return cls(model, preprocess, names, meta, backend=backend, weights=None)

    @classmethod
    def from_onnx(cls, exported, weights: str | Path | None = None) -> "Predictor":
        """The classifier of an :class:`~fer_core.model.onnx_file.OnnxModel` (or the path of an ``.onnx`` file);
        ``weights``: the checkpoint it was exported from, read only if :attr:`model` is asked for."""
        if not hasattr(exported, "onnx_bytes"):
            exported = read_onnx_model(exported)
        return cls(None, exported.preprocess, exported.class_names, exported.meta,
                   backend=OnnxRuntimeBackend(exported.onnx_bytes), weights=weights or exported.path,
                   parameters=exported.info.get("parameters"))

    def classify_crops(self, faces: Sequence[np.ndarray], tta: bool = True) -> np.ndarray:
        """Gray face crops (any size) -> (N, C) probabilities, all in one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return predict_probabilities(self.backend, faces_to_array(faces, self.preprocess), tta=tta,
                                     temperature=self.temperature_for(tta))

    def view_logits(self, faces: Sequence[np.ndarray], tta: bool = True) -> np.ndarray:
        """Gray face crops -> (V, N, C) logits of every view (uncalibrated; see :func:`predict_view_logits`)."""
        if len(faces) == 0:
            return np.zeros((TTA_VIEWS if tta else 1, 0, len(self.class_names)), np.float32)
        return predict_view_logits(self.backend, faces_to_array(faces, self.preprocess), tta=tta)

    def classify_faces(self, gray: np.ndarray, faces: Sequence[Face], tta: bool = True,
                       whole_image: bool = False) -> list[FacePrediction]:
        """Classify detected faces of a (H, W) uint8 gray image, in one batch (each cropped by
        :func:`fer_core.faces.alignment.face_crop`: aligned and framed like FER2013 when it has landmarks)."""
        size = self.preprocess.image_size
        crops = [face_crop(gray, f, size, self.preprocess.face_margin) for f in faces]
        probs = self.classify_crops(crops, tta=tta)
        return [self._prediction(f, p, whole_image) for f, p in zip(faces, probs)]

    def predict(self, image, detector: FaceDetector | None = None, tta: bool = True,
                whole_image_if_no_face: bool = False, channel_order: str = "RGB") -> list[FacePrediction]:
        """An image (path, bytes, PIL, or numpy RGB/BGR/gray) -> one prediction per detected face, largest first.

        With no face found, the whole image is classified as one face if ``whole_image_if_no_face`` or if the
        image has the size of a pre-cropped face (FACE_CROP_SIDES); otherwise the result is [].
        """
        gray = to_gray(load_image(image, channel_order=channel_order))
        faces = (detector or make_detector()).detect(gray)
        return self.classify_detected(gray, faces, tta=tta, whole_image_if_no_face=whole_image_if_no_face)

    def classify_detected(self, gray: np.ndarray, faces: Sequence[Face], tta: bool = True,
                          whole_image_if_no_face: bool = False,
                          progress: Callable[[int, int], None] | None = None) -> list[FacePrediction]:
        """The faces a detector found in a (H, W) uint8 gray image -> their predictions, in the given order.

        With none found, the whole image is one face if ``whole_image_if_no_face`` or if it has the size of a
        pre-cropped face (FACE_CROP_SIDES); otherwise []. With ``progress(done, total)``, faces are classified
        one at a time and it is called before the first and after each (for a progress bar); without it, in
        one batch.
        """
        if not faces:
            if progress is not None:
                progress(0, 0)
            if whole_image_if_no_face or is_face_crop_sized(gray):
                whole = Face((0, 0, gray.shape[1], gray.shape[0]))
                return self.classify_faces(gray, [whole], tta=tta, whole_image=True)
            return []
        if progress is None:
            return self.classify_faces(gray, faces, tta=tta)
        out: list[FacePrediction] = []
        progress(0, len(faces))
        for done, face in enumerate(faces, start=1):
            out += self.classify_faces(gray, [face], tta=tta)
            progress(done, len(faces))
        return out

    def _prediction(self, face: Face, probs: np.ndarray, whole_image: bool = False) -> FacePrediction:
        top = int(np.argmax(probs))
        return FacePrediction(face=face, probabilities={n: float(p) for n, p in zip(self.class_names, probs)},
                              label=self.class_names[top], confidence=float(probs[top]), whole_image=whole_image)
