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


def download(page, button: str):
    """Click the download button ``button`` once the page is idle and return the downloaded file (named as the
    browser was told). A deferred download is made by the server after the click; on a busy machine the first click
    can land while a rerun replaces the button, and nothing starts. Then, and only when the page shows no error, it
    is clicked once more; a second silence, or an error on the page, fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    for attempt in (1, 2):
        expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()  # no rerun in flight
        expect(page.get_by_role("button", name=button, exact=True)).to_have_count(1)  # and no stale copy left
        try:
            with page.expect_download(timeout=WAIT_MS // 2 if attempt == 1 else WAIT_MS) as started:
                page.get_by_role("button", name=button, exact=True).click()
        except PlaywrightTimeout:
            errors = page.get_by_test_id("stException").all_inner_texts() + page.get_by_test_id("stAlert").filter(
                has_text="rror").all_inner_texts()
            assert not errors, f"{button}: the page failed instead of downloading: {errors}"
            if attempt == 2:
                raise
            continue
        path = started.value.path()
        target = path.with_name(started.value.suggested_filename)
        path.rename(target)
        return target
    raise AssertionError("unreachable")


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
            # one of each: a rerun in flight shows the stale and the new button side by side for a moment
            expect(page.get_by_role("button", name=name, exact=True)).to_have_count(1)
            expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        page.screenshot(path=str(tmp_path / "video_page.png"), full_page=True)
        table = pd.read_csv(download(page, "Download CSV"))
        assert sorted(table["face_id"].unique()) == [1, 2]
        assert len(table) == 2 * 30 and set(table["label"]) <= set(EMOTIONS)
        assert download(page, "Download the annotated video (mp4)").name == "two_faces_annotated.mp4"
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
