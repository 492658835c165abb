"""Evaluate a Predictor on a labelled folder ``<root>/<class>/<image>`` (any subset of the 7 classes).

Shared by ``python -m training.evaluate`` and the app's evaluation page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..faces.alignment import face_crop
from ..faces.detection import DEFAULT_DETECTOR, Face, make_detector
from ..faces.images import ImageLoadError, load_image, rotate_image
from ..faces.preprocessing import to_gray
from ..model.calibration import calibration_summary, confidence_histograms
from ..model.inference import Predictor, probabilities_from_view_logits
from .datasets import LabelledFiles, list_labelled_folder
from .metrics import classification_summary, report_text
from .report import FACE_CROP_SHARE

Progress = Callable[[int, int], None]  # (done, total)
WHOLE_PHOTO_SAMPLE = 12  # images checked for being whole photos when faces are not detected


def whole_photo_check(grays: Sequence[np.ndarray], detector: str = DEFAULT_DETECTOR) -> dict:
    """``{"checked": n, "whole": k}``: of the first :data:`WHOLE_PHOTO_SAMPLE` images, how many are whole photos
    rather than face crops (the detector finds a face covering less than :data:`FACE_CROP_SHARE` of the image).
    Evaluated as one face each (no face detection), whole photos score far lower than their faces would (63 % ->
    48 % on real photos, measured 2026-12-06); the commands and the page say so."""
    finder = make_detector(detector, min_face_size=20)
    sample = [g for g in grays[:WHOLE_PHOTO_SAMPLE] if g is not None]
    whole = 0
    for gray in sample:
        faces = finder.detect(gray)
        if faces:
            x, y, w, h = faces[0].box
            whole += w * h < FACE_CROP_SHARE * gray.shape[0] * gray.shape[1]
    return {"checked": len(sample), "whole": int(whole)}


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
    classified, cropped exactly as the app crops it (:func:`fer_core.faces.alignment.face_crop`); images with no
    face (or that cannot be read) count as wrong and are counted. ``detector`` names the backend; ``rotate``
    rolls every image by that many degrees first (a robustness test: tilted heads); ``align=False`` crops the
    detector's box instead of aligning on the landmarks (an ablation, to measure what alignment brings).
    """
    return evaluate_models([predictor], files, detect_faces=detect_faces, tta=tta, min_face_size=min_face_size,
                           chunk=chunk, progress=progress, split=split, detector=detector, rotate=rotate,
                           align=align)[0]


def evaluate_models(predictors: Sequence[Predictor], files: LabelledFiles, detect_faces: bool = False,
                    tta: bool = True, min_face_size: int = 20, chunk: int = 256, progress: Progress | None = None,
                    split: str = "", detector: str = DEFAULT_DETECTOR, rotate: float = 0.0,
                    align: bool = True) -> list[EvaluationResult]:
    """:func:`evaluate_files` of several predictors on the same data, one result each, in ``predictors`` order.

    Every image is read (and its face detected) once, and the same face goes through every model: a paired
    evaluation (:mod:`fer_core.analysis.compare`). Each model crops that face with its own preprocessing config (image size,
    margin), so models that share it see identical crops.
    """
    names = predictors[0].class_names
    if any(p.class_names != names for p in predictors):
        raise ValueError("the models to compare have different class names")
    finder = make_detector(detector, min_face_size=min_face_size) if detect_faces else None
    y_pred = np.full((len(predictors), len(files)), -1, dtype=np.int64)
    records: list[list[dict]] = [[] for _ in predictors]
    unreadable = 0
    all_logits: list[list[np.ndarray]] = [[] for _ in predictors]
    check = None
    for start in range(0, len(files), chunk):
        grays, faces, slots = [], [], []
        for i in range(start, min(start + chunk, len(files))):
            path = files.paths[i]
            rec = {"path": str(path), "true": names[files.labels[i]], "predicted": None, "face_found": False,
                   "probabilities": None, "error": None}
            try:
                gray = rotate_image(to_gray(load_image(path)), rotate)
            except ImageLoadError as e:
                rec["error"] = str(e)
                unreadable += 1
                gray = None
            face = None
            if gray is not None and finder is not None:
                found = finder.detect(gray)
                if found:
                    rec.update(found[0].to_dict(), n_faces=len(found))
                    face = found[0] if align else Face(found[0].box, found[0].score)
                else:
                    gray = None
            if gray is not None:
                rec["face_found"] = True
                grays.append(gray)
                faces.append(face)
                slots.append(i)
            for model_records in records:
                model_records.append(dict(rec))
        if finder is None and check is None:  # are these face crops, as assumed without face detection?
            check = whole_photo_check(grays, detector)
        for m, predictor in enumerate(predictors):
            size, margin = predictor.preprocess.image_size, predictor.preprocess.face_margin
            crops = [g if f is None else face_crop(g, f, size, margin) for g, f in zip(grays, faces)]
            logits = predictor.view_logits(crops, tta=tta)
            all_logits[m].append(logits)
            probs = probabilities_from_view_logits(logits, predictor.temperature_for(tta))
            for i, p in zip(slots, probs):
                y_pred[m, i] = int(np.argmax(p))
                records[m][i]["predicted"] = names[y_pred[m, i]]
                records[m][i]["probabilities"] = {n: float(v) for n, v in zip(names, p)}
        if progress is not None:
            progress(min(start + chunk, len(files)), len(files))
    results = [_result(predictor, files, y_pred[m], records[m], all_logits[m], unreadable, tta=tta,
                       detect_faces=detect_faces, detector=detector, rotate=rotate, align=align, split=split)
               for m, predictor in enumerate(predictors)]
    for result in results:
        if check is not None:
            result.summary["whole_photo_check"] = check
    return results


def _result(predictor: Predictor, files: LabelledFiles, y_pred: np.ndarray, records: list[dict],
            logits: list[np.ndarray], unreadable: int, tta: bool, detect_faces: bool, detector: str, rotate: float,
            align: bool, split: str) -> EvaluationResult:
    """One model's :class:`EvaluationResult` from its predictions (-1: no face) and view logits."""
    names = predictor.class_names
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
    view_logits = np.concatenate(logits, axis=1) if logits else np.zeros((0, 0, len(names)), np.float32)
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
