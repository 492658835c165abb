"""Inference: images -> one prediction per face.

:func:`probabilities_from_view_logits` is the single place where logits become probabilities (the mean over
the test-time views of softmax(logits / T), T the calibrated temperature); :func:`predict_probabilities`,
training-time evaluation, ``training.evaluate``, the CLI and the app pages all go through it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .backends import Backend, as_backend, make_backend
from .checkpoint import DEFAULT_WEIGHTS, load_checkpoint
from .alignment import face_crop
from .face_detection import Face, FaceDetector, make_detector
from .images import load_image
from .preprocessing import PreprocessConfig, faces_to_tensor, to_gray


# Test-time augmentation: each face is seen at these zoom factors (1.1 = 10 % closer), each also mirrored,
# and the probabilities of the views are averaged (measured gain: docs/model.md).
TTA_ZOOMS = (1.0, 1.1, 0.9)
TTA_VIEWS = 2 * len(TTA_ZOOMS)  # views per face, see tta_views
NO_TTA_HELP = "disable test-time augmentation (mirror + zoom views, fer_core.inference.TTA_ZOOMS)"  # CLIs' --no-tta
# An image whose sides are all within this range (pixels) is taken to be one face when no face is found in it
# (a pre-cropped face such as a 48x48 FER2013 image), without the user asking.
FACE_CROP_SIDES = (24, 96)
# Images (faces x views) per forward pass: enough to keep the CPU's vector units busy, few enough that the
# activations stay in its caches (3,072 at a time cost more time in page faults than in arithmetic).
BATCH_IMAGES = 128


@functools.lru_cache(maxsize=16)
def _zoom_matrix(size: int, factor: float) -> torch.Tensor:
    """(S, S) bilinear resampling matrix of a zoom by ``factor`` about the centre, borders replicated.

    Row i holds the weights of the source pixels for output pixel i: the same sampling as
    ``F.grid_sample(..., mode="bilinear", padding_mode="border", align_corners=False)`` on a scaled grid, but
    separable, so a view costs two small matrix products instead of a 2-D gather.
    """
    out = torch.arange(size, dtype=torch.float64)
    source = ((2 * out + 1) / size - 1) / factor  # normalised source coordinate of each output pixel
    pos = (((source + 1) * size - 1) / 2).clamp(0, size - 1)  # in pixels; border padding clamps
    lower = pos.floor().long()
    upper = (lower + 1).clamp(max=size - 1)
    weight = pos - lower
    matrix = torch.zeros(size, size, dtype=torch.float64)
    matrix[out.long(), lower] += 1 - weight
    matrix[out.long(), upper] += weight
    return matrix.float()


def zoom(batch: torch.Tensor, factor: float) -> torch.Tensor:
    """(N, 1, S, S) faces magnified by ``factor`` about the centre (< 1 shrinks; borders are replicated)."""
    if factor == 1.0:
        return batch
    rows = _zoom_matrix(batch.shape[-2], float(factor)).to(batch.dtype)
    cols = rows if batch.shape[-1] == batch.shape[-2] else _zoom_matrix(batch.shape[-1], float(factor)).to(batch.dtype)
    return rows @ batch @ cols.T


def tta_views(batch: torch.Tensor) -> list[torch.Tensor]:
    """The test-time views of a batch: every zoom in TTA_ZOOMS, each as is and mirrored left-right."""
    views = []
    for factor in TTA_ZOOMS:
        zoomed = zoom(batch, factor)
        views += [zoomed, torch.flip(zoomed, dims=[3])]
    return views


@torch.no_grad()
def predict_view_logits(model: nn.Module | Backend, batch: torch.Tensor, tta: bool = True,
                        batch_size: int = BATCH_IMAGES) -> np.ndarray:
    """(N, 1, S, S) preprocessed faces -> (V, N, C) float32 logits, one slice per view.

    ``model`` is a torch module (run in eval mode) or a :mod:`fer_core.backends` backend. V = TTA_VIEWS with
    ``tta`` (the views of :func:`tta_views`, in that order), else 1. ``batch_size`` bounds the images
    (faces x views) per forward pass.
    """
    backend = as_backend(model)
    chunk = max(1, batch_size // TTA_VIEWS) if tta else batch_size
    n_views = TTA_VIEWS if tta else 1
    out = []
    for start in range(0, len(batch), chunk):
        x = batch[start:start + chunk]
        views = tta_views(x) if tta else [x]
        logits = backend(torch.cat(views)).float()  # all views of the chunk in one pass
        out.append(logits.view(len(views), len(x), -1))
    if not out:
        return np.zeros((n_views, 0, getattr(getattr(model, "config", None), "num_classes", 7)), np.float32)
    return torch.cat(out, dim=1).cpu().numpy().astype(np.float32)


def probabilities_from_view_logits(view_logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """(V, N, C) logits -> (N, C) float32 probabilities: the mean over views of softmax(logits / temperature).

    ``temperature`` (> 0) is the calibration fitted by ``training.calibrate`` (1.0 = uncalibrated).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = torch.from_numpy(np.asarray(view_logits, np.float32))
    return torch.softmax(logits / float(temperature), dim=2).mean(dim=0).numpy().astype(np.float32)


def predict_probabilities(model: nn.Module | Backend, batch: torch.Tensor, tta: bool = True,
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
    """The shared, read-only model plus its preprocessing. Thread-safe for inference.

    Face detectors hold OpenCV state, so they are passed in per call (one per session / thread).
    """

    def __init__(self, model: nn.Module, preprocess: PreprocessConfig, class_names: tuple[str, ...],
                 meta: dict | None = None, backend: str | None = None):
        self.model = model.eval()  # the torch module (also what explanations differentiate through)
        # What runs the forward pass: fer_core.backends (ONNX Runtime by default, FER_BACKEND / ``backend``).
        self.backend = make_backend(self.model, backend, preprocess.image_size)
        self.preprocess = preprocess
        self.class_names = tuple(class_names)
        self.meta = meta or {}
        # Calibration (training.calibrate): each view's logits are divided by it; 1.0 for older checkpoints. Fitted
        # separately with and without test-time augmentation: the mean of six views' softmaxes is less peaked
        # than one view's, so one temperature cannot suit both.
        self.temperature = float(self.meta.get("temperature", 1.0))
        self.temperature_no_tta = float(self.meta.get("temperature_no_tta", 1.0))

    def temperature_for(self, tta: bool) -> float:
        """The calibrated temperature of the probabilities with (``tta``) or without test-time augmentation."""
        return self.temperature if tta else self.temperature_no_tta

    @classmethod
    def from_checkpoint(cls, path: str | Path = DEFAULT_WEIGHTS, backend: str | None = None) -> "Predictor":
        model, preprocess, names, meta = load_checkpoint(path)
        return cls(model, preprocess, names, meta, backend=backend)

    def classify_crops(self, faces: Sequence[np.ndarray], tta: bool = True) -> np.ndarray:
        """Gray face crops (any size) -> (N, C) probabilities, all in one batch."""
        if len(faces) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return predict_probabilities(self.backend, faces_to_tensor(faces, self.preprocess), tta=tta,
                                     temperature=self.temperature_for(tta))

    def view_logits(self, faces: Sequence[np.ndarray], tta: bool = True) -> np.ndarray:
        """Gray face crops -> (V, N, C) logits of every view (uncalibrated; see :func:`predict_view_logits`)."""
        if len(faces) == 0:
            return np.zeros((TTA_VIEWS if tta else 1, 0, len(self.class_names)), np.float32)
        return predict_view_logits(self.backend, faces_to_tensor(faces, self.preprocess), tta=tta)

    def classify_faces(self, gray: np.ndarray, faces: Sequence[Face], tta: bool = True,
                       whole_image: bool = False) -> list[FacePrediction]:
        """Classify detected faces of a (H, W) uint8 gray image, in one batch (each cropped by
        :func:`fer_core.alignment.face_crop`: aligned and framed like FER2013 when it has landmarks)."""
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
