"""Face detection behind one small interface.

The default backend is OpenCV's Haar frontal-face cascade, shipped inside
opencv-python-headless, so it is always available and never downloads anything.
A detector object holds OpenCV state: create one per session / thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the input image


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Box]:
        """(H, W) uint8 gray image -> face boxes, largest first."""


@dataclass
class HaarFaceDetector:
    """OpenCV Haar cascade. ``min_face_size`` is in pixels of the input image; smaller faces are ignored.

    ``max_side`` downsizes large images before detection (boxes are mapped back), which keeps
    detection fast on big photos and live frames.
    """

    min_face_size: int = 40
    scale_factor: float = 1.1
    min_neighbors: int = 5
    max_side: int = 640
    cascade_name: str = "haarcascade_frontalface_default.xml"

    def __post_init__(self) -> None:
        path = cv2.data.haarcascades + self.cascade_name
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"Could not load the OpenCV face cascade {path}")

    def detect(self, gray: np.ndarray) -> list[Box]:
        if gray.ndim != 2 or gray.dtype != np.uint8:
            raise ValueError("HaarFaceDetector.detect expects a (H, W) uint8 gray image")
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w)) if max(h, w) > 0 else 1.0
        small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else gray
        min_side = max(1, int(round(self.min_face_size * scale)))
        if min(small.shape) < min_side:
            return []
        found = self._cascade.detectMultiScale(cv2.equalizeHist(small), scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        boxes = [tuple(int(round(v / scale)) for v in b) for b in (found if len(found) else [])]
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)
