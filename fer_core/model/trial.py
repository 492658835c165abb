"""A model from outside (an upload) is run once where it cannot hurt, before the app uses it.

An ONNX graph or a checkpoint can be hostile while passing every static check: a Loop that never ends, a
ConstantOfShape that asks for all the memory, outputs of another shape or not finite. :func:`trial_run` loads the
model's bytes in a child process with CPU-time and memory limits (``resource`` rlimits) and a wall-clock timeout,
classifies a small batch of faces there, and accepts the model only when it answers finite (N, 7) logits within
the limits. A hostile model costs one bounded child process, never the server; the messages name no server path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..locations import ARTIFACTS, PACKAGE_ROOT
from .limited import child_command, child_env, enter_limits, failure_message
from .weights import CheckpointError, ModelOutputError


@dataclass(frozen=True)
class TrialLimits:
    cpu_seconds: int = 30  # of the child process (the shipped model needs about 2 s, imports included)
    memory_bytes: int = 4 * 2**30  # address space of the child: Python, ONNX Runtime and the model together
    wall_seconds: float = 90.0


TRIAL_LIMITS = TrialLimits()
TRIAL_FACES = 4  # faces in the test batch


def trial_run(data: bytes, name: str, limits: TrialLimits | None = None) -> None:
    """Load ``data`` (an ``.onnx`` or ``.pt`` file's bytes, called ``name``) in a child process under ``limits`` and
    classify :data:`TRIAL_FACES` faces; CheckpointError with what went wrong unless it answered finite (N, 7)
    logits in time (``limits``: :data:`TRIAL_LIMITS` when None)."""
    limits = limits or TRIAL_LIMITS
    command = child_command("fer_core.model.trial:_child", Path(name).name, limits.cpu_seconds, limits.memory_bytes)
    try:
        proc = subprocess.run(command, input=data, capture_output=True, timeout=limits.wall_seconds, env=child_env(),
                              cwd=PACKAGE_ROOT)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child
        raise CheckpointError(f"{name} did not classify {TRIAL_FACES} test faces within {limits.wall_seconds:.0f} s: "
                              "it is refused (a never-ending or far too slow model).") from None
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if answer.get("ok"):
        return
    if answer.get("error"):
        raise CheckpointError(answer["error"])
    raise CheckpointError(f"{name} was stopped while it classified {TRIAL_FACES} test faces: it needed more than "
                          f"{limits.cpu_seconds} s of CPU or {limits.memory_bytes / 2**30:.0f} GB of memory (exit code "
                          f"{proc.returncode}). It is refused.")


def _child() -> None:
    """The child of :func:`trial_run`: limits first, then the model from stdin; one JSON line on stdout."""
    name, cpu, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    enter_limits(memory, cpu)
    data = sys.stdin.buffer.read()
    try:
        print(json.dumps({"ok": True} if _classify(data, name) else {}))
    except ModelOutputError as e:
        print(json.dumps({"error": f"{name}: {e}"}))
    except Exception as e:  # noqa: BLE001 - anything a foreign model makes its runtime raise is its fault
        print(json.dumps({"error": failure_message(name, "fails on test faces", e, memory)}))


def _classify(data: bytes, name: str) -> bool:
    """Load the model and check its logits on a batch of faces (CheckpointError when they are unusable)."""
    import numpy as np

    from .inference import Predictor, predict_view_logits  # in the child only: the parent stays light

    predictor = Predictor.from_bytes(data, name)
    size = predictor.preprocess.image_size
    faces = np.random.default_rng(0).random((TRIAL_FACES, 1, size, size), dtype=np.float32)
    logits = np.asarray(predict_view_logits(predictor.backend, faces, tta=False))
    expected = (1, TRIAL_FACES, len(predictor.class_names))
    if logits.shape != expected:
        raise CheckpointError(f"{name} answers {TRIAL_FACES} faces with outputs of shape {logits.shape[1:]}, not "
                              f"{expected[1:]} (one score per expression): it is refused.")
    if not np.isfinite(logits).all():
        raise CheckpointError(f"{name} answers test faces with NaN or infinite scores: it is refused.")
    return True


MAX_TRIAL_BYTES = 512 * 2**20  # a model file larger than this is not read for its trial (the shipped one is 6 MB)


def served_file(path: str | Path) -> Path | None:
    """The file the app runs for the model ``path`` names (None when there is none): an ``.onnx`` as it is; for a
    ``.pt`` the ``.onnx`` beside it when that was exported from exactly this file
    (:func:`fer_core.model.onnx_file.current_onnx`), else the ``.pt`` itself."""
    from .onnx_file import current_onnx, onnx_path_for

    path = Path(path)
    try:
        if path.suffix == ".pt" and onnx_path_for(path).is_file() and current_onnx(path)[0] is not None:
            return onnx_path_for(path)
        return path if path.is_file() else None
    except (OSError, CheckpointError):
        return path if path.is_file() else None


def is_shipped(path: Path) -> bool:
    """Whether ``path`` is one of the shipped artifacts (trusted: run in this process)."""
    return path.resolve().parent == ARTIFACTS.resolve()


def outside_model(path: str | Path) -> tuple[Path, bytes] | None:
    """The file the app would run for the model ``path`` names (:func:`served_file`) and its bytes, read once; None
    for the shipped artifacts (trusted) and for a missing or unreadable file (left to the loader's own message).
    CheckpointError for a file too large to be a model of this family."""
    served = served_file(path)
    if served is None or is_shipped(served):
        return None
    try:
        if served.stat().st_size > MAX_TRIAL_BYTES:
            raise CheckpointError(f"{served} is {served.stat().st_size / 2**20:.0f} MB: not an expression model of "
                                  f"this family (at most {MAX_TRIAL_BYTES // 2**20} MB).")
        return served, served.read_bytes()
    except OSError:
        return None


def trial_file(path: str | Path, limits: TrialLimits | None = None) -> None:
    """:func:`trial_run` of a model named on a command line (:func:`outside_model`); the shipped artifacts are
    trusted and skipped."""
    found = outside_model(path)
    if found is not None:
        trial_run(found[1], found[0].name, limits)
