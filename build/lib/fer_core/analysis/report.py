"""Evaluation summaries -> tables: the classification report, a row-normalised confusion matrix,
and the images behind one confusion-matrix cell.

Pure functions over the plain dicts of :func:`fer_core.analysis.metrics.classification_summary`.
"""

from __future__ import annotations

from typing import Sequence

NO_FACE = "(no face / unreadable)"  # the "predicted" value of images that produced no prediction


def classification_table(per_class: dict[str, dict], labels: Sequence[str] | None = None) -> list[dict]:
    """One row per class (class, precision, recall, f1, support) plus "macro avg" and "weighted avg".

    As in sklearn's report (and the headline macro-F1), the averages are over the classes present in the
    data (support > 0): macro = unweighted mean, weighted = mean weighted by support.
    """
    names = list(labels) if labels is not None else list(per_class)
    rows = [{"class": n, **{k: per_class[n][k] for k in ("precision", "recall", "f1")},
             "support": int(per_class[n]["support"])} for n in names]
    present = [r for r in rows if r["support"] > 0]
    total = sum(r["support"] for r in present)
    for name, weight in (("macro avg", lambda r: 1.0), ("weighted avg", lambda r: r["support"])):
        norm = sum(weight(r) for r in present)
        avg = {k: (sum(weight(r) * r[k] for r in present) / norm if norm else 0.0)
               for k in ("precision", "recall", "f1")}
        rows.append({"class": name, **avg, "support": total})
    return rows


def normalize_rows(matrix: Sequence[Sequence[float]]) -> list[list[float]]:
    """Each row divided by its sum (rows = true class, so a cell is the fraction of that class); empty rows stay 0."""
    out = []
    for row in matrix:
        s = float(sum(row))
        out.append([float(v) / s if s else 0.0 for v in row])
    return out


def cell_records(records: Sequence[dict], true: str, predicted: str) -> list[dict]:
    """Per-image records (from EvaluationResult.records) whose true label is ``true`` and whose prediction is
    ``predicted`` (or :data:`NO_FACE` for images with no prediction), most confident first."""
    def pred_of(r: dict) -> str:
        return r.get("predicted") or NO_FACE

    chosen = [r for r in records if r.get("true") == true and pred_of(r) == predicted]
    return sorted(chosen, key=lambda r: -((r.get("probabilities") or {}).get(r.get("predicted"), 0.0)))


def most_confused(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> tuple[str, str]:
    """(true, predicted) of the largest off-diagonal cell: the most frequent mistake (the first class twice
    when there is no mistake)."""
    best, cell = -1, (0, 0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            if i != j and v > best:
                best, cell = v, (i, j)
    if best <= 0:
        cell = (0, 0)
    return labels[cell[0]], labels[cell[1]]


def measured_on(summary: dict) -> str:
    """How an evaluation summary was measured, in one line for the pages: the split, whose labels, and whether
    test-time augmentation was on (the same accuracy differs by a point or more between these settings)."""
    split = summary.get("split") or "unnamed split"
    if (summary.get("label_source") or {}).get("labels") == "FER+ majority vote":
        labels = "FER+ majority labels"
    else:
        labels = "FER2013's labels" if "FER2013" in split else "the folders' labels"
    tta = summary.get("tta")
    return " · ".join([split] + ([] if labels in split else [labels])
                      + [f"test-time augmentation {'on' if tta else 'off' if tta is not None else 'unknown'}"])


FACE_CROP_SHARE = 0.4  # a pre-cropped face fills at least this share of its image; a whole photo's face less


def whole_photo_warning(summary: dict) -> str | None:
    """What to tell the user when most sampled images of an evaluation without face detection were whole photos
    (:func:`whole_photo_check`); None otherwise."""
    check = summary.get("whole_photo_check") or {}
    if summary.get("detect_faces") or not check.get("checked") or check["whole"] * 2 < check["checked"]:
        return None
    return (f"{check['whole']} of the first {check['checked']} images are whole photos (their face covers less than "
            f"{FACE_CROP_SHARE:.0%} of the image), but faces were not detected: each whole image was classified as "
            "one face, which scores far lower. Evaluate again with face detection (--detect-faces; on the page: "
            "\"Images are whole photos\").")
