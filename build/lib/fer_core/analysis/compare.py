"""Two models on the same data: is B better than A beyond noise?

A paired evaluation (:func:`fer_core.analysis.evaluation.evaluate_models`: every image through both models, on the same
detected face) gives two predictions per image. From them:

* accuracy and macro-F1 of each model, and the difference B - A, each with a 95 % interval from a paired bootstrap
  over the images (the same resampled images score both models; seeded, so the numbers repeat);
* McNemar's exact test on the disagreements: b images only A gets right, c only B; under "equally accurate" each
  disagreement is a coin flip, and the two-sided binomial test of b in b + c is the p-value (scipy's binomtest);
* per-class recall and F1 of each model and their differences, and the confusion-matrix difference B - A;
* the images where the two predictions differ (the disagreement gallery).

Pure functions over label arrays and evaluation records -> plain, JSON-able results. An image with no prediction
(no face found, unreadable) has the label -1 and counts as wrong for both models.
"""

from __future__ import annotations

import csv
import io
from typing import Sequence

import numpy as np
from scipy.stats import binomtest

N_BOOTSTRAP = 2000  # resamples of the paired bootstrap
CONFIDENCE = 0.95
SEED = 0
BOOTSTRAP_CHUNK = 250  # resamples scored at a time (bounds the (chunk, N) weight matrix)


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """McNemar's exact test of paired right/wrong outcomes: ``b`` (A right, B wrong), ``c`` (A wrong, B right) and
    the two-sided p-value of ``b`` successes in ``b + c`` trials at 1/2 (1.0 when the models never disagree)."""
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b_.shape:
        raise ValueError(f"the two outcome arrays differ in length: {a.shape} and {b_.shape}")
    b, c = int((a & ~b_).sum()), int((~a & b_).sum())
    p = binomtest(b, b + c, 0.5, alternative="two-sided").pvalue if b + c else 1.0
    return {"b": b, "c": c, "p_value": float(p)}


def _weighted_scores(weights: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
                     n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, macro-F1) under each row of ``weights`` (R, N) (how often each image is drawn), as in
    :func:`fer_core.analysis.metrics.classification_summary`: macro-F1 over the classes present in the (weighted) truth,
    F1 = 2 TP / (true + predicted), 0 when undefined; a prediction of -1 is a miss of its true class."""
    total = weights.sum(axis=1)
    accuracy = weights @ (y_true == y_pred) / total
    f1_sum, present = np.zeros(len(weights)), np.zeros(len(weights))
    for k in range(n_classes):
        is_true, is_pred = y_true == k, y_pred == k
        tp, n_true, n_pred = weights @ (is_true & is_pred), weights @ is_true, weights @ is_pred
        denominator = n_true + n_pred
        f1_sum += np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)
        present += n_true > 0
    return accuracy, np.divide(f1_sum, present, out=np.zeros_like(f1_sum), where=present > 0)


def paired_bootstrap(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int], n_classes: int,
                     n_resamples: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = SEED) -> dict:
    """Accuracy and macro-F1 of A and B and their differences B - A: ``{metric: {"a", "b", "difference"}}`` with
    each ``{"value", "low", "high"}``, the interval the percentile interval of ``n_resamples`` paired bootstrap
    resamples of the images (seeded)."""
    y_true, pred_a, pred_b = (np.asarray(v, np.int64) for v in (y_true, pred_a, pred_b))
    if not (len(y_true) == len(pred_a) == len(pred_b)) or not len(y_true):
        raise ValueError("need the same, non-zero number of true labels and predictions of each model")
    n = len(y_true)
    ones = np.ones((1, n))
    point = {m: _weighted_scores(ones, y_true, p, n_classes) for m, p in (("a", pred_a), ("b", pred_b))}
    rng = np.random.default_rng(seed)
    draws = {("a", 0): [], ("a", 1): [], ("b", 0): [], ("b", 1): []}
    for start in range(0, n_resamples, BOOTSTRAP_CHUNK):
        rows = min(BOOTSTRAP_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        weights = np.zeros((rows, n))
        np.add.at(weights, (np.repeat(np.arange(rows), n), idx.ravel()), 1.0)
        for m, p in (("a", pred_a), ("b", pred_b)):
            acc, f1 = _weighted_scores(weights, y_true, p, n_classes)
            draws[(m, 0)].append(acc)
            draws[(m, 1)].append(f1)
    tail = 100 * (1 - confidence) / 2
    out = {}
    for j, metric in enumerate(("accuracy", "macro_f1")):
        a, b = np.concatenate(draws[("a", j)]), np.concatenate(draws[("b", j)])
        values = {"a": (point["a"][j][0], a), "b": (point["b"][j][0], b),
                  "difference": (point["b"][j][0] - point["a"][j][0], b - a)}
        out[metric] = {k: {"value": float(v), "low": float(np.percentile(d, tail)),
                           "high": float(np.percentile(d, 100 - tail))} for k, (v, d) in values.items()}
    return out


def predictions(records: Sequence[dict], class_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predictions) of evaluation records as class indices; -1 where nothing was predicted."""
    names = list(class_names)
    y_true = np.asarray([names.index(r["true"]) for r in records], np.int64)
    y_pred = np.asarray([names.index(r["predicted"]) if r.get("predicted") else -1 for r in records], np.int64)
    return y_true, y_pred


def compare_results(summary_a: dict, records_a: Sequence[dict], summary_b: dict, records_b: Sequence[dict],
                    names: tuple[str, str] = ("A", "B"), n_resamples: int = N_BOOTSTRAP, seed: int = SEED) -> dict:
    """The comparison of two evaluations of the same images (the records in the same order, e.g. from
    :func:`fer_core.analysis.evaluation.evaluate_models`): ``models`` (the two names), ``n_images``, ``accuracy`` and
    ``macro_f1`` (paired bootstrap, :func:`paired_bootstrap`), ``mcnemar`` (:func:`mcnemar_exact`), ``per_class``
    ({class: recall and F1 of A and B and their differences}), ``confusion_difference`` (B - A, rows = true),
    ``labels`` and ``n_disagreements``."""
    labels = list(summary_a["labels"])
    if list(summary_b["labels"]) != labels or len(records_a) != len(records_b):
        raise ValueError("the two evaluations are not of the same images and classes")
    if any(ra["path"] != rb["path"] or ra["true"] != rb["true"] for ra, rb in zip(records_a, records_b)):
        raise ValueError("the two evaluations list different images (or labels); evaluate both models together")
    y_true, pred_a = predictions(records_a, labels)
    _, pred_b = predictions(records_b, labels)
    per_class = {}
    for name in labels:
        pa, pb = summary_a["per_class"][name], summary_b["per_class"][name]
        per_class[name] = {"support": int(pa["support"]),
                           **{f"{m}_{k}": float(p[k]) for m, p in (("a", pa), ("b", pb)) for k in ("recall", "f1")},
                           "recall_difference": float(pb["recall"] - pa["recall"]),
                           "f1_difference": float(pb["f1"] - pa["f1"])}
    return {"models": list(names), "n_images": len(y_true), "labels": labels,
            **paired_bootstrap(y_true, pred_a, pred_b, len(labels), n_resamples, seed=seed),
            "n_resamples": n_resamples, "confidence": CONFIDENCE, "seed": seed,
            "mcnemar": mcnemar_exact(pred_a == y_true, pred_b == y_true),
            "per_class": per_class,
            "confusion_difference": (np.asarray(summary_b["confusion_matrix"])
                                     - np.asarray(summary_a["confusion_matrix"])).tolist(),
            "n_disagreements": int((pred_a != pred_b).sum())}


def disagreements(records_a: Sequence[dict], records_b: Sequence[dict]) -> list[dict]:
    """The images the two models label differently, one dict each: index (into the records), path, true, and per
    model (``a_``/``b_``) predicted, probability (of its prediction) and correct; ordered: B right and A wrong
    first, then A right and B wrong, then both wrong, each by the larger of the two probabilities."""
    rows = []
    for i, (ra, rb) in enumerate(zip(records_a, records_b)):
        if ra.get("predicted") == rb.get("predicted") or not ra.get("predicted"):
            continue
        row = {"index": i, "path": ra["path"], "true": ra["true"]}
        for m, r in (("a", ra), ("b", rb)):
            row.update({f"{m}_predicted": r["predicted"], f"{m}_probability": float(r["probabilities"][r["predicted"]]),
                        f"{m}_correct": r["predicted"] == r["true"]})
        rows.append(row)
    order = {(False, True): 0, (True, False): 1, (False, False): 2}
    return sorted(rows, key=lambda r: (order[(r["a_correct"], r["b_correct"])],
                                       -max(r["a_probability"], r["b_probability"])))


SUMMARY_FIELDS = ("metric", "model", "value", "low", "high")


def comparison_rows(comparison: dict) -> list[dict]:
    """The headline as a table: accuracy and macro-F1 of each model and of the difference, with their interval
    (the model named as in ``comparison['models']``, the difference as "B - A")."""
    a, b = comparison["models"]
    who = {"a": a, "b": b, "difference": f"{b} - {a}"}
    return [{"metric": metric, "model": who[k], **comparison[metric][k]}
            for metric in ("accuracy", "macro_f1") for k in ("a", "b", "difference")]


def comparison_csv(comparison: dict, disagreeing: Sequence[dict]) -> bytes:
    """UTF-8 CSV of the images the models disagree on (path, true, each model's prediction, probability and
    correctness), the models named in the header as ``comparison['models']``."""
    a, b = comparison["models"]
    fields = ["path", "true", "a_predicted", "a_probability", "a_correct", "b_predicted", "b_probability", "b_correct"]
    header = ["path", "true"] + [f"{model} {what}" for model in (a, b) for what in ("predicted", "probability",
                                                                                    "correct")]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([[r[f] for f in fields] for r in disagreeing])
    return buf.getvalue().encode("utf-8")


def comparison_table(comparison: dict) -> str:
    """The comparison as text for a terminal: the two models' scores with intervals, the difference, McNemar's test
    and the per-class recall / F1 deltas (of the classes in the data)."""
    a, b = comparison["models"]
    pct = comparison["confidence"]
    lines = [(f"{comparison['n_images']} images; {pct:.0%} intervals: paired bootstrap, "
              f"{comparison['n_resamples']} resamples, seed {comparison['seed']}"),
             f"{'':<12}{'A: ' + a:>34}{'B: ' + b:>34}{'B - A':>30}"]
    for metric, label, scale, unit in (("accuracy", "accuracy", 100, " %"), ("macro_f1", "macro-F1", 1, "")):
        cells = []
        for k in ("a", "b", "difference"):
            v = comparison[metric][k]
            digits = 2 if scale == 100 else 3
            sign = "+" if k == "difference" else ""
            cells.append(f"{v['value'] * scale:{sign}.{digits}f}{unit} [{v['low'] * scale:{sign}.{digits}f}, "
                         f"{v['high'] * scale:{sign}.{digits}f}]")
        lines.append(f"{label:<12}{cells[0]:>34}{cells[1]:>34}{cells[2]:>30}")
    m = comparison["mcnemar"]
    lines.append(f"McNemar exact test: {m['b']} images only A gets right, {m['c']} only B; p = {m['p_value']:.4g} "
                 f"({comparison['n_disagreements']} images labelled differently)")
    lines.append(f"{'class':<10}{'support':>8}{'recall A':>10}{'recall B':>10}{'delta':>8}{'F1 A':>8}{'F1 B':>8}"
                 f"{'delta':>8}")
    for name, c in comparison["per_class"].items():
        if not c["support"]:
            continue
        lines.append(f"{name:<10}{c['support']:>8}{c['a_recall']:>10.3f}{c['b_recall']:>10.3f}"
                     f"{c['recall_difference']:>+8.3f}{c['a_f1']:>8.3f}{c['b_f1']:>8.3f}{c['f1_difference']:>+8.3f}")
    return "\n".join(lines)
