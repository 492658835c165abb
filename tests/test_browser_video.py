"""The video page in a real browser: upload a short recording built from real photos, analyse it, see the
timelines, the annotated frame of a chosen moment and the downloads (Playwright + Debian Chromium against
`streamlit run app.py`; nothing from ../shared)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from video_helpers import switching_video

from fer_core.labels import EMOTIONS

pytestmark = pytest.mark.timeout(600)
VIDEO_PAGE = "/Video_files"  # Streamlit's URL for pages/3_Video_files.py
WAIT_MS = 120_000


def test_upload_a_video_and_see_timelines_and_downloads(app_url, launch_chromium, tmp_path):
    from playwright.sync_api import expect

    video = switching_video(tmp_path / "two_faces.mp4", seconds=3.0, switch_s=1.5)
    expect.set_options(timeout=WAIT_MS)
    context = launch_chromium().new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(app_url + VIDEO_PAGE)
        expect(page.get_by_role("heading", name="Video files")).to_be_visible()
        expect(page.get_by_text("Upload a video to see")).to_be_visible()
        page.locator('[data-testid="stFileUploaderDropzoneInput"], input[type="file"]').first.set_input_files(str(video))
        expect(page.get_by_text(re.compile(r"320x240, 0:03\.0 long"))).to_be_visible()
        page.get_by_role("button", name="Analyse video").click()

        expect(page.get_by_role("heading", name="Timelines")).to_be_visible()
        charts = page.locator('[data-testid="stPlotlyChart"]')
        expect(charts).to_have_count(2)  # one timeline per face
        expect(charts.first).to_contain_text("Face 1")
        expect(page.get_by_text("Face 1: mostly")).to_be_visible()  # the thumbnail's caption
        expect(page.get_by_text(re.compile(r"00:00:00\.000 \(frame 0\)"))).to_be_visible()  # the annotated frame

        # A moment of largest change shows that frame.
        change = page.get_by_role("button", name=re.compile(r"00:00:01\.[56]00 happy→surprise"))
        expect(change.first).to_be_visible()
        change.first.click()
        expect(page.get_by_text(re.compile(r"00:00:01\.[56]00 \(frame 1[56]\)"))).to_be_visible()

        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()  # the rerun is over: no stale elements left
        # Clicking a point of a timeline shows that frame (the "happy" line of face 1, its 21st point: 2.0 s).
        chart = charts.first
        chart.scroll_into_view_if_needed()
        point = chart.locator(".scatterlayer .trace").nth(EMOTIONS.index("happy")).locator(".point").nth(20)
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        expect(page.get_by_text(re.compile(r"00:00:02\.000 \(frame 20\)"))).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
        for name in ("Download CSV", "Download JSON", "Download the annotated video (mp4)"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        page.screenshot(path=str(tmp_path / "video_page.png"), full_page=True)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV", exact=True).click()
        table = pd.read_csv(download.value.path())
        assert sorted(table["face_id"].unique()) == [1, 2]
        assert len(table) == 2 * 30 and set(table["label"]) <= set(EMOTIONS)
        with page.expect_download() as download:
            page.get_by_role("button", name="Download the annotated video (mp4)", exact=True).click()
        assert download.value.suggested_filename == "two_faces_annotated.mp4"
    finally:
        context.close()


def test_stop_keeps_what_was_analysed(app_url, launch_chromium, tmp_path):
    from playwright.sync_api import expect

    video = switching_video(tmp_path / "long.mp4", seconds=60.0, switch_s=30.0)  # minutes of work at every frame
    expect.set_options(timeout=WAIT_MS)
    context = launch_chromium().new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(app_url + VIDEO_PAGE)
        page.locator('[data-testid="stFileUploaderDropzoneInput"], input[type="file"]').first.set_input_files(str(video))
        expect(page.get_by_text(re.compile(r"320x240, 1:00\.0 long"))).to_be_visible()
        page.get_by_role("button", name="Analyse video").click()
        progress = page.get_by_text(re.compile(r"\d+ frames read, [1-9]\d* analysed · \d face\(s\) seen"))
        expect(progress).to_be_visible()
        page.get_by_role("button", name="Stop").click()

        expect(page.get_by_text(re.compile(r"Stopped at 0:\d\d\.\d: the results below cover"))).to_be_visible()
        expect(page.get_by_role("heading", name="Timelines")).to_be_visible()
        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
        expect(page.get_by_role("button", name="Download CSV", exact=True)).to_be_visible()
        analysed = page.get_by_test_id("stMetric").filter(has_text="Frames analysed")
        done, total = map(int, re.search(r"(\d+) of (\d+)", analysed.inner_text()).groups())
        assert 0 < done < 300 and total < 600  # part of the video, not all of it
    finally:
        context.close()
