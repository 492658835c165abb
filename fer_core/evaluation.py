"""Evaluate a Predictor on a labelled folder ``<root>/<class>/<image>`` (any subset of the 7 classes).

Shared by ``python -m training.evaluate`` and the app's evaluation page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import LabelledFiles, list_labelled_folder
from .alignment import face_crop
from .calibration import calibration_summary, confidence_histograms
from .face_detection import DEFAULT_DETECTOR, Face, make_detector
from .images import ImageLoadError, load_image, rotate_image
from .inference import Predictor, probabilities_from_view_logits
from .metrics import classification_summary, report_text
from .preprocessing import to_gray

Progress = Callable[[int, int], None]  # (done, total)


@dataclass
class EvaluationResult:
    summary: dict  # accuracy, macro_f1, labels, confusion_matrix, per_class, n_images, n_faces_found, ...
    records: list[dict] = field(default_factory=list)  # one per image: path, true, predicted, probabilities
    report: str = ""  # sklearn's text report
    # (V, F, C) uncalibrated logits of every view of the F classified faces, and their indices into records:
    # what training.calibrate fits the temperature on.
    view_logits: np.ndarray | None = None
    face_index: np.ndarray | None = None

    def to_json(self) -> dict:
        return {**self.summary, "images": self.records}


def evaluate_files(predictor: Predictor, files: LabelledFiles, detect_faces: bool = False, tta: bool = True,
                   min_face_size: int = 20, chunk: int = 256, progress: Progress | None = None,
                   split: str = "", detector: str = DEFAULT_DETECTOR, rotate: float = 0.0,
                   align: bool = True) -> EvaluationResult:
    """Classify every file and score it against its folder label.

    Without ``detect_faces`` each image is a pre-cropped face. With it, the largest detected face is
    classified, cropped exactly as the app crops it (:func:`fer_core.alignment.face_crop`); images with no
    face (or that cannot be read) count as wrong and are counted. ``detector`` names the backend; ``rotate``
    rolls every image by that many degrees first (a robustness test: tilted heads); ``align=False`` crops the
    detector's box instead of aligning on the landmarks (an ablation, to measure what alignment brings).
    """
    names = predictor.class_names
    finder = make_detector(detector, min_face_size=min_face_size) if detect_faces else None
    y_pred = np.full(len(files), -1, dtype=np.int64)
    records: list[dict] = []
    unreadable = 0
    all_logits: list[np.ndarray] = []
    for start in range(0, len(files), chunk):
        crops, slots = [], []
        for i in range(start, min(start + chunk, len(files))):
            path = files.paths[i]
            rec = {"path": str(path), "true": names[files.labels[i]], "predicted": None, "face_found": False,
                   "probabilities": None, "error": None}
            records.append(rec)
            try:
                gray = rotate_image(to_gray(load_image(path)), rotate)
            except ImageLoadError as e:
                rec["error"] = str(e)
                unreadable += 1
                continue
            if finder is not None:
                faces = finder.detect(gray)
                if not faces:
                    continue
                rec.update(faces[0].to_dict(), n_faces=len(faces))
                face = faces[0] if align else Face(faces[0].box, faces[0].score)
                gray = face_crop(gray, face, predictor.preprocess.image_size, predictor.preprocess.face_margin)
            rec["face_found"] = True
            crops.append(gray)
            slots.append(i)
        logits = predictor.view_logits(crops, tta=tta)
        all_logits.append(logits)
        probs = probabilities_from_view_logits(logits, predictor.temperature_for(tta))
        for i, p in zip(slots, probs):
            y_pred[i] = int(np.argmax(p))
            records[i]["predicted"] = names[y_pred[i]]
            records[i]["probabilities"] = {n: float(v) for n, v in zip(names, p)}
        if progress is not None:
            progress(min(start + chunk, len(files)), len(files))
    summary = classification_summary(files.labels, y_pred, names)
    found = y_pred >= 0
    summary.update({
        "n_images": len(files),
        "n_faces_found": int(found.sum()),
        "n_unreadable": unreadable,
        "no_face_per_class": {n: int(((files.labels == i) & ~found).sum()) for i, n in enumerate(names)},
        "tta": tta,
        "detect_faces": detect_faces,
        "detector": detector if detect_faces else None,
        "rotate_degrees": rotate,
        "n_images_with_several_faces": sum(r.get("n_faces", 0) > 1 for r in records),
        "aligned": align if detect_faces else None,
        "split": split,
    })
    view_logits = np.concatenate(all_logits, axis=1) if all_logits else np.zeros((0, 0, len(names)), np.float32)
    summary.update(calibration_fields(view_logits, files.labels[found], predictor.temperature_for(tta), names))
    return EvaluationResult(summary, records, report_text(files.labels, y_pred, names), view_logits,
                            np.flatnonzero(found))


def calibration_fields(view_logits: np.ndarray, labels: np.ndarray, temperature: float, names) -> dict:
    """The calibration part of an evaluation summary, over the faces that were classified: ``ece``, ``nll`` and
    ``reliability`` (bins) of the probabilities as served (at ``temperature``), ``temperature``,
    ``confidence_histograms`` (per predicted class) and ``uncalibrated`` (the same three at temperature 1), so
    that a page can show the effect of calibration on any data set."""
    if not len(labels):
        return {"temperature": temperature}
    served = probabilities_from_view_logits(view_logits, temperature)
    raw = probabilities_from_view_logits(view_logits, 1.0)
    calibrated = {k: v for k, v in calibration_summary(served, labels).items() if k != "n"}  # n_faces_found says it
    return {**calibrated, "temperature": temperature,
            "confidence_histograms": confidence_histograms(served, labels, names),
            "uncalibrated": calibration_summary(raw, labels)}


def evaluate_folder(predictor: Predictor, root: str | Path, **kwargs) -> EvaluationResult:
    """:func:`evaluate_files` on ``<root>/<class>/*``; raises for missing folders or unknown class names."""
    return evaluate_files(predictor, list_labelled_folder(root), **kwargs)
