"""Pure functions over label arrays -> plain, JSON-able results (sklearn does the counting).

Labels are integer indices into ``labels``; a prediction of -1 means "no face found" and
counts as wrong.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_summary(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 (over the classes present in ``y_true``), the confusion matrix (rows = true,
    columns = predicted, in ``labels`` order; images with no face are left out of it) and per-class
    precision/recall/F1/support."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    idx = list(range(len(labels)))
    present = sorted(set(y_true.tolist()))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=idx, zero_division=0)
    return {
        "accuracy": float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)) if present else 0.0,
        "labels": list(labels),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels)
        },
    }


def report_text(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> str:
    """sklearn's classification report as text (classes present in y_true)."""
    present = sorted(set(np.asarray(y_true).tolist()))
    return classification_report(y_true, y_pred, labels=present, target_names=[labels[i] for i in present],
                                 digits=4, zero_division=0)
