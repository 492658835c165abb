"""Video files: upload a recording and get every face's expression over time.

Thin page: widgets -> fer_core.video.analyse.analyse_video (the live page's frame pipeline, one frame at a time) ->
rendering. The stop button works through Streamlit itself: clicking it reruns the script, which interrupts the
analysis at its next progress update; the partial result was put in the session state before it started, so
what was done is kept. The annotated mp4 is written to a temporary folder of this server process (removed
when the server stops); a new analysis in the same session replaces the previous file, and the files of sessions
that have ended (not looked at for an hour) are removed whenever a new one is written.
"""

import tempfile
from pathlib import Path

import streamlit as st

from fer_core.ui.navigation import PAGE_ICON, run_through_app
from fer_core.ui.plots import video_timeline_figure
from fer_core.ui.widgets import detector_choice, require_predictor, uncertainty_choice
from fer_core.video.analyse import (
    DEFAULT_ANALYSIS_FPS,
    SHORT_CLIP_S,
    VIDEO_EXTENSIONS,
    Progress,
    VideoError,
    analyse_video,
    annotated_frame_at,
    default_analysis_fps,
    probe,
    start_analysis,
    timestamp,
    video_settings,
)
from fer_core.video.codec import ANNOTATED_SUFFIX, prune_annotated_videos
from fer_core.video.summary import MIN_CHANGE, change_moments, dominant_text, summarise

UPLOAD_LIMIT_MB = st.get_option("server.maxUploadSize")  # Streamlit's limit, 200 MB unless configured
EVERY_FRAME = "every frame"

run_through_app()
st.set_page_config(page_title="Video files - expressions", page_icon=PAGE_ICON, layout="wide")
THUMB_CELL_WIDTH = 140  # pixels: a face's thumbnail and its caption in the grid of faces
st.title("Video files")
st.caption(f"Upload a recording ({', '.join(VIDEO_EXTENSIONS)}; up to {UPLOAD_LIMIT_MB} MB, Streamlit's upload limit, "
           "which whoever runs the app can raise with `--server.maxUploadSize`). Every face is followed with a stable "
           "number through the video and its expression is charted over time. The file is processed on this server "
           "and not stored.")

predictor = require_predictor()


@st.cache_resource
def _output_folder() -> tempfile.TemporaryDirectory:
    """One temporary folder per server process for the annotated videos (deleted when the process ends)."""
    return tempfile.TemporaryDirectory(prefix="fer_video_")


def _fps_label(value) -> str:
    return "every frame" if value == EVERY_FRAME else f"{value:g} per second"


def _seconds(value: float | None) -> str:
    """Seconds -> "m:ss.s" (or "unknown")."""
    return "unknown" if value is None else f"{int(value // 60)}:{value % 60:04.1f}"


uploaded = st.file_uploader("Video file", type=list(VIDEO_EXTENSIONS), key="video_file")
if uploaded is None:
    st.info("Upload a video to see the expression of every face over time.", icon=":material/movie:")
    st.stop()

try:  # probed once per upload, not at every rerun (each slider move or click)
    cached = st.session_state.get("_video_probe")
    if cached is None or cached[0] != uploaded.file_id:
        cached = st.session_state["_video_probe"] = (uploaded.file_id, probe(uploaded))
    info = cached[1]
except VideoError as e:
    st.error(f"**{uploaded.name} cannot be analysed.** {e}", icon=":material/error:")
    st.stop()

rotation = f" · turned {info.rotation:+d}° upright (rotation in the file)" if info.rotation else ""
st.caption(f"**{uploaded.name}**: {info.width}x{info.height}, {_seconds(info.duration_s)} long, about "
           f"{info.nominal_fps or 0:.3g} frames per second" + (f", {info.frame_count} frames" if info.frame_count else "")
           + f" ({info.codec}){rotation}")

with st.sidebar:
    st.subheader("Options")
    default = default_analysis_fps(info)
    choices = [EVERY_FRAME] + [v for v in (10.0, DEFAULT_ANALYSIS_FPS, 2.0, 1.0) if not info.nominal_fps or v < info.nominal_fps]
    fps_choice = st.selectbox("Frames to analyse", choices, index=choices.index(default or EVERY_FRAME),
                              format_func=_fps_label,
                              help=f"Frames analysed per second of video, chosen by their timestamps. Default: "
                                   f"{DEFAULT_ANALYSIS_FPS:g} per second, or every frame for clips up to "
                                   f"{SHORT_CLIP_S:.0f} s. Fewer is faster; in between, faces keep their last box.")
    smoothing = st.slider("Smoothing strength", 0.0, 0.95, video_settings().smoothing, 0.05,
                          help="How much of each face's previous probabilities is kept at every analysed frame "
                               "(as on the live page). 0 turns it off.")
    min_face = st.slider("Minimum face size (pixels)", 10, 300, video_settings().min_face_size, 10,
                         help="Faces smaller than this in the video are ignored.")
    detector = detector_choice("video_detector")
    uncertain_below = uncertainty_choice("video_uncertain", default=predictor.uncertain_below_for(tta=True))
    make_video = st.toggle("Make the annotated video", value=True,
                           help="An mp4 (H.264, plays in the browser) with every face boxed, numbered and labelled. "
                                "Encoding every frame takes extra time.")

settings = video_settings(smoothing=smoothing, min_face_size=min_face, detector=detector,
                          uncertain_below=uncertain_below)
fps = None if fps_choice == EVERY_FRAME else float(fps_choice)
key = (uploaded.file_id, fps, settings, make_video)
state = st.session_state.get("video_run")
if state is not None and state["file_id"] != uploaded.file_id:
    state = st.session_state["video_run"] = None  # another file: the old results no longer apply

buttons = st.container(horizontal=True)  # each button as wide as its label, whatever the window's width
start = buttons.button("Analyse video", type="primary", icon=":material/play_arrow:", width="content")
if start:
    if state is not None and state.get("video"):
        Path(state["video"]).unlink(missing_ok=True)
    prune_annotated_videos(_output_folder().name)
    video_path = (Path(_output_folder().name) / f"{uploaded.file_id}{ANNOTATED_SUFFIX}") if make_video else None
    analysis = start_analysis(info, fps, settings)
    state = st.session_state["video_run"] = {"file_id": uploaded.file_id, "key": key, "analysis": analysis,
                                             "video": str(video_path) if video_path else None}
    buttons.button("Stop", icon=":material/stop:", help="Stop here and keep what was analysed so far.", width="content")
    bar = st.progress(0.0, text="Starting...")

    def show_progress(p: Progress) -> None:
        eta = f" · about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
        bar.progress(p.fraction or 0.0, text=f"{p.frames_decoded} frames read, {p.frames_analysed} analysed · "
                                             f"{p.faces_seen} face(s) seen · {_seconds(p.video_time_s)} of "
                                             f"{_seconds(p.duration_s)}{eta}")

    try:
        analyse_video(uploaded, predictor, fps, settings, video_path, show_progress, result=analysis)
    except VideoError as e:
        st.session_state["video_run"] = None
        st.error(f"**{uploaded.name} cannot be analysed.** {e}", icon=":material/error:")
        st.stop()
    bar.empty()

if state is None:
    st.info("Choose the options in the sidebar, then press **Analyse video**.", icon=":material/play_arrow:")
    st.stop()

analysis = state["analysis"]
if state["key"] != key and not start:
    st.caption("The options changed since this analysis: press **Analyse video** to redo it with them.")
for warning in analysis.warnings:
    st.warning(warning, icon=":material/warning:")
if not analysis.complete and not analysis.warnings:
    st.warning(f"Stopped at {_seconds(analysis.last_time_s)}: the results below cover the part analysed so far.",
               icon=":material/stop_circle:")

rows = analysis.to_dataframe()
every = "every frame" if analysis.analysis_fps is None else f"{analysis.analysis_fps:g} frames per second"
with st.container(horizontal=True, gap="large"):
    st.metric("Faces", len(analysis.face_ids), width="content")
    st.metric("Frames analysed", f"{len(analysis.analysed_frames)} of {analysis.frames_decoded}", width="content",
              help=f"Analysed: {every}.")
    st.metric("Video analysed", _seconds(analysis.video_seconds), width="content")
    st.metric("Speed", f"{analysis.rate:.2f}x", width="content",
              help=f"Seconds of video per second of processing ({analysis.elapsed_s:.1f} s in all).")

if rows.empty:
    st.info(f"No face was found in this video. Faces smaller than {settings.min_face_size} px are ignored (Minimum "
            "face size in the sidebar); faces turned far from the camera or in the dark may not be found.",
            icon=":material/face:")
else:
    summary = summarise(rows)
    st.subheader("Faces")
    ids = analysis.face_ids
    with st.container(horizontal=True, gap="small"):  # a thumbnail per face ID, wrapping to the window's width
        for face_id in ids:
            dominant = summary.loc[summary["face_id"] == face_id, "dominant"].iloc[0]
            with st.container(width=THUMB_CELL_WIDTH):
                st.image(analysis.thumbnails[face_id], caption=f"Face {face_id}: {dominant_text(dominant)}",
                         width="stretch")
    # The face stays at the left while a narrow window scrolls the seven expressions' columns.
    st.dataframe(summary, hide_index=True, column_config={
        "face_id": st.column_config.NumberColumn("face", pinned=True),
        **{n: st.column_config.ProgressColumn(n, format="percent", min_value=0, max_value=1, width="small")
           for n in predictor.class_names if n in summary}})
    st.caption("Share of time per expression (of the analysed frames in which the face is seen), the most frequent "
               "expression, and the largest changes of each face's expression between two analysed frames.")

    st.subheader("Timelines")
    times = [t for _, t in analysis.analysed_frames]
    index_of = {t: i for i, t in analysis.analysed_frames}
    st.session_state.setdefault("video_moment", times[0])
    if st.session_state["video_moment"] not in index_of:
        st.session_state["video_moment"] = times[0]

    def pick_from_chart(chart_key: str) -> None:
        points = st.session_state[chart_key]["selection"]["points"]
        if points:
            t = float(points[0]["x"])
            st.session_state["video_moment"] = min(times, key=lambda v: abs(v - t))

    chart_col, frame_col = st.columns([3, 2])
    with frame_col:
        moment = st.select_slider("Moment", times, key="video_moment", format_func=timestamp,
                                  help="Or click a point of a timeline, or one of the largest changes below.")
        if analysis.analysed_frames:
            try:
                image = annotated_frame_at(uploaded, analysis, index_of[moment], moment)
                st.image(image, caption=f"{timestamp(moment)} (frame {index_of[moment]})")
            except VideoError as e:
                st.error(str(e), icon=":material/error:")
    with chart_col:
        for face_id in analysis.face_ids:
            chart_key = f"video_timeline_{face_id}"
            st.plotly_chart(video_timeline_figure(rows, face_id, predictor.class_names, title=f"Face {face_id}",
                                                  moment_s=moment),
                            key=chart_key, on_select=lambda k=chart_key: pick_from_chart(k), selection_mode="points",
                            config={"displayModeBar": False})
            moments = change_moments(rows, face_id, min_change=MIN_CHANGE, new_label_only=True)
            if not moments.empty:
                with st.container(horizontal=True):
                    st.caption(f"Face {face_id}, largest changes:")
                    for m in moments.itertuples(index=False):
                        st.button(f"{m.timestamp} {m.before}→{m.after}", key=f"moment_{face_id}_{m.frame}",
                                  type="tertiary", on_click=st.session_state.__setitem__,
                                  args=("video_moment", float(m.time_s)))

st.subheader("Downloads")
stem = Path(uploaded.name).stem
video_file = Path(state["video"]) if state.get("video") else None
if video_file is not None and not video_file.is_file():
    st.caption("The annotated video was removed after an hour without a visit; press **Analyse video** to make it "
               "again.")
    video_file = None
if video_file is not None:
    video_file.touch()  # still in use: not pruned while this session looks at it
# The files are handed over only when a button is clicked (callables), not copied into memory at every rerun.
with st.container(horizontal=True):
    st.download_button("Download CSV", analysis.to_csv_bytes, f"{stem}_expressions.csv", "text/csv", on_click="ignore",
                       icon=":material/download:",
                       help="One row per analysed frame and face: frame, time (s and hh:mm:ss.mmm), face id, box, "
                            "label, confidence, 7 probabilities.")
    st.download_button("Download JSON", analysis.to_json_bytes, f"{stem}_expressions.json", "application/json",
                       on_click="ignore", icon=":material/download:", help="The same rows, with the video's properties.")
    if video_file is not None:
        st.download_button("Download the annotated video (mp4)", video_file.read_bytes, f"{stem}_annotated.mp4",
                           "video/mp4", on_click="ignore", icon=":material/download:",
                           help="H.264, every frame of the video with the boxes, face numbers and labels of the "
                                "latest analysed frame.")
if video_file is not None and st.toggle("Play the annotated video here", key="video_play",
                                        help=f"{video_file.stat().st_size / 1e6:.1f} MB, sent to the browser."):
    st.video(str(video_file))
