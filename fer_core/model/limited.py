"""What the two runners of models from outside share: a child process of this interpreter that finds the package,
dies with its parent, runs under an address-space and a CPU-time limit, and turns whatever the model makes its
runtime raise into one message that names no server path.

:func:`fer_core.model.trial.trial_run` (one short run before a model is accepted) and
:class:`fer_core.model.bounded.BoundedBackend` (every forward pass after that) both start their child with
:func:`child_command` and :func:`child_env`, call :func:`enter_limits` first thing in the child, and report errors
with :func:`failure_message`.
"""

from __future__ import annotations

import os
import sys

from ..locations import PACKAGE_ROOT
from .weights import CheckpointError


def child_command(entry: str, *args: object) -> list[str]:
    """The command of a child that runs ``entry`` (``"module:function"`` in this package) with ``args`` in argv."""
    module, function = entry.split(":")
    return [sys.executable, "-c", f"from {module} import {function}; {function}()", *map(str, args)]


def child_env(backend: str | None = None) -> dict[str, str]:
    """This process's environment with the package importable (an installed or a checked-out one alike), and
    ``FER_BACKEND`` when ``backend`` is given. The child runs in :data:`~fer_core.locations.PACKAGE_ROOT`."""
    from .backends import BACKEND_ENV

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")])}
    if backend:
        env[BACKEND_ENV] = backend
    return env


def enter_limits(memory_bytes: int, cpu_seconds: int) -> None:
    """In the child, before anything of the model is read: end with the parent, and cap the address space and the
    CPU time (RLIMIT_AS, RLIMIT_CPU; the kernel stops the process at either)."""
    import resource

    from ..processes import die_with_parent

    die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))


def failure_message(name: str, what: str, error: BaseException, memory_bytes: int, refused: bool = True) -> str:
    """What the model ``name`` did wrong when it ``what`` ("cannot be loaded", "fails on test faces", ...): the
    project's own message for a CheckpointError, a line about memory for a MemoryError, else the exception's type
    and first line (at most 200 characters). ``refused``: the model is not used again (said at the end)."""
    if isinstance(error, CheckpointError):
        return str(error)
    if isinstance(error, MemoryError):
        return (f"{name} asked for more memory than a model may use ({memory_bytes / 2**30:.0f} GB with the "
                "interpreter): it is refused.")
    text = str(error).splitlines()[0][:200] if str(error) else "no message"
    return f"{name} {what} ({type(error).__name__}: {text})" + (": it is refused." if refused else ".")
