"""What a command checks before any work starts: its output locations, so a long run never fails at its first
write, and PyTorch for the commands that need it, so the light install gets one line instead of a traceback.

Each raises SystemExit with a message that names the path and the flag (or what to install), for the command lines
to print.
"""

from __future__ import annotations

import os
from pathlib import Path

from fer_core.files import writable_folder
from fer_core.model.weights import CheckpointError, import_torch


def require_writable_dir(path: str | Path, flag: str) -> Path:
    """Create folder ``path`` if needed and prove a file can be written in it (the file is removed again)."""
    path = Path(path)
    try:
        writable_folder(path)
    except OSError as e:
        raise SystemExit(f"error: {flag} {path} is not a writable folder ({e.strerror or e}); "
                         f"choose another {flag} or fix its permissions.") from None
    return path


def require_writable_file(path: str | Path, flag: str) -> Path:
    """Check that file ``path`` can be written (its folder is created if needed; an existing file is kept)."""
    path = Path(path)
    if path.is_dir():
        raise SystemExit(f"error: {flag} {path} is a folder; give a file name such as {path / 'results.json'}.")
    require_writable_dir(path.parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise SystemExit(f"error: {flag} {path} exists and is not writable; choose another file or fix its permissions.")
    return path


def require_torch(purpose: str):
    """The ``torch`` module, or SystemExit with one line that says what to install (the light install has none).
    ``purpose`` completes "PyTorch is needed to ...". Commands call it first in ``main``, so ``--help`` works
    without PyTorch."""
    try:
        return import_torch(purpose)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
