"""Made-up training-run folders for the tests of fer_core.analysis.runs and the Training runs page."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from fer_core.analysis.runs import PROGRESS_NAME
from fer_core.files import write_text_atomically

HISTORY_HEADER = "epoch,lr,train_loss,train_acc,val_loss,val_acc,val_macro_f1,seconds\n"


def history_rows(epochs: range) -> str:
    """history.csv rows of a run that learns a little every epoch."""
    return "".join(f"{e},{0.003 / e:.6f},{2.0 - 0.1 * e:.3f},{0.2 + 0.05 * e:.3f},{1.9 - 0.08 * e:.3f},"
                   f"{0.25 + 0.04 * e:.3f},{0.2 + 0.04 * e:.3f},60.0\n" for e in epochs)


def write_run(folder: Path, epochs: int = 0, card: dict | None = None, progress: dict | None = None,
              model: bool = False) -> Path:
    """A made-up run folder: ``epochs`` rows of history.csv, a model card, a progress file, a model.pt."""
    folder.mkdir(parents=True, exist_ok=True)
    if epochs:
        (folder / "history.csv").write_text(HISTORY_HEADER + history_rows(range(1, epochs + 1)))
    if card is not None:
        (folder / "model_card.json").write_text(json.dumps(card))
    if progress is not None:
        (folder / PROGRESS_NAME).write_text(json.dumps(progress))
    if model:
        (folder / "model.pt").write_bytes(b"weights")
    return folder


def running(epoch: int = 2, epochs: int = 5, step: int = 3, steps: int = 10, **fields) -> dict:
    """The progress file of a run training now, in this process (alive) on this machine."""
    return {"status": "running", "phase": "training", "epoch": epoch, "epochs": epochs, "first_epoch": 1,
            "last_epoch": epochs, "step": step, "steps_per_epoch": steps, "images_per_second": 321.5,
            "elapsed_seconds": 130.0, "eta_seconds": 400.0, "updated_unix": time.time(),
            "updated_at": "2026-12-03T12:00:00+00:00", "started_at": "2026-12-03T11:58:00+00:00",
            "pid": os.getpid(), "host": platform.node(), "command": "python -m training.train --out runs/live",
            **fields}


def append_epochs(folder: Path, epochs: range) -> None:
    """Add rows to a run's history.csv as training.train does: the whole file replaced in one step."""
    path = folder / "history.csv"
    write_text_atomically(path, path.read_text() + history_rows(epochs))


def write_progress(folder: Path, progress: dict) -> None:
    write_text_atomically(folder / PROGRESS_NAME, json.dumps(progress))
