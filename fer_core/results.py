"""Per-file results of the image page: load -> detect + classify -> annotate, and their CSV / JSON export.

One bad file never loses the others: :func:`analyse_image` turns an
:class:`~fer_core.images.ImageLoadError` into ``ImageResult.error``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .drawing import annotate
from .face_detection import FaceDetector
from .images import ImageLoadError, load_image
from .inference import FacePrediction, Predictor


@dataclass
class ImageResult:
    """One input file: its faces (largest first) and the annotated (H, W, 3) uint8 RGB image, or an error."""

    name: str
    faces: list[FacePrediction] = field(default_factory=list)
    annotated: np.ndarray | None = None
    size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    error: str | None = None


def analyse_image(predictor: Predictor, detector: FaceDetector, source, name: str, tta: bool = True,
                  whole_image_if_no_face: bool = False) -> ImageResult:
    """Read one image (path / bytes / file-like), classify every face and draw numbered boxes on a copy."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
        source.name = name  # so load_image's error messages name the file
    try:
        rgb = load_image(source)
    except ImageLoadError as e:
        return ImageResult(name, error=str(e))
    faces = predictor.predict(rgb, detector, tta=tta, whole_image_if_no_face=whole_image_if_no_face)
    return ImageResult(name, faces, annotate(rgb, faces), (rgb.shape[1], rgb.shape[0]))


def face_rows(results: Sequence[ImageResult], class_names: Sequence[str]) -> list[dict]:
    """One flat row per face of every file: file, face (1-based, as drawn), x, y, w, h, label, confidence,
    whole_image, then one probability column per class."""
    rows = []
    for r in results:
        for i, f in enumerate(r.faces, start=1):
            x, y, w, h = f.box
            rows.append({"file": r.name, "face": i, "x": x, "y": y, "w": w, "h": h, "label": f.label,
                         "confidence": round(f.confidence, 6), "whole_image": f.whole_image,
                         **{n: round(float(f.probabilities[n]), 6) for n in class_names}})
    return rows


def results_csv(results: Sequence[ImageResult], class_names: Sequence[str]) -> bytes:
    """UTF-8 CSV of :func:`face_rows` (a header row even when no face was found)."""
    buf = io.StringIO()
    fields = ["file", "face", "x", "y", "w", "h", "label", "confidence", "whole_image", *class_names]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(face_rows(results, class_names))
    return buf.getvalue().encode("utf-8")


def results_json(results: Sequence[ImageResult]) -> bytes:
    """UTF-8 JSON: a list with one object per file {file, width, height, error, faces: [{face, box, label,
    confidence, probabilities, whole_image}]}."""
    doc = []
    for r in results:
        doc.append({"file": r.name, "width": r.size[0] if r.size else None, "height": r.size[1] if r.size else None,
                    "error": r.error,
                    "faces": [{"face": i, **f.to_dict()} for i, f in enumerate(r.faces, start=1)]})
    return json.dumps(doc, indent=2).encode("utf-8")
