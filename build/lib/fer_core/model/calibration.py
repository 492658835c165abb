"""Calibration: how far the model's confidence can be trusted, temperature scaling, and the "uncertain" policy.

Pure functions over arrays -> plain, JSON-able results.

* :func:`expected_calibration_error` is the top-label ECE with equal-width bins (15 by default, as in Guo et al.,
  "On Calibration of Modern Neural Networks", ICML 2017): the share-weighted mean over bins of
  |accuracy - mean confidence|, where a face's confidence is its highest probability.
* :func:`fit_temperature` finds the one scalar T that minimises the negative log-likelihood of
  ``mean over views of softmax(logits / T)``: exactly how :func:`fer_core.model.inference.predict_probabilities`
  turns the logits of the test-time views into probabilities, so T is fitted for the app as it runs.
* :func:`uncertain_label` is the one confidence policy of the pages, the CLI and the downloads: below a
  threshold the face is labelled :data:`UNCERTAIN` instead of a forced expression.
* :func:`uncertain_threshold` is that threshold's default: the confidence below which a face is more likely wrong
  than right, fitted on calibration faces (``training.calibrate``) and shipped in the checkpoint's meta.
"""

from __future__ import annotations

import argparse
import math
from numbers import Real
from typing import Sequence

import numpy as np

from .inference import probabilities_from_view_logits

N_BINS = 15  # equal-width confidence bins of the ECE and the reliability diagram
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range of fit_temperature
UNCERTAIN = "uncertain"  # the label of a face whose confidence is below the user's threshold
THRESHOLD_RANGE = (0.20, 0.95)  # the thresholds the pages offer (their slider's range)
_EPS = 1e-12  # probabilities are clipped here before the log (a probability of exactly 0 would be -inf)


def _checked(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    if probs.ndim != 2 or labels.shape != (len(probs),):
        raise ValueError(f"need (N, C) probabilities and N labels, got {probs.shape} and {labels.shape}")
    if len(labels) and not (0 <= labels.min() and labels.max() < probs.shape[1]):
        raise ValueError("labels must be class indices 0..C-1")
    return probs, labels


def bin_index(confidences, n_bins: int = N_BINS) -> np.ndarray:
    """Bin of each confidence in [0, 1]: bin b holds (b/n, (b+1)/n], bin 0 also holds 0."""
    c = np.asarray(confidences, np.float64)
    return np.clip(np.ceil(c * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def reliability_bins(probs, labels, n_bins: int = N_BINS) -> list[dict]:
    """One dict per equal-width bin of top-label confidence: lower, upper, count, accuracy and mean confidence
    of the faces in it (accuracy and confidence are None for an empty bin)."""
    probs, labels = _checked(probs, labels)
    conf = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = probs.argmax(axis=1) == labels if len(probs) else np.zeros(0, bool)
    idx = bin_index(conf, n_bins)
    out = []
    for b in range(n_bins):
        members = idx == b
        n = int(members.sum())
        out.append({"lower": b / n_bins, "upper": (b + 1) / n_bins, "count": n,
                    "accuracy": float(correct[members].mean()) if n else None,
                    "confidence": float(conf[members].mean()) if n else None})
    return out


def ece_from_bins(bins: Sequence[dict]) -> float:
    """The expected calibration error of :func:`reliability_bins`' output."""
    total = sum(b["count"] for b in bins)
    if not total:
        return 0.0
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def expected_calibration_error(probs, labels, n_bins: int = N_BINS) -> float:
    """Top-label ECE in [0, 1] of (N, C) probabilities against N integer labels, ``n_bins`` equal-width bins."""
    return ece_from_bins(reliability_bins(probs, labels, n_bins))


def negative_log_likelihood(probs, labels, weights=None) -> float:
    """Mean -log p(true class) in nats (probabilities clipped at 1e-12); with ``weights`` (N,), their weighted
    mean (e.g. every domain of a mixed set counted alike)."""
    probs, labels = _checked(probs, labels)
    if not len(labels):
        return 0.0
    return float(-np.average(np.log(np.clip(probs[np.arange(len(labels)), labels], _EPS, 1.0)), weights=weights))


def calibration_summary(probs, labels, n_bins: int = N_BINS) -> dict:
    """{"ece", "nll", "n", "reliability": bins} of (N, C) probabilities against N labels."""
    bins = reliability_bins(probs, labels, n_bins)
    return {"ece": ece_from_bins(bins), "nll": negative_log_likelihood(probs, labels), "n": int(len(labels)),
            "reliability": bins}


def confidence_histograms(probs, labels, class_names: Sequence[str], n_bins: int = N_BINS) -> dict:
    """Per predicted class, how many faces fell in each confidence bin, split into right and wrong:
    ``{class: {"correct": [n_bins counts], "wrong": [n_bins counts]}}`` (bins as in :func:`reliability_bins`)."""
    probs, labels = _checked(probs, labels)
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, np.int64)
    idx = bin_index(probs.max(axis=1) if len(probs) else np.zeros(0), n_bins)
    right = pred == labels
    out = {}
    for c, name in enumerate(class_names):
        mine = pred == c
        out[name] = {kind: np.bincount(idx[mine & mask], minlength=n_bins).tolist()
                     for kind, mask in (("correct", right), ("wrong", ~right))}
    return out


def tta_nll(view_logits, labels, temperature: float, weights=None) -> float:
    """NLL of the app's probabilities (mean over views of softmax(logits / T)) for (V, N, C) logits."""
    return negative_log_likelihood(probabilities_from_view_logits(view_logits, temperature), labels, weights)


def pool_alike(sets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several sets of (V, N_i, C) view logits and (N_i,) labels -> one (V, N, C) array, its labels, and (N,) weights
    that make every set count alike (1 / N_i each), for :func:`fit_temperature` and :func:`uncertain_threshold` on
    a mix of domains. Faces without logits (NaN: no face found in the photo) are left out."""
    logits, labels, weights = [], [], []
    for view_logits, set_labels in sets:
        found = ~np.isnan(np.asarray(view_logits)[0, :, 0])
        logits.append(np.asarray(view_logits)[:, found])
        labels.append(np.asarray(set_labels)[found])
        weights.append(np.full(int(found.sum()), 1.0 / max(int(found.sum()), 1)))
    return np.concatenate(logits, axis=1), np.concatenate(labels), np.concatenate(weights)


def fit_temperature(view_logits, labels, bounds: tuple[float, float] = TEMPERATURE_BOUNDS, weights=None) -> float:
    """The temperature T in ``bounds`` that minimises :func:`tta_nll` on (V, N, C) logits (V = 1 without TTA),
    each face weighted by ``weights`` (N,) when given.

    A bounded 1-D search over log T (Brent's method, scipy): the NLL of one scalar is smooth and has one
    minimum in practice, and the log scale treats halving and doubling T alike.
    """
    view_logits = np.asarray(view_logits, np.float32)
    labels = np.asarray(labels, np.int64)
    if view_logits.ndim != 3 or view_logits.shape[1] != len(labels) or not len(labels):
        raise ValueError(f"need (V, N, C) logits and N > 0 labels, got {view_logits.shape} and {labels.shape}")
    low, high = (math.log(b) for b in bounds)
    from scipy.optimize import (
        minimize_scalar,  # here, not at import: the pages import this module for its policy
    )

    res = minimize_scalar(lambda log_t: tta_nll(view_logits, labels, math.exp(log_t), weights), bounds=(low, high),
                          method="bounded", options={"xatol": 1e-4})
    return float(math.exp(res.x))


def check_threshold(threshold: float | None) -> float | None:
    """None (the policy off) or a number in [0, 1]; anything else is a ValueError."""
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not (isinstance(threshold, Real) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"the uncertainty threshold must be a probability in [0, 1], got {threshold!r}")
    return float(threshold)


UNCERTAIN_BELOW_HELP = (f"label a face '{UNCERTAIN}' when its top (calibrated) probability is below P, a number in "
                        "0-1 (default: off)")


def threshold_arg(text: str) -> float:
    """argparse ``type`` of a probability in [0, 1]: the command lines' ``--uncertain-below``, and training's shares
    (``--blend-prob``, ``--grey-mix``, ``--mixstyle``)."""
    try:
        return check_threshold(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text!r}") from None


def uncertain_label(label: str, confidence: float, threshold: float | None = None) -> str:
    """The label to show: ``label``, or :data:`UNCERTAIN` when the policy is on (``threshold`` not None) and the
    face's top probability ``confidence`` is below ``threshold``. Off (None) by default: always ``label``."""
    threshold = check_threshold(threshold)
    return UNCERTAIN if threshold is not None and confidence < threshold else label


def uncertain_threshold(confidences, correct, weights=None, target: float = 0.5) -> float | None:
    """The top-probability confidence at which a face is right with probability ``target`` (default: as often
    right as wrong), from a weighted logistic fit of P(correct | confidence) on calibration faces: below it, a
    face is more likely wrong than right. Clipped to :data:`THRESHOLD_RANGE`; None when correctness does not rise
    with confidence (no usable threshold) or there are fewer than two classes of outcome.

    On perfectly calibrated probabilities this is ``target`` itself; where the model is over-confident (faces of
    people and studios unlike its training set), it is higher.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(confidences, np.float64).reshape(-1, 1)
    y = np.asarray(correct, bool)
    if x.shape[0] != len(y) or len(np.unique(y)) < 2:
        return None
    fit = LogisticRegression(C=1e6).fit(x, y, sample_weight=weights)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not slope > 0:
        return None
    t = (math.log(target / (1.0 - target)) - intercept) / slope
    return float(np.clip(t, *THRESHOLD_RANGE))
