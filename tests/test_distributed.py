"""Training under torchrun (DistributedDataParallel, gloo on the CPU) on a small generated dataset.

Every run is the real command line: ``python -m torch.distributed.run`` is ``torchrun``. ``--standalone`` picks a
free port, so test runs on one machine do not collide on torchrun's default port.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_kaggle_tree

from fer_core.analysis.datasets import list_labelled_folder, load_face_arrays, memmap_face_arrays
from fer_core.labels import EMOTIONS
from fer_core.model.checkpoint import load_checkpoint
from training.recipe import distributed

ROOT = Path(__file__).resolve().parent.parent
PER_CLASS = 8  # 56 training images: 28 per rank, 7 steps of 4
METRICS = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1"]  # not "seconds"


def train_args(data: Path, run: Path, epochs: int = 1) -> list[str]:
    return ["-m", "training.train", "--data", str(data), "--out", str(run / "out"), "--work-dir", str(run / "work"),
            "--cache-dir", "", "--variant", "tiny", "--epochs", str(epochs), "--batch-size", "4", "--threads", "1"]


def torchrun(nproc: int) -> list[str]:
    return ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def history(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "out" / "history.csv")[METRICS]


def shard(run_dir: Path, epoch: int, rank: int) -> np.ndarray:
    return np.loadtxt(run_dir / "work" / "shards" / f"epoch{epoch:03d}_rank{rank}.txt", dtype=np.int64, ndmin=1)


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = (torch.load(p, map_location="cpu", weights_only=True)["model"] for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_kaggle_tree(tmp_path_factory.mktemp("ddp") / "data", per_class=PER_CLASS)


@pytest.fixture(scope="module")
def ddp_run(data, tmp_path_factory):
    """2 processes, 2 epochs: stopped after epoch 1, then resumed (both under torchrun)."""
    run_dir = tmp_path_factory.mktemp("ddp_resumed")
    args = [*torchrun(2), *train_args(data, run_dir, epochs=2), "--record-shards"]
    first = run(*args, "--stop-after", "1")
    first_history = history(run_dir)
    resumed = run(*args, "--resume")
    return run_dir, first, first_history, resumed


def test_two_processes_write_loadable_artifacts_once(ddp_run):
    run_dir, first, first_history, resumed = ddp_run
    assert "continue with --resume" in first.stdout and list(first_history["epoch"]) == [1]
    model, _, names, meta = load_checkpoint(run_dir / "out" / "model.pt")
    assert names == EMOTIONS and meta["variant"] == "tiny"
    assert list(history(run_dir)["epoch"]) == [1, 2]  # one row per epoch, written by rank 0 alone
    card = json.loads((run_dir / "out" / "model_card.json").read_text())
    spread = card["training"]["distributed"]
    assert spread["world_size"] == 2 and spread["backend"] == "gloo" and spread["launcher"] == "torchrun"
    assert len(spread["devices"]) == 2 and all(d.endswith(":cpu") for d in spread["devices"])
    assert spread["batch_size_per_step"] == 8 and spread["peak_lr"] == pytest.approx(2 * 3e-3)  # linear scaling
    assert card["training"]["command"].startswith("torchrun --nnodes 1 --nproc_per_node 2 -m training.train")
    # only rank 0 prints: one line per epoch, not one per rank
    assert first.stdout.count("epoch   1  loss") == 1 and resumed.stdout.count("epoch   2  loss") == 1
    # rank 0 alone keeps the progress file: both processes' images per step, no temporary file left behind
    progress = json.loads((run_dir / "out" / "progress.json").read_text())
    assert progress["status"] == "finished" and progress["world_size"] == 2 and progress["images_per_step"] == 8
    assert progress["command"].startswith("torchrun ") and not list((run_dir / "out").glob(".*.tmp"))


def test_the_ranks_see_disjoint_shards_that_cover_each_epoch(ddp_run):
    run_dir = ddp_run[0]
    for epoch in (1, 2):
        a, b = shard(run_dir, epoch, 0), shard(run_dir, epoch, 1)
        assert len(a) == len(b) == 7 * PER_CLASS // 2
        assert not set(a) & set(b) and sorted([*a, *b]) == list(range(7 * PER_CLASS))
    assert not np.array_equal(shard(run_dir, 1, 0), shard(run_dir, 2, 0))  # set_epoch: a new shuffle per epoch


def test_resumed_ddp_run_repeats_the_uninterrupted_one(ddp_run, data, tmp_path):
    run_dir, _, _, resumed = ddp_run
    assert "Resumed from" in resumed.stdout and "after epoch 1" in resumed.stdout
    run(*torchrun(2), *train_args(data, tmp_path, epochs=2))
    pd.testing.assert_frame_equal(history(run_dir), history(tmp_path))
    assert same_weights(run_dir / "work" / "last.pt", tmp_path / "work" / "last.pt")


def test_one_process_under_torchrun_and_streamed_faces_give_the_plain_numbers(data, tmp_path):
    plain, single, streamed = tmp_path / "plain", tmp_path / "torchrun1", tmp_path / "stream"
    run(*train_args(data, plain))
    run(*torchrun(1), *train_args(data, single))
    run(*train_args(data, streamed), "--stream")
    pd.testing.assert_frame_equal(history(plain), history(single), check_exact=True)
    pd.testing.assert_frame_equal(history(plain), history(streamed), check_exact=True)
    assert same_weights(plain / "out" / "model.pt", single / "out" / "model.pt")
    assert same_weights(plain / "out" / "model.pt", streamed / "out" / "model.pt")
    assert list((streamed / "work" / "faces").glob("faces_*_images.npy"))  # --cache-dir '': under --work-dir


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def _pid_of_rank(launcher: int, rank: int) -> int:
    for pid in _descendants(launcher):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"TORCHELASTIC_RUN_ID" in b"".join(env):
            return pid
    raise AssertionError(f"no process of rank {rank} under {launcher}")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through Linux's /proc")
def test_a_killed_rank_stops_the_whole_run(data, tmp_path):
    """SIGKILL rank 1 during epoch 2 of a long run: torchrun ends every rank and fails within seconds, no hang."""
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, *torchrun(2), *train_args(data, tmp_path, epochs=50), "--record-shards",
                             "--dist-timeout", "60"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.time() + 240
        # Rank 0 starts epoch 2 (and records its shard) only after writing epoch 1's last.pt; rank 1 may get there
        # first, so wait for both before the kill.
        while not all((work / "shards" / f"epoch002_rank{r}.txt").exists() for r in (0, 1)):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-3000:]
            time.sleep(0.2)
        workers = [p for p in _descendants(proc.pid)]
        os.kill(_pid_of_rank(proc.pid, 1), signal.SIGKILL)
        killed = time.time()
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and time.time() - killed < 60, output[-3000:]
    assert "SIGKILL" in output and "rank      : 1" in output  # torchrun names the rank that died
    alive = [p for p in workers if Path(f"/proc/{p}").exists()
             and "zombie" not in Path(f"/proc/{p}/status").read_text()]
    assert not alive
    assert torch.load(work / "last.pt", weights_only=True)["epoch"] >= 1  # an epoch finished: --resume can go on


# ---- the pieces, without processes -------------------------------------------------------------------

def test_rank_seeds_learning_rate_rules_and_shard_bounds():
    ranks = [distributed.Dist(rank=r, world_size=4) for r in range(4)]
    assert distributed.rank_seed(7, ranks[0]) == 7 == distributed.rank_seed(7, distributed.SINGLE)
    assert len({distributed.rank_seed(7, d) for d in ranks}) == 4
    assert distributed.lr_factor("linear", 4) == 4 and distributed.lr_factor("sqrt", 4) == 2
    assert distributed.lr_factor("none", 4) == 1 and distributed.lr_factor("linear", 1) == 1
    bounds = [distributed.shard_bounds(10, d) for d in ranks]
    assert bounds[0][0] == 0 and bounds[-1][1] == 10 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert distributed.shard_sampler(10, 0, distributed.SINGLE) is None
    pair = [distributed.Dist(rank=r, world_size=2) for r in range(2)]
    shards = [distributed.epoch_indices(distributed.shard_sampler(10, 0, d), 3) for d in pair]
    assert sorted(torch.cat(shards).tolist()) == list(range(10))


def test_memory_mapped_faces_match_the_in_memory_ones(data, tmp_path):
    files = list_labelled_folder(data / "train")
    broken = data / "train" / "sad" / "broken.jpg"
    broken.write_bytes(b"not an image")
    try:
        files = list_labelled_folder(data / "train")
        mapped = memmap_face_arrays(files, 48, tmp_path)
        again = memmap_face_arrays(files, 48, tmp_path)  # the second call reads the file written by the first
    finally:
        broken.unlink()
    in_memory = load_face_arrays(files, 48)
    assert isinstance(mapped.images, np.memmap) and not mapped.images.flags.writeable
    assert np.array_equal(mapped.images, in_memory.images) and np.array_equal(mapped.labels, in_memory.labels)
    assert len(mapped) == 7 * PER_CLASS and any("broken.jpg" in s for s in mapped.skipped)
    assert np.array_equal(again.images, mapped.images) and again.skipped == mapped.skipped
