"""Video files (fer_core.video.analyse): test videos written here from real photos (two faces, the right one switching
from a happy to a surprised photo halfway), the bad inputs of the issue, and the command line."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from helpers import public_domain_faces
from video_helpers import audio_only, switching_video, two_face_frames, write_video, zero_length

from fer_core.faces.detection import landmark_values, make_detector
from fer_core.faces.preprocessing import to_gray
from fer_core.labels import EMOTIONS
from fer_core.video.analyse import (
    COLUMNS,
    VideoError,
    analyse_video,
    annotated_frame_at,
    default_analysis_fps,
    frame_at,
    probe,
    timestamp,
    video_settings,
)
from fer_core.video.live import canvas_from_photos
from fer_core.video.summary import change_moments, summarise

ROOT = Path(__file__).resolve().parent.parent
FPS, SECONDS, SWITCH_S = 10, 4.0, 2.0


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.time) for f in c.decode(video=0)]


def still_label(predictor, rgb: np.ndarray, right: bool = True) -> str:
    """What the model says for the right-hand (or left-hand) face of one still frame."""
    gray = to_gray(rgb)
    faces = make_detector(min_face_size=30, max_side=640).detect(gray)
    face = max(faces, key=lambda f: f.box[0]) if right else min(faces, key=lambda f: f.box[0])
    return predictor.classify_faces(gray, [face], tta=False)[0].label


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return switching_video(tmp_path_factory.mktemp("video") / "two_faces.mp4", SECONDS, FPS, SWITCH_S)


@pytest.fixture(scope="module")
def analysed(clip, predictor, tmp_path_factory):
    annotated = tmp_path_factory.mktemp("out") / "annotated.mp4"
    return analyse_video(clip, predictor, annotated=annotated), annotated


def test_still_photos_show_the_two_expressions(predictor):
    before, after = two_face_frames()
    assert still_label(predictor, before) == "happy" and still_label(predictor, before, right=False) == "happy"
    assert still_label(predictor, after) == "surprise" and still_label(predictor, after, right=False) == "happy"


def test_every_face_keeps_one_id_through_the_video(analysed):
    result, _ = analysed
    assert result.complete and not result.warnings
    assert result.analysis_fps is None  # a 4 s clip is analysed frame by frame by default
    assert result.frames_decoded == len(result.analysed_frames) == FPS * SECONDS
    rows = result.to_dataframe()
    assert sorted(rows["face_id"].unique()) == [1, 2]
    assert (rows.groupby("frame").size() == 2).all()  # both faces in every frame
    centres = rows.assign(cx=rows["x"] + rows["w"] / 2).groupby("face_id")["cx"]
    assert (centres.max() - centres.min() < 15).all()  # each ID stays on its own face
    assert set(result.thumbnails) == {1, 2} and all(t.shape[0] == 96 for t in result.thumbnails.values())


def test_the_timeline_switches_when_the_photo_does(analysed, predictor):
    result, _ = analysed
    rows = result.to_dataframe()
    right = rows.loc[rows.groupby("frame")["x"].idxmax()].sort_values("time_s")
    left = rows.loc[rows.groupby("frame")["x"].idxmin()]
    before, after = two_face_frames()
    first_after = right.loc[right["label"] == still_label(predictor, after), "time_s"].min()
    step = 1.0 / FPS
    assert SWITCH_S - 1e-6 <= first_after <= SWITCH_S + step + 1e-6  # within one analysed frame (smoothing)
    assert (right.loc[right["time_s"] < SWITCH_S, "label"] == still_label(predictor, before)).all()
    assert (right.loc[right["time_s"] > SWITCH_S + step + 1e-6, "label"] == "surprise").all()
    assert (left["label"] == "happy").all()
    # The summary names the switch as the right face's largest change.
    face = int(right["face_id"].iloc[0])
    top = change_moments(rows, face, n=1).iloc[0]
    assert SWITCH_S - 1e-6 <= top["time_s"] <= SWITCH_S + step + 1e-6 and top["change"] > 0.3
    summary = summarise(rows).set_index("face_id")
    assert summary.loc[face, "happy"] == pytest.approx(0.5, abs=0.05)
    assert summary.loc[face, "surprise"] == pytest.approx(0.5, abs=0.05)
    assert summary.loc[face, list(EMOTIONS)].sum() == pytest.approx(1.0, abs=0.01)
    other = 3 - face
    assert summary.loc[other, "dominant"] == "happy" and summary.loc[other, "largest_changes"] == ""


def test_csv_and_json_rows_carry_the_frames_presentation_times(analysed, clip):
    result, _ = analysed
    table = pd.read_csv(io.BytesIO(result.to_csv_bytes()))
    assert list(table.columns) == list(COLUMNS)
    times = decoded_times(clip)
    for row in table.itertuples(index=False):
        assert row.time_s == pytest.approx(times[row.frame], abs=1e-3)
        assert row.timestamp == timestamp(row.time_s)
    assert table[list(EMOTIONS)].sum(axis=1).between(0.99, 1.01).all()
    doc = json.loads(result.to_json_bytes())
    assert len(doc["rows"]) == len(table) and doc["video"]["width"] == 320 and doc["complete"] is True
    assert set(doc["rows"][0]) == {"frame", "time_s", "timestamp", "face_id", "box", "label", "confidence",
                                   "probabilities", "landmarks"}
    # RetinaFace's five landmarks of each face, inside its box (within a few pixels: the points of a detection)
    for r in doc["rows"]:
        x, y, w, h = r["box"]
        assert len(r["landmarks"]) == 5
        assert all(x - 5 <= px <= x + w + 5 and y - 5 <= py <= y + h + 5 for px, py in r["landmarks"])
    assert table[[c for c in COLUMNS if c.endswith(("_x", "_y"))]].notna().all().all()


def test_timestamp_format():
    assert timestamp(0) == "00:00:00.000"
    assert timestamp(3723.4567) == "01:02:03.457"


def test_annotated_video_is_h264_with_every_frame_at_the_same_size_and_times(analysed, clip):
    result, annotated = analysed
    info = probe(annotated)
    assert (info.width, info.height, info.codec) == (320, 240, "h264")
    with av.open(str(annotated)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"  # what browsers play
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(stream)]
    assert len(frames) == len(decoded_times(clip))
    assert [round(t, 3) for t, _ in frames] == pytest.approx(decoded_times(clip), abs=2e-3)
    original = frame_at(clip, 0.0)
    assert np.abs(frames[0][1].astype(int) - original.astype(int)).mean() > 3  # boxes and labels drawn on it
    # The page's still of a moment is that frame of the annotated video: the same boxes in the same colours
    video_frame = frames[0][1].astype(int)
    still = annotated_frame_at(clip, result, 0, frames[0][0]).astype(int)
    drawn = np.abs(video_frame - original.astype(int)).sum(axis=2) > 60
    assert still.shape == video_frame.shape and drawn.sum() > 500
    error = np.abs(still - video_frame)[drawn].mean()
    assert error < 0.5 * np.abs(still[..., ::-1] - video_frame)[drawn].mean()  # not with red and blue swapped


def test_fewer_frames_per_second_analyse_frames_by_their_time(clip, predictor):
    result = analyse_video(clip, predictor, analysis_fps=2.5)
    assert [t for _, t in result.analysed_frames] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0, 2.4, 2.8, 3.2, 3.6])
    assert result.frames_decoded == 40


def test_default_rate_is_five_per_second_for_long_videos(clip):
    info = probe(clip)
    assert default_analysis_fps(info) is None  # short clip: every frame
    long = info.__class__(**{**vars(info), "duration_s": 60.0})
    assert default_analysis_fps(long) == 5.0


def test_variable_frame_rate_uses_each_frames_own_time(tmp_path, predictor):
    before, after = two_face_frames()
    times = [0.0, 0.05, 0.1, 0.4, 0.45, 1.0, 1.02, 1.5, 2.3, 2.31]
    path = write_video(tmp_path / "vfr.mkv", [before] * 5 + [after] * 5, times=times)
    result = analyse_video(path, predictor, analysis_fps=None)
    assert [t for _, t in result.analysed_frames] == pytest.approx(times, abs=1e-3)
    result = analyse_video(path, predictor, analysis_fps=2.0)  # due at 0, 0.5, 1.0, 1.5, 2.0
    assert [t for _, t in result.analysed_frames] == pytest.approx([0.0, 1.0, 1.5, 2.3], abs=1e-3)


def test_a_rotated_phone_video_is_analysed_upright(tmp_path, predictor):
    upright = canvas_from_photos([public_domain_faces()["astronaut_head"]], 240, 320)  # portrait: 320 high...
    stored = np.ascontiguousarray(np.rot90(upright, -1))  # ...stored sideways, as a phone held upright does
    path = write_video(tmp_path / "phone.mp4", [stored] * 5, rotation=90)  # display: turn 90 deg counter-clockwise
    info = probe(path)
    assert (info.width, info.height, info.rotation) == (240, 320, 90)
    assert np.abs(frame_at(path, 0.0).astype(int) - upright.astype(int)).mean() < 6
    result = analyse_video(path, predictor, annotated=tmp_path / "out.mp4")
    assert result.face_ids == [1] and result.complete and len(result.rows) == 5
    upright_box = make_detector(min_face_size=30, max_side=640).detect(to_gray(upright))[0].box
    assert np.abs(np.subtract(result.rows[0][4:8], upright_box)).max() <= 6  # boxes in the upright picture
    assert set(result.to_dataframe()["label"]) == {"happy"}
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation) == (240, 320, 0)


def test_a_video_without_faces_gives_an_empty_result(tmp_path, predictor):
    grey = np.full((240, 320, 3), 90, np.uint8)
    path = write_video(tmp_path / "empty_room.webm", [grey] * 6, codec="libvpx-vp9")
    result = analyse_video(path, predictor, annotated=tmp_path / "out.mp4")
    assert result.complete and result.rows == [] and result.frames_decoded == 6
    assert pd.read_csv(io.BytesIO(result.to_csv_bytes())).empty and summarise(result).empty
    assert len(decoded_times(tmp_path / "out.mp4")) == 6


def test_stopping_early_keeps_what_was_done(clip, predictor, tmp_path):
    calls = []
    result = analyse_video(clip, predictor, annotated=tmp_path / "part.mp4",
                           should_stop=lambda: len(calls.append(1) or calls) > 12)
    assert not result.complete and result.frames_decoded == 12
    assert sorted({r[0] for r in result.rows}) == list(range(12))
    assert len(decoded_times(tmp_path / "part.mp4")) == 12  # a valid, shorter annotated video


# ---- bad input: a clear VideoError (the page shows it with st.error; the CLI prints it), never a traceback


def test_not_a_video_is_refused(tmp_path, face_photos):
    text = tmp_path / "notes.mp4"
    text.write_text("these are not the frames you are looking for\n" * 50)
    with pytest.raises(VideoError, match="not a video that can be read"):
        probe(text)
    with pytest.raises(VideoError, match="still image"):
        probe(io.BytesIO(face_photos.path("astronaut").read_bytes()))
    with pytest.raises(VideoError, match="not a video that can be read"):
        probe(io.BytesIO(b""))


def test_a_truncated_video_is_refused_or_kept_up_to_the_cut(clip, tmp_path, predictor):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: nothing can be read
    with pytest.raises(VideoError, match="truncated before its index"):
        probe(cut)
    # With the index first (mkv, or mp4 +faststart) the frames before the cut are analysed, with a warning.
    before, _ = two_face_frames()
    mkv = write_video(tmp_path / "long.mkv", make=lambda i: np.roll(before, 4 * i, axis=1), count=30)
    part = tmp_path / "part.mkv"
    data = mkv.read_bytes()
    part.write_bytes(data[: int(len(data) * 0.8)])
    result = analyse_video(part, predictor, analysis_fps=None)
    assert 0 < result.frames_decoded < 30 and len(result.face_ids) >= 1
    assert not result.complete and "probably truncated" in result.warnings[0]
    # Cut inside the first frame: nothing to decode.
    part.write_bytes(data[: len(data) // 20])
    with pytest.raises(VideoError, match="No frame of this video could be decoded"):
        probe(part)


def test_a_file_without_a_video_stream_is_refused(tmp_path):
    with pytest.raises(VideoError, match="no video stream.*audio"):
        probe(audio_only(tmp_path / "voice.mp4"))


def test_a_zero_length_video_is_refused(tmp_path, predictor):
    with pytest.raises(VideoError, match="empty: zero length"):
        analyse_video(zero_length(tmp_path / "empty.mp4"), predictor)


def test_command_line_writes_csv_json_and_annotated_video(clip, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "fer_core.video", str(clip), "--fps", "5", "--csv", str(out) + ".csv",
           "--json", str(out) + ".json", "--annotated", str(out) + ".mp4"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "20 analysed (5 frames/s), 2 face(s)" in done.stdout and "s of video per second" in done.stdout
    table = pd.read_csv(str(out) + ".csv")
    assert sorted(table["frame"].unique()) == list(range(0, 40, 2))
    assert len(json.loads(Path(str(out) + ".json").read_text())["rows"]) == len(table)
    assert len(decoded_times(Path(str(out) + ".mp4"))) == 40
    assert "s video" in done.stderr  # the tqdm bar

    bad = tmp_path / "bad.mov"
    bad.write_bytes(b"\x00" * 1000)
    done = subprocess.run([sys.executable, "-m", "fer_core.video", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "error: This file is not a video" in done.stderr
    assert "Traceback" not in done.stderr


def test_video_settings_share_the_live_pipeline_settings():
    from fer_core.video.live import LiveSettings

    s = video_settings(smoothing=0.0)
    assert isinstance(s, LiveSettings) and s.mirror is False and s.detect_every == 1 and s.smoothing == 0.0


def test_summary_of_constructed_rows():
    def row(frame, face_id, label, probs):
        p = dict.fromkeys(EMOTIONS, 0.0) | probs
        return (frame, frame / 5, timestamp(frame / 5), face_id, 0, 0, 50, 50, label, max(p.values()),
                *(p[n] for n in EMOTIONS), *landmark_values(()))

    rows = pd.DataFrame([row(0, 1, "happy", {"happy": 0.9, "sad": 0.1}), row(1, 1, "happy", {"happy": 0.85, "sad": 0.15}),
                         row(2, 1, "sad", {"happy": 0.2, "sad": 0.8}), row(3, 1, "uncertain", {"happy": 0.4, "sad": 0.45, "neutral": 0.15}),
                         row(0, 2, "neutral", {"neutral": 1.0})], columns=list(COLUMNS))
    summary = summarise(rows).set_index("face_id")
    assert list(summary.columns[-2:]) == ["uncertain", "largest_changes"]
    assert summary.loc[1, ["happy", "sad", "uncertain"]].tolist() == [0.5, 0.25, 0.25]
    assert summary.loc[1, "dominant"] == "happy" and summary.loc[2, "dominant"] == "neutral"
    assert summary.loc[1, "largest_changes"] == "00:00:00.400 happy->sad (0.65); 00:00:00.600 sad->uncertain (0.35)"
    moments = change_moments(rows, 1, n=5)  # half the L1 distance between consecutive analysed frames
    assert moments["change"].tolist() == pytest.approx([0.65, 0.35, 0.05])
    assert change_moments(rows, 1, n=5, min_change=0.1)["change"].tolist() == pytest.approx([0.65, 0.35])
    assert change_moments(rows, 2).empty  # one frame: no change to measure
