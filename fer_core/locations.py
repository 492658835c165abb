"""Where the project's files are: the checkout, the shipped artifacts, the training runs and the shared data.

The ground floor of fer_core: every other module takes its paths from here, so moving a module never moves a path.
Imports nothing but pathlib.
"""

from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # the checkout: app.py, artifacts/, runs/
ARTIFACTS = PROJECT_ROOT / "artifacts"  # the shipped model, its card and evaluation files, the face detector
RUNS = PROJECT_ROOT / "runs"  # where training.train and training.crossdomain write by default
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # research data beside the checkout, never inside it
FER_IMAGES = SHARED_DATA / "fer2013" / "images"  # FER2013 in the Kaggle folder layout (train/, validation/)
