"""progress.json: how a training run is going, for the training-runs page (``fer_core.analysis.runs`` reads it).

``training.train`` (rank 0 under torchrun) rewrites the file in its --out folder at every change of phase (loading
data, training, validating) and every :data:`PROGRESS_INTERVAL` seconds within an epoch, and ends it with the run's
final status: "finished", "stopped" (after --stop-after, or Ctrl+C) or "failed" with the error. Each write replaces
the file in one step, so a reader never sees half of one. Fields:

    status, phase, message, error       "running" | "finished" | "stopped" | "failed"; what it is doing; why it ended
    epoch, epochs, first_epoch, last_epoch   the current epoch, the run's planned epochs, this invocation's range
    step, steps_per_epoch               optimizer steps done in the current epoch, and per epoch
    images_per_second                   training images per second in the current epoch, all processes together
    elapsed_seconds, eta_seconds        since this invocation started; until its last epoch ends (an estimate)
    started_at, updated_at, updated_unix     ISO times (UTC), and the last update as a unix time
    pid, host, command, hardware, data, world_size   the process, its machine, its command line, what it trains on

Only the clock is read here: no random numbers, no device synchronisation, so a run trains the same numbers with
and without the file, and the check made at every step costs a clock read.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fer_core.analysis.runs import PROGRESS_NAME
from fer_core.files import write_text_atomically

PROGRESS_INTERVAL = 5.0  # seconds between two writes within an epoch


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


class TrainingProgress:
    """The progress file of one invocation of ``training.train``; does nothing when not ``enabled`` (the ranks
    other than 0). Call :meth:`begin` once the output folder is known to be writable, then :meth:`update`,
    :meth:`start_epoch`, :meth:`step` (every optimizer step), :meth:`end_epoch` and :meth:`finish`; run the whole
    training inside :meth:`final_status`, which records an exception as "failed"."""

    def __init__(self, folder: str | Path, enabled: bool = True, interval: float = PROGRESS_INTERVAL,
                 clock=time.time) -> None:
        self.path = Path(folder) / PROGRESS_NAME
        self.enabled, self.interval, self.clock = enabled, interval, clock
        self.started = clock()
        self.fields: dict = {"status": "running", "phase": "starting", "pid": os.getpid(), "host": platform.node(),
                             "started_at": _iso(self.started)}
        self._begun = False
        self._next_write = 0.0
        self._epoch_started = self.started
        self._epoch_seconds: list[float] = []  # whole epochs of this invocation, validation and saving included

    def begin(self, **fields) -> None:
        """The run has started (its output folder exists): write the first version of the file."""
        self._begun = True
        self.update(phase="loading data", **fields)

    def update(self, **fields) -> None:
        """Set ``fields`` and write the file now."""
        self.fields.update(fields)
        self._write()

    def start_epoch(self, epoch: int) -> None:
        self._epoch_started = self.clock()
        self.update(phase="training", epoch=epoch, step=0, images_per_second=None)

    def step(self, step: int) -> None:
        """``step`` optimizer steps of the current epoch are done. Writes when :data:`PROGRESS_INTERVAL` has passed
        since the last write, and after the epoch's last step (validation follows); otherwise only reads the clock."""
        now = self.clock()
        last = step >= (self.fields.get("steps_per_epoch") or 0)
        if now < self._next_write and not last:
            return
        seconds = max(now - self._epoch_started, 1e-9)
        self.fields.update(step=step, images_per_second=round(step * self.fields.get("images_per_step", 0) / seconds, 1))
        if last:
            self.fields["phase"] = "validating"
        self._write(now)

    def end_epoch(self, epoch: int, seconds: float) -> None:
        """Epoch ``epoch`` is validated and saved after ``seconds`` in all."""
        self._epoch_seconds.append(seconds)
        self.update(phase="between epochs", epoch=epoch, step=self.fields.get("steps_per_epoch"))

    def finish(self, status: str, message: str | None = None) -> None:
        """The final status: "finished" or "stopped", with a sentence for the user."""
        self.update(status=status, phase=None, message=message, eta_seconds=0.0)

    def fail(self, error: BaseException) -> None:
        """Record an exception that ends the run: Ctrl+C is "stopped", anything else "failed" with its message."""
        if not self._begun:  # the output folder may be the problem: nothing to write into
            return
        if isinstance(error, KeyboardInterrupt):
            self.finish("stopped", f"interrupted (Ctrl+C) in epoch {self.fields.get('epoch', '?')}; `--resume` "
                                   "continues after the last finished epoch")
            return
        if isinstance(error, SystemExit):  # the command line's own errors: their text, or the exit status
            text = error.code if isinstance(error.code, str) else f"exited with status {error.code}; its output says why"
        else:
            text = f"{type(error).__name__}: {error}"
        self.update(status="failed", error=text[:2000], eta_seconds=None)

    @contextmanager
    def final_status(self):
        """Run the training inside this: an exception is recorded (:meth:`fail`) and raised again."""
        try:
            yield self
        except BaseException as e:
            if not (isinstance(e, SystemExit) and e.code in (0, None)):
                self.fail(e)
            raise

    def _eta(self, now: float) -> float | None:
        """Seconds until this invocation's last epoch ends: the current epoch's steps left at its pace so far, then
        each epoch left at the mean length of the finished ones (before any has finished: at this epoch's pace)."""
        f = self.fields
        epoch, last_epoch, steps = f.get("epoch"), f.get("last_epoch"), f.get("steps_per_epoch")
        if epoch is None or last_epoch is None or not steps:
            return None
        step = f.get("step") or 0
        per_step = (now - self._epoch_started) / step if step and f.get("phase") != "between epochs" else None
        per_epoch = (sum(self._epoch_seconds) / len(self._epoch_seconds) if self._epoch_seconds
                     else steps * per_step if per_step else None)
        if per_epoch is None:
            return None
        current = 0.0 if f.get("phase") == "between epochs" else (steps - step) * per_step if per_step else per_epoch
        return round(current + (last_epoch - epoch) * per_epoch, 1)

    def _write(self, now: float | None = None) -> None:
        if not (self.enabled and self._begun):
            return
        now = self.clock() if now is None else now
        self._next_write = now + self.interval
        if self.fields["status"] == "running":
            self.fields.update(eta_seconds=self._eta(now))
        self.fields.update(elapsed_seconds=round(now - self.started, 1), updated_at=_iso(now), updated_unix=now)
        try:
            write_text_atomically(self.path, json.dumps(self.fields, indent=1, default=str))
        except OSError as e:  # a full disk must not end the training: say so once and stop writing
            print(f"warning: cannot write {self.path} ({e}); training goes on without a progress file.",
                  file=sys.stderr, flush=True)
            self.enabled = False
