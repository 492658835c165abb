"""Training runs on disk: find the run folders, read what each one says about itself, and how it is going.

A run is a folder that ``python -m training.train --out FOLDER`` writes: ``history.csv`` (one row per epoch),
``model_card.json`` (at the end), ``model.pt`` / ``model.onnx`` (the selected epoch) and ``progress.json``
(:data:`PROGRESS_NAME`, rewritten every few seconds while it trains). Runs are looked for below
``$FER_RUNS_DIR`` (default ``runs/``), at any depth; the shipped model's folder (``artifacts/``, or
``$FER_ARTIFACTS``) is listed too. A folder may hold several runs told apart by a suffix, as ``artifacts/`` holds
``model_card.json`` and ``model_card_fer2013.json``.

Every reader returns plain data and never raises on a damaged file: a run whose history, card or progress file
cannot be read is listed with a note that says which file and why. No torch here: the app reads runs without it.
"""

from __future__ import annotations

import math
import os
import platform
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..locations import RUNS
from ..model.artifacts import TRAIN_COMMAND, ArtifactError, artifacts_dir, read_history, read_json_object

RUNS_ENV = "FER_RUNS_DIR"
RUNS_DIR = RUNS
PROGRESS_NAME = "progress.json"  # written by training.train (training/recipe/progress.py), read here
STALE_AFTER_SECONDS = 600.0  # a "running" progress file older than this is stale (the writer updates it every ~5 s)
MAX_DEPTH = 6  # folder levels searched below the runs folder
MAX_RUNS = 500  # runs listed at most (a folder of sweeps stays readable)
TRAIN_RUN_COMMAND = f"{TRAIN_COMMAND} --data path/to/fer2013/images --out runs/my_run"

# The statuses a run can have, and what each means on the page.
STATUSES = {
    "running": "training now: its progress file is fresh and its process is alive",
    "finished": "trained to the end: its model card is written",
    "stopped": "ended before the last epoch (--stop-after, Ctrl+C or killed); `--resume` continues it",
    "stale": "says it is running, but its progress file has not been updated for a long time",
    "failed": "ended with an error",
    "unknown": "no model card and no readable progress file",
}

# What the numbers of the runs table are (the pages say it where they show them)
BEST_HELP = ("the best of the run's epochs, measured during training on FER2013 validation (PublicTest) with "
             "FER2013's labels and one view per face (no test-time augmentation): not the same number as a model's "
             "evaluation with test-time augmentation on the Home and Evaluation pages")
SELECTED_HELP = ("the epoch whose weights are the run's model.pt: the best validation accuracy with --select best "
                 "(training from scratch), the last epoch with --select last (fine-tuning on whole photos, where "
                 "FER2013 validation is not what the run is for), so it can differ from the best epoch")

# The files that make a folder a run, with the suffix that tells several runs of one folder apart.
_RUN_FILE = re.compile(r"^(?:history(?P<h>_[\w.-]+)?\.csv|model_card(?P<c>_[\w.-]+)?\.json"
                       r"|progress(?P<p>_[\w.-]+)?\.json)$")


@dataclass
class Run:
    """What one run folder says about itself; ``None`` where a file does not say. ``notes`` are the problems found
    (a damaged file, a dead process), each a sentence for the user."""

    name: str
    folder: Path
    suffix: str = ""  # "" for history.csv / model_card.json; "_fer2013" for history_fer2013.csv ...
    shipped: bool = False
    status: str = "unknown"
    notes: list[str] = field(default_factory=list)
    command: str | None = None
    arguments: dict | None = None
    hardware: str | None = None
    data: str | None = None
    epochs_run: int | None = None
    epochs_planned: int | None = None
    wall_seconds: float | None = None
    best_val_acc: float | None = None
    best_val_macro_f1: float | None = None
    best_val_nll: float | None = None
    selected_epoch: int | None = None  # the epoch written as model.pt
    last_activity: float | None = None  # unix time of the run's last update (see _last_activity)
    progress: dict | None = None  # the progress file as written (see training/recipe/progress.py)

    @property
    def history_path(self) -> Path:
        return self.folder / f"history{self.suffix}.csv"

    @property
    def card_path(self) -> Path:
        return self.folder / f"model_card{self.suffix}.json"

    @property
    def progress_path(self) -> Path:
        return self.folder / PROGRESS_NAME.replace(".json", f"{self.suffix}.json")

    @property
    def model_path(self) -> Path | None:
        """The run's model, ``model.pt`` (with its ``model.onnx`` beside it) or else ``model.onnx``; None when
        there is neither."""
        for ext in (".pt", ".onnx"):
            path = self.folder / f"model{self.suffix}{ext}"
            if path.is_file():
                return path
        return None

    @property
    def eta_seconds(self) -> float | None:
        return (self.progress or {}).get("eta_seconds") if self.status == "running" else None


def runs_dir() -> Path:
    """The folder searched for runs: $FER_RUNS_DIR when set, else the project's runs/."""
    return Path(os.environ.get(RUNS_ENV) or RUNS_DIR)


def _number(value, limit: float = 1e12) -> float | None:
    """``value`` as a finite float of at most ``limit`` in size, or None (missing, text, NaN, absurd: a wall time
    of 1e308 seconds is a damaged file, not a number to print)."""
    if isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return x if math.isfinite(x) and abs(x) <= limit else None


def _integer(value, limit: float = 1e12) -> int | None:
    """``value`` as an int when it is a finite number of at most ``limit`` in size, else None."""
    x = _number(value)
    return None if x is None or abs(x) > limit else int(x)


def run_folders(root: str | Path, max_depth: int = MAX_DEPTH) -> list[tuple[Path, str]]:
    """(folder, suffix) of every run at or below ``root``, ``max_depth`` levels deep at most: a folder with
    ``history<suffix>.csv``, ``model_card<suffix>.json`` or ``progress<suffix>.json`` (a run still loading its
    data has only that). Hidden folders are skipped, links not followed."""
    root = Path(root)
    found: list[tuple[Path, str]] = []
    if not root.is_dir():
        return found
    for folder, subfolders, files in os.walk(root):  # a folder that cannot be listed is left out
        depth = len(Path(folder).relative_to(root).parts)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")) if depth < max_depth else []
        suffixes = {m.group("h") or m.group("c") or m.group("p") or "" for m in map(_RUN_FILE.match, files) if m}
        found += [(Path(folder), s) for s in sorted(suffixes)]
        if len(found) >= MAX_RUNS:
            break
    return found[:MAX_RUNS]


def process_alive(pid: int) -> bool | None:
    """Whether process ``pid`` of this machine exists; None when that cannot be told."""
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)  # signal 0: no signal sent, only the check
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    except (OSError, ValueError, OverflowError):
        return None
    return True


# The fields of a progress file by type (training/recipe/progress.py); a value of another type is read as None.
_PROGRESS_INTEGERS = ("epoch", "epochs", "first_epoch", "last_epoch", "step", "steps_per_epoch", "images_per_step",
                      "world_size", "pid")
_PROGRESS_NUMBERS = ("images_per_second", "elapsed_seconds", "eta_seconds", "updated_unix")
_PROGRESS_TEXTS = ("status", "phase", "message", "error", "command", "host", "data", "started_at", "updated_at")


def read_progress(path: str | Path) -> dict | None:
    """The progress file of a run with every field of its type or None (see training/recipe/progress.py), or None when
    there is no file; ArtifactError when it is not a JSON object with a status."""
    data = read_json_object(Path(path))
    if data is None:
        return None
    if not isinstance(data.get("status"), str):
        raise ArtifactError(f"{path} has no status; it was not written by training.train.")
    return {**{k: _integer(data.get(k)) for k in _PROGRESS_INTEGERS},
            **{k: _number(data.get(k)) for k in _PROGRESS_NUMBERS},  # NaN, inf, 1e300: None
            **{k: data[k] if isinstance(data.get(k), str) else None for k in _PROGRESS_TEXTS},
            "hardware": data.get("hardware") if isinstance(data.get("hardware"), dict) else None}


def progress_status(progress: dict, now: float | None = None) -> tuple[str, str | None]:
    """(status, note) of a run from its progress file: its own final status, or for "running" whether that is
    still true: a process of this machine that has ended means "stopped", no update for
    :data:`STALE_AFTER_SECONDS` means "stale" (a process on another machine is judged by the age alone)."""
    status = progress["status"]
    if status == "failed":
        return "failed", f"failed: {progress.get('error') or 'no error message recorded'}"
    if status == "finished":
        return status, None
    if status == "stopped":
        return status, progress.get("message") or "stopped before its last epoch; `--resume` continues it"
    if status != "running":
        return "unknown", f"unknown status {status!r} in {PROGRESS_NAME}"
    now = time.time() if now is None else now
    updated, pid = progress.get("updated_unix"), progress.get("pid")
    age = None if updated is None else max(0.0, now - updated)
    alive = process_alive(pid) if pid is not None and progress.get("host") == platform.node() else None
    if alive is False:
        return "stopped", (f"its process {pid} has ended without a final status (killed or crashed) "
                           f"{'' if age is None else format_duration(age) + ' ago'}; `--resume` continues it").strip()
    if age is None or age > STALE_AFTER_SECONDS:
        return "stale", ("no progress update " + ("time" if age is None else f"for {format_duration(age)}")
                         + (f" while {progress.get('phase') or 'running'}; its process {pid} is alive: a long "
                            "phase, or frozen" if alive else ""))
    return "running", None


def _hardware(hw, world_size=1) -> str | None:
    """'NVIDIA H100 x 4 processes (host)' or 'Intel Xeon ..., 2 cores, 1 threads (host)' from the hardware record
    of a model card or progress file (training.train's ``hardware()``)."""
    if not isinstance(hw, dict):
        return None
    what = hw.get("gpu") or (f"{hw.get('cpu') or 'CPU'}, {hw.get('cpu_cores')} cores, "
                             f"{hw.get('torch_threads')} threads")
    world = _integer(world_size) or 1
    return what + (f" x {world} processes" if world > 1 else "") + (f" ({hw['host']})" if hw.get("host") else "")


def _data(data) -> str | None:
    """'.../fer2013/images: 28,709 training images; validation 3,589 images' from a model card's data (with each
    whole-photo source and its faces per epoch, when there are several)."""
    if not isinstance(data, dict):
        return None
    parts = []
    sources = data.get("sources")
    if isinstance(sources, list) and sources:
        parts += [f"{row.get('source')}: {row.get('dose_per_epoch', row.get('faces'))} per epoch"
                  for row in sources if isinstance(row, dict)]
    else:
        images = data.get("train_images")
        parts.append(f"{data.get('source')}" + (f": {images:,} training images" if isinstance(images, int) else ""))
        photos = data.get("photos")  # the older --photos record
        if isinstance(photos, dict):
            parts.append(f"{photos.get('folder')}: {photos.get('faces')} faces x {photos.get('repeat')}")
    if isinstance(data.get("validation_images"), int):
        parts.append(f"validation {data['validation_images']:,} images")
    return "; ".join(parts)


def _read_card(path: Path) -> dict | None:
    """A run's model card, or None when absent; ArtifactError when unreadable or not a model card."""
    card = read_json_object(path)
    if card is not None and not all(isinstance(card.get(k, {}), dict) for k in ("training", "data", "validation")):
        raise ArtifactError(f"{path} is not a model card of training.train (its training, data or validation is "
                            f"not an object).")
    return card


def _unix_time(iso) -> float | None:
    """An ISO time ('2026-11-26T11:55:56+00:00') as a unix time; None when it is not one."""
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _last_activity(run: Run, card: dict) -> float | None:
    """When the run last wrote something: its progress file's last update, else the time its model card was written
    (a copied or checked-out folder keeps it, unlike the files' modification times), else the newest file's."""
    updated = (run.progress or {}).get("updated_unix") or _unix_time(card.get("trained_at"))
    if updated is not None:
        return updated
    times = [p.stat().st_mtime for p in (run.card_path, run.history_path, run.progress_path) if p.is_file()]
    return max(times) if times else None


def read_run(folder: str | Path, suffix: str = "", name: str | None = None, shipped: bool = False,
             now: float | None = None) -> Run:
    """Everything a run folder says about the run ``suffix`` in it (see :class:`Run`); never raises for a damaged
    or half-written file, it becomes a note."""
    folder = Path(folder)
    run = Run(name=name or folder.name, folder=folder, suffix=suffix, shipped=shipped)

    def attempt(reader, path: Path):
        try:
            return reader(path)
        except ArtifactError as e:
            run.notes.append(str(e))
            return None

    card = attempt(_read_card, run.card_path) or {}
    history = attempt(read_run_history, run.history_path)
    run.progress = attempt(read_progress, run.progress_path)
    run.last_activity = _last_activity(run, card)

    training, progress = card.get("training") or {}, run.progress or {}
    run.arguments = training.get("arguments") if isinstance(training.get("arguments"), dict) else None
    run.command = progress.get("command") or training.get("command")
    world_size = (training.get("distributed") or {}).get("world_size") or progress.get("world_size")
    run.hardware = _hardware(progress.get("hardware") or training.get("hardware"), world_size) or (
        training.get("device") and f"{training['device']}, {training.get('precision') or 'precision unknown'}")
    run.data = _data(card.get("data")) or progress.get("data")
    run.epochs_planned = progress.get("epochs") or _integer((run.arguments or {}).get("epochs"))
    run.wall_seconds = _number(training.get("wall_time_seconds"))
    if history is not None:
        run.notes += history.attrs.get("notes", [])
    if history is not None and len(history):
        run.epochs_run = int(history["epoch"].max())
        run.best_val_acc = _number(history["val_acc"].max())
        run.best_val_macro_f1 = _number(history["val_macro_f1"].max())
        run.best_val_nll = _number(history["val_loss"].min())
        if run.best_val_acc is not None:  # what --select best keeps, until the card says which epoch it kept
            run.selected_epoch = int(history.loc[history["val_acc"].idxmax(), "epoch"])
        if run.wall_seconds is None and "seconds" in history:
            run.wall_seconds = _number(history["seconds"].sum())
    elif card:
        validation = card.get("validation") or {}
        run.epochs_run = _integer(training.get("epochs_run"))
        run.best_val_acc = _number(validation.get("val_acc"))
        run.best_val_macro_f1 = _number(validation.get("val_macro_f1"))
    if training.get("selected_epoch") is not None:  # --select last: the last epoch
        run.selected_epoch = _integer(training.get("selected_epoch"))

    if run.progress is not None:
        run.status, note = progress_status(run.progress, now)
        if note:
            run.notes.append(note)
    elif card:
        run.status = "finished"
    elif history is not None:
        run.status = "stopped"
        run.notes.append("no model card and no progress file: the run ended before its last epoch, or was "
                         "trained by a version that wrote no progress file")
    return run


# The range each history column may take; a value outside it (or not finite) is blanked, with a note on the run.
HISTORY_RANGES = {"epoch": (0, 10**6), "lr": (0.0, 1e3), "train_loss": (0.0, 1e6), "val_loss": (0.0, 1e6),
                  "train_acc": (0.0, 1.0), "val_acc": (0.0, 1.0), "val_macro_f1": (0.0, 1.0),
                  "seconds": (0.0, 1e9)}


def read_run_history(path: str | Path) -> pd.DataFrame | None:
    """A run's history.csv with numeric columns, sorted by epoch; None when absent, ArtifactError when unreadable.

    Rows without a whole epoch number in [0, 10^6] are dropped (a line cut off by a writer, "inf", 1e300), and a
    value outside its column's range (HISTORY_RANGES: accuracies in [0, 1], ...) or not finite is blanked; what was
    dropped or blanked is said in ``history.attrs["notes"]``. The parsed file is kept in memory until it changes
    (its size and modification time), so a page refreshing every few seconds does not parse a long history again;
    treat the returned frame as read-only."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _parsed_history(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=64)
def _parsed_history(path: str, mtime_ns: int, size: int) -> pd.DataFrame | None:
    history = read_history(path)
    if history is None:
        return None
    history = history.apply(pd.to_numeric, errors="coerce")
    notes = []
    low, high = HISTORY_RANGES["epoch"]
    epoch = history["epoch"]
    bad_epoch = ~(epoch.between(low, high) & (epoch == epoch.round()))
    cut = int((bad_epoch & epoch.notna()).sum())
    if cut:
        notes.append(f"{path}: {cut} row(s) with an epoch that is not a whole number from {low} to {high:,} left out")
    history = history[~bad_epoch]
    for column, (low, high) in HISTORY_RANGES.items():
        if column == "epoch" or column not in history:
            continue
        values = history[column]
        odd = values.notna() & ~values.between(low, high)
        if odd.any():
            notes.append(f"{path}: {int(odd.sum())} {column} value(s) outside {low:g} to {high:g} left blank")
            history[column] = values.where(~odd)
    history = history.astype({"epoch": "int64"}).drop_duplicates("epoch", keep="last").sort_values("epoch")\
        .reset_index(drop=True)
    history.attrs["notes"] = notes
    return history


def discover_runs(root: str | Path | None = None, shipped: str | Path | None = None,
                  now: float | None = None) -> list[Run]:
    """Every run below ``root`` (default :func:`runs_dir`) and in ``shipped`` (default the artifacts folder; ""
    for none): running ones first, then the others newest first, the shipped ones last."""
    root = Path(root) if root is not None else runs_dir()
    runs, seen = [], set()
    for folder, suffix in run_folders(root):
        relative = folder.relative_to(root).as_posix()
        name = (root.name if relative == "." else relative) + suffix
        runs.append(read_run(folder, suffix, name=name, now=now))
        seen.add((folder.resolve(), suffix))
    shipped_runs = []
    shipped = artifacts_dir() if shipped is None else shipped
    if shipped:
        for folder, suffix in run_folders(shipped, max_depth=0):
            if (folder.resolve(), suffix) not in seen:
                shipped_runs.append(read_run(folder, suffix, name=f"shipped: model{suffix}.pt", shipped=True,
                                             now=now))
    runs.sort(key=lambda r: (r.status != "running", -(r.last_activity or 0.0)))
    return runs + shipped_runs


def format_duration(seconds: float | None) -> str:
    """4000 -> '1 h 06 min'; 75 -> '1 min 15 s'; None -> ''."""
    if seconds is None:
        return ""
    s = round(max(0.0, seconds))
    if s >= 3600:
        return f"{s // 3600} h {s // 60 % 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def runs_table(runs: list[Run]) -> list[dict]:
    """One row per run for the page's table: name, status, epochs, best validation numbers, wall time, the last
    activity (UTC), command, hardware, data and notes."""
    rows = []
    for r in runs:
        epochs = "" if r.epochs_run is None else str(r.epochs_run)
        if r.epochs_planned:
            epochs = f"{epochs or 0} / {r.epochs_planned}"
        rows.append({
            "run": r.name, "status": r.status, "epochs": epochs,
            "best val accuracy": r.best_val_acc, "best val macro-F1": r.best_val_macro_f1,
            "best val NLL": r.best_val_nll, "selected epoch": r.selected_epoch,
            "wall time": format_duration(r.wall_seconds),
            "last update (UTC)": (datetime.fromtimestamp(r.last_activity, UTC).strftime("%Y-%m-%d %H:%M")
                                  if r.last_activity else ""),
            "command": r.command or "", "hardware": r.hardware or "", "data": r.data or "",
            "notes": " · ".join(r.notes), "folder": str(r.folder),
        })
    return rows
