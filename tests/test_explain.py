"""Grad-CAM explanations on a real face photo: the heatmap's size, that it depends on the class asked about, that
a smile is explained by the mouth, and `python -m fer_core.predict --explain`.

The photo is the public-domain NASA portrait of Eileen Collins (scikit-image), who smiles; nothing from ../shared.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_core.alignment import face_crop
from fer_core.explain import explain_crop, overlay
from fer_core.face_detection import make_detector
from fer_core.preprocessing import to_gray

from helpers import group_photo, jpeg_bytes

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def smiling_crop(predictor, face_photos) -> np.ndarray:
    """The astronaut's face as the app classifies it: detected, aligned, 48x48."""
    gray = to_gray(face_photos.arrays["astronaut"])
    face = make_detector().detect(gray)[0]
    return face_crop(gray, face, predictor.preprocess.image_size, predictor.preprocess.face_margin)


def test_heatmap_has_the_crops_size_and_depends_on_the_class(predictor, smiling_crop):
    names = list(predictor.class_names)
    maps = explain_crop(predictor.model, predictor.preprocess, smiling_crop)
    assert maps.shape == (len(names), 48, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    happy, surprise = maps[names.index("happy")], maps[names.index("surprise")]
    assert np.abs(happy - surprise).mean() > 0.1  # different classes are explained by different places
    # Any crop size: the map comes back at that size (the model sees it resized to 48x48).
    big = cv2.resize(smiling_crop, (120, 100))
    assert explain_crop(predictor.model, predictor.preprocess, big, classes=[3]).shape == (1, 100, 120)
    shown = overlay(smiling_crop, happy, 144)
    assert shown.shape == (144, 144, 3) and shown.dtype == np.uint8


def test_a_smile_is_explained_by_the_lower_face_not_the_top_edge(predictor, smiling_crop):
    probs = predictor.classify_crops([smiling_crop])[0]
    names = list(predictor.class_names)
    assert names[int(np.argmax(probs))] == "happy"
    happy = explain_crop(predictor.model, predictor.preprocess, smiling_crop, classes=[names.index("happy")])[0]
    lower_half, top_edge = happy[24:].mean(), happy[:8].mean()
    assert lower_half > 3 * top_edge, (lower_half, top_edge)
    # The peak is on the mouth: below the nose tip (row 29 of FER2013's framing), between the mouth corners.
    row, col = np.unravel_index(np.argmax(happy), happy.shape)
    assert row >= 29 and 12 <= col <= 36, (row, col)


def test_explanations_do_not_change_the_model(predictor, smiling_crop):
    before = predictor.classify_crops([smiling_crop])
    explain_crop(predictor.model, predictor.preprocess, smiling_crop)
    assert not predictor.model.training and np.array_equal(before, predictor.classify_crops([smiling_crop]))
    assert all(p.grad is None for p in predictor.model.parameters())  # no gradients left on the shared model


def test_predict_cli_writes_one_heatmap_per_face(tmp_path):
    photo = tmp_path / "group.jpg"
    photo.write_bytes(jpeg_bytes(group_photo()))
    out = tmp_path / "heatmaps"
    proc = subprocess.run([sys.executable, "-m", "fer_core.predict", str(photo), "--explain", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3 and proc.stdout.count("heatmap ") == 3
    assert all(p.name.startswith("001_group_face") for p in pngs)
    assert all(cv2.imread(str(p)).shape == (192, 192, 3) for p in pngs)
