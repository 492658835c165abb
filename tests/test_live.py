"""The live webcam frame processor (what the video callback calls) on real public-domain photos placed on a
640x480 frame (the ``face_photos`` fixture: nothing from ../shared)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from fer_core.faces.detection import make_detector
from fer_core.faces.preprocessing import to_gray
from fer_core.labels import EMOTIONS
from fer_core.ui.plots import timeline_figure
from fer_core.video.live import (
    LiveProcessor,
    LiveSettings,
    SessionLog,
    canvas_from_photos,
    measure_frame_latency,
    parse_rtc_configuration,
)


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[:, :, ::-1])


@pytest.fixture(scope="module")
def one_face_frame(face_photos) -> np.ndarray:
    return _bgr(canvas_from_photos([face_photos.arrays["astronaut_head"]]))


@pytest.fixture(scope="module")
def two_face_frame(face_photos) -> np.ndarray:
    heads = [face_photos.arrays["astronaut_head"], face_photos.arrays["astronaut_head_mirrored"]]
    return _bgr(canvas_from_photos(heads))


def test_frames_hold_the_faces_the_live_detector_should_find(one_face_frame, two_face_frame):
    detector = make_detector(min_face_size=60, max_side=320)  # as the live processor's defaults
    assert len(detector.detect(to_gray(one_face_frame, "BGR"))) == 1
    assert len(detector.detect(to_gray(two_face_frame, "BGR"))) == 2


def _assert_face_result(face):
    assert face.label in EMOTIONS
    assert list(face.probabilities) == list(EMOTIONS)
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    assert face.confidence == pytest.approx(max(face.probabilities.values()))
    assert face.probabilities[face.label] == face.confidence
    assert face.caption.startswith(f"Face {face.face_id}: {face.label} ")


def _outline_changed(before: np.ndarray, after: np.ndarray, box) -> float:
    """Share of pixels on the box outline that the drawing changed."""
    x, y, w, h = box
    edges = [after[y, x:x + w] != before[y, x:x + w], after[y + h - 1, x:x + w] != before[y + h - 1, x:x + w],
             after[y:y + h, x] != before[y:y + h, x], after[y:y + h, x + w - 1] != before[y:y + h, x + w - 1]]
    return float(np.mean(np.concatenate([e.any(axis=-1) for e in edges])))


def test_one_face_is_boxed_labelled_and_logged(predictor, one_face_frame):
    log = SessionLog()
    processor = LiveProcessor(predictor, LiveSettings(mirror=False), log=log)
    out = processor.process(one_face_frame)
    assert out.shape == one_face_frame.shape and out.dtype == np.uint8
    result = processor.latest()
    assert result.error is None
    assert result.frame_size == (640, 480)
    assert [f.face_id for f in result.faces] == [1]
    face = result.faces[0]
    _assert_face_result(face)
    assert _outline_changed(one_face_frame, out, face.box) > 0.8  # the box is drawn
    assert not np.array_equal(out, one_face_frame)
    assert result.latency_ms > 0 and result.classify_ms > 0 and result.detect_ms is not None

    table = pd.read_csv(io.BytesIO(log.to_csv_bytes()))
    assert list(table.columns) == ["timestamp", "time_s", "face_id", "x", "y", "w", "h", "label", "confidence",
                                   *EMOTIONS]
    assert len(table) == 1 and table.loc[0, "label"] == face.label and table.loc[0, "face_id"] == 1
    assert tuple(table.loc[0, ["x", "y", "w", "h"]]) == face.box
    assert table.loc[0, list(EMOTIONS)].sum() == pytest.approx(1.0, abs=1e-3)


def test_several_faces_get_distinct_stable_ids(predictor, two_face_frame):
    log = SessionLog()
    processor = LiveProcessor(predictor, LiveSettings(mirror=False, detect_every=2), log=log)
    seen = []
    for _ in range(6):
        out = processor.process(two_face_frame)
        result = processor.latest()
        assert result.error is None
        seen.append([f.face_id for f in result.faces])
        for face in result.faces:
            _assert_face_result(face)
            assert _outline_changed(two_face_frame, out, face.box) > 0.8
    assert seen == [[1, 2]] * 6
    left, right = sorted(processor.latest().faces, key=lambda f: f.box[0])
    assert left.box[0] + left.box[2] <= 340 and right.box[0] >= 300  # one face per photo
    assert len(log) == 12
    # Detection ran on every second frame only; the model ran on every frame.
    assert processor.latest().detect_ms is None


def test_blank_frame_gives_no_face_and_no_error(predictor):
    log = SessionLog()
    processor = LiveProcessor(predictor, log=log)
    blank = np.zeros((480, 640, 3), np.uint8)
    for _ in range(3):
        processor.process(blank)
    result = processor.latest()
    assert result.faces == () and result.error is None and result.main_face is None
    assert len(log) == 0
    assert pd.read_csv(io.BytesIO(log.to_csv_bytes())).empty  # header only


def test_mirror_view_flips_the_frame_before_detection(predictor, two_face_frame):
    plain = LiveProcessor(predictor, LiveSettings(mirror=False))
    mirrored = LiveProcessor(predictor, LiveSettings(mirror=True))
    plain.process(two_face_frame)
    mirrored.process(two_face_frame)
    xs_plain = sorted(f.box[0] for f in plain.latest().faces)
    xs_mirror = sorted(640 - (f.box[0] + f.box[2]) for f in mirrored.latest().faces)
    np.testing.assert_allclose(xs_plain, xs_mirror, atol=12)


def test_probability_bars_can_be_hidden(predictor, one_face_frame):
    with_bars = LiveProcessor(predictor, LiveSettings(mirror=False, show_probabilities=True)).process(one_face_frame)
    without = LiveProcessor(predictor, LiveSettings(mirror=False, show_probabilities=False)).process(one_face_frame)
    assert (with_bars != one_face_frame).any(axis=-1).sum() > (without != one_face_frame).any(axis=-1).sum() + 500


def test_settings_change_takes_effect_on_the_next_frame(predictor, one_face_frame):
    processor = LiveProcessor(predictor, LiveSettings(mirror=False, min_face_size=60))
    processor.process(one_face_frame)
    assert len(processor.latest().faces) == 1
    processor.update_settings(LiveSettings(mirror=False, min_face_size=470, detect_every=1))
    for _ in range(4):  # the face is held for hold_missed detections, then no longer shown
        processor.process(one_face_frame)
    assert processor.latest().faces == ()


def test_smoothing_off_shows_the_raw_model_output(predictor, one_face_frame):
    processor = LiveProcessor(predictor, LiveSettings(mirror=False, smoothing=0.0))
    processor.process(one_face_frame)
    face = processor.latest().faces[0]
    gray = to_gray(one_face_frame, "BGR")
    raw = predictor.classify_faces(gray, make_detector(min_face_size=60, max_side=320).detect(gray), tta=False)[0]
    assert raw.box == face.box
    for name in EMOTIONS:
        assert face.probabilities[name] == pytest.approx(raw.probabilities[name], abs=1e-5)


def test_session_log_recent_window_and_bound(predictor, one_face_frame):
    now = [0.0]  # a fake clock, advanced 0.5 s per frame
    log = SessionLog(max_rows=40)
    processor = LiveProcessor(predictor, LiveSettings(mirror=False), log=log, clock=lambda: now[0])
    for _ in range(30):
        now[0] += 0.5
        processor.process(one_face_frame)
    assert len(log) == 30
    recent = log.recent(seconds=5.0, face_id=1)
    assert len(recent) == 11 and recent["time_s"].is_monotonic_increasing  # 10 to 15 s, both ends included
    assert log.recent(seconds=5.0, face_id=99).empty
    for _ in range(20):
        now[0] += 0.5
        processor.process(one_face_frame)
    assert len(log) == 40 and log.dropped == 10
    fig = timeline_figure(log.recent(30.0, face_id=1), EMOTIONS)
    assert [t.name for t in fig.data] == list(EMOTIONS)


def test_measure_frame_latency_reports_plain_numbers(predictor, two_face_frame):
    report = measure_frame_latency(predictor, two_face_frame, n=4, warmup=1)
    assert report["frame_size"] == [640, 480] and report["faces"] == 2 and report["frames"] == 4
    assert 0 < report["ms_per_frame_p50"] <= report["ms_per_frame_p90"]
    assert report["fps"] == pytest.approx(1000 / report["ms_per_frame_mean"], rel=0.01)
    assert report["settings"]["tta"] is False and report["detect_frames"] == 2


def test_invalid_settings_are_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="smoothing"):
        LiveSettings(smoothing=1.0)
    with pytest.raises(ValueError, match="detect_every"):
        LiveSettings(detect_every=0)


def test_rtc_configuration_from_json_or_secrets_mapping():
    text = '{"iceServers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}'
    config = parse_rtc_configuration(text)
    assert config["iceServers"][0]["username"] == "u"
    secrets_like = {"iceServers": ({"urls": "stun:stun.example.org:3478"},)}  # st.secrets gives mappings/tuples
    assert parse_rtc_configuration(secrets_like) == {"iceServers": [{"urls": "stun:stun.example.org:3478"}]}
    assert parse_rtc_configuration('{"iceServers": []}') == {"iceServers": []}
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_rtc_configuration("{iceServers: }")
    with pytest.raises(ValueError, match='"iceServers" list'):
        parse_rtc_configuration('{"ice": []}')
    with pytest.raises(ValueError, match=r"iceServers\[0\] needs \"urls\""):
        parse_rtc_configuration('{"iceServers": [{"url": "turn:x"}]}')


def test_measure_frame_latency_leaves_the_callers_torch_threads_alone(predictor, one_face_frame):
    import torch

    before = torch.get_num_threads()
    measure_frame_latency(predictor, one_face_frame, n=1, warmup=0, settings=LiveSettings(torch_threads=1))
    assert torch.get_num_threads() == before
