"""Live video: the per-frame processor behind the webcam page, its session log, and a latency benchmark.

One :class:`LiveProcessor` serves one video stream. Its frames go through the frame pipeline that video files
share (:class:`fer_core.video.frames.FramePipeline`: detector, tracker, smoothing state, drawing); the
:class:`~fer_core.model.inference.Predictor` is shared read-only.
``process()`` runs in the stream's worker thread; ``latest()`` and ``update_settings()`` may be called from
any other thread (the page's UI loop): results cross threads under a lock, never through Streamlit.

Speed on a small CPU (see :func:`measure_frame_latency`): the model runs once per frame on all faces
in one batch, without test-time augmentation by default (TTA costs six model passes per face for about
a point of accuracy).
Face detection runs on the frame downscaled to ``detect_max_side`` pixels and only on every
``detect_every``-th frame while at least one face is followed; in between, the followed boxes are
classified again. With no face in view, every frame is searched so a new face appears at once.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from ..labels import EMOTIONS
from ..model.inference import Predictor
from .frames import FramePipeline, FrameSettings, TrackedFace

LOGGER = logging.getLogger(__name__)


# The live page's names for the shared frame pipeline's settings and faces (fer_core.video.frames).
LiveSettings = FrameSettings
LiveFace = TrackedFace


@dataclass(frozen=True)
class LiveResult:
    """What one processed frame produced. ``faces`` are ordered by ID (the lowest ID is the main face)."""

    time_s: float  # seconds since the processor started
    wall_time: float  # time.time() of the frame
    frame_size: tuple[int, int]  # width, height
    faces: tuple[LiveFace, ...]
    latency_ms: float  # time spent in process() for this frame
    fps: float  # frames processed per second (moving average)
    detect_ms: float | None  # None when the detector was skipped on this frame
    classify_ms: float
    error: str | None = None  # set when this frame could not be analysed (the frame is passed through)

    @property
    def main_face(self) -> LiveFace | None:
        return self.faces[0] if self.faces else None


class SessionLog:
    """Thread-safe record of every face seen in a stream: one row per face per frame, exportable as CSV.

    Bounded to ``max_rows`` (the oldest rows go first) so that a stream left running cannot exhaust memory.
    """

    def __init__(self, max_rows: int = 100_000, class_names: Sequence[str] = EMOTIONS):
        self.class_names = tuple(class_names)
        self.columns = ("timestamp", "time_s", "face_id", "x", "y", "w", "h", "label", "confidence",
                        *self.class_names)
        self._rows: deque[tuple] = deque(maxlen=max_rows)
        self._lock = threading.Lock()
        self.dropped = 0  # rows pushed out by max_rows

    def append(self, result: LiveResult) -> None:
        stamp = datetime.fromtimestamp(result.wall_time, tz=timezone.utc).isoformat(timespec="milliseconds")
        rows = [(stamp, round(result.time_s, 3), f.face_id, *f.box, f.label, round(f.confidence, 4),
                 *(round(float(f.probabilities.get(n, 0.0)), 4) for n in self.class_names)) for f in result.faces]
        with self._lock:
            self.dropped += max(0, len(self._rows) + len(rows) - self._rows.maxlen)
            self._rows.extend(rows)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self.dropped = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def to_dataframe(self):
        import pandas as pd

        with self._lock:
            rows = list(self._rows)
        return pd.DataFrame(rows, columns=list(self.columns))

    def to_csv_bytes(self) -> bytes:
        """The whole log as UTF-8 CSV with a header row (only the header when nothing was seen)."""
        buf = io.StringIO()
        self.to_dataframe().to_csv(buf, index=False)
        return buf.getvalue().encode("utf-8")

    def recent(self, seconds: float = 30.0, face_id: int | None = None):
        """Rows of the last ``seconds`` (relative to the newest row), optionally of one face, oldest first."""
        import pandas as pd

        out = []
        with self._lock:
            if self._rows:
                newest = self._rows[-1][1]
                for row in reversed(self._rows):
                    if row[1] < newest - seconds:
                        break
                    if face_id is None or row[2] == face_id:
                        out.append(row)
        return pd.DataFrame(out[::-1], columns=list(self.columns))


class LiveProcessor:
    """Frame in, annotated frame out; the latest :class:`LiveResult` kept for the UI and rows for the log.

    ``process(frame)`` expects (H, W, 3) uint8 BGR (what ``av.VideoFrame.to_ndarray(format="bgr24")`` gives)
    and returns a new annotated BGR frame of the same size. Call it from one thread at a time. Detection,
    tracking, classification, smoothing and drawing are the shared :class:`~fer_core.video.frames.FramePipeline`
    (the video page uses the same one); this class adds the mirror view, the speed readout, the result for the
    UI thread and the session log. The model runs with ``settings.torch_threads`` threads (see FramePipeline).
    """

    def __init__(self, predictor: Predictor, settings: LiveSettings = LiveSettings(), log: SessionLog | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.predictor = predictor
        self.log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._settings = settings
        self._pipeline = FramePipeline(predictor, settings, clock=clock)
        self._latest: LiveResult | None = None
        self._mirrored: bool | None = None  # the orientation the tracked boxes refer to
        self._start = clock()
        self._last_frame_time: float | None = None
        self._fps = 0.0

    @property
    def settings(self) -> LiveSettings:
        with self._lock:
            return self._settings

    def update_settings(self, settings: LiveSettings) -> None:
        """Takes effect from the next frame. Safe to call from any thread."""
        with self._lock:
            self._settings = settings

    def latest(self) -> LiveResult | None:
        """The result of the most recent frame (None before the first). Safe to call from any thread."""
        with self._lock:
            return self._latest

    def process(self, frame: np.ndarray) -> np.ndarray:
        t0 = self._clock()
        s = self.settings
        self._pipeline.apply(s)
        image = np.ascontiguousarray(frame[:, ::-1]) if s.mirror else frame.copy()  # drawn on: never the input
        height, width = image.shape[:2]
        if self._mirrored != s.mirror:
            self._pipeline.reset()  # boxes of the other orientation mean nothing here
            self._mirrored = s.mirror

        faces: tuple[LiveFace, ...] = ()
        detect_ms, classify_ms, error = None, 0.0, None
        try:
            found = self._pipeline.process(image)
            faces, detect_ms, classify_ms = found.faces, found.detect_ms, found.classify_ms
        except Exception as e:  # one bad frame must not kill the stream; the UI shows the message
            LOGGER.exception("live frame processing failed")
            error = f"{type(e).__name__}: {e}"

        now = self._clock()
        if self._last_frame_time is not None:
            dt = max(now - self._last_frame_time, 1e-6)
            self._fps = 1.0 / dt if self._fps == 0.0 else 0.9 * self._fps + 0.1 / dt
        self._last_frame_time = now
        latency_ms = (now - t0) * 1000
        _draw_speed(image, self._fps, latency_ms)
        result = LiveResult(time_s=now - self._start, wall_time=time.time(), frame_size=(width, height),
                            faces=faces, latency_ms=latency_ms, fps=self._fps, detect_ms=detect_ms,
                            classify_ms=classify_ms, error=error)
        with self._lock:
            self._latest = result
        if self.log is not None:
            self.log.append(result)
        return image


def _draw_speed(image: np.ndarray, fps: float, latency_ms: float) -> None:
    """Small FPS / latency readout in the top-left corner (in place)."""
    text = f"{fps:4.1f} FPS  {latency_ms:3.0f} ms"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (30, 30, 30), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)


def canvas_from_photos(images: Sequence[np.ndarray], width: int = 640, height: int = 480,
                       background: int = 90, upscale: bool = False) -> np.ndarray:
    """Place RGB photos side by side on a (height, width, 3) uint8 canvas, each centred in its slot.

    A photo larger than its slot is shrunk to fit; a smaller one keeps its size unless ``upscale``.

    Builds a webcam-sized test frame from real photos (tests, the benchmark, a fake camera file).
    """
    canvas = np.full((height, width, 3), background, np.uint8)
    if not images:
        return canvas
    slot_w = width // len(images)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        scale = min(slot_w / w, height / h, np.inf if upscale else 1.0)
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        x0 = i * slot_w + (slot_w - nw) // 2
        y0 = (height - nh) // 2
        canvas[y0:y0 + nh, x0:x0 + nw] = small[:, :, :3]
    return canvas


def measure_frame_latency(predictor: Predictor, frame: np.ndarray, n: int = 50,
                          settings: LiveSettings = LiveSettings(), warmup: int = 5) -> dict:
    """Time :meth:`LiveProcessor.process` on ``frame`` ((H, W, 3) uint8 BGR) ``n`` times, after ``warmup`` frames.

    Runs in a thread of its own, as in the app (the per-thread torch setting does not leak into the caller).
    Returns plain JSON-able numbers: per-frame milliseconds (mean, median, 90th percentile), the frame
    rate they allow, the detector and model time, the faces found, the frame size and the settings used.
    With ``detect_every`` > 1 the mean includes the frames on which detection is skipped, as in the app.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = _measure(predictor, frame, n, settings, warmup)
        except BaseException as e:  # re-raised in the caller's thread below
            outcome["error"] = e

    worker = threading.Thread(target=run, name="fer-live-benchmark")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


def _measure(predictor: Predictor, frame: np.ndarray, n: int, settings: LiveSettings, warmup: int) -> dict:
    processor = LiveProcessor(predictor, settings)
    for _ in range(warmup):
        processor.process(frame)
    totals, detects, classifies = [], [], []
    for _ in range(n):
        t0 = time.perf_counter()
        processor.process(frame)
        totals.append((time.perf_counter() - t0) * 1000)
        r = processor.latest()
        if r.detect_ms is not None:
            detects.append(r.detect_ms)
        classifies.append(r.classify_ms)
    ms = np.array(totals)
    last = processor.latest()
    return {
        "frame_size": list(last.frame_size),
        "frames": n,
        "faces": len(last.faces),
        "ms_per_frame_mean": round(float(ms.mean()), 2),
        "ms_per_frame_p50": round(float(np.median(ms)), 2),
        "ms_per_frame_p90": round(float(np.percentile(ms, 90)), 2),
        "fps": round(1000.0 / float(ms.mean()), 2),
        "detect_ms_mean": round(float(np.mean(detects)), 2) if detects else None,
        "detect_frames": len(detects),
        "classify_ms_mean": round(float(np.mean(classifies)), 2),
        "torch_threads": settings.torch_threads,
        "settings": settings.to_dict(),
    }

def _plain(value: Any) -> Any:
    """Mappings (e.g. a Streamlit secrets section) and sequences -> plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parse_rtc_configuration(value: str | Mapping) -> dict:
    """A WebRTC configuration, as JSON text or a mapping, -> ``{"iceServers": [...], ...}`` (checked).

    Each ICE server needs ``urls`` (a string or a list of strings); TURN servers also carry ``username``
    and ``credential``. Raises ValueError saying what is wrong.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"the RTC configuration is not valid JSON ({e}); expected something like "
                             '{"iceServers": [{"urls": ["stun:stun.l.google.com:19302"]}]}') from None
    config = _plain(value)
    if not isinstance(config, dict) or not isinstance(config.get("iceServers"), list):
        raise ValueError('the RTC configuration must be an object with an "iceServers" list, e.g. '
                         '{"iceServers": [{"urls": ["turn:turn.example.org:3478"], "username": "u", "credential": "p"}]}')
    for i, server in enumerate(config["iceServers"]):
        urls = server.get("urls") if isinstance(server, dict) else None
        if not (isinstance(urls, str) or (isinstance(urls, list) and urls and all(isinstance(u, str) for u in urls))):
            raise ValueError(f'iceServers[{i}] needs "urls": a string or a list of strings such as "turn:host:3478"')
    return config
