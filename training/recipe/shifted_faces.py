"""Faces made to look like another camera, for a temperature that carries to new studios.

A temperature fitted only on faces like the training faces learns how sure the model may be on *those*; on photos
of a new studio the same model is more often wrong at the same confidence (on the transfer protocol's never-seen
domains the fitted temperature sharpens, T of about 0.8, while they want 1.0-1.3: docs/transfer.md). Fitting on
faces whose camera was changed on purpose as well (Tomani et al., "Post-hoc Uncertainty Calibration for Domain
Drift Scenarios", CVPR 2021) shows the fit what a shift costs, without looking at any new domain.

:func:`shifted_copies` makes those faces: every calibration face at each of :data:`SEVERITIES`, each copy with
gamma, blur, down- and up-scaling, sensor noise and JPEG compression of that strength (the ranges of the training
options ``--camera-aug`` and ``--jpeg-aug`` at severity 1), reproducibly (one seed). ``training.calibrate
--shifted-copy`` and ``training.experiments.shifted_calibration`` fit on them as one more set of the mix.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SEVERITIES = (0.25, 0.5, 0.75, 1.0)  # every face is copied once at each
MAX_GAMMA_LOG = np.log(1.6)  # severity 1: gamma between 1/1.6 and 1.6 (as --camera-aug)
MAX_BLUR_SIGMA = 1.2  # pixels of the face crop at severity 1
MIN_SCALE = 0.4  # severity 1: down to 40 % of the crop's side and back up
MAX_NOISE = 0.04  # standard deviation of the added noise at severity 1 (pixel values in [0, 1])
JPEG_QUALITY = (95, 25)  # JPEG quality at severity 0 and at severity 1


def shifted_face(gray: np.ndarray, severity: float, rng: np.random.Generator) -> np.ndarray:
    """One (S, S) uint8 face crop with the camera changed by ``severity`` in (0, 1]: a random gamma within
    ``exp(+-severity * log 1.6)``, Gaussian blur of ``severity * 1.2`` px, down- and up-scaling to
    ``1 - severity * 0.6`` of its side, Gaussian noise, and JPEG at quality ``95 - severity * 70``."""
    side = gray.shape[0]
    x = gray.astype(np.float32) / 255.0
    x = x ** float(np.exp(rng.uniform(-1.0, 1.0) * severity * MAX_GAMMA_LOG))
    x = cv2.GaussianBlur(x, (0, 0), severity * MAX_BLUR_SIGMA)
    small = max(4, round(side * (1.0 - severity * (1.0 - MIN_SCALE))))
    if small < side:
        x = cv2.resize(cv2.resize(x, (small, small), interpolation=cv2.INTER_AREA), (side, side),
                       interpolation=cv2.INTER_LINEAR)
    x = x + rng.normal(0.0, severity * MAX_NOISE, x.shape).astype(np.float32)
    u8 = (np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    quality = round(JPEG_QUALITY[0] + severity * (JPEG_QUALITY[1] - JPEG_QUALITY[0]))
    return cv2.imdecode(cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, quality])[1], cv2.IMREAD_GRAYSCALE)


def shifted_copies(faces: Sequence[np.ndarray], labels: np.ndarray, seed: int = 0,
                   severities: Sequence[float] = SEVERITIES) -> tuple[list[np.ndarray], np.ndarray]:
    """Every face of ``faces`` (gray uint8 crops) once at each severity, and their labels: ``len(severities)`` times
    as many faces; the same seed gives the same faces."""
    rng = np.random.default_rng(seed)
    out = [shifted_face(face, s, rng) for s in severities for face in faces]
    return out, np.tile(np.asarray(labels), len(severities))


def shifted_view_logits(predictor, faces: Sequence[np.ndarray], labels: np.ndarray, seed: int = 0):
    """(V, N, C) TTA logits of the :func:`shifted_copies` of ``faces`` by ``predictor``, and their labels."""
    copies, copy_labels = shifted_copies(faces, labels, seed)
    return predictor.view_logits(copies, tta=True), copy_labels
