"""Live webcam: every face in the browser's webcam stream boxed and labelled in real time.

Thin page: widgets -> fer_core.video.live.LiveProcessor (in the stream's worker thread) -> rendering.
The video callback never calls Streamlit; this script's loop reads the processor's latest result under
its lock and updates placeholders. The model is the process-wide cached one (read-only); the detector,
tracker and smoothing state live in the per-stream processor and go away with the stream.
"""

import os
import time

import av
import streamlit as st
from streamlit_webrtc import VideoProcessorBase, WebRtcMode, webrtc_streamer

from fer_core.ui.navigation import PAGE_ICON, run_through_app
from fer_core.ui.plots import timeline_figure
from fer_core.ui.widgets import detector_choice, require_predictor, uncertainty_choice
from fer_core.video.live import LiveProcessor, LiveResult, LiveSettings, SessionLog, parse_rtc_configuration

RTC_ENV = "FER_RTC_CONFIGURATION"  # JSON {"iceServers": [...]} for remote deployments (docs/pages.md)
RTC_SECRET = "rtc_configuration"  # same, as a [rtc_configuration] table in .streamlit/secrets.toml
TEXT_REFRESH_S = 0.25
# The WebRTC component's own messages about the camera, in this app's words (its device dialog).
CAMERA_TEXTS = {
    "media_api_not_available": "This browser gives this page no camera: open the app at a https:// or localhost "
                               "address, in a current browser.",
    "device_ask_permission": "Allow this page to use your camera in the browser's prompt.",
    "device_not_available": "No camera found: connect a webcam, or close the program that is using it, and press "
                            "START again",
    "device_access_denied": "The camera is blocked for this page: allow it (camera icon in the address bar) and "
                            "press START again",
}
NO_CAMERA_HELP = ("**No camera?** A red *NotFoundError* or *NotReadableError* above the video means that this "
                  "browser found no webcam it can use: connect one, or close the program that is using it, and "
                  "press START again. *NotAllowedError* means that the camera is blocked for this page: allow it "
                  "(camera icon in the address bar) and press START again. Without a camera, the **Video files** "
                  "and **Upload images** pages analyse recordings and photos.")
CHART_REFRESH_S = 1.0
TIMELINE_S = 30.0

run_through_app()
st.set_page_config(page_title="Live webcam - expressions", page_icon=PAGE_ICON, layout="wide")
st.title("Live webcam")
# What to press is said once, beside the video ("Press START to analyse your webcam").
st.caption("Every face is boxed and labelled with its expression; each face keeps its number while it stays in "
           "view, and its probabilities are smoothed over time so the label does not flicker. Video is processed on "
           "this server and not stored.")

predictor = require_predictor()


def rtc_configuration() -> tuple[dict, str]:
    """(ICE configuration, where it came from): $FER_RTC_CONFIGURATION, else st.secrets, else no ICE servers:
    browser and server connect directly, which is enough on localhost and a local network. (streamlit-webrtc's own
    default would ask Google's public STUN server, and Hugging Face for TURN credentials when HF_TOKEN is set.)"""
    value, source = os.environ.get(RTC_ENV), f"the environment variable {RTC_ENV}"
    if not value:
        try:
            value, source = st.secrets.get(RTC_SECRET), f"st.secrets['{RTC_SECRET}']"
        except FileNotFoundError:  # no secrets.toml at all: the usual case on localhost
            value = None
    if not value:
        return {"iceServers": []}, "none, direct connections only (no STUN, no TURN)"
    try:
        config = parse_rtc_configuration(value)
    except ValueError as e:
        st.error(f"**The WebRTC configuration in {source} is invalid:** {e}. Fix or unset it and reload the page.",
                 icon=":material/error:")
        st.stop()
    return config, f"{source} ({len(config['iceServers'])} ICE server(s))"


with st.sidebar:
    st.subheader("Options")
    min_face = st.slider("Minimum face size (pixels)", min_value=30, max_value=300, value=60, step=10,
                         help="Faces smaller than this (in the 640x480 video) are ignored. Raise it to skip "
                              "faces in the background; it also makes detection faster. The default is 60 px here "
                              "(20 px on the upload and evaluation pages) because faces are searched on a 320 px "
                              "copy of each frame, where a 60 px face is 30 px wide.")
    smoothing = st.slider("Smoothing strength", min_value=0.0, max_value=0.95, value=0.6, step=0.05,
                          help="How much of each face's previous probabilities is kept at every frame "
                               "(exponential moving average). 0 turns smoothing off; higher is steadier but slower "
                               "to follow a change of expression.")
    show_probabilities = st.toggle("Show probabilities on the video", value=True,
                                   help="A small bar per expression beside each face.")
    mirror = st.toggle("Mirror view", value=True, help="Show the video like a mirror (as most video-call apps do).")
    uncertain_below = uncertainty_choice("live_uncertain", default=predictor.uncertain_below_for(tta=False))
    with st.expander("Speed"):
        tta = st.toggle("Test-time augmentation", value=False,
                        help="Off for live speed: averaging six views of each face (mirrored, zoomed in and out) "
                             "costs six times the model time for about one point of accuracy. The upload page uses it.")
        detect_every = st.slider("Search for faces every k-th frame", min_value=1, max_value=5, value=2,
                                 help="Between searches the followed faces are classified at their last position. "
                                      "With no face in view every frame is searched.")
        live_detector = detector_choice("live_detector")
        st.caption("Faces are searched on the frame reduced to 320 px; the model runs on all faces in one batch.")
    rtc, rtc_source = rtc_configuration()
    with st.expander("Connection"):
        st.caption(f"ICE servers: {rtc_source}. If START keeps spinning when the app runs on a remote server, "
                   f"the browser cannot reach it directly: set a TURN server in `{RTC_ENV}` or in "
                   f"`st.secrets['{RTC_SECRET}']` (see docs/pages.md).")

settings = LiveSettings(min_face_size=min_face, smoothing=smoothing, show_probabilities=show_probabilities,
                        mirror=mirror, tta=tta, detect_every=detect_every, detector=live_detector,
                        uncertain_below=uncertain_below)
# Rows of what was seen since the last START; kept after STOP so that it can be downloaded.
log: SessionLog = st.session_state.setdefault("live_session_log", SessionLog(class_names=predictor.class_names))


class FerVideoProcessor(VideoProcessorBase):
    """WebRTC frames <-> LiveProcessor. One per stream, discarded with it (and its detector)."""

    def __init__(self, live: LiveProcessor):
        self.live = live

    def recv(self, frame: av.VideoFrame) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.live.process(frame.to_ndarray(format="bgr24")), format="bgr24")


def make_processor() -> FerVideoProcessor:
    log.clear()  # a new stream starts a new session log
    return FerVideoProcessor(LiveProcessor(predictor, settings, log))


video_col, info_col = st.columns([3, 2])
with video_col:
    ctx = webrtc_streamer(
        key="fer-live",
        mode=WebRtcMode.SENDRECV,
        rtc_configuration=rtc,
        media_stream_constraints={"video": {"width": {"ideal": 640}, "height": {"ideal": 480}}, "audio": False},
        video_processor_factory=make_processor,
        async_processing=True,  # frames that arrive while one is processed are dropped, never queued
        translations=CAMERA_TEXTS,
    )
    if not ctx.state.playing:
        st.caption(NO_CAMERA_HELP)
    st.caption("Model without test-time augmentation for live speed (toggle under Speed)." if not tta else
               "Test-time augmentation is on: about twice the model time per frame.")
if ctx.video_processor is not None:
    ctx.video_processor.live.update_settings(settings)

with info_col:
    st.subheader("Faces now")
    faces_box = st.empty()
    speed_box = st.empty()
    st.subheader(f"Main face, last {TIMELINE_S:.0f} s")
    chart_box = st.empty()
    st.download_button("Session CSV", data=log.to_csv_bytes, file_name="live_session.csv",
                       mime="text/csv", on_click="ignore", icon=":material/download:",
                       help="Time, face number, box, label and the 7 probabilities of every face in every "
                            "processed frame since START.")


def show_faces(result: LiveResult | None) -> None:
    if result is None:
        faces_box.info("Waiting for the first video frame...", icon=":material/hourglass_top:")
        speed_box.empty()
        return
    if result.error:
        faces_box.error(f"This frame could not be analysed: {result.error}", icon=":material/error:")
    elif not result.faces:
        faces_box.info(f"No face in view. Face the camera in good light; faces smaller than {min_face} px are "
                       "ignored (Minimum face size in the sidebar).", icon=":material/face:")
    else:
        faces_box.markdown("\n".join(f"- **{face.caption}** · second: {second}" for face, second in
                                     ((f, _runner_up(f)) for f in result.faces)))
    timings = f"detection {result.detect_ms:.0f} ms, " if result.detect_ms is not None else "detection skipped, "
    speed_box.caption(f"**{result.fps:.1f} FPS** · {result.latency_ms:.0f} ms per frame "
                      f"({timings}model {result.classify_ms:.0f} ms) · {result.frame_size[0]}x{result.frame_size[1]}")


def _runner_up(face) -> str:
    name, p = sorted(face.probabilities.items(), key=lambda kv: kv[1], reverse=True)[1]
    return f"{name} {p:.0%}"


def show_timeline(face_id: int | None, n: int) -> None:
    rows = log.recent(TIMELINE_S, face_id=face_id) if face_id is not None else None
    if rows is None or rows.empty:
        chart_box.caption("The chart appears once a face is in view.")
        return
    chart_box.plotly_chart(timeline_figure(rows, predictor.class_names, TIMELINE_S, title=f"Face {face_id}"),
                           key=f"live_timeline_{n}", config={"displayModeBar": False})


if not ctx.state.playing:
    faces_box.info("Press START to analyse your webcam." + (f" The last session recorded {len(log)} rows: "
                                                           "download them below." if len(log) else ""),
                   icon=":material/videocam:")
    last = log.recent(TIMELINE_S)
    if not last.empty:
        show_timeline(int(last["face_id"].min()), 0)
else:
    last_chart, n = 0.0, 0
    while ctx.state.playing:
        processor = ctx.video_processor
        result = processor.live.latest() if processor is not None else None
        show_faces(result)
        if time.monotonic() - last_chart >= CHART_REFRESH_S:
            n += 1
            show_timeline(result.main_face.face_id if result is not None and result.main_face else None, n)
            last_chart = time.monotonic()
        time.sleep(TEXT_REFRESH_S)
