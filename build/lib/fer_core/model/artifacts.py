"""The shipped artifacts the app reads, and readers that fail with messages a user can act on.

``artifacts/`` holds ``model.pt`` (weights), ``model_card.json`` and ``history.csv`` (written by
``python -m training.train``) and ``eval_validation.json`` (written by ``python -m training.evaluate``).
Every reader returns plain data; a missing file is ``None`` (the caller says which command creates it),
a file that exists but cannot be used raises :class:`ArtifactError`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pandas as pd

from ..locations import FER_IMAGES
from .weights import DEFAULT_WEIGHTS

ARTIFACTS_DIR = DEFAULT_WEIGHTS.parent
ARTIFACTS_ENV = "FER_ARTIFACTS"  # optional override of the artifacts folder (another model, tests)
WEIGHTS_NAME, MODEL_CARD_NAME, EVAL_NAME, HISTORY_NAME = ("model.pt", "model_card.json", "eval_validation.json",
                                                          "history.csv")
LOCAL_VALIDATION_DIR = FER_IMAGES / "validation"  # absent on a user's fresh machine

TRAIN_COMMAND = "python -m training.train"
EVAL_COMMAND = ('python -m training.evaluate ../shared/data/fer2013/images/validation '
                '--split "FER2013 PublicTest (validation)" --json artifacts/eval_validation.json')

CALIBRATION_NAME = "calibration.json"  # written by training.calibrate: ECE / NLL before and after, per split
CALIBRATE_COMMAND = "python -m training.calibrate --write"

EVAL_KEYS = ("accuracy", "macro_f1", "labels", "confusion_matrix", "per_class")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1")


class ArtifactError(ValueError):
    """An artifact file that exists but cannot be read or lacks what the app needs."""


def artifacts_dir() -> Path:
    """The folder the app reads: $FER_ARTIFACTS when set, else the project's artifacts/."""
    return Path(os.environ.get(ARTIFACTS_ENV) or ARTIFACTS_DIR)


def artifact_path(name: str) -> Path:
    """``artifacts_dir() / name``, e.g. artifact_path(EVAL_NAME)."""
    return artifacts_dir() / name


def read_json_object(path: str | Path) -> dict | None:
    """The JSON object in file ``path``, or None when there is no such file; ArtifactError when it cannot be read
    or holds something else than an object."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} cannot be read as JSON ({e}).") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} should hold a JSON object, not a {type(data).__name__}.")
    return data


def read_model_card(path: str | Path | None = None) -> dict | None:
    """The model card written at the end of training, or None when there is none yet."""
    return read_json_object(Path(path or artifact_path(MODEL_CARD_NAME)))


def check_eval_summary(summary: dict, source: str = "evaluation results") -> dict:
    """Validate an evaluation summary (as written by ``training.evaluate --json``); return it unchanged.

    Needs accuracy, macro_f1, labels, a square confusion_matrix (rows = true, columns = predicted,
    one row per label) and per_class {precision, recall, f1, support}.
    """
    missing = [k for k in EVAL_KEYS if k not in summary]
    if missing:
        raise ArtifactError(f"{source} lacks {', '.join(missing)}; re-create it with `{EVAL_COMMAND}`.")
    n = len(summary["labels"])
    cm = summary["confusion_matrix"]
    if len(cm) != n or any(len(row) != n for row in cm):
        raise ArtifactError(f"{source}: the confusion matrix is not {n}x{n} (one row and column per label).")
    return summary


def read_eval_summary(path: str | Path | None = None) -> dict | None:
    """The shipped evaluation summary, validated, or None when it has not been written yet."""
    path = Path(path or artifact_path(EVAL_NAME))
    data = read_json_object(path)
    return None if data is None else check_eval_summary(data, str(path))


def read_calibration_report(path: str | Path | None = None) -> dict | None:
    """The calibration report of ``training.calibrate`` (temperatures; per split, with and without TTA: ECE, NLL,
    reliability bins before and after), or None when it has not been written yet."""
    path = Path(path or artifact_path(CALIBRATION_NAME))
    data = read_json_object(path)
    if data is not None and not isinstance(data.get("splits"), dict):
        raise ArtifactError(f"{path} lacks its per-split results; re-create it with `{CALIBRATE_COMMAND}`.")
    return data


def calibration_rows(report: dict) -> list[dict]:
    """One row per split and mode of a calibration report: split, TTA, faces, temperature, ECE and NLL before and
    after (a table for the evaluation page and docs/calibration.md)."""
    rows = []
    for name, split in report["splits"].items():
        for mode in ("tta", "no_tta"):
            if mode in split:
                m = split[mode]
                rows.append({"split": name, "TTA": mode == "tta", "faces": split["n_faces"],
                             "temperature": m.get("temperature", report.get("temperature")),
                             "ECE before": m["before"]["ece"], "ECE after": m["after"]["ece"],
                             "NLL before": m["before"]["nll"], "NLL after": m["after"]["nll"]})
    return rows


def read_history(path: str | Path | None = None) -> pd.DataFrame | None:
    """Per-epoch training history (epoch, lr, train_loss, train_acc, val_loss, val_acc, val_macro_f1, seconds)."""
    path = Path(path or artifact_path(HISTORY_NAME))
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:  # pandas raises ValueError subclasses for malformed CSV
        raise ArtifactError(f"{path} cannot be read as CSV ({e}).") from None
    missing = [c for c in HISTORY_COLUMNS if c not in df.columns]
    if missing:
        raise ArtifactError(f"{path} lacks column(s) {', '.join(missing)}.")
    return df


def model_overview(predictor, card: dict | None) -> dict:
    """What the home page shows about the loaded model, from the Predictor and (when present) its model card.

    Returns name, classes, parameters, val_acc, val_macro_f1, validation_split, selected_epoch,
    trained_at (an ISO string or None) and a flag saying whether the card matches the loaded weights'
    classes. Values the card does not provide are None.
    """
    card = card or {}
    validation = card.get("validation") or {}
    arch = card.get("architecture") or {}
    meta = predictor.meta or {}
    card_classes = card.get("classes")
    return {
        "name": card.get("name") or f"FER Xception-{meta.get('variant', '?')}",
        "classes": list(predictor.class_names),
        "parameters": predictor.parameters,
        "macs_per_face": arch.get("macs_per_face"),
        "val_acc": validation.get("val_acc"),
        "val_macro_f1": validation.get("val_macro_f1"),
        "validation_split": validation.get("split"),
        "selected_epoch": validation.get("epoch", meta.get("epoch")),
        "trained_at": card.get("trained_at") or meta.get("trained_at"),
        "card_matches": card_classes is None or list(card_classes) == list(predictor.class_names),
    }


def format_timestamp(iso: str | None) -> str:
    """'2026-11-25T20:38:07+00:00' -> '2026-11-25 20:38 UTC'; unknown -> 'unknown'."""
    if not iso:
        return "unknown"
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return str(iso)
    zone = t.tzname() or ""
    return t.strftime("%Y-%m-%d %H:%M") + (" UTC" if zone in ("UTC", "UTC+00:00") else f" {zone}".rstrip())
