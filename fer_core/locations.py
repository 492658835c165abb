"""Where the project's files are: the checkout (or the installed package), the shipped artifacts, the training runs
and the shared data.

The ground floor of fer_core: every other module takes its paths from here, so moving a module never moves a path.
In a checkout everything is beside ``fer_core/``; after ``pip install .`` the dashboard (app.py, pages/) and the
artifacts are installed under ``<prefix>/share/fer/`` (pyproject.toml's data files) and found there.
Imports nothing but the standard library.
"""

from __future__ import annotations

import site
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent  # the folder holding fer_core/ (and training/)


def _installed_share() -> Path:
    """``<prefix>/share/fer`` of the installation that has the artifacts (a venv or system prefix, or --user)."""
    candidates = [Path(sys.prefix), Path(getattr(site, "USER_BASE", "") or sys.prefix), Path(sys.base_prefix)]
    for prefix in candidates:
        if (prefix / "share" / "fer" / "artifacts").is_dir():
            return prefix / "share" / "fer"
    return candidates[0] / "share" / "fer"


IN_CHECKOUT = (PACKAGE_ROOT / "app.py").is_file()
_SHARE = None if IN_CHECKOUT else _installed_share()
PROJECT_ROOT = PACKAGE_ROOT if IN_CHECKOUT else _SHARE / "app"  # where app.py and pages/ are
ARTIFACTS = PACKAGE_ROOT / "artifacts" if IN_CHECKOUT else _SHARE / "artifacts"  # the shipped model, detector, ...
RUNS = PROJECT_ROOT / "runs" if IN_CHECKOUT else Path.cwd() / "runs"  # training.train / crossdomain write here
SHARED_DATA = PACKAGE_ROOT.parent / "shared" / "data"  # research data beside the checkout, never inside it
FER_IMAGES = SHARED_DATA / "fer2013" / "images"  # FER2013 in the Kaggle folder layout (train/, validation/)
