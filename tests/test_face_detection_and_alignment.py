"""Face detection (RetinaFace with landmarks, Haar fallback) and the alignment / crop geometry.

Real photographs come from scikit-image's bundled public-domain images (the NASA astronaut portrait and
face-free scenes), so these tests need nothing from ../shared.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from fer_core.analysis.datasets import LabelledFiles, person_of, split_by_person
from fer_core.faces.alignment import FRAMING_FILE, align_face, face_crop, fer2013_framing, similarity_transform
from fer_core.faces.detection import Face, HaarFaceDetector, RetinaFaceDetector, make_detector
from fer_core.faces.images import rotate_image
from fer_core.faces.preprocessing import to_gray
from fer_core.labels import EMOTIONS
from training.experiments.face_framing import symmetric_median

skdata = pytest.importorskip("skimage.data", reason="scikit-image (tests/requirements.txt) provides the test photos")


@pytest.fixture(scope="module")
def astronaut_gray() -> np.ndarray:
    return to_gray(skdata.astronaut())


def _eye_angle(face: Face) -> float:
    (lx, ly), (rx, ry) = face.landmarks[:2]
    return float(np.degrees(np.arctan2(ry - ly, rx - lx)))


# ---- detector ---------------------------------------------------------------------------------------

def test_retinaface_finds_the_face_with_landmarks_inside_the_box(astronaut_gray):
    faces = RetinaFaceDetector().detect(astronaut_gray)
    assert len(faces) == 1
    face = faces[0]
    x, y, w, h = face.box
    assert 150 <= x <= 200 and 40 <= y <= 90 and 80 <= w <= 130  # the astronaut's face, not her suit or the flag
    assert face.score > 0.9 and len(face.landmarks) == 5
    for px, py in face.landmarks:
        assert x <= px <= x + w and y <= py <= y + h
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lx < nx < rx and mlx < mrx  # eye on the image's left first, then right
    assert max(ly, ry) < ny < min(mly, mry)  # eyes above the nose tip, mouth below it


@pytest.mark.parametrize("name", ["coffee", "rocket", "horse", "brick", "grass", "text", "coins", "chelsea"])
def test_no_face_on_face_free_photos(name):
    image = getattr(skdata, name)()
    assert make_detector().detect(to_gray(image)) == []


def test_no_face_on_blank_or_noise():
    detector = make_detector()
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((480, 640), 128, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (480, 640), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((0, 0), np.uint8)) == []


@pytest.mark.parametrize("roll", [-45, -20, 20, 45])
def test_rolled_face_is_found_and_its_eye_line_follows_the_roll(astronaut_gray, roll):
    upright = _eye_angle(make_detector().detect(astronaut_gray)[0])
    faces = make_detector().detect(rotate_image(astronaut_gray, roll))
    assert len(faces) == 1
    assert _eye_angle(faces[0]) == pytest.approx(upright - roll, abs=6)  # image y points down: a CCW roll lowers it


def test_small_and_dark_faces_are_found(astronaut_gray):
    face = make_detector().detect(astronaut_gray)[0]
    scale = 40 / face.box[2]  # the face 40 px wide in a 640x480 frame
    small = cv2.resize(astronaut_gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640), 110, np.uint8)
    frame[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    found = make_detector().detect(frame)
    assert len(found) == 1 and 30 <= found[0].box[2] <= 55
    dark = (astronaut_gray.astype(np.float32) * 0.2).astype(np.uint8)
    assert len(make_detector().detect(dark)) == 1


def test_haar_stays_available_as_a_fallback(astronaut_gray):
    faces = make_detector("haar").detect(astronaut_gray)
    assert isinstance(make_detector("haar"), HaarFaceDetector)
    assert len(faces) == 1 and faces[0].landmarks == ()
    with pytest.raises(ValueError, match="unknown face detector"):
        make_detector("mtcnn")


# ---- alignment geometry -----------------------------------------------------------------------------

def test_similarity_transform_recovers_a_known_rotation_scale_and_shift():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = np.radians(25), 0.4, np.array([7.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = similarity_transform(src, src @ rot.T + shift)
    assert np.allclose(m[:, :2], rot, atol=1e-9) and np.allclose(m[:, 2], shift, atol=1e-9)


def test_synthetic_face_comes_out_level_and_framed_as_fer2013():
    """Five bright dots at known 'landmarks' of a face rolled by 30 degrees land on the FER2013 framing."""
    framing = fer2013_framing()
    target = framing.points(48)
    angle = np.radians(30)
    rot = 5.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    marks = (target - 24) @ rot.T + [320, 240]  # a 5x larger face, rolled, in a 640x480 image
    image = np.zeros((480, 640), np.uint8)
    for x, y in marks:
        cv2.circle(image, (int(round(x)), int(round(y))), 8, 255, -1)
    crop = align_face(image, marks, 48)
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    _, _, _, centroids = cv2.connectedComponentsWithStats((crop > 60).astype(np.uint8))
    found = sorted(centroids[1:].tolist())
    assert len(found) == 5
    for x, y in target:
        assert min(np.hypot(fx - x, fy - y) for fx, fy in found) < 1.0


def test_a_rolled_photo_gives_the_same_aligned_crop(astronaut_gray):
    detector = make_detector()
    upright = face_crop(astronaut_gray, detector.detect(astronaut_gray)[0])
    similarity = lambda a, b: float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])
    for roll in (-45, -20, 25, 40):
        rolled = rotate_image(astronaut_gray, roll)
        face = detector.detect(rolled)[0]
        aligned = similarity(face_crop(rolled, face), upright)
        unaligned = similarity(face_crop(rolled, Face(face.box)), upright)
        assert aligned > 0.85, f"aligned crop at {roll} degrees correlates {aligned:.2f} with the upright one"
        assert unaligned < 0.6  # without alignment the crops differ: the check above is not trivial


def test_shipped_framing_is_symmetric_and_has_fer2013_proportions():
    doc = json.loads(FRAMING_FILE.read_text())
    pts = np.asarray(doc["landmarks"])
    assert doc["faces_found"] > 0.9 * doc["images"]
    assert pts[0, 1] == pytest.approx(pts[1, 1]) and pts[0, 0] == pytest.approx(1 - pts[1, 0])  # level, centred
    assert 0.3 < pts[0, 1] < 0.45 and 0.7 < pts[3, 1] < 0.85  # eyes in the upper half, mouth near the bottom
    assert 0.3 < pts[1, 0] - pts[0, 0] < 0.45  # eye distance about a third of the crop


def test_symmetric_median_averages_a_face_with_its_mirror_image():
    face = np.array([[[0.30, 0.38], [0.70, 0.40], [0.52, 0.60], [0.35, 0.75], [0.66, 0.77]]])
    med = symmetric_median(face)
    assert med[0] == pytest.approx([0.30, 0.39]) and med[1] == pytest.approx([0.70, 0.39])
    assert med[2, 0] == pytest.approx(0.5)


# ---- pipeline: pre-cropped faces, person split ------------------------------------------------------

def test_a_48px_face_crop_is_classified_as_one_face_without_asking(predictor, astronaut_gray):
    crop = face_crop(astronaut_gray, make_detector().detect(astronaut_gray)[0])  # a FER2013-like 48x48 face
    faces = predictor.predict(crop, tta=False)
    assert len(faces) == 1
    assert set(faces[0].probabilities) == set(EMOTIONS)
    blank = np.full((48, 48), 90, np.uint8)  # even with no face found, a face-sized image is one face
    assert predictor.predict(blank, tta=False)[0].whole_image


def test_predictions_carry_the_detected_landmarks(predictor):
    faces = predictor.predict(skdata.astronaut(), tta=False)
    assert len(faces) == 1 and len(faces[0].face.landmarks) == 5
    doc = faces[0].to_dict()
    assert len(doc["landmarks"]) == 5 and doc["detector_score"] > 0.9


def test_person_split_never_puts_one_person_in_both_parts():
    paths = [f"/d/{c}/cfee_id{p}_{p:04d}{i}.jpg" for p in range(40) for i, c in enumerate(["happy", "sad"])]
    from pathlib import Path
    files = LabelledFiles([Path(p) for p in paths], np.tile([3, 4], 40))
    train, test = split_by_person(files, "train"), split_by_person(files, "test")
    people = lambda fs: {person_of(p) for p in fs.paths}
    assert people(train).isdisjoint(people(test)) and len(train) + len(test) == len(files)
    assert len(people(test)) == 12  # 30 % of 40 people
    assert split_by_person(files, "test").paths == test.paths  # deterministic
    assert person_of("cfee_id113_0113.jpg") == "cfee_id113"


def test_annotation_marks_the_landmarks_the_face_was_aligned_on(predictor):
    from fer_core.faces.drawing import annotate

    image = skdata.astronaut()
    faces = predictor.predict(image, tta=False)
    out = annotate(image, faces)
    for x, y in faces[0].face.landmarks:
        assert tuple(out[int(round(y)), int(round(x))]) == (255, 255, 255)
    haar = predictor.predict(image, make_detector("haar"), tta=False)  # no landmarks: no dots
    plain = annotate(image, haar)
    x, y = faces[0].face.landmarks[2]
    assert tuple(plain[int(round(y)), int(round(x))]) == tuple(image[int(round(y)), int(round(x))])
