"""Pages that fit the window, in a real browser at 800 and 1280 px (Playwright + Debian Chromium against
`streamlit run app.py`): no "Deploy" button, the upload page's summary above its cards, galleries whose pictures
never lie on each other, and nothing wider than the page outside a frame that scrolls (tables). Needs nothing from
../shared.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import jpeg_bytes, make_zip, public_domain_faces

from fer_core.labels import EMOTIONS

pytestmark = pytest.mark.timeout(900)
WAIT_MS = 180_000  # the test machine is slow and may be busy
WIDTHS = (800, 1280)

# Elements of the main area whose box reaches past its right edge, except inside something that scrolls or clips
# (a table's frame, a chart's own canvas) or that is not shown.
OVERFLOW = """() => {
    const main = document.querySelector('[data-testid="stMain"]');
    const right = main.getBoundingClientRect().right;
    const clipped = e => { for (let p = e.parentElement; p && p !== main; p = p.parentElement) {
        const s = getComputedStyle(p);
        if (['auto', 'scroll', 'hidden', 'clip'].includes(s.overflowX)) return true; } return false; };
    return [...main.querySelectorAll('*')].filter(e => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && r.right > right + 1 && !clipped(e);
    }).map(e => (e.getAttribute('data-testid') || e.tagName) + ': ' + (e.innerText || '').slice(0, 60));
}"""

# Pairs of pictures of one gallery whose boxes overlap by more than a pixel each way.
OVERLAPS = """el => {
    const boxes = [...el.querySelectorAll('[data-testid="stImage"] img')].map(i => i.getBoundingClientRect());
    const out = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const a = boxes[i], b = boxes[j];
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 1) out.push([i, j]);
    }
    return out;
}"""


@pytest.fixture
def window(launch_chromium):
    """factory(width) -> a fresh page in a window ``width`` px wide (closed at the end)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    contexts = []

    def make(width: int):
        context = launch_chromium().new_context(viewport={"width": width, "height": 1000})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        return page

    yield make
    for c in contexts:
        c.close()


def assert_fits(page, where: str) -> None:
    wide = page.evaluate(OVERFLOW)
    assert not wide, f"{where}: wider than the page outside a scrolling frame: {wide[:5]}"


def assert_no_deploy(page) -> None:
    assert page.get_by_role("button", name="Deploy").count() == 0
    assert page.get_by_text("Deploy", exact=True).count() == 0


def gallery_after(page, heading: str):
    """The gallery (wrapping grid of pictures) that follows the heading ``heading``."""
    return page.get_by_role("heading", name=heading).locator(
        "xpath=following::div[@data-testid='stHorizontalBlock'][.//div[@data-testid='stImage']][1]")


@pytest.mark.parametrize("width", WIDTHS)
def test_upload_page_puts_the_summary_first_and_fits(app_url, window, tmp_path, width):
    from playwright.sync_api import expect

    faces = public_domain_faces()
    paths = []
    for name, rgb in faces.items():
        (tmp_path / f"{name}.jpg").write_bytes(jpeg_bytes(rgb))
        paths.append(str(tmp_path / f"{name}.jpg"))
    page = window(width)
    page.goto(f"{app_url}/Upload_images")
    assert_no_deploy(page)
    page.locator('input[type="file"]').first.set_input_files(paths)
    summary = page.get_by_text(f"{len(paths)} file(s),")
    expect(summary).to_be_visible()
    cards = page.get_by_test_id("stImage").filter(has_text="px")  # each card's annotated photo
    expect(cards).to_have_count(len(paths))
    first_card_top = min(cards.nth(i).bounding_box()["y"] for i in range(len(paths)))
    assert summary.bounding_box()["y"] < first_card_top  # the summary is read first, not after every card
    expect(page.get_by_role("button", name="Download results (CSV)")).to_be_visible()
    assert page.get_by_role("button", name="Download results (CSV)").bounding_box()["y"] < first_card_top
    if width >= 1280:  # several cards side by side: the page is not a column of thin cards
        tops = sorted(round(cards.nth(i).bounding_box()["y"]) for i in range(len(paths)))
        assert len(set(tops)) < len(paths)
    assert_fits(page, f"upload page at {width} px")
    overlaps = page.get_by_test_id("stMain").evaluate(OVERLAPS)
    assert not overlaps, overlaps


@pytest.mark.parametrize("width, beside", [(800, False), (1600, True)])
def test_a_single_photos_faces_sit_beside_it_where_the_window_has_room(app_url, window, width, beside):
    from playwright.sync_api import expect

    page = window(width)
    page.goto(f"{app_url}/Upload_images")
    page.get_by_text("No photo at hand? Try a sample photo").click()
    face = page.get_by_text("Face #1:")
    expect(face).to_be_visible()
    photo = page.get_by_test_id("stImage").filter(has_text="px").first.bounding_box()
    label = face.bounding_box()
    if beside:  # a wide window: the face's card is right of the photo, level with it, not below it
        assert label["x"] >= photo["x"] + photo["width"] and label["y"] < photo["y"] + photo["height"]
    else:
        assert label["y"] >= photo["y"] + photo["height"]
    assert_fits(page, f"upload page with one photo at {width} px")


def _faces_zip() -> bytes:
    """Two generated faces per class: the shipped model gets several wrong, so galleries have pictures."""
    members = {}
    for label, name in enumerate(EMOTIONS):
        for i in range(2):
            img = np.random.default_rng(10 * label + i).integers(0, 60, (48, 48), dtype=np.uint8)
            cv2.circle(img, (24, 24), 6 + 2 * label, 200, -1)
            members[f"{name}/{i}.png"] = cv2.imencode(".png", img)[1].tobytes()
    return make_zip(members)


@pytest.mark.parametrize("width", WIDTHS)
def test_evaluation_galleries_wrap_and_the_page_fits(app_url, window, tmp_path, width):
    from playwright.sync_api import expect

    archive = tmp_path / "faces.zip"
    archive.write_bytes(_faces_zip())
    page = window(width)
    page.goto(f"{app_url}/Evaluation")
    assert_no_deploy(page)
    page.get_by_test_id("stFileUploader").filter(has_text="Zip of <class>/<image> folders").first.locator(
        'input[type="file"]').set_input_files(str(archive))
    page.get_by_role("button", name="Evaluate zip").click()
    expect(page.get_by_role("heading", name="Results: faces.zip")).to_be_visible()
    page.get_by_test_id("stFileUploader").filter(has_text="to compare on").locator(
        'input[type="file"]').set_input_files(str(archive))
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.get_by_test_id("stMetric").filter(has_text="McNemar p")).to_be_visible()
    disagree = gallery_after(page, "Where the models disagree")
    if page.get_by_text("image(s) labelled differently").count():
        disagree.scroll_into_view_if_needed()
        assert disagree.locator('[data-testid="stImage"]').count() >= 1
        assert not disagree.evaluate(OVERLAPS)
    mistakes = page.get_by_text("predicted as").locator("xpath=following::div[@data-testid='stHorizontalBlock']"
                                                        "[.//div[@data-testid='stImage']][1]").last
    assert not mistakes.evaluate(OVERLAPS)
    assert not page.get_by_test_id("stMain").evaluate(OVERLAPS)  # no two pictures anywhere lie on each other
    assert_fits(page, f"evaluation page at {width} px")


@pytest.mark.parametrize("width", WIDTHS)
def test_the_other_pages_fit_and_offer_no_deploy(app_url, window, width):
    from playwright.sync_api import expect

    page = window(width)
    for path, heading in (("", "Facial expression recognition"), ("/Training_runs", "Training runs"),
                          ("/Video_files", "Video files"), ("/Live_webcam", None)):
        page.goto(f"{app_url}{path}")
        if heading:
            expect(page.get_by_role("heading", name=heading).first).to_be_visible()
        else:
            page.wait_for_timeout(3000)
        assert_no_deploy(page)
        assert_fits(page, f"{path or 'home'} at {width} px")
