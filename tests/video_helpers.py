"""Test videos built from real photos (scikit-image's astronaut portrait and faces of its LFW subset), written
with PyAV in the test itself: nothing from ../shared, nothing downloaded."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np
from helpers import public_domain_faces

from fer_core.video.live import canvas_from_photos

SURPRISED_LFW_INDEX = 49  # skimage.data.lfw_subset()[49]: a face the shipped model calls "surprise"


def surprised_face(size: int = 125) -> np.ndarray:
    """(size, size, 3) uint8 RGB: a real face photo (25x25 in scikit-image's bundled LFW subset) enlarged."""
    from skimage import data

    face = (data.lfw_subset()[SURPRISED_LFW_INDEX] * 255).round().astype(np.uint8)
    return np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)] * 3, axis=-1)


def two_face_frames(width: int = 320, height: int = 240) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB frames with two faces side by side: the left one smiles in both (the astronaut); the right one is
    the mirrored astronaut (happy) in the first and the LFW face (surprise) in the second."""
    faces = public_domain_faces()
    left, happy = faces["astronaut_head"], faces["astronaut_head_mirrored"]
    return (canvas_from_photos([left, happy], width, height), canvas_from_photos([left, surprised_face()], width, height))


def write_video(path: Path, frames: Sequence[np.ndarray] | None = None, times: Sequence[float] | None = None,
                fps: int = 10, codec: str = "libx264", rotation: int = 0, make=None, count: int = 0) -> Path:
    """Encode RGB frames (or ``make(i)`` for i < ``count``) into ``path`` at ``times`` seconds (default i / fps).

    ``rotation``: degrees counter-clockwise written to the display matrix (what a phone records)."""
    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=fps)
    first = frames[0] if frames is not None else make(0)
    stream.height, stream.width = first.shape[:2]
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    if rotation:
        stream.set_display_rotation(rotation)
    n = len(frames) if frames is not None else count
    for i in range(n):
        image = frames[i] if frames is not None else make(i)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = int(round((times[i] if times is not None else i / fps) * 1000))
        frame.time_base = fractions.Fraction(1, 1000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    return path


def switching_video(path: Path, seconds: float = 4.0, fps: int = 10, switch_s: float = 2.0) -> Path:
    """Two faces for ``seconds``; the right one switches from happy to surprise at ``switch_s``."""
    before, after = two_face_frames()
    return write_video(path, make=lambda i: before if i / fps < switch_s else after, count=int(seconds * fps), fps=fps)


def audio_only(path: Path) -> Path:
    """An mp4 with an AAC track and no picture."""
    with av.open(str(path), mode="w") as c:
        stream = c.add_stream("aac", rate=8000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 8000, i * 1024, fractions.Fraction(1, 8000)
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def zero_length(path: Path) -> Path:
    """A recording stopped before its first frame: an H.264 mp4 header only."""
    with av.open(str(path), mode="w") as c:
        stream = c.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        c.start_encoding()
    return path
