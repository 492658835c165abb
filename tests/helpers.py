"""Small test data that needs nothing from ../shared: generated faces and public-domain face photos."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from fer_core.labels import EMOTIONS
from fer_core.video.live import canvas_from_photos

ROOT = Path(__file__).resolve().parent.parent


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


def astronaut() -> np.ndarray:
    """(512, 512, 3) uint8 RGB: Eileen Collins' NASA portrait, public domain, shipped inside scikit-image (no
    download). One smiling face, about 96x121 px at x=178, y=56."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def public_domain_faces() -> dict[str, np.ndarray]:
    """Name -> (H, W, 3) uint8 RGB photo with exactly one face: the astronaut portrait and copies of it
    (head-and-shoulders crop, mirrored, darker, shifted), so the pipeline sees several real face photos."""
    full = astronaut()
    head = np.ascontiguousarray(full[:240, 130:322])  # 192x240, the face about 96x121 px
    return {
        "astronaut": full,
        "astronaut_mirrored": np.ascontiguousarray(full[:, ::-1]),
        "astronaut_head": head,
        "astronaut_head_mirrored": np.ascontiguousarray(head[:, ::-1]),
        "astronaut_head_dark": (head.astype(np.float32) * 0.6).astype(np.uint8),
        "astronaut_shifted": np.ascontiguousarray(np.roll(full, (30, -40), axis=(0, 1))),
    }


def group_photo() -> np.ndarray:
    """(320, 900, 3) uint8 RGB: three public-domain head-and-shoulders photos side by side (three faces of about
    the same size, so the detector's largest-first order is not left to right)."""
    faces = public_domain_faces()
    return canvas_from_photos([faces["astronaut_head_mirrored"], faces["astronaut_head"],
                               faces["astronaut_head_dark"]], width=900, height=320)


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass(frozen=True)
class FacePhotos:
    """The public-domain face photos as RGB arrays and as JPEG files ``<folder>/<name>.jpg``."""

    arrays: dict[str, np.ndarray]
    folder: Path

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.jpg"

    @property
    def paths(self) -> list[Path]:
        return [self.path(n) for n in self.arrays]


def write_face_photos(folder: Path) -> FacePhotos:
    arrays = public_domain_faces()
    for name, rgb in arrays.items():
        (folder / f"{name}.jpg").write_bytes(jpeg_bytes(rgb))
    return FacePhotos(arrays, folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER_OPTIONS = ("--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false")


@contextmanager
def served_app(env: dict | None = None, options: tuple[str, ...] = SERVER_OPTIONS):
    """Serve `streamlit run app.py` headless on a free localhost port with ``options`` and ``env`` (default: this
    environment, usage statistics off); yields its base URL, stops it afterwards and prints what it wrote (shown when
    a test fails)."""
    import pytest

    port = free_port()
    env = env if env is not None else {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         *options],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited early:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy within 90 s")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        print(out)
