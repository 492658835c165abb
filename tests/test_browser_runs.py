"""The Training runs page in a real browser: a run folder being written to (history.csv rows appended, progress.json
rewritten, as training.train does) shows its new epochs on the open page, without a reload.

Serves the app with $FER_RUNS_DIR on a temporary folder; needs nothing from ../shared.
"""

from __future__ import annotations

import os

import pytest
from helpers import served_app
from run_helpers import append_epochs, running, write_progress, write_run

from fer_core.analysis.runs import RUNS_ENV

pytestmark = pytest.mark.timeout(600)
WAIT_MS = 90_000  # the test machine is slow and may be busy
POINTS_OF_FIRST_CURVE = "() => document.querySelector('.js-plotly-plot')?._fullData?.[0]?.x?.length ?? 0"  # points drawn


def test_a_run_being_written_grows_on_the_open_page(launch_chromium, tmp_path):
    from playwright.sync_api import expect

    live = write_run(tmp_path / "runs" / "live", epochs=1, progress=running(epoch=2, epochs=6, step=3, steps=10))
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", RUNS_ENV: str(tmp_path / "runs")}
    expect.set_options(timeout=WAIT_MS)
    with served_app(env) as url:
        context = launch_chromium().new_context(viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            page.goto(f"{url}/Training_runs")
            epoch = page.get_by_test_id("stMetric").filter(has_text="Epoch")
            expect(epoch).to_contain_text("2 / 6")
            page.wait_for_function(f"({POINTS_OF_FIRST_CURVE})() === 1")
            page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

            append_epochs(live, range(2, 4))  # two more epochs trained ...
            write_progress(live, running(epoch=4, epochs=6, step=7, steps=10))  # ... and the fourth under way
            expect(epoch).to_contain_text("4 / 6")
            expect(page.get_by_test_id("stMetric").filter(has_text="Step")).to_contain_text("7 / 10")
            page.wait_for_function(f"({POINTS_OF_FIRST_CURVE})() === 3")
            assert page.evaluate("window.sameDocument") is True
            assert page.get_by_test_id("stException").count() == 0
        finally:
            context.close()
