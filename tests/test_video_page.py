"""The video page with Streamlit's AppTest: every bad input gets an error box that says what to do (never a
traceback), and a real clip gets its faces, summary, timelines and downloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from video_helpers import audio_only, switching_video, write_video, zero_length

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "3_Video_files.py")
TIMEOUT = 180  # seconds per script run; the test machine can be slow


def upload(name: str, data: bytes) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    return at.file_uploader(key="video_file").set_value((name, data, "video/mp4")).run()


def analyse(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Analyse video").click().run()


@pytest.mark.parametrize("kind, message", [
    ("text", "not a video that can be read"),
    ("truncated", "truncated before its index"),
    ("audio", "no video stream"),
    ("zero", "empty: zero length"),
])
def test_bad_inputs_get_a_clear_error(kind, message, tmp_path, predictor):
    if kind == "text":
        data = b"not a video\n" * 100
    elif kind == "truncated":
        data = switching_video(tmp_path / "clip.mp4", seconds=1.0).read_bytes()
        data = data[: len(data) // 2]
    elif kind == "audio":
        data = audio_only(tmp_path / "voice.mp4").read_bytes()
    else:
        data = zero_length(tmp_path / "empty.mp4").read_bytes()
    at = upload(f"{kind}.mp4", data)
    assert not at.exception, at.exception
    assert len(at.error) == 1 and f"{kind}.mp4 cannot be analysed" in at.error[0].value
    assert message in at.error[0].value
    assert not [b for b in at.button if b.label == "Analyse video"]  # nothing to analyse


def test_a_video_without_faces_says_so(tmp_path, predictor):
    grey = np.full((240, 320, 3), 90, np.uint8)
    at = analyse(upload("room.mp4", write_video(tmp_path / "room.mp4", [grey] * 5).read_bytes()))
    assert not at.exception and not at.error
    assert any("No face was found in this video" in i.value for i in at.info)
    assert {b.label for b in at.get("download_button")} >= {"Download CSV", "Download JSON"}


def test_a_clip_gets_faces_timelines_and_downloads(tmp_path, predictor):
    at = upload("two_faces.mp4", switching_video(tmp_path / "clip.mp4", seconds=2.0, switch_s=1.0).read_bytes())
    assert any("320x240, 0:02.0 long" in c.value for c in at.caption)
    assert at.sidebar.selectbox[0].value == "every frame"  # a short clip: every frame by default
    at = analyse(at)
    assert not at.exception and not at.error and not at.warning
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Faces"] == "2" and metrics["Frames analysed"] == "20 of 20"
    summary = at.dataframe[0].value
    assert list(summary["face_id"]) == [1, 2] and set(summary["dominant"]) == {"happy"}
    assert len(at.get("plotly_chart")) == 2
    assert {b.label for b in at.get("download_button")} == {"Download CSV", "Download JSON",
                                                            "Download the annotated video (mp4)"}
    # Choosing a moment shows that frame, annotated.
    at.select_slider(key="video_moment").set_value(1.5).run()
    assert not at.exception
    captions = [image.proto.imgs[0].caption for image in at.get("image")]
    assert captions == ["Face 1: mostly happy", "Face 2: mostly happy", "00:00:01.500 (frame 15)"]  # thumbnails, frame


def test_the_uncertain_policy_labels_unsure_faces(tmp_path, predictor):
    """Off by default; on, every analysed face below the threshold is "uncertain" (and only those)."""
    at = upload("two_faces.mp4", switching_video(tmp_path / "clip.mp4", seconds=1.0, switch_s=0.5).read_bytes())
    assert at.sidebar.toggle(key="video_uncertain_on").value is False
    at.sidebar.toggle(key="video_uncertain_on").set_value(True).run()
    at.sidebar.slider(key="video_uncertain_threshold").set_value(0.95).run()
    at = analyse(at)
    assert not at.exception and not at.error
    rows = at.session_state["video_run"]["analysis"].rows  # (frame, time_s, timestamp, face_id, box, label, conf, ..)
    assert rows and all((r[8] == "uncertain") == (r[9] < 0.95) for r in rows)
