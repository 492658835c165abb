"""Video files: every face's expression over time, frame by frame, through the live page's frame pipeline.

    python -m fer_core.video INPUT [--fps N] [--csv OUT] [--json OUT] [--annotated OUT.mp4]

:func:`analyse_video` streams: each frame is decoded, analysed (when its time is due) and encoded into the
annotated mp4 one at a time, so memory does not grow with the length of the video; what grows is one small row
per analysed face. Frames go through :class:`fer_core.video.frames.FramePipeline` (detector, tracker with stable IDs,
smoothing, drawing), the same one the live webcam page uses. Times come from each frame's presentation
timestamp (PTS), so variable-frame-rate files are right, and a rotation in the file's display matrix (phone
videos) is applied before anything else. The page (pages/3_Video_files.py) and this command share it.

Reading and writing the files is :mod:`fer_core.video.codec`. Every problem with the input is a :class:`VideoError`
whose message says what to do.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable

import av
import numpy as np
import pandas as pd

from ..faces.detection import LANDMARK_COLUMNS, landmark_values
from ..faces.drawing import face_thumbnail
from ..labels import EMOTIONS
from ..model.calibration import UNCERTAIN_BELOW_HELP, threshold_arg
from ..model.inference import Predictor
from .codec import (
    VIDEO_EXTENSIONS,
    AnnotatedWriter,
    VideoError,
    VideoInfo,
    frame_at,
    iter_frames,
    open_video,
    probe,
    timestamp,
    upright,
)
from .frames import FramePipeline, FrameSettings, TrackedFace, draw_faces

LOGGER = logging.getLogger(__name__)

DEFAULT_ANALYSIS_FPS = 5.0  # frames analysed per second of video, unless the clip is short
SHORT_CLIP_S = 10.0  # clips up to this long are analysed frame by frame by default
COLUMNS = ("frame", "time_s", "timestamp", "face_id", "x", "y", "w", "h", "label", "confidence", *EMOTIONS,
           *LANDMARK_COLUMNS)  # the landmarks: of the detection the face's box comes from (empty with Haar)
_PROBS = slice(10, 10 + len(EMOTIONS))  # where a row's probabilities are
_LANDMARKS = slice(10 + len(EMOTIONS), None)


def video_settings(**overrides) -> FrameSettings:
    """The frame pipeline's settings for video files: no mirror; a detection on every analysed frame (analysed
    frames are 0.2 s apart by default, faces move between them); faces searched on a copy at most 640 px long,
    from 30 px. Smoothing 0.5 per analysed frame: a change of expression shows within one or two frames."""
    base = dict(mirror=False, detect_every=1, detect_max_side=640, min_face_size=30, smoothing=0.5)
    return FrameSettings(**{**base, **overrides})


@dataclass(frozen=True)
class Progress:
    """Where an analysis stands, for a progress bar."""

    frames_decoded: int
    frames_analysed: int
    faces_seen: int  # distinct face IDs so far
    video_time_s: float  # time of the latest decoded frame
    duration_s: float | None
    elapsed_s: float  # wall time

    @property
    def fraction(self) -> float | None:
        if not self.duration_s:
            return None
        return min(1.0, self.video_time_s / self.duration_s)

    @property
    def eta_s(self) -> float | None:
        """Wall seconds left, extrapolated from the speed so far (None before any video time has passed)."""
        if not self.duration_s or self.video_time_s <= 0:
            return None
        return max(0.0, self.elapsed_s * (self.duration_s - self.video_time_s) / self.video_time_s)


@dataclass
class VideoAnalysis:
    """The result: one row per analysed frame and face, a thumbnail per face ID, and what happened."""

    info: VideoInfo
    analysis_fps: float | None  # None = every frame
    settings: FrameSettings
    rows: list[tuple] = field(default_factory=list)  # in COLUMNS order
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)  # face ID -> (h, w, 3) uint8 RGB
    analysed_frames: list[tuple[int, float]] = field(default_factory=list)  # (frame index, time s)
    frames_decoded: int = 0
    last_time_s: float = 0.0
    elapsed_s: float = 0.0
    failed_frames: int = 0  # frames whose analysis raised (left out, with a warning)
    complete: bool = False  # False when stopped early (by the user or at damaged data)
    warnings: list[str] = field(default_factory=list)

    @property
    def face_ids(self) -> list[int]:
        return sorted({r[3] for r in self.rows})

    @property
    def video_seconds(self) -> float:
        """Seconds of video covered (to the end of the last decoded frame)."""
        fps = self.info.nominal_fps or 0.0
        return self.last_time_s + (1.0 / fps if fps > 0 and self.frames_decoded else 0.0)

    @property
    def rate(self) -> float:
        """Processing rate: seconds of video per wall-clock second."""
        return self.video_seconds / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dataframe(self) -> pd.DataFrame:
        # a copy first: the page reads a result while its analysis thread still appends rows, and pandas walks the
        # list more than once (a list grown in between is a length mismatch)
        return pd.DataFrame(list(self.rows), columns=list(COLUMNS))

    def to_csv_bytes(self) -> bytes:
        """UTF-8 CSV, a header row and one row per analysed frame and face (COLUMNS)."""
        return self.to_dataframe().to_csv(index=False).encode("utf-8")

    def to_json_bytes(self) -> bytes:
        """UTF-8 JSON: the video's properties, the settings, and the same rows as the CSV (box as a list,
        probabilities as a mapping, landmarks as five [x, y] points or [] without)."""
        rows = [{"frame": r[0], "time_s": r[1], "timestamp": r[2], "face_id": r[3], "box": list(r[4:8]),
                 "label": r[8], "confidence": r[9], "probabilities": dict(zip(EMOTIONS, r[_PROBS])),
                 "landmarks": _points(r[_LANDMARKS])} for r in self.rows]
        doc = {"video": vars(self.info), "analysis_fps": self.analysis_fps, "frames_decoded": self.frames_decoded,
               "frames_analysed": len(self.analysed_frames), "complete": self.complete, "warnings": self.warnings,
               "settings": self.settings.to_dict(), "rows": rows}
        return json.dumps(doc, indent=1).encode("utf-8")


def default_analysis_fps(info: VideoInfo) -> float | None:
    """Every frame (None) for a clip of at most SHORT_CLIP_S seconds or of a lower frame rate, else
    DEFAULT_ANALYSIS_FPS frames per second of video."""
    if info.duration_s is not None and info.duration_s <= SHORT_CLIP_S:
        return None
    if info.nominal_fps is not None and info.nominal_fps <= DEFAULT_ANALYSIS_FPS:
        return None
    return DEFAULT_ANALYSIS_FPS


def analyse_video(source: str | Path | IO[bytes], predictor: Predictor, analysis_fps: float | None | str = "auto",
                  settings: FrameSettings | None = None, annotated: str | Path | None = None,
                  progress: Callable[[Progress], None] | None = None, progress_every_s: float = 0.25,
                  should_stop: Callable[[], bool] | None = None, result: VideoAnalysis | None = None
                  ) -> VideoAnalysis:
    """Analyse every face of a video over time; optionally write the annotated mp4 to ``annotated``.

    ``analysis_fps``: frames analysed per second of video (by their timestamps), None for every frame, "auto"
    for :func:`default_analysis_fps`. Frames in between are not analysed; in the annotated video they carry the
    boxes of the latest analysed frame. ``progress(Progress)`` is called at most every ``progress_every_s``
    wall seconds and at the end; ``should_stop()`` is checked before each frame: when it says True the analysis
    ends there and keeps what was done (``complete`` False). Pass ``result`` (from :func:`start_analysis`) to
    keep the partial result when the caller is interrupted by an exception (the Streamlit page's stop button).
    Raises VideoError for unusable input; damaged data after a good start ends the analysis with a warning.
    """
    info = result.info if result is not None else probe(source)
    if result is None:
        result = start_analysis(info, analysis_fps, settings)
    fps = result.analysis_fps
    if fps is not None and fps <= 0:
        raise VideoError(f"The number of frames analysed per second must be positive, got {fps}.")
    pipeline = FramePipeline(predictor, result.settings)
    try:
        writer = AnnotatedWriter(annotated, info.width, info.height, info.nominal_fps) if annotated else None
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"The annotated video cannot be written to {annotated} ({e}).") from None
    container = open_video(source)
    t_start, last_report = time.perf_counter(), 0.0
    faces: tuple[TrackedFace, ...] = ()
    next_due, first_t = 0.0, None
    best_area: dict[int, int] = {}

    def report() -> None:
        if progress is not None:
            progress(Progress(result.frames_decoded, len(result.analysed_frames), len(best_area), result.last_time_s,
                              info.duration_s, result.elapsed_s))

    try:
        for index, t, frame in iter_frames(container, result.warnings):
            if should_stop is not None and should_stop():
                break
            first_t = t if first_t is None else first_t
            due = fps is None or t >= next_due - 1e-3  # a millisecond of slack for rounded timestamps
            image = upright(frame) if (due or writer) else None
            if due:
                if fps is not None:
                    next_due = first_t + (np.floor((t - first_t) * fps + 1e-3) + 1) / fps  # on the grid, never behind
                try:
                    faces = pipeline.process(image, draw=False).faces
                except Exception as e:  # one bad frame must not lose the others; said once, in the warnings
                    LOGGER.exception("video frame %d could not be analysed", index)
                    if not result.failed_frames:
                        result.warnings.append(f"Frame {index} ({timestamp(t)}) could not be analysed "
                                               f"({type(e).__name__}: {e}); such frames are left out.")
                    result.failed_frames += 1
                    faces, due = (), False
            if due:
                result.analysed_frames.append((index, round(t, 3)))
                for f in faces:
                    result.rows.append((index, round(t, 3), timestamp(t), f.face_id, *f.box, f.label,
                                        round(f.confidence, 4), *(round(f.probabilities[n], 4) for n in EMOTIONS),
                                        *landmark_values(f.landmarks)))
                    area = f.box[2] * f.box[3]
                    if area > best_area.get(f.face_id, -1):  # the largest view of each face as its thumbnail
                        best_area[f.face_id] = area
                        result.thumbnails[f.face_id] = np.ascontiguousarray(face_thumbnail(image, f.box)[:, :, ::-1])
            if writer is not None:
                draw_faces(image, faces, result.settings.show_probabilities)
                try:
                    writer.write(image, t - first_t)
                except (av.FFmpegError, OSError) as e:
                    raise VideoError(f"The annotated video could not be written to {writer.path} ({e}); check the "
                                     "free disk space, or analyse without the annotated video.") from None
            result.frames_decoded = index + 1
            result.last_time_s = t
            result.elapsed_s = time.perf_counter() - t_start
            if result.elapsed_s - last_report >= progress_every_s:
                last_report = result.elapsed_s
                report()
        else:
            short = info.duration_s is not None and result.frames_decoded and \
                result.video_seconds < info.duration_s - max(0.5, 2.0 / (info.nominal_fps or 30.0))
            if short and not result.warnings:  # the decoder just ran out of data: a cut file
                result.warnings.append(f"The video ends at {timestamp(result.video_seconds)} although its header "
                                       f"says {timestamp(info.duration_s)}: the file is probably truncated. The "
                                       "results cover the part that could be read.")
            result.complete = not result.warnings
    finally:
        container.close()
        if writer is not None:
            writer.close()
        result.elapsed_s = time.perf_counter() - t_start
    report()
    if result.frames_decoded == 0 and result.warnings:
        raise VideoError(result.warnings[0])
    return result


def start_analysis(info: VideoInfo, analysis_fps: float | None | str = "auto",
                   settings: FrameSettings | None = None) -> VideoAnalysis:
    """An empty :class:`VideoAnalysis` for ``info`` ("auto" resolved), to be filled by :func:`analyse_video`."""
    fps = default_analysis_fps(info) if analysis_fps == "auto" else analysis_fps
    if fps is not None and info.nominal_fps is not None and fps >= info.nominal_fps:
        fps = None  # at least the video's own rate: every frame
    return VideoAnalysis(info=info, analysis_fps=None if fps is None else float(fps),
                         settings=settings or video_settings())


def _points(values) -> list[list[float]]:
    """The ten landmark values of a row -> five [x, y] points, or [] when the face has none."""
    values = list(values)
    return [] if values[0] is None else [values[i:i + 2] for i in range(0, len(values), 2)]


def faces_at(analysis: VideoAnalysis, frame_index: int) -> list[TrackedFace]:
    """The faces recorded for one analysed frame, as the pipeline gave them."""
    return [TrackedFace(r[3], tuple(r[4:8]), r[8], r[9], dict(zip(EMOTIONS, r[_PROBS])),
                        tuple(map(tuple, _points(r[_LANDMARKS])))) for r in analysis.rows if r[0] == frame_index]


def annotated_frame_at(source: str | Path | IO[bytes], analysis: VideoAnalysis, frame_index: int,
                       time_s: float) -> np.ndarray:
    """The analysed frame ``frame_index`` (shown at ``time_s``), re-decoded from ``source`` and annotated like the
    annotated video: (H, W, 3) uint8 RGB."""
    rgb = np.ascontiguousarray(frame_at(source, time_s))
    draw_faces(rgb, faces_at(analysis, frame_index), analysis.settings.show_probabilities, bgr=False)
    return rgb


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fer_core.video", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="video file (" + ", ".join(VIDEO_EXTENSIONS) + ")")
    p.add_argument("--fps", type=float, default=None,
                   help=f"frames to analyse per second of video (default: every frame for clips up to "
                        f"{SHORT_CLIP_S:.0f} s, else {DEFAULT_ANALYSIS_FPS:g}); 0 = every frame")
    p.add_argument("--csv", help="write one row per analysed frame and face to this CSV (default: none)")
    p.add_argument("--json", help="write the same rows and the video's properties to this JSON (default: none)")
    p.add_argument("--annotated", help="write the video with boxes, IDs and labels to this H.264 mp4 (default: none)")
    p.add_argument("--weights", default=None, help="checkpoint (default: artifacts/model.pt)")
    p.add_argument("--smoothing", type=float, default=video_settings().smoothing,
                   help="EMA strength per analysed frame in [0, 1), 0 = off (default: %(default)s)")
    p.add_argument("--min-face-size", type=int, default=video_settings().min_face_size,
                   help="ignore smaller faces, pixels (default: %(default)s)")
    p.add_argument("--uncertain-below", type=threshold_arg, default=None, metavar="P", help=UNCERTAIN_BELOW_HELP)
    return p


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..model.weights import DEFAULT_WEIGHTS, CheckpointError
    from .summary import summarise

    try:
        info = probe(args.input)
        predictor = Predictor.from_checkpoint(args.weights or DEFAULT_WEIGHTS)
    except (VideoError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fps = "auto" if args.fps is None else (None if args.fps == 0 else args.fps)
    settings = video_settings(smoothing=args.smoothing, min_face_size=args.min_face_size,
                              uncertain_below=args.uncertain_below)
    total = info.duration_s
    with tqdm(total=round(total, 2) if total else None, unit="s", unit_scale=False, desc=Path(args.input).name,
              bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} s video [{elapsed}<{remaining}{postfix}]") as bar:
        def progress(p: Progress) -> None:
            bar.n = round(min(p.video_time_s, total or p.video_time_s), 2)
            bar.set_postfix_str(f"{p.frames_analysed} frames analysed, {p.faces_seen} faces", refresh=False)
            bar.refresh()

        try:
            result = analyse_video(args.input, predictor, fps, settings, args.annotated, progress)
        except VideoError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        if result.complete and total:
            bar.n = round(total, 2)  # the last frame's start time is one frame short of the end
            bar.refresh()
    for w in result.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for path, data in ((args.csv, result.to_csv_bytes), (args.json, result.to_json_bytes)):
        if path:
            Path(path).write_bytes(data())
    every = "every frame" if result.analysis_fps is None else f"{result.analysis_fps:g} frames/s"
    print(f"{result.frames_decoded} frames ({result.video_seconds:.1f} s of video), {len(result.analysed_frames)} "
          f"analysed ({every}), {len(result.face_ids)} face(s); {result.elapsed_s:.1f} s -> {result.rate:.2f} s of "
          f"video per second")
    table = summarise(result)
    if not table.empty:
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
