"""Which models the evaluation page can evaluate and compare: the shipped one, the FER2013-only one, every checkpoint
under the models folders, and uploaded files. Imports no torch (an uploaded ``.pt`` needs it, and says so).

Models folders: ``$FER_MODELS_DIR`` (one folder, or several separated by ``os.pathsep``; searched three levels
deep), else the artifacts folder and every ``out/`` folder up to three levels below the runs folder
(``$FER_RUNS_DIR``, default ``runs/``: where ``python -m training.train --out runs/<name>/out`` and
``training.crossdomain`` write). A ``.pt`` is served through the ``.onnx`` exported beside it (no torch needed,
:meth:`fer_core.model.inference.Predictor.from_checkpoint`); an ``.onnx`` with no ``.pt`` beside it is listed itself.

An uploaded model is first run on test faces in a child process with CPU, memory and time limits
(:func:`fer_core.model.trial.trial_run`), then checked exactly as the app checks its own weights (:func:`fer_core.model.checkpoint.load_checkpoint`
for a ``.pt``: ``torch.load(weights_only=True)``, every field and tensor shape checked;
:func:`fer_core.model.onnx_file.onnx_model_from_bytes` for an ``.onnx``), at most :data:`MAX_UPLOAD_BYTES`, and kept in
memory only: nothing is written to disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..model.artifacts import ARTIFACTS_DIR, WEIGHTS_NAME, artifacts_dir
from ..model.bounded import bounded_predictor
from ..model.inference import Predictor
from ..model.onnx_file import METADATA_KEY
from ..model.trial import trial_run
from ..model.weights import CheckpointError, import_torch
from .runs import runs_dir

MODELS_ENV = "FER_MODELS_DIR"
FER2013_NAME = "model_fer2013.pt"  # the model trained on FER2013 alone, shipped beside model.pt
MODEL_SUFFIXES = (".pt", ".onnx")
SEARCH_DEPTH = 3  # folder levels searched below each $FER_MODELS_DIR folder
MAX_UPLOAD_BYTES = 64 * 1024 * 1024  # the shipped checkpoint is 6 MB; the largest sane config is far below this


@dataclass(frozen=True)
class ModelChoice:
    """A model file the page offers: what the list shows, and its path."""

    label: str
    path: Path


def models_folders() -> list[Path]:
    """The folders searched for checkpoints: $FER_MODELS_DIR, else the artifacts folder and the runs' ``out/``."""
    setting = os.environ.get(MODELS_ENV, "").strip()
    if setting:
        return [Path(p).expanduser() for p in setting.split(os.pathsep) if p.strip()]
    root = runs_dir()
    outs = {p for pattern in ("*/out", "*/*/out", "*/*/*/out") for p in root.glob(pattern) if p.is_dir()}
    return [artifacts_dir(), *sorted(outs)]


def find_models(folder: Path, depth: int = 0) -> list[Path]:
    """The model files in ``folder`` and ``depth`` levels below it, sorted: every ``.pt``, and every ``.onnx`` with
    no ``.pt`` beside it that is an expression classifier. Hidden folders and files being written (``*.tmp``) are left out."""
    found: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for p in entries:
        if p.name.startswith("."):
            continue
        if p.is_dir() and depth > 0:
            found += find_models(p, depth - 1)
        elif p.is_file() and p.suffix in MODEL_SUFFIXES:
            if p.suffix == ".onnx" and (p.with_suffix(".pt").is_file() or not is_expression_onnx(p)):
                continue
            found.append(p)
    return found


def is_expression_onnx(path: Path) -> bool:
    """Whether an ``.onnx`` file carries fer_core's metadata key (an exported expression classifier, not e.g. the
    face detector's network); a byte search, so listing a folder never builds an inference session."""
    try:
        return METADATA_KEY.encode() in path.read_bytes()
    except OSError:
        return False


def model_choices(extra: tuple[str | Path, ...] = ()) -> list[ModelChoice]:
    """The models to choose from, each once: the shipped model, the FER2013-only model, every model under
    :func:`models_folders`, then ``extra`` paths (a checkpoint another page handed over) that exist."""
    shipped = artifacts_dir() / WEIGHTS_NAME
    fer2013 = next((p for p in (artifacts_dir() / FER2013_NAME, ARTIFACTS_DIR / FER2013_NAME)
                    if p.is_file() or p.with_suffix(".onnx").is_file()), None)
    env = bool(os.environ.get(MODELS_ENV, "").strip())
    candidates = [(f"shipped model ({display_path(shipped)})", shipped)]
    if fer2013 is not None:
        candidates.append((f"FER2013-only model ({display_path(fer2013)})", fer2013))
    for folder in models_folders():
        candidates += [(display_path(p), p) for p in find_models(folder, SEARCH_DEPTH if env else 0)]
    candidates += [(display_path(Path(p)), Path(p)) for p in extra if Path(p).is_file()]
    seen, out = set(), []
    for label, path in candidates:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            out.append(ModelChoice(label, Path(path)))
    return out


def display_path(path: Path) -> str:
    """``path`` relative to the project when it is inside it (``artifacts/model.pt``), else as given."""
    try:
        return str(Path(path).resolve().relative_to(ARTIFACTS_DIR.parent.resolve()))
    except ValueError:
        return str(path)


def uploaded_model(name: str, data: bytes) -> Predictor:
    """The classifier of an uploaded ``.pt`` or ``.onnx`` file held in memory. Raises CheckpointError, with a message
    for the user, for a file that is too large, of another kind, not an expression model, or a ``.pt`` where torch
    is not installed (the ``.onnx`` exported from it works everywhere)."""
    suffix = Path(name).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise CheckpointError(f"{name} is not a model file: upload a checkpoint (.pt) written by "
                              "`python -m training.train`, or the .onnx exported beside it.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise CheckpointError(f"{name} is {len(data) / 2**20:.0f} MB; uploaded models may be at most "
                              f"{MAX_UPLOAD_BYTES // 2**20} MB (the shipped one is 6 MB).")
    if suffix != ".onnx":
        import_torch(f"read the uploaded checkpoint {name}",
                     f"or upload the .onnx exported from it (`python -m fer_core.model.onnx_file {name}`)")
    trial_run(data, name)  # first run in a child process with CPU, memory and time limits: a hostile graph costs it
    return bounded_predictor(data, name)  # and every later forward pass too (fer_core.model.bounded)
