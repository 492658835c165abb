"""The live page's face tracker and probability smoothing, on synthetic boxes and probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from fer_core.video.tracking import ExponentialSmoother, FaceTracker, iou


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (20, 20, 10, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_id_stays_stable_while_a_face_moves_across_the_frame():
    tracker = FaceTracker()
    first = tracker.update([(100, 100, 80, 80)])
    ids = [tracker.update([(100 + 12 * step, 100 + 3 * step, 80, 80)])[0] for step in range(1, 30)]
    assert set(ids) == set(first) == {1}


def test_fast_motion_without_overlap_is_still_followed_by_centre_distance():
    tracker = FaceTracker(max_centre_distance=0.6)
    (a,) = tracker.update([(100, 100, 80, 80)])
    (b,) = tracker.update([(145, 100, 80, 80)])  # moved 45 px: IoU ~0.28 < 0.3, centre within 0.6 face sizes
    assert a == b


def test_two_faces_keep_their_own_ids_whatever_the_detection_order():
    tracker = FaceTracker()
    left, right = tracker.update([(50, 100, 80, 80), (400, 100, 80, 80)])
    assert left != right
    # The detector lists faces largest first, so the order can swap from frame to frame.
    r2, l2 = tracker.update([(405, 102, 80, 80), (52, 101, 80, 80)])
    assert (l2, r2) == (left, right)


def test_a_new_face_gets_a_new_id_and_ids_are_never_reused():
    tracker = FaceTracker(max_missed=1)
    (a,) = tracker.update([(100, 100, 80, 80)])
    a2, b = tracker.update([(102, 100, 80, 80), (400, 200, 90, 90)])
    assert a2 == a and b not in (a,)
    tracker.reset()
    (c,) = tracker.update([(100, 100, 80, 80)])
    assert c not in (a, b)


def test_a_lost_face_is_kept_for_max_missed_updates_then_dropped():
    tracker = FaceTracker(max_missed=3)
    (a,) = tracker.update([(100, 100, 80, 80)])
    for missed in range(1, 4):
        tracker.update([])
        assert [t.track_id for t in tracker.tracks] == [a]
        assert tracker.tracks[0].missed == missed
    (back,) = tracker.update([(104, 100, 80, 80)])  # came back within the limit: same face
    assert back == a
    for _ in range(4):
        tracker.update([])
    assert tracker.tracks == []
    (later,) = tracker.update([(104, 100, 80, 80)])  # gone too long: a new face
    assert later != a


def test_smoothing_converges_geometrically_and_keeps_a_probability_vector():
    smoother = ExponentialSmoother(strength=0.7)
    start = np.array([1, 0, 0, 0, 0, 0, 0], np.float32)
    target = np.array([0, 0, 0, 1, 0, 0, 0], np.float32)
    smoother.update(1, start)
    for n in range(1, 31):
        out = smoother.update(1, target)
        assert out.sum() == pytest.approx(1.0, abs=1e-5)
        assert out[3] == pytest.approx(1 - 0.7 ** n, abs=1e-5)
    assert out.argmax() == 3 and out[3] > 0.999


def test_smoothing_damps_a_single_frame_flicker():
    smoother = ExponentialSmoother(strength=0.6)
    happy = np.array([0, 0, 0, 0.8, 0, 0, 0.2], np.float32)
    neutral = np.array([0, 0, 0, 0.2, 0, 0, 0.8], np.float32)
    for _ in range(10):
        smoother.update(1, happy)
    assert smoother.update(1, neutral).argmax() == 3  # one odd frame does not flip the label


def test_smoothing_strength_zero_disables_it():
    smoother = ExponentialSmoother(strength=0.0)
    smoother.update(1, np.array([1, 0, 0, 0, 0, 0, 0], np.float32))
    new = np.array([0, 0.5, 0, 0.5, 0, 0, 0], np.float32)
    np.testing.assert_allclose(smoother.update(1, new), new)


def test_smoothing_is_per_face_and_forgets_dropped_faces():
    smoother = ExponentialSmoother(strength=0.9)
    a = np.eye(7, dtype=np.float32)[0]
    b = np.eye(7, dtype=np.float32)[3]
    smoother.update(1, a)
    np.testing.assert_allclose(smoother.update(2, b), b)  # face 2 starts from its own value
    smoother.keep_only([2])
    np.testing.assert_allclose(smoother.update(1, b), b)  # face 1 was forgotten: starts afresh


@pytest.mark.parametrize("strength", [-0.1, 1.0, 1.5])
def test_smoothing_strength_out_of_range_is_refused(strength):
    with pytest.raises(ValueError, match="smoothing strength"):
        ExponentialSmoother(strength)
