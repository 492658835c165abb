"""Comparing two models in a real browser: Playwright drives Debian's Chromium against `streamlit run app.py`, uploads
a small zip to the evaluation page's comparison and sees the disagreement gallery. Needs nothing from ../shared."""

from __future__ import annotations

import re

import pytest
from helpers import make_zip
from test_browser_dashboard import WAIT_MS, generated_face_png

from fer_core.labels import EMOTIONS

pytestmark = pytest.mark.timeout(600)


def test_compare_the_shipped_model_with_the_fer2013_model(app_url, launch_chromium, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = launch_chromium().new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        page.goto(f"{app_url}/Evaluation")
        expect(page.get_by_role("heading", name="Compare two models")).to_be_visible()
        archive = tmp_path / "faces.zip"
        archive.write_bytes(make_zip({f"{name}/{i}.png": generated_face_png(label, seed=i)
                                      for label, name in enumerate(EMOTIONS) for i in range(3)}))
        uploader = page.get_by_test_id("stFileUploader").filter(has_text="to compare on")
        uploader.locator('input[type="file"]').set_input_files(str(archive))
        button = page.get_by_role("button", name="Compare", exact=True)
        expect(button).to_be_enabled()
        button.click()
        expect(page.get_by_test_id("stMetric").filter(has_text="McNemar p")).to_be_visible()
        # The two shipped checkpoints are the default A and B.
        expect(page.get_by_text(re.compile(r"A = shipped model \(artifacts/model.pt\) · B = FER2013-only model "
                                           r"\(artifacts/model_fer2013.pt\)"))).to_be_visible()
        expect(page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Per-class change")).to_be_visible()
        gallery = page.get_by_role("heading", name="Where the models disagree")
        gallery.scroll_into_view_if_needed()
        expect(gallery).to_be_visible()
        expect(page.get_by_text("image(s) labelled differently")).to_be_visible()
        caption = page.get_by_test_id("stImageCaption").filter(has_text="true ").first
        expect(caption).to_be_visible()
        assert " · A " in caption.inner_text() and " · B " in caption.inner_text()
        expect(page.get_by_role("button", name="Download the comparison (JSON)")).to_be_visible()
    finally:
        context.close()
