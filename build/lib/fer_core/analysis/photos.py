"""Per-file results of the image page: load -> detect + classify -> annotate, and their CSV / JSON export.

One bad file never loses the others: :func:`analyse_image` turns an
:class:`~fer_core.faces.images.ImageLoadError` into ``ImageResult.error``.
Faces are numbered left to right (by the left edge of their box): the drawing, the page, the CSV and the JSON
all use that order.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image

from ..faces.alignment import face_crop
from ..faces.detection import Face, FaceDetector
from ..faces.drawing import annotate, face_thumbnail
from ..faces.images import SUPPORTED_FORMATS, ImageLoadError, load_image
from ..faces.preprocessing import to_gray
from ..model.calibration import check_threshold, uncertain_label
from ..model.explain import explain_crop, overlay
from ..model.inference import FacePrediction, Predictor
from ..model.weights import ModelOutputError

Progress = Callable[[int, int], None]  # (faces classified, faces found)
# The annotated copy kept for display is at most this many pixels on its longer side: st.image's JPEG encoder
# fails beyond 65,535 px, and a session should not keep a full-size copy of every large upload.
DISPLAY_MAX_SIDE = 4096


@dataclass
class ImageResult:
    """One input file: its faces (left to right), the annotated (H', W', 3) uint8 RGB image for display (small
    images enlarged, see :func:`fer_core.faces.drawing.annotate`), a (96, 96, 3) thumbnail per face, or an error."""

    name: str
    faces: list[FacePrediction] = field(default_factory=list)
    annotated: np.ndarray | None = None
    size: tuple[int, int] | None = None  # (width, height) after EXIF orientation
    error: str | None = None
    frames: int = 1  # frames in the file (animated GIF / PNG / WebP, multi-page TIFF); only the first is analysed
    thumbnails: list[np.ndarray] = field(default_factory=list)
    # (S, S) uint8 gray crop of each face exactly as the model saw it (aligned): what explanations are drawn on
    crops: list[np.ndarray] = field(default_factory=list)
    uncertain_below: float | None = None  # the confidence policy the labels were given under (None: off)

    def labels(self) -> list[str]:
        """The label of each face under the confidence policy: its expression, or "uncertain"."""
        return [uncertain_label(f.label, f.confidence, self.uncertain_below) for f in self.faces]


def analyse_image(predictor: Predictor, detector: FaceDetector, source, name: str, tta: bool = True,
                  whole_image_if_no_face: bool = False, progress: Progress | None = None,
                  uncertain_below: float | None = None) -> ImageResult:
    """Read one image (path / bytes / file-like), classify every face and draw numbered boxes on a copy.

    ``progress(done, total)`` is called once the faces are found (done = 0) and after each face is classified.
    ``uncertain_below``: faces whose top probability is below it are labelled "uncertain" (None: off).
    """
    uncertain_below = check_threshold(uncertain_below)
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
        source.name = name  # so load_image's error messages name the file
    try:
        rgb = load_image(source)
    except ImageLoadError as e:
        return ImageResult(name, error=str(e))
    gray = to_gray(rgb)
    found = left_to_right(detector.detect(gray))
    try:
        faces = predictor.classify_detected(gray, found, tta=tta, whole_image_if_no_face=whole_image_if_no_face,
                                            progress=progress)
    except ModelOutputError as e:  # NaN or infinite scores: no expression is better than "angry (nan%)"
        return ImageResult(name, error=str(e))
    size, margin = predictor.preprocess.image_size, predictor.preprocess.face_margin
    result = ImageResult(name, faces, None, (rgb.shape[1], rgb.shape[0]), frames=frame_count(source),
                         thumbnails=[face_thumbnail(rgb, f.box) for f in faces],
                         crops=[face_crop(gray, f.face, size, margin) for f in faces], uncertain_below=uncertain_below)
    result.annotated = display_copy(annotate(rgb, faces, labels=result.labels()))
    return result


def left_to_right(faces: Sequence[Face]) -> list[Face]:
    """Detected faces in the order they are numbered everywhere (page, CSV, JSON, command line): by the left edge
    of their box, then by its top edge."""
    return sorted(faces, key=lambda f: (f.box[0], f.box[1]))



def classify_image(predictor: Predictor, detector, path: str | Path, tta: bool = True,
                   whole_image_if_no_face: bool = False) -> tuple[np.ndarray, np.ndarray, list[FacePrediction]]:
    """Read one image file and classify every face in it: ((H, W, 3) uint8 RGB, (H, W) uint8 gray, the faces
    numbered left to right). Raises ImageLoadError for a file that cannot be read as an image."""
    rgb = load_image(path)
    gray = to_gray(rgb)
    faces = predictor.classify_detected(gray, left_to_right(detector.detect(gray)), tta=tta,
                                        whole_image_if_no_face=whole_image_if_no_face)
    return rgb, gray, faces


def image_entry(name: str, faces: list[FacePrediction], uncertain_below: float | None = None) -> dict:
    """The JSON object of one image, as ``fer_core.predict --json`` prints it and the HTTP API answers it:
    ``{"path": name, "faces": [face_entries...]}``."""
    return {"path": name, "faces": face_entries(faces, uncertain_below)}


def face_entries(faces: list[FacePrediction], uncertain_below: float | None = None) -> list[dict]:
    """The ``--json`` object of each face: :meth:`FacePrediction.to_dict`, with ``label`` "uncertain" below the
    confidence ``uncertain_below`` (None: off) and ``top_label`` the most probable expression."""
    return [{**f.to_dict(), "label": uncertain_label(f.label, f.confidence, uncertain_below), "top_label": f.label}
            for f in faces]


def frame_count(source) -> int:
    """Frames in an image file (path, bytes or seekable file-like): more than 1 for an animated GIF, PNG or WebP
    or a multi-page TIFF, of which :func:`fer_core.faces.images.load_image` reads the first; 1 when it cannot tell."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    elif hasattr(source, "seek"):
        source.seek(0)
    try:
        with Image.open(source, formats=SUPPORTED_FORMATS) as img:
            return max(1, int(getattr(img, "n_frames", 1)))
    except Exception:  # noqa: BLE001 - Pillow raises many types (TypeError for a damaged later TIFF page); the
        return 1  # first frame was read already: only the count is unknown


def display_copy(image: np.ndarray, max_side: int = DISPLAY_MAX_SIDE, max_width: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> the same image shrunk (area interpolation) so that its longer side is at most
    ``max_side`` px and, with ``max_width``, its width at most that, each side at least 1 px; returned unchanged
    when it already fits. Face boxes and ``ImageResult.size`` stay in the original image's pixels.

    ``max_width``: the width the image is shown at. Streamlit's ``st.image`` scales a wider image down itself,
    and a very wide, thin one then gets a height of 0 px and fails; shrunk here, it keeps 1 px."""
    h, w = image.shape[:2]
    scale = min(max_side / max(h, w), (max_width or w) / w)
    if scale >= 1:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


CSV_FIELDS = ("file", "face", "x", "y", "w", "h", "label", "confidence", "whole_image")


def face_rows(results: Sequence[ImageResult], class_names: Sequence[str], every_file: bool = False) -> list[dict]:
    """One flat row per face of every file: file, face (1-based, as drawn), x, y, w, h, label, confidence,
    whole_image, one probability column per class, and error.

    With ``every_file``, a file with no face still gets one row (face and label empty) and an unreadable file
    one row with its error, so that every uploaded file appears (as in the JSON).
    """
    rows = []
    for r in results:
        for i, (f, label) in enumerate(zip(r.faces, r.labels()), start=1):
            x, y, w, h = f.box
            rows.append({"file": r.name, "face": i, "x": x, "y": y, "w": w, "h": h, "label": label,
                         "confidence": round(f.confidence, 6), "whole_image": f.whole_image,
                         **{n: round(float(f.probabilities[n]), 6) for n in class_names}, "error": ""})
        if every_file and not r.faces:
            rows.append({"file": r.name, **{k: "" for k in CSV_FIELDS[1:]}, **{n: "" for n in class_names},
                         "error": r.error or ""})
    return rows


def results_csv(results: Sequence[ImageResult], class_names: Sequence[str]) -> bytes:
    """UTF-8 CSV of :func:`face_rows` with a row for every file (a header row even when there is no file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*CSV_FIELDS, *class_names, "error"])
    writer.writeheader()
    writer.writerows(face_rows(results, class_names, every_file=True))
    return buf.getvalue().encode("utf-8")


def results_json(results: Sequence[ImageResult]) -> bytes:
    """UTF-8 JSON: a list with one object per file {file, width, height, frames, error, uncertain_below, faces:
    [{face, box, label, top_label, confidence, probabilities, whole_image, detector_score, landmarks}]}; ``label``
    is "uncertain" where the confidence policy applies, ``top_label`` always the most probable expression."""
    doc = []
    for r in results:
        doc.append({"file": r.name, "width": r.size[0] if r.size else None, "height": r.size[1] if r.size else None,
                    "frames": r.frames if r.error is None else None, "error": r.error,
                    **({"uncertain_below": r.uncertain_below} if r.uncertain_below is not None else {}),
                    "faces": [{"face": i, **f.to_dict(), "label": label, "top_label": f.label}
                              for i, (f, label) in enumerate(zip(r.faces, r.labels()), start=1)]})
    return json.dumps(doc, indent=2).encode("utf-8")


def heatmap_png(predictor: Predictor, gray: np.ndarray, prediction: FacePrediction, class_name: str | None = None,
                side: int = 192) -> bytes:
    """PNG of the face crop the model saw for ``prediction`` with the occlusion map of where it looked for
    ``class_name`` (default: its predicted class), ``side`` px square (``fer_core.predict --explain``, the API)."""
    p = predictor.preprocess
    crop = face_crop(gray, prediction.face, p.image_size, p.face_margin)
    target = predictor.class_names.index(class_name or prediction.label)
    heat = explain_crop(predictor.backend, p, crop, classes=[target])[0]
    return cv2.imencode(".png", cv2.cvtColor(overlay(crop, heat, side), cv2.COLOR_RGB2BGR))[1].tobytes()
