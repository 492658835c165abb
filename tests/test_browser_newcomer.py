"""What a newcomer meets first, in a real browser (Playwright + Debian Chromium against `streamlit run app.py`):
labels whole in an 800 px window, a click on a confusion-matrix cell opening its images, and the live page
explaining a missing camera in its own words. Needs nothing from ../shared.
"""

from __future__ import annotations

import re

import cv2
import pytest
from helpers import make_zip, synthetic_face
from video_helpers import switching_video

from fer_core.labels import EMOTIONS

pytestmark = pytest.mark.timeout(600)
WAIT_MS = 120_000  # the test machine is slow and may be busy
FILE_INPUT = '[data-testid="stFileUploaderDropzoneInput"], input[type="file"]'

# The texts of an element and of everything in it that its box cuts (hidden or clipped overflow, an ellipsis),
# including the value shown in a select box's input.
CUT_TEXTS = """el => [el, ...el.querySelectorAll('*')].map(e => [e, (e.innerText || e.value || '').trim()])
    .filter(([e, text]) => text && e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
    .map(([e, text]) => text)"""


@pytest.fixture
def new_page(launch_chromium):
    """factory(width) -> a fresh page in a window ``width`` px wide (closed at the end)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    contexts = []

    def make(width: int = 1400, **kwargs):
        context = launch_chromium().new_context(viewport={"width": width, "height": 1000}, **kwargs)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        return page

    yield make
    for c in contexts:
        c.close()


def assert_whole(locator) -> None:
    locator.first.wait_for(state="visible")
    locator.first.scroll_into_view_if_needed()
    cut = locator.first.evaluate(CUT_TEXTS)
    assert not cut, f"cut at 800 px: {cut}"


def test_labels_are_whole_at_800_px(app_url, new_page, tmp_path):
    from playwright.sync_api import expect

    page = new_page(800)
    page.goto(f"{app_url}/Upload_images")
    assert_whole(page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").filter(has_text="Face detector"))

    page.goto(f"{app_url}/Evaluation")
    whole_photos = page.get_by_test_id("stCheckbox").filter(has_text="whole photos")
    assert_whole(whole_photos)
    whole_photos.first.locator("label").click()
    assert_whole(page.get_by_test_id("stSelectbox").filter(has_text="Face detector"))

    page.goto(f"{app_url}/Video_files")
    page.locator(FILE_INPUT).first.set_input_files(str(switching_video(tmp_path / "clip.mp4", seconds=1.0)))
    expect(page.get_by_role("button", name="Analyse video")).to_be_visible()
    assert_whole(page.get_by_test_id("stButton").filter(has_text="Analyse video"))


def test_clicking_a_confusion_matrix_cell_opens_its_images(app_url, new_page, tmp_path):
    from playwright.sync_api import expect

    page = new_page(1400)
    page.goto(f"{app_url}/Evaluation")
    archive = tmp_path / "my_faces.zip"
    archive.write_bytes(make_zip({f"{name}/{i}.png": cv2.imencode(".png", synthetic_face(label, seed=i))[1].tobytes()
                                  for label, name in enumerate(EMOTIONS) for i in range(2)}))
    page.locator(FILE_INPUT).first.set_input_files(str(archive))
    page.get_by_role("button", name="Evaluate zip").click()
    expect(page.get_by_role("heading", name="Results: my_faces.zip")).to_be_visible()
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()
    matrix = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Confusion matrix").last
    matrix.scroll_into_view_if_needed()
    # A cell of the first row (true EMOTIONS[0]) other than the one the drill-down opened on (the most confused):
    # after the click, the drill-down below shows that cell.
    shown = page.get_by_text(re.compile(r"\d+ image\(s\) of true class")).first.inner_text()
    column = len(EMOTIONS) - 1 if not shown.endswith(f"{EMOTIONS[0]} predicted as {EMOTIONS[-1]}") else 1
    area = matrix.locator(".nsewdrag").first.bounding_box()
    n = len(EMOTIONS)
    page.mouse.click(area["x"] + area["width"] * (column + 0.5) / n, area["y"] + area["height"] * 0.5 / n)
    cell = rf"\d+ image\(s\) of true class {EMOTIONS[0]} predicted as {EMOTIONS[column]}$"
    expect(page.get_by_text(re.compile(cell))).to_be_visible()


def test_the_live_page_explains_a_missing_camera(app_url, new_page):
    from playwright.sync_api import expect

    page = new_page(1400, permissions=["camera"])  # allowed, but this machine has no camera
    page.goto(f"{app_url}/Live_webcam")
    component = page.frame_locator('iframe[title="streamlit_webrtc.component.webrtc_streamer"]')
    component.get_by_role("button", name="START").click()
    expect(component.get_by_text(re.compile("NotFoundError|NotReadableError"))).to_be_visible()
    expect(page.get_by_text(re.compile(r"No camera\?.*found no webcam"))).to_be_visible()  # said in the app's words
    component.get_by_role("button", name="SELECT DEVICE").click()
    expect(component.get_by_text(re.compile("No camera found: connect a webcam"))).to_be_visible()
