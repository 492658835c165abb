"""Calibration: ECE and NLL on examples with known answers, the temperature fit, the shipped temperature, and the
"uncertain" policy in the results a user downloads and in the video frames.

Needs nothing from ../shared (the shipped temperature on FER2013 validation is tested in test_shipped_model.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from video_helpers import switching_video

from fer_core.analysis.photos import analyse_image, results_csv, results_json
from fer_core.faces.detection import make_detector
from fer_core.model.calibration import (
    THRESHOLD_RANGE,
    UNCERTAIN,
    calibration_summary,
    confidence_histograms,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    tta_nll,
    uncertain_label,
    uncertain_threshold,
)
from fer_core.model.checkpoint import load_checkpoint, save_checkpoint
from fer_core.model.inference import Predictor, probabilities_from_view_logits
from fer_core.video.frames import FramePipeline, FrameSettings
from fer_core.video.live import canvas_from_photos

ROOT = Path(__file__).resolve().parent.parent


def test_ece_of_a_constructed_example_is_its_known_value():
    # 5 faces at confidence 0.75, 4 of them right: accuracy 0.8, gap 0.05.
    # 5 faces at confidence 0.40, 1 of them right: accuracy 0.2, gap 0.20.
    # Half of the faces in each bin: ECE = 0.5 * 0.05 + 0.5 * 0.20 = 0.125.
    confident = [0.75, 0.15, 0.10]
    unsure = [0.40, 0.35, 0.25]
    probs = np.array([confident] * 5 + [unsure] * 5)
    labels = np.array([0, 0, 0, 0, 1] + [0, 1, 1, 2, 2])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.125)
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 10
    full = [b for b in bins if b["count"]]
    assert [(b["count"], b["accuracy"], b["confidence"]) for b in full] == [
        (5, pytest.approx(0.2), pytest.approx(0.40)), (5, pytest.approx(0.8), pytest.approx(0.75))]
    assert full[0]["lower"] < 0.40 <= full[0]["upper"] and full[1]["lower"] < 0.75 <= full[1]["upper"]
    # NLL: the mean of -log p(true class) over the ten faces.
    expected_nll = -(4 * math.log(0.75) + math.log(0.15) + math.log(0.40) + math.log(0.35) * 2
                     + math.log(0.25) * 2) / 10
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected_nll)
    summary = calibration_summary(probs, labels)
    assert summary["ece"] == pytest.approx(0.125) and summary["n"] == 10


def test_a_perfectly_calibrated_model_has_zero_ece_and_histograms_count_every_face():
    probs = np.array([[0.5, 0.5, 0.0]] * 4)  # confidence 0.5 (ties: argmax picks class 0), right half of the time
    labels = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    hist = confidence_histograms(probs, labels, ["a", "b", "c"])
    assert sum(hist["a"]["correct"]) == 2 and sum(hist["a"]["wrong"]) == 2
    assert sum(map(sum, hist["b"].values())) == 0 and len(hist["a"]["correct"]) == 15


def overconfident_toy(n: int = 3000, classes: int = 7, views: int = 6, scale: float = 4.0, seed: int = 0):
    """(V, N, C) logits of a toy model whose calibrated logits, multiplied by ``scale``, are what it outputs:
    labels are drawn from softmax(true logits), so T = scale undoes the over-confidence."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0, 1.5, (n, classes))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    noise = rng.normal(0, 0.3, (views, n, classes))  # the views differ a little, as TTA views do
    return (scale * (true_logits[None] + noise)).astype(np.float32), labels


def test_temperature_fit_lowers_nll_and_ece_of_an_overconfident_model():
    logits, labels = overconfident_toy()
    t = fit_temperature(logits, labels)
    assert 3.0 < t < 5.5  # about the factor the logits were inflated by
    assert tta_nll(logits, labels, t) < tta_nll(logits, labels, 1.0) - 0.2
    before = probabilities_from_view_logits(logits, 1.0)
    after = probabilities_from_view_logits(logits, t)
    assert expected_calibration_error(after, labels) < 0.5 * expected_calibration_error(before, labels)
    assert np.allclose(after.sum(1), 1.0, atol=1e-5)
    # Without TTA (one view) the same works.
    t1 = fit_temperature(logits[:1], labels)
    assert tta_nll(logits[:1], labels, t1) < tta_nll(logits[:1], labels, 1.0)


def test_predictor_applies_the_checkpoint_temperature(tmp_path, face_photos):
    """The temperature in the checkpoint meta changes the probabilities as softmax(logits / T) per view; an old
    checkpoint without one gets T = 1 (the raw softmax)."""
    model, preprocess, names, meta = load_checkpoint(ROOT / "artifacts" / "model.pt")
    plain = {k: v for k, v in meta.items() if not k.startswith("temperature") and k != "calibration"}
    save_checkpoint(tmp_path / "old.pt", model, preprocess, plain, names)
    save_checkpoint(tmp_path / "hot.pt", model, preprocess, {**plain, "temperature": 2.0, "temperature_no_tta": 3.0},
                    names)
    old, hot = Predictor.from_checkpoint(tmp_path / "old.pt"), Predictor.from_checkpoint(tmp_path / "hot.pt")
    assert (old.temperature, old.temperature_no_tta) == (1.0, 1.0)
    crop = face_photos.arrays["astronaut_head"][40:190, 20:170].mean(axis=2).astype(np.uint8)
    for tta, t in ((True, 2.0), (False, 3.0)):
        logits = old.view_logits([crop], tta=tta)
        assert np.allclose(old.classify_crops([crop], tta=tta), probabilities_from_view_logits(logits, 1.0), atol=1e-5)
        assert np.allclose(hot.classify_crops([crop], tta=tta), probabilities_from_view_logits(logits, t), atol=1e-5)
        assert hot.classify_crops([crop], tta=tta).max() < old.classify_crops([crop], tta=tta).max()  # T > 1: softer


def test_the_shipped_checkpoint_carries_its_fitted_temperatures(predictor):
    assert predictor.meta["temperature"] == predictor.temperature and 0.3 < predictor.temperature < 3.0
    assert 0.3 < predictor.temperature_no_tta < 3.0 and predictor.temperature != 1.0
    held = predictor.meta["calibration"]["heldout"]["tta"]
    assert held["ece_after"] < held["ece_before"] and held["nll_after"] < held["nll_before"]


def test_default_uncertain_threshold_is_where_faces_are_as_often_right_as_wrong():
    """On calibrated confidences the threshold is 0.5; on an over-confident model (right with probability c**2 at
    confidence c, as on faces unlike the training set) it moves up to about sqrt(0.5); no usable threshold when
    correctness does not rise with confidence."""
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.15, 1.0, 20_000)
    assert uncertain_threshold(conf, rng.uniform(size=conf.size) < conf) == pytest.approx(0.5, abs=0.03)
    over = uncertain_threshold(conf, rng.uniform(size=conf.size) < conf ** 2)
    assert 0.62 < over < 0.75
    assert uncertain_threshold(conf, rng.uniform(size=conf.size) < 1.0 - conf) is None  # falls with confidence
    assert uncertain_threshold(conf, np.ones(conf.size, bool)) is None  # never wrong: nothing to fit
    weighted = uncertain_threshold(conf, rng.uniform(size=conf.size) < conf, weights=np.full(conf.size, 3.0))
    assert weighted == pytest.approx(0.5, abs=0.03)
    assert THRESHOLD_RANGE[0] <= over <= THRESHOLD_RANGE[1]


def test_predictor_reads_the_default_threshold_from_the_weights(tmp_path):
    """The shipped weights carry a threshold per mode (training.calibrate --write); weights without one, or with an
    unusable value, give None (the pages then start at 0.50) rather than an error."""
    shipped = Predictor.from_checkpoint(ROOT / "artifacts" / "model.pt")
    for tta in (True, False):
        assert 0.3 < shipped.uncertain_below_for(tta) < 0.9
    model, preprocess, names, meta = load_checkpoint(ROOT / "artifacts" / "model.pt")
    for value in (None, float("nan"), 1.5, True):
        plain = {k: v for k, v in meta.items() if not k.startswith("uncertain_below")}
        if value is not None:
            plain["uncertain_below"] = value
        save_checkpoint(tmp_path / "m.pt", model, preprocess, plain, names)
        assert Predictor.from_checkpoint(tmp_path / "m.pt").uncertain_below_for(True) is None


def test_uncertain_policy_is_off_by_default_and_applies_below_the_threshold():
    assert uncertain_label("happy", 0.2) == "happy"  # off: always the expression
    assert uncertain_label("happy", 0.49, 0.5) == UNCERTAIN
    assert uncertain_label("happy", 0.5, 0.5) == "happy"
    with pytest.raises(ValueError):
        uncertain_label("happy", 0.5, 1.5)


def test_uncertain_faces_in_the_downloads(predictor, face_photos):
    detector = make_detector()
    photo = face_photos.path("astronaut").read_bytes()
    plain = analyse_image(predictor, detector, photo, "a.jpg")
    strict = analyse_image(predictor, detector, photo, "a.jpg", uncertain_below=0.99)
    top = plain.faces[0].label
    assert top == "happy" and plain.labels() == ["happy"] and strict.labels() == [UNCERTAIN]
    assert list(csv.DictReader(io.StringIO(results_csv([plain], predictor.class_names).decode())))[0]["label"] == top
    assert list(csv.DictReader(io.StringIO(results_csv([strict], predictor.class_names).decode())))[0]["label"] == \
        UNCERTAIN
    doc = json.loads(results_json([strict]))[0]
    assert doc["uncertain_below"] == 0.99
    assert doc["faces"][0]["label"] == UNCERTAIN and doc["faces"][0]["top_label"] == top
    assert "uncertain_below" not in json.loads(results_json([plain]))[0]  # off: the JSON is as before
    assert not np.array_equal(plain.annotated, strict.annotated)  # the caption on the picture says it too
    assert len(strict.crops) == 1 and strict.crops[0].shape == (48, 48)


def test_uncertain_faces_in_live_and_video_frames(predictor, face_photos):
    """The frame pipeline behind the live page and video files labels faces under the threshold "uncertain"."""
    frame = canvas_from_photos([face_photos.arrays["astronaut_head"]])[:, :, ::-1].copy()  # BGR
    labels = {}
    for threshold in (None, 0.99):
        pipeline = FramePipeline(predictor, FrameSettings(mirror=False, uncertain_below=threshold))
        labels[threshold] = [f.label for f in pipeline.process(frame.copy()).faces]
    assert labels[None] == ["happy"] and labels[0.99] == [UNCERTAIN]
    with pytest.raises(ValueError):
        FrameSettings(uncertain_below=-0.1)


def test_command_lines_label_unsure_faces(face_photos, tmp_path):
    """`fer_core.predict --uncertain-below` (JSON keeps the most likely expression as top_label) and
    `fer_core.video --uncertain-below` (its CSV rows); a threshold outside 0-1 is refused with a message."""
    photo = str(face_photos.path("astronaut"))
    done = subprocess.run([sys.executable, "-m", "fer_core.predict", photo, "--json", "--uncertain-below", "0.99"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    face = json.loads(done.stdout)[0]["faces"][0]
    assert (face["label"], face["top_label"]) == (UNCERTAIN, "happy")
    bad = subprocess.run([sys.executable, "-m", "fer_core.predict", photo, "--uncertain-below", "1.5"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "probability between 0 and 1" in bad.stderr and "Traceback" not in bad.stderr

    clip = switching_video(tmp_path / "clip.mp4", seconds=1.0, switch_s=0.5)
    table = tmp_path / "rows.csv"
    done = subprocess.run([sys.executable, "-m", "fer_core.video", str(clip), "--fps", "5", "--csv", str(table),
                           "--uncertain-below", "0.99"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(table.open()))
    assert rows and all((r["label"] == UNCERTAIN) == (float(r["confidence"]) < 0.99) for r in rows)
