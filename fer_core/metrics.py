"""Pure functions over label arrays -> plain, JSON-able results (sklearn does the counting)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_summary(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1, confusion matrix (rows = true, columns = predicted, in ``labels`` order) and per-class
    precision/recall/F1/support. ``y_true``/``y_pred`` index into ``labels``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=idx, average="macro", zero_division=0)),
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
    }


def report_text(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> str:
    """sklearn's classification report as text."""
    return classification_report(y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels),
                                 digits=4, zero_division=0)
