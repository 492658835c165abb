"""End to end in a real browser: Debian Chromium with a fake webcam fed from a photo, through `streamlit run app.py`.

Chromium's fake capture device plays a .y4m file (raw I420 frames, looped) as the webcam. The test opens the
live page, presses START inside the streamlit-webrtc component and waits for the page (outside the video) to
name a tracked face with its expression, which proves the whole path: browser -> WebRTC -> frame processor ->
model -> results loop -> DOM. It needs no real camera, GPU or internet (localhost, no STUN/TURN needed).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fer_core.faces.detection import make_detector
from fer_core.faces.preprocessing import to_gray
from fer_core.labels import EMOTIONS
from fer_core.video.live import canvas_from_photos

LIVE_PAGE = "/Live_webcam"  # Streamlit's URL for pages/2_Live_webcam.py
FACE_TEXT = re.compile(rf"Face \d+: ({'|'.join(EMOTIONS)}) \d+%")


def write_y4m(path: Path, rgb: np.ndarray, seconds: float = 3.0, fps: int = 10) -> Path:
    """Write a still (H, W, 3) RGB image as a YUV4MPEG2 4:2:0 video that Chromium can play as a fake camera.

    Format (as Chromium's file_video_capture_device parses it): one header line
    ``YUV4MPEG2 W<w> H<h> F<fps>:1 Ip A1:1 C420jpeg``, then per frame ``FRAME\\n`` and the Y, U, V planes.
    """
    h, w = rgb.shape[:2]
    if h % 2 or w % 2:
        raise ValueError("4:2:0 video needs even width and height")
    i420 = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes()  # Y, then U, then V
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for _ in range(max(1, int(seconds * fps))):
            f.write(b"FRAME\n")
            f.write(i420)
    return path


def test_y4m_writer_round_trips_through_opencv(tmp_path):
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[100:200, 100:300] = (200, 40, 40)
    path = write_y4m(tmp_path / "t.y4m", rgb, seconds=0.5, fps=10)
    assert path.stat().st_size == len("YUV4MPEG2 W640 H480 F10:1 Ip A1:1 C420jpeg\n") + 5 * (6 + 640 * 480 * 3 // 2)
    data = path.read_bytes()
    start = data.index(b"FRAME\n") + 6
    yuv = np.frombuffer(data[start:start + 640 * 480 * 3 // 2], np.uint8).reshape(720, 640)
    back = cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB_I420)
    assert np.abs(back.astype(int) - rgb.astype(int)).mean() < 3


@pytest.fixture
def fake_camera(tmp_path, face_photos) -> Path:
    """A looping 640x480, 10 fps .y4m 'webcam' showing one real (public-domain) face photo."""
    frame = canvas_from_photos([face_photos.arrays["astronaut_head"]])
    assert len(make_detector(min_face_size=60, max_side=320).detect(to_gray(frame))) == 1  # as the live page detects
    return write_y4m(tmp_path / "webcam.y4m", frame, seconds=3.0, fps=10)


@pytest.mark.timeout(300)
def test_live_page_labels_the_face_of_a_fake_webcam(app_url, launch_chromium, fake_camera):
    from playwright.sync_api import expect

    browser = launch_chromium(extra_args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                                          f"--use-file-for-fake-video-capture={fake_camera}"])
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(app_url + LIVE_PAGE, wait_until="domcontentloaded")
        expect(page.get_by_role("heading", name="Live webcam")).to_be_visible(timeout=60_000)
        component = page.frame_locator('iframe[title*="webrtc"]')
        start = component.get_by_role("button", name=re.compile("^start$", re.I))
        expect(start).to_be_visible(timeout=60_000)
        start.click()

        face = page.get_by_text(FACE_TEXT).first
        expect(face).to_be_visible(timeout=90_000)
        assert FACE_TEXT.search(face.inner_text())
        expect(page.get_by_text(re.compile(r"\d+(\.\d)? FPS"))).to_be_visible(timeout=30_000)

        stop = component.get_by_role("button", name=re.compile("^stop$", re.I))
        stop.click()  # releases the stream (and its processor) on the server
        expect(component.get_by_role("button", name=re.compile("^start$", re.I))).to_be_visible(timeout=30_000)

        # What was seen stays downloadable after STOP: one row per face per processed frame.
        expect(page.get_by_text(re.compile(r"The last session recorded \d+ rows"))).to_be_visible(timeout=30_000)
        with page.expect_download(timeout=30_000) as download:
            page.get_by_role("button", name=re.compile("Session CSV")).click()
        table = pd.read_csv(download.value.path())
        assert len(table) > 0 and set(table["label"]) <= set(EMOTIONS)
        assert list(table.columns[:9]) == ["timestamp", "time_s", "face_id", "x", "y", "w", "h", "label", "confidence"]
        assert table[list(EMOTIONS)].sum(axis=1).between(0.99, 1.01).all()
    finally:
        context.close()
