"""Reading and writing video files with PyAV: open with clear errors, frames upright with their presentation
times, the first-frame probe, one frame at a time, and the browser-playable H.264 writer.

Used by :mod:`fer_core.video.analyse` (the analysis); nothing here knows about faces. Every problem with the input is a
:class:`VideoError` whose message says what to do.
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

import av
import cv2
import numpy as np

from ..files import remove_older_than

VIDEO_EXTENSIONS = ("mp4", "mov", "webm", "avi", "mkv")
_STILL_FORMATS = ("image2", "tty")  # demuxers of still images and text; also any "*_pipe" (jpeg_pipe, png_pipe, ...)


class VideoError(ValueError):
    """The input cannot be analysed; the message says why and what to do (shown as is by the page and the CLI)."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about its first video stream. ``width`` x ``height`` is the displayed size
    (after ``rotation``, degrees counter-clockwise from the display matrix)."""

    width: int
    height: int
    rotation: int
    duration_s: float | None  # None when the container does not say
    nominal_fps: float | None  # the stream's average frame rate; a variable-rate file varies around it
    frame_count: int | None  # None when the container does not say
    codec: str
    container: str


def timestamp(seconds: float) -> str:
    """Seconds -> "hh:mm:ss.mmm"."""
    ms = int(round(max(0.0, seconds) * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def open_video(source: str | Path | IO[bytes]) -> av.container.InputContainer:
    """Open a file path or a binary file object, or raise VideoError saying why it is not a usable video."""
    if hasattr(source, "seek"):
        source.seek(0)
    elif Path(source).exists() and not Path(source).is_file():  # a fifo or device would be read forever
        raise VideoError(f"{source}: not a regular file (a folder, pipe or device); give a video file.")
    try:
        container = av.open(source if hasattr(source, "read") else str(source), mode="r")
    except FileNotFoundError:
        raise VideoError(f"{source} does not exist.") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoError("This file is not a video that can be read (damaged, truncated before its index, or not a "
                         f"video at all: {e.__class__.__name__}). Upload an {', '.join(VIDEO_EXTENSIONS)} file; "
                         "re-exporting it from the recording app usually helps.") from None
    fmt = container.format.name
    if fmt in _STILL_FORMATS or fmt.endswith("_pipe"):
        container.close()
        raise VideoError("This is a still image or a text file, not a video. For photos use the Upload images page.")
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        container.close()
        if not kinds:
            raise VideoError("This video is empty: zero length, no picture and no sound. Check that the recording "
                             "finished and was saved completely.")
        raise VideoError(f"This file has no video stream (it holds {', '.join(kinds)} only). Upload a recording "
                         "with picture.")
    return container


def quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns (0-3) that make a frame upright, from its display matrix."""
    return int(round((frame.rotation or 0) / 90.0)) % 4


def upright(frame: av.VideoFrame, fmt: str = "bgr24") -> np.ndarray:
    """Decoded frame -> (H, W, 3) uint8 in ``fmt``, turned upright by its display matrix (phone videos)."""
    image = frame.to_ndarray(format=fmt)
    turns = quarter_turns(frame)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def iter_frames(container, errors: list[str]) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """(index, seconds since the stream's start, frame) in presentation order. Damaged data ends the iteration
    with a message in ``errors`` instead of an exception."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    tb = stream.time_base
    start = stream.start_time or 0
    step = 1.0 / float(stream.average_rate) if stream.average_rate else 1 / 30
    previous = None
    index = 0
    try:
        for frame in container.decode(stream):
            if frame.pts is not None and tb is not None:
                t = max(0.0, float((frame.pts - start) * tb))
            else:  # no timestamp: one nominal frame after the previous one
                t = 0.0 if previous is None else previous + step
            previous = t
            yield index, t, frame
            index += 1
    except (av.FFmpegError, OSError) as e:
        errors.append(f"The video is damaged or truncated after {timestamp(previous or 0.0)} "
                      f"({e.__class__.__name__}); the results cover the part before it.")


def probe(source: str | Path | IO[bytes]) -> VideoInfo:
    """The video's size (upright), rotation, duration, frame rate and frame count, reading the first frame.

    Raises VideoError for anything that is not a playable video with at least one frame."""
    container = open_video(source)
    try:
        stream = container.streams.video[0]
        errors: list[str] = []
        first = next(iter_frames(container, errors), None)
        if first is None:
            raise VideoError("No frame of this video could be decoded: it has no frames (zero length) or is damaged "
                             "or truncated" + (f" ({errors[0]})" if errors else "") + ". Check that the recording "
                             "finished and was saved completely.")
        frame = first[2]
        turns = quarter_turns(frame)
        w, h = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        fps = float(stream.average_rate) if stream.average_rate else None
        return VideoInfo(width=w, height=h, rotation=int(frame.rotation or 0), duration_s=duration,
                         nominal_fps=fps, frame_count=stream.frames or None, codec=stream.codec_context.name,
                         container=container.format.name)
    finally:
        container.close()


ANNOTATED_SUFFIX = "_annotated.mp4"  # the annotated videos of the video page end in this
ANNOTATED_KEEP_S = 3600  # an annotated video not looked at for this long belongs to a session that has ended


def prune_annotated_videos(folder: str | Path, max_age_s: float = ANNOTATED_KEEP_S) -> list[Path]:
    """Delete the ``*_annotated.mp4`` files in ``folder`` last modified more than ``max_age_s`` ago (the video page
    touches its session's file at every rerun, so only those of sessions that have ended or stayed idle that long
    go); returns the ones removed. Keeps a long-running server's temporary disk bounded."""
    return remove_older_than(Path(folder).glob("*" + ANNOTATED_SUFFIX), max_age_s)


class AnnotatedWriter:
    """H.264 (libx264, yuv420p, +faststart) mp4 that browsers play, written one BGR frame at a time with the
    input's timestamps (a variable frame rate is kept). Odd sizes are padded by one pixel (4:2:0 needs even)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float | None):
        self.path = Path(path)
        self.width, self.height = width + width % 2, height + height % 2
        self._container = av.open(str(self.path), mode="w", options={"movflags": "+faststart"})
        rate = fractions.Fraction(fps).limit_denominator(1001) if fps else fractions.Fraction(30)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, "yuv420p"
        self._stream.codec_context.time_base = self._tb = fractions.Fraction(1, 1000)  # PTS in milliseconds
        self._stream.options = {"preset": "veryfast", "crf": "23"}
        self._last_pts = -1
        self.frames = 0

    def write(self, image: np.ndarray, time_s: float) -> None:
        h, w = image.shape[:2]
        if (w, h) != (self.width, self.height):
            image = cv2.copyMakeBorder(image, 0, self.height - h, 0, self.width - w, cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        self._last_pts = frame.pts = max(self._last_pts + 1, int(round(time_s * 1000)))  # strictly increasing
        frame.time_base = self._tb
        self._container.mux(self._stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        try:
            self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()


def frame_at(source: str | Path | IO[bytes], time_s: float) -> np.ndarray:
    """The upright (H, W, 3) uint8 RGB frame shown at ``time_s`` seconds (the last frame starting at or before it)."""
    container = open_video(source)
    try:
        stream = container.streams.video[0]
        start = stream.start_time or 0
        if stream.time_base is not None:
            container.seek(start + int(max(0.0, time_s - 1.0) / stream.time_base), stream=stream, backward=True)
        chosen = None
        for frame in container.decode(stream):
            t = float((frame.pts - start) * stream.time_base) if frame.pts is not None else 0.0
            if chosen is not None and t > time_s + 1e-3:
                break
            chosen = frame
        if chosen is None:
            raise VideoError(f"No frame found at {timestamp(time_s)}.")
        return upright(chosen, "rgb24")
    except av.FFmpegError as e:
        raise VideoError(f"The frame at {timestamp(time_s)} could not be read ({e.__class__.__name__}).") from None
    finally:
        container.close()
