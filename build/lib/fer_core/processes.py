"""Child processes tied to the process that started them (batch workers, the bounded runner of outside models)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # prctl option: the signal this process gets when its parent dies (linux/prctl.h)


def die_with_parent() -> None:
    """Make this process end when the process that started it ends, however that ends (killed, even with SIGKILL):
    Linux's PR_SET_PDEATHSIG sends it SIGTERM then. Ctrl+C is the parent's to handle (this process ignores SIGINT,
    so it prints no traceback of its own). Elsewhere than Linux only the latter applies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # no prctl: the process ends when its pipe to the parent closes
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
