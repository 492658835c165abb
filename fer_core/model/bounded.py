"""A model from outside keeps running in a bounded child process for as long as it is used.

:func:`fer_core.model.trial.trial_run` runs an uploaded or command-line model once on a few faces before it is
accepted; a model can still behave there and not on other faces (a Loop whose count depends on the pixels, scores
that overflow on real faces). So every forward pass of such a model runs in one child process too:
:class:`BoundedBackend` is a :class:`~fer_core.model.backends.Backend` whose calls go over a pipe to a child that
holds the model under an address-space limit and a lifetime CPU limit (``resource`` rlimits), with a wall-clock
deadline per call that grows with the batch. A call that breaks a limit kills the child and refuses the model with a
message that names no server path; scores of another shape or not finite are refused in this process. The child
ends with its parent (PR_SET_PDEATHSIG), when the backend is garbage-collected, and after some idle minutes (it is
started again on the next call), so a visitor who leaves costs nothing.

The child's command, environment, limits and error messages are those of the trial (:mod:`fer_core.model.limited`).
The pages' comparisons and evaluations of uploaded models and ``training.compare``, ``training.evaluate``,
``fer_core.predict`` and ``fer_core.batch``'s workers with a model from outside go through
:func:`outside_predictor` / :func:`bounded_predictor`; the shipped artifacts run in-process.
"""

from __future__ import annotations

import io
import os
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..locations import PACKAGE_ROOT
from .limited import child_command, child_env, enter_limits, failure_message
from .weights import CheckpointError, ModelOutputError

_HEADER = struct.Struct(">cQ")  # one status byte, then the payload's length
READY, LOGITS, ERROR, BATCH = b"R", b"L", b"E", b"B"


@dataclass(frozen=True)
class RunLimits:
    memory_bytes: int = 4 * 2**30  # address space of the child: Python, ONNX Runtime and the model together
    cpu_seconds: int = 3600  # CPU time of one child over its life (an idle child ends, so this bounds a job)
    load_seconds: float = 60.0  # wall clock to load the model
    call_seconds: float = 30.0  # wall clock of a call: this much ...
    seconds_per_image: float = 0.05  # ... plus this per image (the shipped model needs about 1 ms per image)
    idle_seconds: float = 300.0  # a child with no call for this long ends


RUN_LIMITS = RunLimits()


def _write_frame(stream, kind: bytes, payload: bytes) -> None:
    stream.write(_HEADER.pack(kind, len(payload)) + payload)
    stream.flush()


def _read_exactly(fd: int, n: int, deadline: float | None) -> bytes | None:
    """``n`` bytes from ``fd``; None at end of file; TimeoutError past ``deadline`` (time.monotonic)."""
    chunks, left = [], n
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None) -> tuple[bytes, bytes] | None:
    header = _read_exactly(fd, _HEADER.size, deadline)
    if header is None:
        return None
    kind, size = _HEADER.unpack(header)
    payload = _read_exactly(fd, size, deadline)
    return None if payload is None else (kind, payload)


def _to_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class BoundedBackend:
    """The forward pass of the model file ``data`` (called ``name``; ``.onnx`` by its suffix, else a ``.pt``) in a
    child process under ``limits``; thread-safe (calls take turns). ``n_classes``: the width its scores must have."""

    name = "bounded"

    def __init__(self, data: bytes, name: str, n_classes: int, limits: RunLimits | None = None,
                 backend: str | None = None):
        self._data, self._name, self._n_classes = data, Path(name).name, n_classes
        self._limits = limits or RUN_LIMITS
        self._backend = backend
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._refused: str | None = None  # set once a call broke a limit: the model is not run again
        self._finalizer = weakref.finalize(self, _stop, [None])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        with self._lock:
            if self._refused:
                raise CheckpointError(self._refused)
            proc = self._running()
            allowed = self._limits.call_seconds + self._limits.seconds_per_image * len(batch)
            deadline = time.monotonic() + allowed
            try:
                _write_frame(proc.stdin, BATCH, _to_npy(batch))
                frame = _read_frame(proc.stdout.fileno(), deadline)
            except TimeoutError:
                self._refuse(f"{self._name} did not classify {len(batch)} face image(s) within "
                             f"{allowed:.0f} s: it is refused (a "
                             "never-ending or far too slow model).")
            except (BrokenPipeError, OSError):
                frame = None
            if frame is None:
                self._refuse(self._died_message("classifying faces"))
            kind, payload = frame
            if kind == ERROR:
                raise CheckpointError(payload.decode("utf-8", "replace"))
            try:
                logits = _from_npy(payload)
            except ValueError:
                self._refuse(f"{self._name} answered faces with something that is not an array of scores.")
        if logits.shape != (len(batch), self._n_classes):
            raise CheckpointError(f"{self._name} answers {len(batch)} face image(s) with outputs of shape "
                                  f"{logits.shape}, not ({len(batch)}, {self._n_classes}) (one score per "
                                  "expression): it cannot be used.")
        if not np.isfinite(logits).all():
            raise ModelOutputError(f"{self._name} answers faces with NaN or infinite scores: it cannot be used "
                                   "for them.")
        return logits.astype(np.float32, copy=False)

    def close(self) -> None:
        """End the child now (it is started again on the next call unless the model was refused)."""
        with self._lock:
            _stop([self._proc])
            self._proc = None

    def _running(self) -> subprocess.Popen:
        """The child, started (and the model loaded there) when there is none or it ended while idle."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        limits = self._limits
        from .backends import intra_op_threads

        self._proc = subprocess.Popen(
            child_command("fer_core.model.bounded:_serve", self._name, limits.memory_bytes, limits.cpu_seconds,
                          limits.idle_seconds, intra_op_threads()),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(self._backend),
            cwd=PACKAGE_ROOT)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop, [self._proc])
        try:
            _write_frame(self._proc.stdin, b"M", self._data)
            frame = _read_frame(self._proc.stdout.fileno(), time.monotonic() + limits.load_seconds)
        except TimeoutError:
            self._refuse(f"{self._name} did not load within {limits.load_seconds:.0f} s: it is refused.")
        except (BrokenPipeError, OSError):
            frame = None
        if frame is None:
            self._refuse(self._died_message("loading"))
        if frame[0] == ERROR:
            self._refuse(frame[1].decode("utf-8", "replace"))
        return self._proc

    def _died_message(self, doing: str) -> str:
        code = self._proc.wait(timeout=10) if self._proc is not None else None
        return (f"{self._name} was stopped while {doing}: it needed more than "
                f"{self._limits.memory_bytes / 2**30:.0f} GB of memory or {self._limits.cpu_seconds} s of CPU "
                f"(exit code {code}). It is refused.")

    def _refuse(self, message: str):
        """Kill the child, remember why, and raise: a model that broke a limit is not run again."""
        _stop([self._proc])
        self._proc = None
        self._refused = message
        raise CheckpointError(message)


def _stop(holder: list) -> None:
    proc = holder[0]
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait()


def _serve() -> None:
    """The child of :class:`BoundedBackend`: limits first, then the model, then one batch at a time until stdin
    closes or nothing comes for the idle time."""
    name, memory, cpu, idle = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    threads = int(sys.argv[5])  # the caller's intra-op threads: a batch worker's child stays on its one core
    enter_limits(memory, cpu)
    stdin, stdout = sys.stdin.buffer.fileno(), sys.stdout.buffer
    frame = _read_frame(stdin, None)
    if frame is None:
        return
    try:
        from .backends import set_intra_op_threads
        from .inference import Predictor  # here only: the parent stays light

        set_intra_op_threads(threads)
        backend = Predictor.from_bytes(frame[1], name).backend
        _write_frame(stdout, READY, b"")
    except Exception as e:  # noqa: BLE001 - a model that cannot be loaded is refused with what went wrong
        _write_frame(stdout, ERROR, failure_message(name, "cannot be loaded", e, memory).encode())
        return
    while True:
        try:
            frame = _read_frame(stdin, time.monotonic() + idle)
        except TimeoutError:
            return  # idle: the parent starts a new child on its next call
        if frame is None:
            return
        try:
            reply = LOGITS, _to_npy(np.asarray(backend(_from_npy(frame[1]))))
        except Exception as e:  # noqa: BLE001 - anything a foreign model makes its runtime raise is its fault
            reply = ERROR, failure_message(name, "fails on these faces", e, memory, refused=False).encode()
        _write_frame(stdout, *reply)


def bounded_predictor(data: bytes, name: str, limits: RunLimits | None = None, backend: str | None = None):
    """The :class:`~fer_core.model.inference.Predictor` of a model file from outside held in memory: checked in this
    process (class names, preprocessing, temperatures; nothing of an ``.onnx`` is run here), run by a
    :class:`BoundedBackend`."""
    from .inference import Predictor

    predictor = Predictor.from_bytes(data, name, backend="torch")  # a .pt's own backend is replaced: not exported
    predictor.backend = BoundedBackend(data, name, len(predictor.class_names), limits, backend)
    return predictor


def outside_predictor(path: str | Path, backend: str | None = None, trial: bool = True):
    """The predictor of the model a command line names: the shipped artifacts in this process
    (:meth:`~fer_core.model.inference.Predictor.from_checkpoint`); any other file (the one the app would serve,
    :func:`fer_core.model.trial.outside_model`, read once) after its trial, run by a :class:`BoundedBackend`.
    ``trial=False``: the caller ran the trial already (a batch job's workers, after the job's own trial)."""
    from .inference import Predictor
    from .trial import outside_model, trial_run

    found = outside_model(path)
    if found is None:
        return Predictor.from_checkpoint(path, backend=backend)
    served, data = found
    if trial:
        trial_run(data, served.name)
    return bounded_predictor(data, served.name, backend=backend)
