"""Explanations: where in a face crop the model looked for an expression (occlusion sensitivity).

Each patch of the 48x48 face the model sees is hidden in turn (replaced by the same place of a blurred copy of the
face: the detail goes, the overall light stays) and the model is asked again; a pixel's weight for a class is the
mean drop of that class's log-probability over the patches that hid it. All the hidden copies of a face go through
the classifier's backend in one batch (ONNX Runtime in the app: no torch, no gradients), and one batch answers for
every class at once, so "why happy?" and "why not surprise?" cost the same as one of them.

Why not Grad-CAM (used until 2026-12-03): on 200 FER2013 validation faces its maps failed the deletion test (hiding
the 20 % of pixels it ranked highest lowered the explained probability less often than hiding a random 20 %), it
gave empty maps on confidently classified faces, and put hot spots in the crop's corners; the measurement is
``python -m training.experiments.explain_faithfulness`` (numbers: docs/explanations.md).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from ..faces.preprocessing import PreprocessConfig, faces_to_array
from .backends import as_backend

PATCH = 12  # side of the hidden square, pixels of the model's 48x48 input (about an eye, or half the mouth)
STRIDE = 6  # pixels between patches; patches also overhang the edges, so every pixel is hidden (PATCH/STRIDE)^2 times
BLUR_SIGMA = 6.0  # Gaussian blur of the replacement, pixels of the model's input
SMOOTH_SIGMA = 1.5  # light smoothing of the map (pixels) before it is scaled to [0, 1]
BATCH = 128  # hidden copies per forward pass (see fer_core.model.inference.BATCH_IMAGES)
OVERLAY_ALPHA = 0.45  # weight of the heatmap's colours over the face


def blurred(x: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """(S, S) float32 image -> the same Gaussian-blurred (borders reflected): what hidden pixels are replaced by."""
    return cv2.GaussianBlur(np.asarray(x, np.float32), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def patch_starts(size: int, patch: int = PATCH, stride: int = STRIDE) -> list[int]:
    """Top/left corners of the patches along one side: from ``stride - patch`` (overhanging the edge) to < size."""
    return list(range(stride - patch, size, stride))


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, C) logits -> (N, C) float64 log-softmax, accurate for a probability near 1 (no saturation at 1.0)."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def occlusion_maps(model, x: np.ndarray, patch: int = PATCH, stride: int = STRIDE,
                   blur_sigma: float = BLUR_SIGMA) -> np.ndarray:
    """(S, S) float32 preprocessed face -> (C, S, S) float32 maps, one per class: at each pixel, the mean drop of
    the class's log-probability when a patch covering it is replaced by the blurred face (> 0: hiding it lowers
    the class; not clipped, not smoothed). ``model``: a :mod:`fer_core.model.backends` backend or a torch module."""
    backend = as_backend(model)
    x = np.asarray(x, np.float32)
    size_y, size_x = x.shape
    replacement = blurred(x, blur_sigma)
    boxes = [(y, xx) for y in patch_starts(size_y, patch, stride) for xx in patch_starts(size_x, patch, stride)]
    copies = np.repeat(x[None], len(boxes), axis=0)
    for copy, (y, xx) in zip(copies, boxes):
        rows, cols = slice(max(y, 0), y + patch), slice(max(xx, 0), xx + patch)
        copy[rows, cols] = replacement[rows, cols]
    batch = np.concatenate([x[None], copies])[:, None]  # (1 + M, 1, S, S): the face itself first
    logits = np.concatenate([backend(batch[i:i + BATCH]) for i in range(0, len(batch), BATCH)])
    logp = log_probabilities(logits)
    drops = logp[0] - logp[1:]  # (M, C)
    total = np.zeros((logits.shape[1], size_y, size_x), np.float64)
    count = np.zeros((size_y, size_x), np.float64)
    for drop, (y, xx) in zip(drops, boxes):
        rows, cols = slice(max(y, 0), y + patch), slice(max(xx, 0), xx + patch)
        total[:, rows, cols] += drop[:, None, None]
        count[rows, cols] += 1
    return (total / count).astype(np.float32)


def explain_crop(model, preprocess: PreprocessConfig, crop: np.ndarray,
                 classes: Sequence[int] | None = None) -> np.ndarray:
    """A (H, W) uint8 gray face crop -> (K, H, W) float32 heatmaps in [0, 1], one per class in ``classes`` (all by
    default), at the crop's own size: where hiding the face lowers that class's probability most (1 = most).

    ``model``: the predictor's backend (``predictor.backend``) or a torch module. A map is all zero only when
    hiding no part of the face lowers the class at all (the class gains from every part being hidden).
    """
    crop = np.asarray(crop)
    if crop.ndim != 2:
        raise ValueError(f"need a (H, W) gray crop, got shape {crop.shape}")
    maps = occlusion_maps(model, faces_to_array([crop], preprocess)[0, 0])
    maps = maps if classes is None else maps[list(classes)]
    h, w = crop.shape
    out = []
    for m in np.clip(maps, 0, None):
        m = cv2.GaussianBlur(m, (0, 0), sigmaX=SMOOTH_SIGMA, borderType=cv2.BORDER_REFLECT)
        out.append(cv2.resize(m, (w, h), interpolation=cv2.INTER_CUBIC) if (h, w) != m.shape else m)
    out = np.clip(np.stack(out), 0, None)
    peak = out.reshape(len(out), -1).max(axis=1)
    return (out / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)


def overlay(crop: np.ndarray, heatmap: np.ndarray, side: int | None = None, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(H, W) uint8 gray crop + (H, W) heatmap in [0, 1] -> (side, side, 3) uint8 RGB: the face with the heatmap's
    colours (blue = no weight, red = most) blended over it; ``side`` enlarges it for display (default: as is)."""
    if crop.shape != heatmap.shape:
        raise ValueError(f"crop {crop.shape} and heatmap {heatmap.shape} differ in size")
    colours = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), cv2.COLORMAP_JET),
                           cv2.COLOR_BGR2RGB)
    face = cv2.cvtColor(np.asarray(crop, np.uint8), cv2.COLOR_GRAY2RGB)
    out = cv2.addWeighted(colours, alpha, face, 1 - alpha, 0)
    if side is not None and side != out.shape[0]:
        out = cv2.resize(out, (side, side), interpolation=cv2.INTER_CUBIC if side > out.shape[0] else cv2.INTER_AREA)
    return out
