"""The one per-frame pipeline of moving pictures, shared by the live webcam page and video files.

:class:`FramePipeline` takes one BGR frame after another from one stream and returns the faces in it, each with
a stable ID (:class:`~fer_core.video.tracking.FaceTracker`), its smoothed probabilities
(:class:`~fer_core.video.tracking.ExponentialSmoother`) and its box drawn on the frame
(:func:`~fer_core.faces.drawing.draw_face`). It owns the stateful parts (face detector, tracker, smoothing state);
the :class:`~fer_core.model.inference.Predictor` is shared read-only. ``fer_core.video.live.LiveProcessor`` wraps it for
the webcam (mirror, speed readout, results across threads); ``fer_core.video.analyse`` wraps it for files (frames
chosen by their presentation time, rows per face, the annotated mp4).

Face detection runs on the frame downscaled to ``detect_max_side`` pixels and only on every
``detect_every``-th frame while at least one face is followed; in between, the followed boxes are
classified again. With no face in view, every frame is searched so a new face appears at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from ..faces.detection import DEFAULT_DETECTOR, DETECTORS, Box, Face, FaceDetector, make_detector
from ..faces.drawing import draw_face
from ..faces.preprocessing import to_gray
from ..model.backends import set_intra_op_threads
from ..model.calibration import check_threshold, uncertain_label
from ..model.inference import Predictor
from .tracking import ExponentialSmoother, FaceTracker


@dataclass(frozen=True)
class FrameSettings:
    """What the user controls, plus the speed trade-offs. The defaults suit a 640x480 webcam on a 2-core CPU
    (``fer_core.video.live.LiveSettings`` is this class); video files use their own (``fer_core.video.analyse.video_settings``)."""

    min_face_size: int = 60  # pixels of the frame; smaller faces are ignored
    detector: str = DEFAULT_DETECTOR  # fer_core.faces.detection.DETECTORS
    smoothing: float = 0.6  # EMA strength in [0, 1) per processed frame; 0 = off
    show_probabilities: bool = True  # draw the 7 bars beside each face
    mirror: bool = True  # flip horizontally (selfie view) before anything else (live page only)
    tta: bool = False  # test-time augmentation (fer_core.model.inference.tta_views): ~6x model cost
    detect_max_side: int = 320  # detect on the frame downscaled to this longer side
    detect_every: int = 2  # run the detector every k-th frame while faces are followed
    hold_missed: int = 2  # keep showing a face for this many detections that miss it
    forget_missed: int = 10  # drop a face's ID after this many detections that miss it
    torch_threads: int = 1  # intra-op threads of the model in the calling thread (see FramePipeline)
    uncertain_below: float | None = None  # label a face "uncertain" below this confidence (None: off)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.min_face_size < 1:
            raise ValueError(f"min_face_size must be >= 1 pixel, got {self.min_face_size}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1) (0 = off), got {self.smoothing}")
        if self.detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {self.detect_every}")
        if self.detect_max_side < 64:
            raise ValueError(f"detect_max_side must be >= 64 pixels, got {self.detect_max_side}")
        if not 0 <= self.hold_missed <= self.forget_missed:
            raise ValueError("need 0 <= hold_missed <= forget_missed")
        if self.torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {self.torch_threads}")
        check_threshold(self.uncertain_below)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrackedFace:
    """One followed face in one frame; probabilities are the smoothed ones."""

    face_id: int
    box: Box  # x, y, w, h in the (possibly mirrored) frame
    label: str
    confidence: float
    probabilities: dict[str, float]
    landmarks: tuple = ()  # the five (x, y) points of the detection its box comes from; () without (Haar)

    @property
    def caption(self) -> str:
        return f"Face {self.face_id}: {self.label} {self.confidence:.0%}"


@dataclass(frozen=True)
class FrameFaces:
    """What :meth:`FramePipeline.process` found in one frame. ``faces`` are ordered by ID."""

    faces: tuple[TrackedFace, ...]
    detect_ms: float | None  # None when the detector was skipped on this frame
    classify_ms: float


def clip_box(box: Sequence[int], width: int, height: int) -> Box | None:
    """(x, y, w, h) cut to the frame, or None when less than 2x2 pixels of it are inside."""
    x, y, w, h = (int(v) for v in box)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= 2 and y1 - y0 >= 2 else None


def draw_faces(image: np.ndarray, faces: Sequence[TrackedFace], show_probabilities: bool = True,
               bgr: bool = True) -> None:
    """Box, "Face <id>: <label> <confidence>" caption and (optionally) probability bars of each face, on a BGR
    (or, with ``bgr=False``, RGB) image, in place."""
    for face in faces:
        draw_face(image, face.box, face.caption, face.label, face.probabilities if show_probabilities else None,
                  bgr=bgr)


class FramePipeline:
    """Frames of one stream in, tracked and classified faces out. Call it from one thread at a time.

    The model runs with ``settings.torch_threads`` intra-op threads, set for the calling thread only
    (:func:`fer_core.model.backends.set_intra_op_threads`; torch's OpenMP setting is per thread too). One thread is the
    default because on a 2-core CPU that also decodes and encodes video, two OpenMP threads wait for each
    other: with both cores busy, a 2-face batch took 10-20 ms with 1 thread, and 20-35 ms with 2 threads
    once warm but 0.6-3 s on some calls.
    """

    def __init__(self, predictor: Predictor, settings: FrameSettings = FrameSettings(),
                 clock: Callable[[], float] = time.perf_counter):
        self.predictor = predictor
        self._clock = clock
        self._applied: FrameSettings | None = None
        self._detector: FaceDetector | None = None
        self._faces: dict[int, Face] = {}  # track ID -> its latest detection (box + landmarks for alignment)
        self._tracker = FaceTracker(max_missed=settings.forget_missed)
        self._smoother = ExponentialSmoother(settings.smoothing)
        self._frame_index = 0
        self._shape: tuple | None = None  # frame shape the tracked boxes refer to
        self._threads_set: tuple[int, int] | None = None  # (thread id, torch threads) applied
        self.apply(settings)

    def apply(self, s: FrameSettings) -> None:
        """Use ``s`` from now on (a new detector only when its own settings changed; IDs and averages are kept)."""
        old = self._applied
        key = (s.detector, s.min_face_size, s.detect_max_side)
        if old is None or (old.detector, old.min_face_size, old.detect_max_side) != key:
            self._detector = make_detector(s.detector, min_face_size=s.min_face_size, max_side=s.detect_max_side)
        self._tracker.max_missed = s.forget_missed
        self._smoother.strength = s.smoothing
        self._applied = s

    def reset(self) -> None:
        """Forget every followed face and average (IDs keep counting: an ID never names two faces)."""
        self._tracker.reset()
        self._faces.clear()
        self._smoother.reset()

    def process(self, image: np.ndarray, draw: bool = True) -> FrameFaces:
        """Find, follow and classify the faces of ``image`` ((H, W, 3) uint8 BGR); with ``draw``, box and label
        them on ``image`` in place. A frame of another size than the previous one starts the tracking afresh.
        Exceptions propagate (the caller decides whether one bad frame may stop the stream)."""
        s = self._applied
        if self._threads_set != (threading.get_ident(), s.torch_threads):
            set_intra_op_threads(s.torch_threads)
            self._threads_set = (threading.get_ident(), s.torch_threads)
        height, width = image.shape[:2]
        if self._shape != image.shape:
            self.reset()  # boxes of another frame size mean nothing here
            self._shape = image.shape

        detect_ms = None
        gray = to_gray(image, channel_order="BGR")
        following = any(t.missed == 0 for t in self._tracker.tracks)
        if self._frame_index % s.detect_every == 0 or not following:
            td = self._clock()
            detected = self._detector.detect(gray)
            self._faces.update(zip(self._tracker.update([f.box for f in detected]), detected))
            detect_ms = (self._clock() - td) * 1000
        self._frame_index += 1
        shown = [(t.track_id, clip_box(t.box, width, height)) for t in self._tracker.tracks
                 if t.missed <= s.hold_missed]
        shown = [(i, Face(b, self._faces[i].score, self._faces[i].landmarks)) for i, b in shown if b is not None]
        tc = self._clock()
        predictions = self.predictor.classify_faces(gray, [f for _, f in shown], tta=s.tta)
        classify_ms = (self._clock() - tc) * 1000
        names = self.predictor.class_names
        faces = []
        for (face_id, face), pred in zip(shown, predictions):
            probs = self._smoother.update(face_id, np.array([pred.probabilities[n] for n in names]))
            top = int(np.argmax(probs))
            label = uncertain_label(names[top], float(probs[top]), s.uncertain_below)
            faces.append(TrackedFace(face_id, face.box, label, float(probs[top]),
                                     {n: float(p) for n, p in zip(names, probs)}, face.landmarks))
        followed = {t.track_id for t in self._tracker.tracks}
        self._smoother.keep_only(followed)
        self._faces = {i: f for i, f in self._faces.items() if i in followed}
        if draw:
            draw_faces(image, faces, s.show_probabilities)
        return FrameFaces(tuple(faces), detect_ms, classify_ms)
