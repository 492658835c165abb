"""The dashboard in a real browser: Playwright drives Debian's Chromium against `streamlit run app.py`.

Uses the `app_url`, `launch_chromium` and `face_photos` fixtures of conftest.py; needs nothing from ../shared
(outside CI it skips only when Debian's Chromium is not installed).
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import make_zip

from fer_core.labels import EMOTIONS

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 90_000  # the test machine is slow and may be busy
FACE_LABEL = re.compile(r"Face #1: (" + "|".join(EMOTIONS) + r")")


def generated_face_png(label: int, seed: int = 0) -> bytes:
    img = np.random.default_rng(seed).integers(0, 60, (48, 48), dtype=np.uint8)
    cv2.circle(img, (24, 24), 6 + 2 * label, 200, -1)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def page(launch_chromium):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    browser = launch_chromium()
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()


def test_home_links_to_the_pages(app_url, page):
    from playwright.sync_api import expect

    page.goto(app_url)
    expect(page.get_by_role("heading", name="Facial expression recognition")).to_be_visible()
    expect(page.get_by_text("Upload images: every face boxed")).to_be_visible()
    expect(page.get_by_text("Evaluation: accuracy, confusion matrix")).to_be_visible()
    # the sidebar names the home page "Home" (not the script's file name) and lists every page
    nav = page.get_by_test_id("stSidebarNav")
    for name in ("Home", "Upload images", "Live webcam", "Video files", "Evaluation", "Training runs"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    nav.get_by_role("link", name="Evaluation", exact=True).click()
    expect(page.get_by_role("heading", name="Evaluation", exact=True)).to_be_visible()
    assert page.url.endswith("/Evaluation")


def test_deep_link_on_a_fresh_server_shows_the_app_navigation(fresh_app_url, page):
    """The first request of a new server is a page URL: the sidebar still names the home page "Home" (not the
    script's file name "app") and lists every page with its icon."""
    from playwright.sync_api import expect

    page.goto(f"{fresh_app_url}/Upload_images")
    expect(page.get_by_text("Upload one or more images to see")).to_be_visible()
    nav = page.get_by_test_id("stSidebarNav")
    for name in ("Home", "Upload images", "Live webcam", "Video files", "Evaluation", "Training runs"):
        expect(nav.get_by_role("link", name=name, exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="app", exact=True)).to_have_count(0)
    assert nav.locator('[data-testid="stIconMaterial"]').count() == 6  # one icon per entry
    assert page.url.endswith("/Upload_images")
    assert page.title() == "Upload images - expressions"


def test_upload_a_photo_and_see_its_face_label(app_url, page, face_photos):
    from playwright.sync_api import expect

    photo = face_photos.path("astronaut")
    page.goto(f"{app_url}/Upload_images")
    hint = page.get_by_text("Upload one or more images to see")
    expect(hint).to_be_visible()
    file_input = page.locator('[data-testid="stFileUploaderDropzoneInput"], input[type="file"]').first
    file_input.wait_for(state="attached")
    file_input.set_input_files(str(photo))
    # The progress box takes the hint's place at once: the hint never stays up while the photo is analysed.
    expect(page.get_by_text(re.compile(r"Analys(ing|ed) 1 image"))).to_be_visible()
    assert hint.count() == 0
    expect(page.get_by_text(FACE_LABEL).first).to_be_visible()
    expect(page.get_by_role("heading", name=photo.name)).to_be_visible()
    expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()  # the probability bars


def test_evaluation_page_shows_a_confusion_matrix(app_url, page, tmp_path):
    from playwright.sync_api import expect

    page.goto(f"{app_url}/Evaluation")
    expect(page.get_by_role("heading", name="Evaluate on your own data")).to_be_visible()
    matrices = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Confusion matrix")
    if (ROOT / "artifacts" / "eval_validation.json").is_file():  # the shipped results
        expect(matrices.first).to_be_visible()
    shipped = matrices.count()
    # Folders on the server are off by default (FER_ALLOW_SERVER_FOLDERS): own data comes as a zip.
    page.get_by_role("tab", name="Folder on the server").click()
    expect(page.get_by_text("FER_ALLOW_SERVER_FOLDERS=1")).to_be_visible()
    expect(page.get_by_label("Folder path")).to_have_count(0)
    page.get_by_role("tab", name="Upload a zip").click()

    # <class>/<image> with small generated faces.
    archive = tmp_path / "my_faces.zip"
    archive.write_bytes(make_zip({f"{name}/{i}.png": generated_face_png(label, seed=i)
                                  for label, name in enumerate(EMOTIONS) for i in range(2)}))
    page.locator('[data-testid="stFileUploaderDropzoneInput"], input[type="file"]').first.set_input_files(str(archive))
    button = page.get_by_role("button", name="Evaluate zip")
    expect(button).to_be_enabled()
    button.click()
    expect(page.get_by_role("heading", name="Results: my_faces.zip")).to_be_visible()
    expect(matrices).to_have_count(shipped + 1)
    expect(matrices.last).to_be_visible()


def test_evaluation_page_shows_the_reliability_diagram(app_url, page):
    """The shipped evaluation's calibration: the reliability diagram (before and after the temperature, faces per
    bin) and the ECE metrics, drawn by the browser."""
    from playwright.sync_api import expect

    if not (ROOT / "artifacts" / "eval_validation.json").is_file():
        pytest.skip("no shipped evaluation (artifacts/eval_validation.json)")
    page.goto(f"{app_url}/Evaluation")
    diagram = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Reliability diagram")
    diagram.first.scroll_into_view_if_needed()
    expect(diagram.first).to_be_visible()
    expect(diagram.first.get_by_text("perfectly calibrated")).to_be_visible()  # the legend of the diagonal
    expect(diagram.first.get_by_text("uncalibrated (T = 1)")).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="ECE calibrated").first).to_be_visible()


# Width of each element's text (not clipped) and of its box: a cut label has a wider text than box.
TEXT_AND_BOX_WIDTHS = """els => els.map(e => { const r = document.createRange(); r.selectNodeContents(e);
    return [e.innerText, r.getBoundingClientRect().width, e.getBoundingClientRect().width]; })"""


def assert_metrics_not_cut(page) -> None:
    page.get_by_test_id("stMetric").first.wait_for(state="visible")
    for part in ("stMetricLabel", "stMetricValue"):  # the markdown box is the one that clips with an ellipsis
        selector = f'[data-testid="{part}"] [data-testid="stMarkdownContainer"]'
        widths = page.locator(selector).evaluate_all(TEXT_AND_BOX_WIDTHS)
        assert widths and all(text <= box + 1 for _, text, box in widths), widths


def test_layout_holds_at_800_px(app_url, launch_chromium):
    """An 800 px window (sidebar open): metric labels and values whole, the classification report with all its
    columns (support included) without sideways scrolling."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = launch_chromium().new_context(viewport={"width": 800, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(app_url)
        assert_metrics_not_cut(page)
        page.goto(f"{app_url}/Evaluation")
        assert_metrics_not_cut(page)
        report = page.get_by_test_id("stDataFrame").first
        report.scroll_into_view_if_needed()
        scroller = report.locator(".dvn-scroller").first
        expect(scroller).to_be_visible()
        scroll_width, client_width = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert scroll_width <= client_width + 1, (scroll_width, client_width)
    finally:
        context.close()
