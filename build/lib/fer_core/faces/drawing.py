"""Annotating images with face predictions, and face thumbnails (the upload, live and video pages)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..labels import EMOTIONS

THUMBNAIL_SIDE = 96  # pixels of the face thumbnails shown beside each face's probabilities

# One colour per expression (RGB), also used by the plotly charts so the app reads consistently.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (220, 50, 47),
    "disgust": (133, 153, 0),
    "fear": (108, 113, 196),
    "happy": (253, 191, 45),
    "sad": (38, 139, 210),
    "surprise": (211, 54, 130),
    "neutral": (147, 161, 161),
}


BAR_FONT_SCALE = 0.32  # class names beside the probability bars
DISPLAY_MIN_SIDE = 240  # annotate() enlarges smaller images so that captions stay readable ...
DISPLAY_MAX_ENLARGED_SIDE = 2048  # ... but never makes the longer side larger than this


def _text_width(text: str, scale: float, thickness: int = 1) -> int:
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)[0][0]


def color_hex(label: str) -> str:
    r, g, b = EMOTION_COLORS.get(label, (200, 200, 200))
    return f"#{r:02x}{g:02x}{b:02x}"


def draw_face(image: np.ndarray, box: Sequence[int], caption: str, label: str,
              probabilities: dict[str, float] | None = None, bgr: bool = False) -> None:
    """Draw one face box with a caption above it (in place) and, optionally, a compact bar per class below/beside it.

    ``image`` is (H, W, 3) uint8 RGB (or BGR with ``bgr=True``).
    """
    h_img, w_img = image.shape[:2]
    x, y, w, h = (int(v) for v in box)
    color = EMOTION_COLORS.get(label, (200, 200, 200))
    if bgr:
        color = color[::-1]
    thick = max(2, round(min(h_img, w_img) / 250))
    cv2.rectangle(image, (x, y), (x + w, y + h), color, thick)
    scale = max(0.45, min(1.2, w / 220))
    font_thick = 1 + thick // 2
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, font_thick)
    if tw + 10 > w_img:  # shrink a caption wider than the whole image rather than cut it
        scale *= max(0.1, (w_img - 10) / (tw + 6))
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, font_thick)
    tx = max(0, min(x, w_img - tw - 6))  # moved left when the box is near the right edge
    ty = y - 6 if y - th - base - 6 >= 0 else min(h_img - base - 2, y + h + th + 6)
    cv2.rectangle(image, (tx, ty - th - 4), (min(w_img - 1, tx + tw + 6), ty + base), color, -1)
    cv2.putText(image, caption, (tx + 3, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), font_thick, cv2.LINE_AA)
    if probabilities:
        draw_probability_bars(image, probabilities, (x + w + 4, y), bar_width=max(40, min(110, w // 2)), bgr=bgr)


def draw_probability_bars(image: np.ndarray, probabilities: dict[str, float], origin: tuple[int, int],
                          bar_width: int = 90, bar_height: int = 11, bgr: bool = False) -> None:
    """Compact horizontal bars, one per class, starting at ``origin`` (moved inside the image if needed)."""
    h_img, w_img = image.shape[:2]
    label_w = max(52, max(_text_width(n, BAR_FONT_SCALE) for n in probabilities) + 6)  # full names, "surprise"
    total_w = label_w + bar_width
    x0, y0 = origin
    if x0 + total_w > w_img:  # no room at the origin: keep the bars inside the image
        x0 = max(0, w_img - total_w)
    y0 = min(max(0, y0), max(0, h_img - bar_height * len(probabilities) - 2))
    for i, name in enumerate(EMOTIONS if set(probabilities) == set(EMOTIONS) else probabilities):
        p = float(probabilities[name])
        top = y0 + i * bar_height
        color = EMOTION_COLORS.get(name, (200, 200, 200))
        if bgr:
            color = color[::-1]
        overlay_bg = (30, 30, 30)
        cv2.rectangle(image, (x0, top), (x0 + total_w, top + bar_height - 1), overlay_bg, -1)
        cv2.putText(image, name, (x0 + 2, top + bar_height - 3), cv2.FONT_HERSHEY_SIMPLEX, BAR_FONT_SCALE,
                    (235, 235, 235), 1, cv2.LINE_AA)
        cv2.rectangle(image, (x0 + label_w, top + 1), (x0 + label_w + int(round(p * bar_width)), top + bar_height - 2),
                      color, -1)


def display_scale(height: int, width: int, min_side: int = DISPLAY_MIN_SIDE) -> int:
    """Whole-number factor that brings the shorter side of an image to at least ``min_side`` pixels (1 if it
    already is), without taking the longer side past DISPLAY_MAX_ENLARGED_SIDE (a thin strip stays thin)."""
    short, long = max(1, min(height, width)), max(1, height, width)
    return max(1, min(-(-min_side // short), DISPLAY_MAX_ENLARGED_SIDE // long))


def annotate(image: np.ndarray, faces: Sequence, numbered: bool = True, show_probabilities: bool = False,
             bgr: bool = False, min_side: int = DISPLAY_MIN_SIDE, labels: Sequence[str] | None = None) -> np.ndarray:
    """Copy of ``image`` with every FacePrediction boxed and captioned "#n label 87%", and the five landmarks the
    face was aligned on (eyes, nose tip, mouth corners) marked with small dots when the detector gave them.
    ``labels`` replaces the faces' own labels in the captions (e.g. "uncertain", see fer_core.model.calibration).

    An image whose shorter side is under ``min_side`` pixels (e.g. a 48x48 face crop) is first enlarged by a
    whole-number factor with nearest-neighbour pixels (its boxes with it), so that the caption fits and is
    readable; the returned image is then that factor larger than ``image``.
    """
    factor = display_scale(*image.shape[:2], min_side=min_side)
    if factor > 1:
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    out = np.ascontiguousarray(image.copy())
    for i, face in enumerate(faces, start=1):
        prefix = f"#{i} " if numbered else ""
        label = labels[i - 1] if labels is not None else face.label
        caption = f"{prefix}{label} {face.confidence:.0%}"
        box = tuple(int(v) * factor for v in face.box)
        draw_face(out, box, caption, label, face.probabilities if show_probabilities else None, bgr=bgr)
        draw_landmarks(out, [(x * factor, y * factor) for x, y in face.face.landmarks], radius=max(1, box[2] // 60))
    return out


def draw_landmarks(image: np.ndarray, points: Sequence[tuple[float, float]], radius: int = 2) -> None:
    """Small white dots with a dark rim at ``points`` (x, y pixels), in place; the same in RGB and BGR."""
    for x, y in points:
        centre = (int(round(x)), int(round(y)))
        cv2.circle(image, centre, radius + 1, (30, 30, 30), -1, cv2.LINE_AA)
        cv2.circle(image, centre, radius, (255, 255, 255), -1, cv2.LINE_AA)


def face_thumbnail(rgb: np.ndarray, box: Sequence[int], side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(side, side, 3) uint8 RGB picture of one face: its box widened to a square (clipped to the image), resized."""
    x, y, w, h = (int(v) for v in box)
    half = max(w, h, 1) // 2
    cx, cy = x + w // 2, y + h // 2
    x0, y0 = max(0, cx - half), max(0, cy - half)
    crop = rgb[y0:min(rgb.shape[0], cy + half), x0:min(rgb.shape[1], cx + half)]
    if crop.size == 0:
        return np.zeros((side, side, 3), np.uint8)
    shrink = min(crop.shape[:2]) > side
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
