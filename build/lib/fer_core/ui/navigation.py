"""The one navigation of the app (app.py's ``st.navigation``), also for the very first request of a server.

Imports only streamlit, so a page can call :func:`run_through_app` before its heavy imports.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st

from ..locations import PROJECT_ROOT

APP_SCRIPT = PROJECT_ROOT / "app.py"
# The browser tab's icon, a file the app serves itself: with an emoji or a ":material/...:" icon the browser
# fetches the icon's image from a font CDN, and the app must work without an internet connection.
PAGE_ICON = str(Path(__file__).resolve().with_name("page_icon.png"))


def run_through_app() -> None:
    """Make sure app.py's ``st.navigation`` serves this page; call it first thing in every page of ``pages/``.

    A server that finds a ``pages/`` folder next to app.py starts in Streamlit's old pages-folder mode, and
    keeps it until app.py has called ``st.navigation`` once. When its first request is a page URL such as
    ``/Upload_images``, that mode runs the page file directly, without app.py: the sidebar then names the home
    page after the script file ("app"), without icons or titles, and app.py's page config is never applied.
    In that mode this runs app.py in place, which leaves the mode, sends the app's navigation and runs this same
    page (its URL path is the same in both modes), then ends this outer run. In the same run, not a rerun, so a
    click that started the run is not lost. Otherwise it does nothing.
    """
    from streamlit.runtime.pages_manager import (
        PagesManager,  # not public API; the browser test guards it
    )

    if not PagesManager.uses_pages_directory:
        return
    runpy.run_path(str(APP_SCRIPT), run_name="__main__")  # st.navigation there turns the pages-folder mode off
    st.stop()
