"""Suspicious labels: the images of a labelled evaluation whose given label the model most confidently disagrees with.

The flagging is cleanlab's (``cleanlab.filter.find_label_issues``, confident learning: Northcutt, Jiang & Chuang,
JAIR 2021) on the calibrated probabilities the evaluation served, ranked by self-confidence (the probability the
model gives the given label, lowest first). cleanlab needs no PyTorch: numpy, pandas and scikit-learn.

An image is only a candidate: the model may be the one that is wrong. The relabel CSV (:func:`relabel_csv`) lists
path, given label, suggested label (the model's most probable class), its probability and an empty ``keep`` column
for a person to fill in (``yes``: the given label stands; ``no``: take the suggestion); :func:`read_relabels` reads
the decisions back (``training.evaluate --relabels``).

:func:`flip_labels` and :func:`flag_quality` measure the method: flip a share of the labels at random, flag, and
count how many of the flagged images are flipped ones (``python -m training.experiments.label_noise_check``).
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import read_text_file
from ..labels import UnknownClassError, canonical_name

RANKED_BY = "self_confidence"  # cleanlab's ranking: the probability of the given label, lowest first
RELABEL_FIELDS = ("rank", "path", "given", "suggested", "confidence", "given_probability", "keep")


def ranked_label_issues(labels: Sequence[int], pred_probs: np.ndarray) -> np.ndarray:
    """Indices of the images cleanlab flags as probably mislabelled, most suspicious first.

    ``labels`` (N,) int given labels in 0..C-1; ``pred_probs`` (N, C) probabilities (rows sum to 1). Sets too small
    for confident learning (a class with very few images) flag nothing, or little, rather than fail.
    """
    from cleanlab.filter import (
        find_label_issues,  # imported here: a second of import time, on the page only on use
    )

    labels = np.asarray(labels, np.int64)
    pred_probs = np.asarray(pred_probs, np.float64)
    if pred_probs.ndim != 2 or labels.shape != (len(pred_probs),):
        raise ValueError(f"need (N, C) probabilities and N labels, got {pred_probs.shape} and {labels.shape}")
    if len(labels) < 2:
        return np.zeros(0, np.int64)
    pred_probs = pred_probs / pred_probs.sum(axis=1, keepdims=True)  # float32 rounding: cleanlab checks the sums
    with warnings.catch_warnings():  # "too few examples in class k": the caller reports what was flagged
        warnings.simplefilter("ignore")
        return np.asarray(find_label_issues(labels, pred_probs, return_indices_ranked_by=RANKED_BY), np.int64)


def suspicious_labels(records: Sequence[dict], class_names: Sequence[str]) -> list[dict]:
    """The evaluation records (:class:`fer_core.analysis.evaluation.EvaluationResult` ``records``) whose label cleanlab
    flags, most suspicious first: one row each with rank (1 = most suspicious), record (its index in ``records``),
    path, given, suggested (the most probable class), confidence (its probability), given_probability and keep
    (empty). Images without a prediction (no face found, unreadable) are left out."""
    names = list(class_names)
    used = [i for i, r in enumerate(records) if r.get("probabilities")]
    if not used:
        return []
    labels = np.asarray([names.index(records[i]["true"]) for i in used])
    probs = np.asarray([[records[i]["probabilities"][n] for n in names] for i in used], np.float64)
    rows = []
    for rank, k in enumerate(ranked_label_issues(labels, probs), start=1):
        rec, p = records[used[k]], probs[k]
        top = int(np.argmax(p))
        rows.append({"rank": rank, "record": used[k], "path": rec["path"], "given": rec["true"],
                     "suggested": names[top], "confidence": round(float(p[top]), 4),
                     "given_probability": round(float(p[labels[k]]), 4), "keep": ""})
    return rows


def relabel_csv(rows: Sequence[dict]) -> bytes:
    """UTF-8 CSV of :func:`suspicious_labels` rows (RELABEL_FIELDS; a header even when there is none), to edit: fill
    ``keep`` with yes (the given label stands) or no (take the suggested one)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RELABEL_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


MAX_RELABEL_BYTES = 32 * 1024 * 1024  # an edited relabel CSV of 100,000 images is about 10 MB


def read_relabel_file(path: str | Path, max_bytes: int = MAX_RELABEL_BYTES) -> str:
    """The text of a relabel CSV (:func:`fer_core.files.read_text_file`: a regular file of at most ``max_bytes``,
    UTF-8 with or without a spreadsheet's BOM); ValueError with the reason otherwise."""
    return read_text_file(path, max_bytes)


def read_relabels(text: str, class_names: Sequence[str]) -> dict[str, int]:
    """The decisions of an edited relabel CSV (:func:`relabel_csv`): ``{path: new label index}`` for every row whose
    ``keep`` is ``no`` (the suggested label replaces the given one); ``yes`` and empty rows change nothing. Labels
    are read like ``keep``: spaces around them and letter case do not matter, and aliases such as "happiness" are
    accepted. Raises ValueError, naming the row, for a CSV without the path / suggested / keep columns, an unknown
    label, or a path that appears twice with different decisions."""
    names = list(class_names)
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    fields = {(f or "").strip().lower(): f for f in reader.fieldnames or ()}
    missing = {"path", "suggested", "keep"} - set(fields)
    if missing:
        raise ValueError(f"the relabel CSV lacks the column(s) {', '.join(sorted(missing))}")
    out, decided_on = {}, {}
    for line, row in enumerate(reader, start=2):
        keep = (row[fields["keep"]] or "").strip().lower()
        if keep not in ("", "yes", "no"):
            raise ValueError(f"line {line}: keep must be yes, no or empty, not {row[fields['keep']]!r}")
        path = (row[fields["path"]] or "").strip()
        decision = None
        if keep == "no":
            suggested = (row[fields["suggested"]] or "").strip()
            try:
                decision = names.index(canonical_name(suggested))
            except (UnknownClassError, ValueError):
                raise ValueError(f"line {line}: {suggested!r} is not one of {', '.join(names)}") from None
        if path in decided_on and decided_on[path][1] != decision:
            raise ValueError(f"line {line}: {path} is on line {decided_on[path][0]} too, with another decision; "
                             "keep one of the two rows")
        decided_on.setdefault(path, (line, decision))
        if decision is not None:
            out[path] = decision
    return out


def flip_labels(labels: Sequence[int], fraction: float, n_classes: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): ``round(fraction * N)`` images drawn at random get another class, drawn
    uniformly among the other ``n_classes - 1``."""
    labels = np.asarray(labels, np.int64)
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flipped = np.zeros(len(labels), bool)
    flipped[rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=int(flipped.sum()))  # 1..C-1: never the same class
    noisy[flipped] = (labels[flipped] + shift) % n_classes
    return noisy, flipped


def flag_quality(ranked: Sequence[int], flipped: np.ndarray, top_fraction: float | None = None) -> dict:
    """How well the flagged images (``ranked``: indices, most suspicious first) find the ``flipped`` ones:
    n_flagged, n_flipped, precision and recall of all flagged, and ``top_k`` / ``precision_top_k``: the precision
    among the ``top_fraction`` (default: the flipped share) of all images ranked most suspicious (fewer when
    fewer are flagged)."""
    ranked = np.asarray(ranked, np.int64)
    flipped = np.asarray(flipped, bool)
    hits = flipped[ranked]
    share = flipped.mean() if top_fraction is None else top_fraction
    k = min(round(share * len(flipped)), len(ranked))
    return {"n_images": len(flipped), "n_flipped": int(flipped.sum()), "n_flagged": len(ranked),
            "precision": float(hits.mean()) if len(ranked) else 0.0,
            "recall": float(hits.sum() / flipped.sum()) if flipped.any() else 0.0,
            "top_k": k, "precision_top_k": float(hits[:k].mean()) if k else 0.0}
