"""Small generated data for tests that must not depend on ../shared."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from fer_core.labels import EMOTIONS


def synthetic_face(label: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """A (size, size) uint8 image whose pattern depends on the label, so a tiny model can learn something."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (size, size), dtype=np.uint8)
    cv2.circle(img, (size // 2, size // 2), 6 + 2 * label, 200, -1)
    return img


def make_kaggle_tree(root: Path, per_class: int = 6, splits=("train", "validation"), folder_names=None) -> Path:
    """<root>/<split>/<class>/*.png|jpg with generated faces for every expression."""
    names = folder_names or EMOTIONS
    for split in splits:
        for label, name in enumerate(names):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                ext = ".png" if i % 2 else ".jpg"
                cv2.imwrite(str(d / f"{split}_{i}{ext}"), synthetic_face(EMOTIONS.index(name) if name in EMOTIONS else label, seed=i))
    return root


def make_fer_csv(path: Path, rows_per_usage: int = 7) -> Path:
    """A miniature fer2013.csv (emotion,pixels,Usage) with every class in every split."""
    lines = ["emotion,pixels,Usage"]
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for i in range(rows_per_usage):
            label = i % len(EMOTIONS)
            pixels = " ".join(map(str, synthetic_face(label, seed=i).ravel()))
            lines.append(f"{label},{pixels},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_zip(members: dict[str, bytes]) -> bytes:
    """An in-memory zip archive with the given member names and contents."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()
