"""Explanations (occlusion sensitivity through the app's backend) on real faces: the heatmap's size, that it depends
on the class asked about, that a smile is explained by the mouth, that maps are never empty and lie on the face
rather than in the crop's corners, that hiding what a map ranks highest lowers the probability more than hiding
random parts (the deletion test of ``training.experiments.explain_faithfulness``), and `python -m fer_core.predict --explain`.

The smiling face is the public-domain NASA portrait of Eileen Collins (scikit-image); the FER2013 checks skip when
../shared/data is absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import group_photo, jpeg_bytes

from fer_core.analysis.datasets import decode_gray, list_labelled_folder
from fer_core.faces.alignment import face_crop
from fer_core.faces.detection import make_detector
from fer_core.faces.preprocessing import faces_to_array, to_gray
from fer_core.model.explain import explain_crop, overlay
from training.experiments.explain_faithfulness import deletion_drops, hide, random_mask

ROOT = Path(__file__).resolve().parent.parent
RING = 6  # pixels: the crop's outer ring (44 % of a 48x48 crop's area)


def ring_share(heat: np.ndarray) -> float:
    """Share of a map's weight in the crop's outer RING pixels."""
    inner = heat[RING:-RING, RING:-RING].sum()
    return float(1 - inner / heat.sum())


@pytest.fixture(scope="module")
def smiling_crop(predictor, face_photos) -> np.ndarray:
    """The astronaut's face as the app classifies it: detected, aligned, 48x48."""
    gray = to_gray(face_photos.arrays["astronaut"])
    face = make_detector().detect(gray)[0]
    return face_crop(gray, face, predictor.preprocess.image_size, predictor.preprocess.face_margin)


@pytest.fixture(scope="module")
def fer_faces(fer_images_dir, predictor) -> list[np.ndarray]:
    """12 FER2013 validation faces, two per class of the first six classes' folders (fixed picks)."""
    files = list_labelled_folder(fer_images_dir / "validation")
    picks = [i for c in range(7) for i in np.flatnonzero(files.labels == c)[:2]][:12]
    return [decode_gray(files.paths[i], predictor.preprocess.image_size) for i in picks]


def test_heatmap_has_the_crops_size_and_depends_on_the_class(predictor, smiling_crop):
    names = list(predictor.class_names)
    maps = explain_crop(predictor.backend, predictor.preprocess, smiling_crop)
    assert maps.shape == (len(names), 48, 48) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    happy, surprise = maps[names.index("happy")], maps[names.index("surprise")]
    assert np.abs(happy - surprise).mean() > 0.1  # different classes are explained by different places
    # Any crop size: the map comes back at that size (the model sees it resized to 48x48).
    big = cv2.resize(smiling_crop, (120, 100))
    assert explain_crop(predictor.backend, predictor.preprocess, big, classes=[3]).shape == (1, 100, 120)
    shown = overlay(smiling_crop, happy, 144)
    assert shown.shape == (144, 144, 3) and shown.dtype == np.uint8


def test_a_smile_is_explained_by_the_mouth(predictor, smiling_crop):
    probs = predictor.classify_crops([smiling_crop])[0]
    names = list(predictor.class_names)
    assert names[int(np.argmax(probs))] == "happy"
    happy = explain_crop(predictor.backend, predictor.preprocess, smiling_crop, classes=[names.index("happy")])[0]
    thirds = [happy[:16].sum(), happy[16:32].sum(), happy[32:].sum()]  # eyes/brows, nose/cheeks, mouth/chin
    assert thirds[2] == max(thirds), thirds
    # The peak is on the mouth: below the nose tip (row 29 of FER2013's framing), between the mouth corners.
    row, col = np.unravel_index(np.argmax(happy), happy.shape)
    assert row >= 29 and 12 <= col <= 36, (row, col)


def test_maps_are_never_empty_and_lie_on_the_face(predictor, smiling_crop, fer_faces):
    """Every class's map of a confident face (the smile: 94 %) and the predicted class's map of real FER2013 faces
    has weight, and less of it in the crop's outer ring than a flat map (44 %); peaks lie inside the ring (a tight
    FER2013 crop may put the brows at its top edge: one face in twelve may peak there)."""
    for heat in explain_crop(predictor.backend, predictor.preprocess, smiling_crop):
        assert heat.max() == pytest.approx(1.0)
    shares, peaks_outside = [], []
    for crop in fer_faces:
        target = int(np.argmax(predictor.classify_crops([crop])[0]))
        heat = explain_crop(predictor.backend, predictor.preprocess, crop, classes=[target])[0]
        assert heat.max() == pytest.approx(1.0)
        row, col = np.unravel_index(np.argmax(heat), heat.shape)
        if not (RING <= row < 48 - RING and RING <= col < 48 - RING):
            peaks_outside.append((row, col))
        shares.append(ring_share(heat))
    assert len(peaks_outside) <= 1, peaks_outside
    assert np.mean(shares) < 0.33, shares


def test_hiding_the_top_of_a_map_lowers_the_probability_more_than_hiding_random_parts(predictor, fer_faces,
                                                                                       smiling_crop):
    args = argparse.Namespace(fraction=0.2, random_masks=4, random_sigma=4.0)
    rng = np.random.default_rng(0)
    passed = []
    for crop in [smiling_crop] + fer_faces[:7]:
        target = int(np.argmax(predictor.classify_crops([crop])[0]))
        heat = explain_crop(predictor.backend, predictor.preprocess, crop, classes=[target])[0]
        x = faces_to_array([crop], predictor.preprocess)[0, 0]
        top, random = deletion_drops(predictor, x, target, heat, args, rng)["mean_blobs"]
        passed.append(top > random)
    assert sum(passed) >= 7, passed


def test_inpainting_hides_a_region_but_not_what_scattered_pixels_carry(predictor, smiling_crop):
    x = faces_to_array([smiling_crop], predictor.preprocess)[0, 0]
    rng = np.random.default_rng(0)
    scattered = random_mask(x.shape, int(0.2 * x.size), 0.0, rng)
    square = np.zeros(x.shape, bool)
    square[30:44, 14:34] = True  # the mouth
    def error(m, fill):  # mean change of the hidden pixels
        return float(np.abs(hide(x, m, fill) - x)[m].mean())

    # scattered pixels come back from their neighbours when inpainted: closer than a hidden mouth, than blurred
    # pixels, and far closer than gray dots
    assert error(scattered, "inpaint") < 0.7 * error(square, "inpaint")
    assert error(scattered, "inpaint") < 0.6 * error(scattered, "blur")
    assert error(scattered, "mean") > 3 * error(scattered, "inpaint")
    for fill in ("mean", "blur", "inpaint"):
        hidden = hide(x, square, fill)
        assert hidden.dtype == np.float32 and np.array_equal(hidden[~square], x[~square])  # only the mask changes


def test_explanations_do_not_change_the_predictions(predictor, smiling_crop):
    before = predictor.classify_crops([smiling_crop])
    explain_crop(predictor.backend, predictor.preprocess, smiling_crop)
    assert np.array_equal(before, predictor.classify_crops([smiling_crop]))


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
