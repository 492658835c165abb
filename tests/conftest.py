"""Shared fixtures: data locations, public-domain face photos, the shipped predictor, a live
`streamlit run app.py`, and Chromium.

Pipeline, page and browser tests use ``face_photos``: real public-domain photographs built from scikit-image's
bundled NASA astronaut portrait, so they run on a fresh machine. Only the accuracy-regression tests need
``../shared/data`` (``$FER_SHARED_DATA`` overrides the location); they skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import FacePhotos, served_app, write_face_photos

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FER_SHARED_DATA") or ROOT.parent / "shared" / "data")
FER_IMAGES = SHARED_DATA / "fer2013" / "images"
PHOTOS = SHARED_DATA / "photos"
SHIPPED_WEIGHTS = ROOT / "artifacts" / "model.pt"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The live processor sets the classifier's thread count (fer_core.model.backends, and torch's) for the thread that
    calls it (one, by design); tests that call it on the main thread must not leave every later test on one core."""
    from fer_core.model.backends import intra_op_threads, set_intra_op_threads

    try:
        import torch
    except ImportError:  # the app's install (requirements.txt): only its torch-free tests run there
        torch = None
    threads, classifier_threads = torch.get_num_threads() if torch else None, intra_op_threads()
    yield
    set_intra_op_threads(classifier_threads)
    if torch:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    if not PHOTOS.is_dir():
        pytest.skip(f"labelled photographs not available at {PHOTOS} (accuracy regression only; set FER_SHARED_DATA "
                    "or put ../shared/data in place)")
    return PHOTOS


@pytest.fixture(scope="session")
def face_photos(tmp_path_factory) -> FacePhotos:
    """Public-domain photos with exactly one face each (the NASA astronaut portrait and copies of it), as RGB
    arrays and as JPEG files in a temporary folder. Needs nothing from ../shared."""
    return write_face_photos(tmp_path_factory.mktemp("face_photos"))


@pytest.fixture(scope="session")
def fer_images_dir() -> Path:
    if not (FER_IMAGES / "validation").is_dir():
        pytest.skip(f"FER2013 images not available at {FER_IMAGES} (accuracy regression only; set FER_SHARED_DATA "
                    "or put ../shared/data in place)")
    return FER_IMAGES


@pytest.fixture(scope="session")
def predictor():
    """The shipped model, loaded once for the whole test session."""
    from fer_core.model.inference import Predictor

    if not SHIPPED_WEIGHTS.is_file():
        pytest.fail(f"shipped weights missing at {SHIPPED_WEIGHTS}: the app cannot run without them")
    return Predictor.from_checkpoint(SHIPPED_WEIGHTS)


@pytest.fixture(scope="session")
def app_url():
    """Base URL of `streamlit run app.py` served on localhost for the whole test session."""
    with served_app() as url:
        yield url


@pytest.fixture
def fresh_app_url():
    """Base URL of a server of its own that no browser has visited yet (for first-request behaviour)."""
    with served_app() as url:
        yield url


@pytest.fixture(scope="session")
def launch_chromium():
    """Factory: launch_chromium(extra_args=[...]) -> a Playwright Browser on Debian's Chromium. Closed at the end."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing in CI: .ci/run must apt-get install chromium")
        pytest.skip(f"Debian chromium not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browsers = []

    def launch(extra_args: list[str] | None = None):
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + list(extra_args or []))
        browsers.append(browser)
        return browser

    yield launch
    for b in browsers:
        b.close()
    pw.stop()
