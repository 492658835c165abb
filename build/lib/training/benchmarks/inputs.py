"""What the speed and video benchmarks measure on: a webcam-sized frame with one face that every benchmarked
detector setting finds, made from the shared photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fer_core.faces.detection import DEFAULT_DETECTOR, make_detector
from fer_core.faces.images import load_image
from fer_core.faces.preprocessing import to_gray
from fer_core.locations import SHARED_DATA
from fer_core.video.live import canvas_from_photos

PHOTOS = SHARED_DATA / "photos"
DETECTOR_SETTINGS = ((40, 640), (60, 320))  # (min face px, detect on frames downscaled to <= this side)


def find_face_frame(explicit: str) -> np.ndarray | None:
    """A 640x480 RGB frame (fer_core.video.live.canvas_from_photos) from the first photo in which every benchmarked
    detector setting finds exactly one face."""
    candidates = [Path(explicit)] if explicit else sorted(PHOTOS.glob("*/*.jpg")) if PHOTOS.is_dir() else []
    detectors = [make_detector(DEFAULT_DETECTOR, min_face_size=m, max_side=s) for m, s in DETECTOR_SETTINGS]
    for path in candidates:
        frame = canvas_from_photos([load_image(path)])
        if all(len(d.detect(to_gray(frame))) == 1 for d in detectors):
            return frame
    return None
