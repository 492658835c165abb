"""Face detection behind one small interface: an image in, a list of :class:`Face` out.

Two backends:

* ``retinaface`` (the default): RetinaFace with a MobileNet-0.25 backbone (biubug6/Pytorch_Retinaface, MIT,
  trained on WIDER FACE), a 1.7 MB ONNX file shipped in ``artifacts/`` (licence next to it) and run with
  ONNX Runtime on the CPU. It gives a box, a score and five landmarks per face, finds faces rolled by 60
  degrees and faces 24-40 px wide, and puts almost no boxes on non-faces (``../shared/docs/DETECTORS.md``).
* ``haar``: OpenCV's frontal-face cascade, shipped inside opencv-python-headless. No landmarks; a fallback.

A detector object may hold OpenCV state: create one per session / thread (:func:`make_detector`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ..locations import ARTIFACTS
from ..onnx_runtime import load_onnxruntime

Box = tuple[int, int, int, int]  # x, y, w, h in pixels of the input image
Point = tuple[float, float]  # x, y in pixels of the input image

RETINAFACE_ONNX = ARTIFACTS / "retinaface_mnet025.onnx"
DETECTORS = ("retinaface", "haar")
DEFAULT_DETECTOR = "retinaface"
DETECTOR_HELP = "face detector: retinaface (CNN with 5 landmarks, default) or haar (OpenCV cascade, no landmarks)"


# A face's five landmarks as ten table columns (fer_core.video.analyse's rows, fer_core.jobs.batch's tables), in Face's order
LANDMARK_COLUMNS = tuple(f"{point}_{axis}" for point in ("eye_left", "eye_right", "nose", "mouth_left", "mouth_right")
                         for axis in "xy")


def landmark_values(landmarks) -> tuple:
    """Five (x, y) points -> the ten values of :data:`LANDMARK_COLUMNS`, rounded to 0.1 pixel; ten Nones without
    landmarks (Haar, a whole image)."""
    if not landmarks:
        return (None,) * len(LANDMARK_COLUMNS)
    return tuple(round(float(v), 1) for point in landmarks for v in point)


@dataclass(frozen=True)
class Face:
    """One detected face, from detection to drawing.

    ``landmarks``: five (x, y) points in image pixels, in the order eye on the image's left, eye on the
    image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right; empty when
    the detector gives none (Haar, or a whole image classified as one face).
    """

    box: Box
    score: float = 1.0
    landmarks: tuple[Point, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "box", tuple(int(v) for v in self.box))
        object.__setattr__(self, "landmarks", tuple((float(x), float(y)) for x, y in self.landmarks))
        if self.landmarks and len(self.landmarks) != 5:
            raise ValueError(f"a face has 5 landmarks or none, got {len(self.landmarks)}")

    def to_dict(self) -> dict:
        return {"box": list(self.box), "score": round(self.score, 4),
                "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks]}


class FaceDetector(Protocol):
    def detect(self, gray: np.ndarray) -> list[Face]:
        """(H, W) uint8 gray image -> faces, largest first."""


def _check_gray(gray: np.ndarray, who: str) -> None:
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"{who}.detect expects a (H, W) uint8 gray image")


def _by_size(faces: list[Face]) -> list[Face]:
    return sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)


@dataclass
class HaarFaceDetector:
    """OpenCV Haar cascade. ``min_face_size`` is in pixels of the input image; smaller faces are ignored.

    ``max_side`` downsizes large images before detection (boxes are mapped back), which keeps
    detection fast on big photos and live frames.
    """

    min_face_size: int = 40
    scale_factor: float = 1.1
    min_neighbors: int = 5
    max_side: int = 640
    cascade_name: str = "haarcascade_frontalface_default.xml"

    def __post_init__(self) -> None:
        path = cv2.data.haarcascades + self.cascade_name
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise RuntimeError(f"Could not load the OpenCV face cascade {path}")

    def detect(self, gray: np.ndarray) -> list[Face]:
        _check_gray(gray, "HaarFaceDetector")
        h, w = gray.shape
        scale = min(1.0, self.max_side / max(h, w)) if max(h, w) > 0 else 1.0
        small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
            if scale < 1.0 else gray
        min_side = max(1, int(round(self.min_face_size * scale)))
        if min(small.shape) < min_side:
            return []
        found = self._cascade.detectMultiScale(cv2.equalizeHist(small), scaleFactor=self.scale_factor,
                                               minNeighbors=self.min_neighbors, minSize=(min_side, min_side))
        return _by_size([Face(tuple(int(round(v / scale)) for v in b)) for b in (found if len(found) else [])])


# RetinaFace's anchors: per feature-map stride, the anchor sizes in pixels of the network input.
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # the mean the network was trained with (BGR)


@lru_cache(maxsize=4)
def _session(path: str, threads: int):
    """One ONNX Runtime session per weights file and thread count; ``run`` is thread-safe, so it is shared."""
    ort = load_onnxruntime()  # imported here: Haar users and `import fer_core` do not pay for it

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> np.ndarray:
    """(A, 4) anchors (cx, cy, w, h) in input pixels, in the order of the network's outputs."""
    out = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = np.stack([(xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride], axis=1)
        for_each = [np.concatenate([centres, np.full_like(centres, s)], axis=1) for s in sizes]
        out.append(np.stack(for_each, axis=1).reshape(-1, 4))  # anchors of one cell are adjacent
    return np.concatenate(out).astype(np.float32)


@dataclass
class RetinaFaceDetector:
    """RetinaFace (MobileNet-0.25) with five landmarks, on ONNX Runtime (CPU).

    ``min_face_size``: faces narrower than this many pixels of the input image are dropped.
    ``max_side``: larger images are downscaled to this longer side before detection (faces smaller than
    about 16 px at that scale are lost: 640 keeps a 40 px face in a 1280 px photo).
    ``min_side``: smaller images (a 48x48 face crop, a thumbnail) are upscaled to it and given a border, so a
    face that fills the whole image is still found.
    ``score_threshold``: 0.9 put one false box on 100 face-free images in DETECTORS.md (Haar: 26).
    ``refine_roll``: a face whose eye line is tilted by more than this many degrees is detected a second time
    on an upright copy of its surroundings, and its landmarks are taken from there: the network's landmarks
    are less precise on strongly rolled faces, and alignment is only as good as they are.
    """

    min_face_size: int = 20
    max_side: int = 640
    min_side: int = 160
    score_threshold: float = 0.9
    nms_threshold: float = 0.4
    threads: int = 1
    refine_roll: float = 15.0
    weights: str | Path = RETINAFACE_ONNX

    def __post_init__(self) -> None:
        if not Path(self.weights).is_file():
            raise RuntimeError(f"RetinaFace weights not found at {self.weights}; restore artifacts/ from the repository.")
        self._session = _session(str(self.weights), self.threads)

    def detect(self, gray: np.ndarray) -> list[Face]:
        _check_gray(gray, "RetinaFaceDetector")
        h, w = gray.shape
        if h == 0 or w == 0:
            return []
        longest = max(h, w)
        scale = self.max_side / longest if longest > self.max_side else max(1.0, self.min_side / longest)
        image = gray if scale == 1.0 else cv2.resize(
            gray, (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        pad = 0
        if longest * scale <= 2 * self.min_side:  # small image: the face may fill it, give it surroundings
            pad = int(0.25 * max(image.shape))
            image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = self._run(image)
        out = []
        for box, score, marks in faces:
            box = (box - [pad, pad, 0, 0]) / scale
            marks = (marks - pad) / scale
            x, y, bw, bh = box
            x0, y0 = max(0.0, x), max(0.0, y)
            x1, y1 = min(float(w), x + bw), min(float(h), y + bh)
            if x1 - x0 < 2 or y1 - y0 < 2 or bw < self.min_face_size:
                continue
            out.append(self._refined(gray, Face((round(x0), round(y0), round(x1 - x0), round(y1 - y0)),
                                                float(score), tuple(map(tuple, marks)))))
        return _by_size(out)

    def _refined(self, gray: np.ndarray, face: Face, patch: int = 192) -> Face:
        """``face`` with landmarks re-detected on an upright ``patch`` x ``patch`` copy of its surroundings when
        its eyes are tilted by more than ``refine_roll`` degrees; unchanged otherwise or if that finds nothing."""
        (lx, ly), (rx, ry) = face.landmarks[:2]
        roll = math.degrees(math.atan2(ry - ly, rx - lx))
        if abs(roll) <= self.refine_roll:
            return face
        x, y, w, h = face.box
        side = 2.0 * max(w, h)  # the face fills half of the patch: the network sees it with context
        m = cv2.getRotationMatrix2D((x + w / 2, y + h / 2), roll, patch / side)
        m[:, 2] += patch / 2 - np.array([x + w / 2, y + h / 2])
        upright = cv2.warpAffine(gray, m, (patch, patch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        found = self._run(upright)
        if not found:
            return face
        centre = np.array([patch / 2, patch / 2])
        _, _, marks = min(found, key=lambda f: np.linalg.norm(f[0][:2] + f[0][2:] / 2 - centre))
        inverse = cv2.invertAffineTransform(m)
        back = marks @ inverse[:, :2].T + inverse[:, 2]
        return Face(face.box, face.score, tuple(map(tuple, back)))

    def _run(self, gray: np.ndarray) -> list[tuple[np.ndarray, float, np.ndarray]]:
        """Network on one gray image -> [(box xywh, score, (5, 2) landmarks)] in that image's pixels."""
        h, w = gray.shape
        x = np.repeat(gray[None, None].astype(np.float32), 3, axis=1) - _BGR_MEAN.reshape(1, 3, 1, 1)
        loc, conf, landm = self._session.run(None, {"input": x})
        scores = conf[0, :, 1]
        keep = np.flatnonzero(scores > self.score_threshold)
        if keep.size == 0:
            return []
        anchors = _anchors(h, w)[keep]
        loc, landm, scores = loc[0, keep], landm[0, keep], scores[keep]
        centres = anchors[:, :2] + loc[:, :2] * _VARIANCE[0] * anchors[:, 2:]
        sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * _VARIANCE[1])
        boxes = np.concatenate([centres - sizes / 2, sizes], axis=1)
        marks = anchors[:, None, :2] + landm.reshape(-1, 5, 2) * _VARIANCE[0] * anchors[:, None, 2:]
        picked = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        return [(boxes[i], float(scores[i]), marks[i]) for i in np.asarray(picked, dtype=int).ravel()]


def make_detector(name: str = DEFAULT_DETECTOR, min_face_size: int = 20, max_side: int = 640) -> FaceDetector:
    """A new detector of the named backend (see :data:`DETECTORS`)."""
    if name == "retinaface":
        return RetinaFaceDetector(min_face_size=min_face_size, max_side=max_side)
    if name == "haar":
        return HaarFaceDetector(min_face_size=min_face_size, max_side=max_side)
    raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
