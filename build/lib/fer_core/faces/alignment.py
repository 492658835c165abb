"""Alignment and crop geometry: a detected face -> the model's square gray input, framed like FER2013.

:func:`face_crop` is the ONE function that turns a face in an image into the crop the classifier sees; the
pages, the CLIs, evaluation and the live/video processor all call it (through
:meth:`fer_core.model.inference.Predictor.classify_faces`). Training uses FER2013's own 48x48 crops, which have
this framing already.

With landmarks, the face is rotated so the eyes are level and scaled/shifted so its five landmarks land,
in the least-squares sense, where FER2013 puts them (:class:`FaceFraming`, measured on FER2013's training
images by ``python -m training.experiments.face_framing``). Without landmarks (Haar boxes, a whole image), the box is
cropped as it is.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..locations import ARTIFACTS
from .detection import Face
from .preprocessing import crop_face, resize_face

FRAMING_FILE = ARTIFACTS / "face_framing.json"


@dataclass(frozen=True)
class FaceFraming:
    """Where the five landmarks sit in a square face crop, as fractions of its side (x right, y down), in the
    detector's order: eye on the image's left, eye on the image's right, nose tip, mouth corners left, right."""

    landmarks: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.landmarks) != 5:
            raise ValueError(f"a framing has 5 landmarks, got {len(self.landmarks)}")

    def points(self, size: int) -> np.ndarray:
        """(5, 2) float32 landmark positions in pixels of a ``size`` x ``size`` crop."""
        return np.asarray(self.landmarks, np.float32) * size

    @classmethod
    def from_json(cls, path: str | Path) -> "FaceFraming":
        doc = json.loads(Path(path).read_text())
        return cls(tuple(tuple(p) for p in doc["landmarks"]))


@lru_cache(maxsize=1)
def fer2013_framing() -> FaceFraming:
    """The shipped framing measured on FER2013 (``artifacts/face_framing.json``)."""
    try:
        return FaceFraming.from_json(FRAMING_FILE)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise RuntimeError(f"Cannot read the face framing {FRAMING_FILE} ({e}); restore artifacts/ from the "
                           f"repository or rebuild it with `python -m training.experiments.face_framing`.") from None


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation taking points ``src`` (N, 2) onto ``dst`` (N, 2),
    as a (2, 3) float64 matrix for ``cv2.warpAffine`` (Umeyama 1991, reflections excluded)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    # For a similarity with rotation angle t and scale k: d ~ k R(t) s. Closed form via complex numbers.
    zs, zd = s[:, 0] + 1j * s[:, 1], d[:, 0] + 1j * d[:, 1]
    denom = float(np.sum(np.abs(zs) ** 2))
    if denom < 1e-12:
        raise ValueError("the source points coincide: no transform")
    a = np.sum(np.conj(zs) * zd) / denom  # k * exp(i t)
    m = np.array([[a.real, -a.imag], [a.imag, a.real]])
    t = mu_d - m @ mu_s
    return np.hstack([m, t[:, None]])


def align_face(gray: np.ndarray, landmarks, size: int = 48, framing: FaceFraming | None = None) -> np.ndarray:
    """(H, W) uint8 image + five landmarks -> (size, size) uint8 crop with level eyes and FER2013 framing.

    Regions outside the image are filled by replicating the border. Large faces are warped at up to 4x the
    output size first, then area-downsampled, so a 300 px face does not alias into 48 px.
    """
    framing = framing or fer2013_framing()
    src = np.asarray(landmarks, np.float64).reshape(5, 2)
    m = similarity_transform(src, framing.points(size))
    scale = math.hypot(m[0, 0], m[1, 0])  # output pixels per input pixel
    over = int(min(4, max(1, math.floor(1.0 / max(scale, 1e-6)))))
    big = size * over
    crop = cv2.warpAffine(gray, m * np.array([[over], [over]]), (big, big), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return crop if over == 1 else cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def face_crop(gray: np.ndarray, face: Face, size: int = 48, margin: float = 0.0,
              framing: FaceFraming | None = None) -> np.ndarray:
    """THE crop the classifier sees for one face: aligned when the face has landmarks, else its box
    (grown by ``margin`` per side) resized to ``size``. (size, size) uint8."""
    if face.landmarks:
        return align_face(gray, face.landmarks, size, framing)
    return resize_face(crop_face(gray, face.box, margin), size)
