"""ONE preprocessing definition: face crop -> model input tensor.

Used by training-time evaluation, inference, the app pages and the CLIs alike: :func:`faces_to_array` (numpy,
no torch) for inference, :func:`faces_to_tensor` (the same numbers as a torch tensor) for training. Training
augmentation operates on the output of :func:`faces_to_tensor`; it never re-implements it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessConfig:
    """How a face crop becomes a tensor. Stored in every checkpoint."""

    image_size: int = 48  # model input side, pixels
    mean: float = 0.5  # on [0, 1] intensities
    std: float = 0.25
    face_margin: float = 0.0  # fraction of the detector box added on each side before cropping

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def to_uint8(image: np.ndarray) -> np.ndarray:
    """uint16 scaled to 0..255; other non-uint8 dtypes clipped to 0..255; uint8 unchanged."""
    if image.dtype == np.uint16:
        return (image / 257.0).round().astype(np.uint8)
    if image.dtype != np.uint8:
        return np.clip(image, 0, 255).astype(np.uint8)
    return image


def to_gray(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """Any 2-D / 3-D image array (gray, RGB/BGR, RGBA/BGRA; uint8 or uint16) -> (H, W) uint8 gray."""
    image = to_uint8(image)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb_first = channel_order.upper().startswith("RGB")
        if image.shape[2] == 4:
            code = cv2.COLOR_RGBA2GRAY if rgb_first else cv2.COLOR_BGRA2GRAY
        else:
            code = cv2.COLOR_RGB2GRAY if rgb_first else cv2.COLOR_BGR2GRAY
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    raise ValueError(f"Unsupported image shape {image.shape}; expected (H, W), (H, W, 3) or (H, W, 4).")


def crop_face(gray: np.ndarray, box: Sequence[int], margin: float = 0.0) -> np.ndarray:
    """Crop box (x, y, w, h) from a gray image, grown by ``margin`` of its size per side, clipped to the image."""
    x, y, w, h = (int(v) for v in box)
    dx, dy = int(round(w * margin)), int(round(h * margin))
    height, width = gray.shape[:2]
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"Face box {tuple(box)} lies outside the {width}x{height} image.")
    return gray[y0:y1, x0:x1]


def resize_face(face: np.ndarray, size: int) -> np.ndarray:
    """(H, W) uint8 -> (size, size) uint8; area interpolation when shrinking, bilinear when growing."""
    if face.shape[:2] == (size, size):
        return face
    shrinking = face.shape[0] > size or face.shape[1] > size
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def faces_to_array(faces: Sequence[np.ndarray] | np.ndarray,
                   config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """Gray uint8 face crops (any size) -> (B, 1, S, S) float32 array, normalised with config.mean/std.

    The model input of inference (ONNX Runtime takes numpy arrays); :func:`faces_to_tensor` is the same numbers
    as a torch tensor, for training.
    """
    if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (config.image_size,) * 2:
        batch = faces  # already a (B, S, S) stack, e.g. a cached dataset
    else:
        batch = np.stack([resize_face(to_gray(f), config.image_size) for f in faces]) if len(faces) else (
            np.zeros((0, config.image_size, config.image_size), np.uint8))
    array = np.asarray(batch, dtype=np.float32)[:, None] / np.float32(255.0)
    array -= np.float32(config.mean)
    array /= np.float32(config.std)
    return array


def faces_to_tensor(faces: Sequence[np.ndarray] | np.ndarray, config: PreprocessConfig = PreprocessConfig()):
    """Gray uint8 face crops (any size) -> (B, 1, S, S) float32 torch tensor: :func:`faces_to_array` (needs torch)."""
    import torch  # training only: the app and the command-line inference run without torch

    return torch.from_numpy(faces_to_array(faces, config))
