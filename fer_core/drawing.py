"""Annotating images with face predictions (used by the upload page and the live webcam page)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from .labels import EMOTIONS

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
    (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1 + thick // 2)
    ty = y - 6 if y - th - base - 6 >= 0 else min(h_img - base - 2, y + h + th + 6)
    cv2.rectangle(image, (x, ty - th - 4), (min(w_img - 1, x + tw + 6), ty + base), color, -1)
    cv2.putText(image, caption, (x + 3, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1 + thick // 2, cv2.LINE_AA)
    if probabilities:
        draw_probability_bars(image, probabilities, (x + w + 4, y), bar_width=max(40, min(110, w // 2)), bgr=bgr)


def draw_probability_bars(image: np.ndarray, probabilities: dict[str, float], origin: tuple[int, int],
                          bar_width: int = 90, bar_height: int = 11, bgr: bool = False) -> None:
    """Compact horizontal bars, one per class, starting at ``origin`` (moved inside the image if needed)."""
    h_img, w_img = image.shape[:2]
    label_w = 52
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
        cv2.putText(image, name[:7], (x0 + 2, top + bar_height - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.32,
                    (235, 235, 235), 1, cv2.LINE_AA)
        cv2.rectangle(image, (x0 + label_w, top + 1), (x0 + label_w + int(round(p * bar_width)), top + bar_height - 2),
                      color, -1)


def annotate(image: np.ndarray, faces: Sequence, numbered: bool = True, show_probabilities: bool = False,
             bgr: bool = False) -> np.ndarray:
    """Copy of ``image`` with every FacePrediction boxed and captioned "#n label 87%"."""
    out = np.ascontiguousarray(image.copy())
    for i, face in enumerate(faces, start=1):
        prefix = f"#{i} " if numbered else ""
        caption = f"{prefix}{face.label} {face.confidence:.0%}"
        draw_face(out, face.box, caption, face.label, face.probabilities if show_probabilities else None, bgr=bgr)
    return out
