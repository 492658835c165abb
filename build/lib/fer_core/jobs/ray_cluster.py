"""``fer_core.batch --ray``: the same per-input work as Ray tasks, on one machine or a cluster.

Ray is optional (``pip install -r requirements-cluster.txt``) and imported only here, when ``--ray`` is given. Each
input is one task running :func:`fer_core.jobs.worker.process_input` on one CPU; the worker processes Ray keeps
load the model once and reuse it. The tasks write their parts where every node sees the output folder (at the
same path); the driver collects the manifest lines and writes the tables. At most IN_FLIGHT_PER_CPU tasks per CPU
of the cluster are submitted at a time. A task whose worker or node is lost, or that raises, is retried once by
Ray (``max_retries=1``, ``retry_exceptions``), then reported as failed.
"""

from __future__ import annotations

from collections import deque
from typing import Iterator, Sequence

from ..locations import PACKAGE_ROOT
from .worker import BatchOptions, Input, failed_record, process_input

IN_FLIGHT_PER_CPU = 2
CLUSTER_INSTALL = "pip install -r requirements-cluster.txt"


class RayUnavailable(RuntimeError):
    """--ray was given and Ray is not installed or cannot start; the message says what to do."""


def import_ray():
    """The ``ray`` module, or RayUnavailable saying what to install."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray needs Ray, which is not installed here (the base install leaves it out). "
                             f"Install the cluster profile: `{CLUSTER_INSTALL}`, or run without --ray.") from None
    return ray


def run_ray(todo: Sequence[Input], options: BatchOptions, address: str) -> Iterator[tuple[Input, dict]]:
    """(input, manifest line) as each task finishes. ``address``: "" for Ray's default (a runtime started here,
    or $RAY_ADDRESS), "auto", or the head's host:port. A Ray already initialised in this process is used as is."""
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        try:
            # The workers import fer_core from the same checkout path as here (docs/batch.md)
            ray.init(address=address or None, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": str(PACKAGE_ROOT)}})
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RayUnavailable(f"could not connect to or start Ray at {address or 'this machine'}: {e}") from None
    task = ray.remote(num_cpus=1, max_retries=1, retry_exceptions=True)(process_input)
    limit = max(1, int(IN_FLIGHT_PER_CPU * ray.cluster_resources().get("CPU", 1)))
    queue, pending = deque(todo), {}
    try:
        while queue or pending:
            while queue and len(pending) < limit:
                item = queue.popleft()
                pending[task.remote(item, options)] = item
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    yield item, ray.get(ref)
                except ray.exceptions.RayError as e:  # failed twice: the worker died, the node was lost, ...
                    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    yield item, failed_record(item, options, f"the Ray task failed twice ({type(e).__name__}: "
                                                             f"{reason})")
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()
