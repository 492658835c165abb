"""The plumbing of multi-process training under ``torchrun`` (DistributedDataParallel), kept out of train.py.

    torchrun --nproc_per_node 2 -m training.train ...          # one machine, 2 processes (CPU: gloo, GPUs: nccl)

torchrun starts one process per rank and gives each RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR
and MASTER_PORT (and TORCHELASTIC_RUN_ID); :func:`setup` reads them. A plain ``python -m training.train`` has none
of them and gets :data:`SINGLE`: no process group, no collectives, the single-process run exactly as before.

Every collective has a timeout (``init_process_group(timeout=...)``), so a rank that hangs makes the others fail
with an error after that time instead of waiting forever; a rank that dies is noticed sooner by torchrun's
elastic agent, which then stops the other workers of the job.
"""

from __future__ import annotations

import builtins
import math
import os
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """Where this process stands in the job. ``backend`` is None for a single process without a process group."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    backend: str | None = None
    timeout_s: float = 1800.0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, writes history, checkpoints, the model card and the weights."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


SINGLE = Dist()


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def setup(device_arg: str, timeout_s: float) -> tuple[Dist, torch.device]:
    """Join the process group when started by torchrun (else return :data:`SINGLE`), and pick this rank's device:
    ``cuda:LOCAL_RANK`` with ``nccl`` where CUDA is used, the CPU with ``gloo`` otherwise.

    ``device_arg`` is train.py's --device (auto, cpu, cuda); ``timeout_s`` bounds every collective."""
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if not launched_by_torchrun():
        return SINGLE, torch.device("cuda" if use_cuda else ("cpu" if device_arg == "auto" else device_arg))
    env = {name: int(os.environ[name]) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE")}
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    if use_cuda:
        if env["LOCAL_RANK"] >= torch.cuda.device_count():
            raise SystemExit(f"error: local rank {env['LOCAL_RANK']} has no GPU of its own "
                             f"({torch.cuda.device_count()} visible): start at most that many processes per node "
                             f"(--nproc_per_node).")
        device = torch.device("cuda", env["LOCAL_RANK"])
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    ctx = Dist(env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], local_world, backend, timeout_s)
    if not ctx.is_main:
        _print_on_main_only()
    return ctx, device


def cleanup(ctx: Dist) -> None:
    """Leave the process group at the end of a finished run (after a last barrier, so no rank exits while
    rank 0 is still writing)."""
    if ctx.enabled:
        barrier(ctx)
        dist.destroy_process_group()


def _print_on_main_only() -> None:
    """Progress and results are printed by rank 0 only; ``print(..., force=True)`` still prints from any rank.
    (The pattern of torchvision's references/classification; errors still reach stderr from every rank.)"""
    original = builtins.print

    def print_main_only(*args, force: bool = False, **kwargs):
        if force:
            original(*args, **kwargs)

    builtins.print = print_main_only


def wrap_model(model: torch.nn.Module, ctx: Dist, device: torch.device) -> torch.nn.Module:
    """The model to train: wrapped in DistributedDataParallel under torchrun (gradients are averaged across ranks
    during backward; rank 0's weights and buffers are broadcast at construction and its buffers at every forward),
    the model itself otherwise."""
    if not ctx.enabled:
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def rank_seed(seed: int, ctx: Dist) -> int:
    """The seed of this rank's augmentation and dropout draws: ``seed`` itself for rank 0 (so a single process,
    and rank 0's model initialisation, are what they always were), an independent stream for every other rank."""
    if ctx.rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, ctx.rank]).generate_state(1)[0])


def shard_sampler(n: int, seed: int, ctx: Dist) -> DistributedSampler | None:
    """For several ranks: torch's DistributedSampler over ``n`` training images. Every rank shuffles with the same
    ``seed`` (+ the epoch, through ``set_epoch``) and keeps every world_size-th index from its rank on, so the
    shards of an epoch are disjoint and cover it (a few images repeat when ``n`` is not a multiple of the world
    size, so that every rank takes the same number of steps). None for a single process, which shuffles as before."""
    if ctx.world_size == 1:
        return None
    return DistributedSampler(range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)


def epoch_indices(sampler: DistributedSampler, epoch: int) -> torch.Tensor:
    """This rank's shard of ``epoch``, in the order it is trained on."""
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def lr_factor(rule: str, world_size: int) -> float:
    """How the peak learning rate grows with the number of ranks (each rank takes --batch-size images per step, so
    one optimizer step sees world_size x --batch-size images): ``linear`` (Goyal et al., 2017), ``sqrt``, ``none``."""
    return {"linear": float(world_size), "sqrt": math.sqrt(world_size), "none": 1.0}[rule]


def sum_across_ranks(values: list[torch.Tensor | float], ctx: Dist, device: torch.device) -> list[float]:
    """Element-wise sums over all ranks of a few scalars (metric sums and counts), as Python floats (float64)."""
    total = torch.stack([torch.as_tensor(v, device=device).detach().double() for v in values])
    if ctx.enabled:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def shard_bounds(n: int, ctx: Dist) -> tuple[int, int]:
    """This rank's contiguous [start, stop) of ``n`` items (evaluation: each rank predicts one slice)."""
    edges = np.linspace(0, n, ctx.world_size + 1).round().astype(int)
    return int(edges[ctx.rank]), int(edges[ctx.rank + 1])


def gather_rows(local: np.ndarray, n: int, ctx: Dist, device: torch.device) -> np.ndarray:
    """The (n, ...) concatenation, in rank order, of every rank's rows from :func:`shard_bounds`; on every rank."""
    if not ctx.enabled:
        return local
    sizes = [int(b - a) for a, b in (shard_bounds(n, Dist(rank=r, world_size=ctx.world_size))
                                     for r in range(ctx.world_size))]
    padded = torch.zeros((max(sizes), *local.shape[1:]), dtype=torch.from_numpy(local).dtype, device=device)
    padded[: len(local)] = torch.from_numpy(local).to(device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[:size].cpu().numpy() for p, size in zip(parts, sizes)])


def broadcast_module(module: torch.nn.Module, ctx: Dist) -> None:
    """Copy rank 0's parameters and buffers into ``module`` on every rank (e.g. the EMA before a sharded
    evaluation: each rank's BatchNorm statistics drift a little between DDP's broadcasts)."""
    if ctx.enabled:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def barrier(ctx: Dist) -> None:
    """Wait for every rank, for at most the job's timeout. Under gloo, ``monitored_barrier`` names the ranks that
    did not arrive; under nccl, the process group's timeout (with its async error handling) applies."""
    if not ctx.enabled:
        return
    if ctx.backend == "gloo":
        dist.monitored_barrier(timeout=timedelta(seconds=ctx.timeout_s), wait_all_ranks=True)
    else:
        dist.barrier()


@contextmanager
def local_main_first(ctx: Dist):
    """Run the block on each node's local rank 0 first, then on the other ranks of the node: the first decodes the
    images and writes the cache, the others read it (instead of all decoding the same files at once)."""
    if ctx.local_rank != 0:
        barrier(ctx)
    yield
    if ctx.local_rank == 0:
        barrier(ctx)


def from_main(fn, ctx: Dist):
    """``fn()`` computed on rank 0 and sent to every rank (e.g. the resume state: all ranks restart from rank 0's
    file, which the other machines need not see). A SystemExit on rank 0 is raised on every rank, with its message,
    so a refused resume stops the whole job cleanly."""
    if not ctx.enabled:
        return fn()
    box: list = [None]
    if ctx.is_main:
        try:
            box[0] = ("ok", fn())
        except SystemExit as e:
            box[0] = ("exit", str(e.code))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "exit":
        raise SystemExit(value)
    return value


def gather_objects(obj, ctx: Dist) -> list:
    """Every rank's ``obj``, in rank order, on every rank (small things: random states, device names)."""
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def describe(ctx: Dist, device: torch.device) -> dict:
    """The model card's record of how the run was spread: world size, backend and each rank's host and device."""
    here = f"{socket.gethostname()}:{device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda"
                                                 else "")
    return {"launcher": "torchrun" if ctx.enabled else "python", "world_size": ctx.world_size,
            "nodes": ctx.world_size // max(ctx.local_world_size, 1), "backend": ctx.backend,
            "devices": gather_objects(here, ctx), "collective_timeout_seconds": ctx.timeout_s if ctx.enabled else None}
