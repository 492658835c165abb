"""Training runs: the progress file training.train writes, the discovery and reading of run folders (fer_core.analysis.runs),
and the Training runs page (AppTest). Run folders are made up here, except one written by a real tiny training run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from helpers import make_kaggle_tree
from run_helpers import HISTORY_HEADER, history_rows, running, write_run
from streamlit.testing.v1 import AppTest

from fer_core.analysis.runs import (
    PROGRESS_NAME,
    RUNS_ENV,
    STALE_AFTER_SECONDS,
    discover_runs,
    format_duration,
    read_run,
    run_folders,
    runs_table,
)
from fer_core.model.artifacts import ARTIFACTS_ENV
from training.recipe.progress import TrainingProgress

ROOT = Path(__file__).resolve().parent.parent
RUNS_PAGE = "pages/5_Training_runs.py"
def card(epochs: int = 3, selected: int = 3) -> dict:
    return {"training": {"command": f"python -m training.train --epochs {epochs} --out runs/x",
                         "arguments": {"epochs": epochs, "lr": 0.003}, "wall_time_seconds": 4000.0,
                         "epochs_run": epochs, "selected_epoch": selected,
                         "hardware": {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1, "gpu": None,
                                      "host": "box"}},
            "data": {"source": "data/fer2013/images", "train_images": 28709, "validation_images": 3589},
            "validation": {"epoch": selected, "val_acc": 0.37, "val_macro_f1": 0.32}}


def dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---- discovery and reading ------------------------------------------------------------------------

def test_run_folders_at_any_depth_are_found_and_other_folders_are_not(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "a", epochs=2)
    write_run(runs / "sweep" / "lr_3e-3", card=card())
    write_run(runs / "just_started", progress=running(epoch=None, step=0))
    (runs / "train").mkdir()
    (runs / "train" / "last.pt").write_bytes(b"resume state")  # a --work-dir: not a run
    write_run(runs / ".hidden", epochs=1)
    shipped = write_run(tmp_path / "artifacts", epochs=4, card=card(4, 4), model=True)
    (shipped / "history_fer2013.csv").write_text(HISTORY_HEADER + history_rows(range(1, 61)))

    assert {f.relative_to(runs).as_posix() for f, _ in run_folders(runs)} == {"a", "sweep/lr_3e-3", "just_started"}
    names = [r.name for r in discover_runs(runs, shipped)]
    assert names[0] == "just_started"  # training now: first
    assert set(names[1:3]) == {"a", "sweep/lr_3e-3"}
    assert names[3:] == ["shipped: model.pt", "shipped: model_fer2013.pt"]  # the shipped ones last
    fer2013 = discover_runs(runs, shipped)[-1]
    assert fer2013.shipped and fer2013.epochs_run == 60 and fer2013.history_path.name == "history_fer2013.csv"
    assert discover_runs(tmp_path / "missing", "") == []  # no runs folder: no runs, no error


def test_a_finished_run_says_what_it_ran_on_and_its_best_numbers(tmp_path):
    run = read_run(write_run(tmp_path / "done", epochs=3, card=card(3, 3), model=True))
    assert run.status == "finished" and run.notes == []
    assert run.command == "python -m training.train --epochs 3 --out runs/x"
    assert run.hardware == "Test CPU, 2 cores, 1 threads (box)"
    assert run.data == "data/fer2013/images: 28,709 training images; validation 3,589 images"
    assert (run.epochs_run, run.epochs_planned, run.selected_epoch) == (3, 3, 3)
    assert run.wall_seconds == 4000.0 and format_duration(run.wall_seconds) == "1 h 06 min"
    assert run.best_val_acc == pytest.approx(0.37) and run.best_val_macro_f1 == pytest.approx(0.32)
    assert run.best_val_nll == pytest.approx(1.9 - 0.24)
    assert run.model_path == tmp_path / "done" / "model.pt" and run.eta_seconds is None
    row = runs_table([run])[0]
    assert row["epochs"] == "3 / 3" and row["status"] == "finished" and row["wall time"] == "1 h 06 min"


def test_a_run_training_now_shows_its_progress(tmp_path):
    run = read_run(write_run(tmp_path / "live", epochs=1, progress=running()))
    assert run.status == "running" and run.notes == []
    assert (run.epochs_run, run.epochs_planned) == (1, 5)
    assert run.eta_seconds == 400.0 and run.progress["step"] == 3
    assert run.command == "python -m training.train --out runs/live"
    assert run.model_path is None and run.wall_seconds == 60.0  # no card yet: the epochs' seconds


def test_a_stale_progress_file_with_a_dead_process_is_a_stopped_run(tmp_path):
    old = time.time() - 2 * STALE_AFTER_SECONDS
    run = read_run(write_run(tmp_path / "killed", epochs=2, progress=running(pid=dead_pid(), updated_unix=old)))
    assert run.status == "stopped" and run.eta_seconds is None
    assert "has ended without a final status" in run.notes[0] and "--resume" in run.notes[0]
    # A process on another machine cannot be asked: the age of the file decides.
    far = read_run(write_run(tmp_path / "far", progress=running(host="other-machine", updated_unix=old)))
    assert far.status == "stale" and "no progress update for 20 min" in far.notes[0]
    near = read_run(write_run(tmp_path / "near", progress=running(host="other-machine")))
    assert near.status == "running"
    # Alive, but silent for long (a long data loading, or a frozen process): stale, and the note says so.
    slow = read_run(write_run(tmp_path / "slow", progress=running(phase="loading data", updated_unix=old)))
    assert slow.status == "stale" and "while loading data" in slow.notes[0] and "is alive" in slow.notes[0]


def test_failed_and_stopped_runs_say_why(tmp_path):
    failed = read_run(write_run(tmp_path / "failed", epochs=1,
                                progress=running(status="failed", error="RuntimeError: CUDA out of memory")))
    assert failed.status == "failed" and failed.notes == ["failed: RuntimeError: CUDA out of memory"]
    stopped = read_run(write_run(tmp_path / "paused", epochs=1, progress=running(
        status="stopped", message="stopped after epoch 1 of 5 (--stop-after); `--resume` continues it")))
    assert stopped.status == "stopped" and "--stop-after" in stopped.notes[0]
    old = read_run(write_run(tmp_path / "old", epochs=2))  # history only: an older or unfinished run
    assert old.status == "stopped" and "no model card and no progress file" in old.notes[0]


def test_garbage_and_half_written_files_are_notes_not_errors(tmp_path):
    broken = tmp_path / "runs" / "broken"
    broken.mkdir(parents=True)
    (broken / "history.csv").write_bytes(b"\x00\xff\xfe garbage \x00")
    (broken / "model_card.json").write_text('{"training": {"command": "python -m trai')
    (broken / PROGRESS_NAME).write_text("[1, 2, 3]")
    run = read_run(broken)
    assert run.status == "unknown" and len(run.notes) == 3
    assert any("history.csv" in n for n in run.notes) and any("model_card.json" in n for n in run.notes)
    assert any(PROGRESS_NAME in n for n in run.notes)
    # A history whose last line was cut off while being written: the complete epochs count.
    cut = write_run(tmp_path / "runs" / "cut", epochs=3)
    (cut / "history.csv").write_text((cut / "history.csv").read_text() + "4,0.0001,1.5")
    run = read_run(cut)
    assert run.epochs_run == 4 and run.best_val_acc == pytest.approx(0.37)
    (cut / PROGRESS_NAME).write_text(json.dumps({"status": "running", "pid": "x", "updated_unix": "soon"}))
    assert read_run(cut).status == "stale"  # fields of the wrong type: judged without them
    (cut / "model_card.json").write_text(json.dumps({"training": ["not", "an", "object"]}))
    assert "not a model card" in " ".join(read_run(cut).notes)
    assert len(discover_runs(tmp_path / "runs", "")) == 2  # every run is listed, broken or not
    assert runs_table(discover_runs(tmp_path / "runs", ""))[0]["notes"]


# ---- the progress file ----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_progress_file_is_written_every_few_seconds_with_an_eta(tmp_path):
    clock = Clock()
    progress = TrainingProgress(tmp_path, interval=5.0, clock=clock)
    path = tmp_path / PROGRESS_NAME
    progress.update(epochs=3)
    assert not path.exists()  # nothing before the run has begun (its folder may be unusable)
    progress.begin(epochs=3, data="data/")
    assert json.loads(path.read_text())["phase"] == "loading data"
    progress.update(first_epoch=1, last_epoch=3, steps_per_epoch=10, images_per_step=32)
    progress.start_epoch(1)
    writes = []
    for step in range(1, 11):
        clock.now += 1.0  # one second a step
        before = path.stat().st_mtime_ns, path.read_text()
        progress.step(step)
        writes.append(path.read_text() != before[1])
    assert writes == [False, False, False, False, True, False, False, False, False, True]  # every 5 s, and the last
    state = json.loads(path.read_text())
    assert state["phase"] == "validating" and state["step"] == 10 and state["images_per_second"] == 32.0
    assert state["eta_seconds"] == pytest.approx(2 * 10.0)  # two more epochs at 10 s
    clock.now += 4.0  # validation
    progress.end_epoch(1, 14.0)
    state = json.loads(path.read_text())
    assert state["eta_seconds"] == pytest.approx(2 * 14.0) and state["status"] == "running"
    assert state["pid"] == os.getpid() and state["host"] == platform.node()
    progress.finish("finished", "model.pt is epoch 1")
    state = json.loads(path.read_text())
    assert state["status"] == "finished" and state["eta_seconds"] == 0.0
    assert [p.name for p in tmp_path.iterdir()] == [PROGRESS_NAME]  # no temporary file left behind


def test_an_exception_ends_the_progress_file_as_failed_and_ctrl_c_as_stopped(tmp_path):
    progress = TrainingProgress(tmp_path / "a")
    (tmp_path / "a").mkdir()
    progress.begin(epochs=2)
    with pytest.raises(RuntimeError), progress.final_status():
        raise RuntimeError("CUDA out of memory")
    run = read_run(tmp_path / "a")
    assert run.status == "failed" and run.notes == ["failed: RuntimeError: CUDA out of memory"]

    progress = TrainingProgress(tmp_path / "b")
    (tmp_path / "b").mkdir()
    progress.begin(epochs=2)
    progress.start_epoch(1)
    with pytest.raises(KeyboardInterrupt), progress.final_status():
        raise KeyboardInterrupt
    assert read_run(tmp_path / "b").status == "stopped"

    off = TrainingProgress(tmp_path / "c", enabled=False)  # the ranks other than 0 write nothing
    (tmp_path / "c").mkdir()
    off.begin(epochs=2)
    off.finish("finished")
    assert not any((tmp_path / "c").iterdir())


# ---- a real training run --------------------------------------------------------------------------

def train_args(data: Path, out: Path, *extra: str):
    from training.train import get_args_parser

    return get_args_parser().parse_args([
        "--data", str(data), "--out", str(out), "--work-dir", str(out.parent / f"{out.name}_work"), "--cache-dir", "",
        "--variant", "tiny", "--epochs", "2", "--batch-size", "16", "--threads", "1", *extra])


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_kaggle_tree(tmp_path_factory.mktemp("runs_data") / "data", per_class=8)


def test_training_writes_a_progress_file_without_changing_its_numbers(tiny_data, tmp_path, monkeypatch):
    """A tiny run writes progress.json (finished, every field there) and trains the same numbers as a run that
    writes the file at every step or not at all; --stop-after ends the file as "stopped"; a bad --data as "failed"."""
    import torch

    import training.recipe.run as train_module
    from fer_core.model.checkpoint import load_checkpoint

    train_module.main(train_args(tiny_data, tmp_path / "runs" / "tiny"))
    state = json.loads((tmp_path / "runs" / "tiny" / PROGRESS_NAME).read_text())
    assert state["status"] == "finished" and state["epoch"] == 2 and state["epochs"] == 2
    assert state["step"] == state["steps_per_epoch"] == 56 // 16 and state["images_per_second"] > 0
    assert state["pid"] == os.getpid() and state["command"].startswith("python -m training.train ")
    assert state["hardware"]["cpu_cores"] and state["data"] == str(tiny_data)
    run = read_run(tmp_path / "runs" / "tiny")
    assert run.status == "finished" and run.epochs_run == 2 and run.model_path.name == "model.pt"

    class EveryStep(TrainingProgress):  # the most writes: one at every step
        def __init__(self, folder, enabled=True):
            super().__init__(folder, enabled, interval=0.0)

    class Off(TrainingProgress):
        def __init__(self, folder, enabled=True):
            super().__init__(folder, enabled=False)

    for name, kind in (("every_step", EveryStep), ("off", Off)):
        monkeypatch.setattr(train_module, "TrainingProgress", kind)
        train_module.main(train_args(tiny_data, tmp_path / "runs" / name))
    assert not (tmp_path / "runs" / "off" / PROGRESS_NAME).exists()
    numbers = ["train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    reference = pd.read_csv(tmp_path / "runs" / "tiny" / "history.csv")[numbers]
    weights = load_checkpoint(tmp_path / "runs" / "tiny" / "model.pt")[0].state_dict()
    for name in ("every_step", "off"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "runs" / name / "history.csv")[numbers], reference)
        other = load_checkpoint(tmp_path / "runs" / name / "model.pt")[0].state_dict()
        assert all(torch.equal(weights[k], other[k]) for k in weights)

    monkeypatch.undo()
    train_module.main(train_args(tiny_data, tmp_path / "runs" / "sliced", "--stop-after", "1"))
    run = read_run(tmp_path / "runs" / "sliced")
    assert run.status == "stopped" and "--resume" in run.notes[0] and run.epochs_run == 1
    with pytest.raises(SystemExit):
        train_module.main(train_args(tmp_path / "no_such_data", tmp_path / "runs" / "bad"))
    run = read_run(tmp_path / "runs" / "bad")
    assert run.status == "failed" and "exited with status 2" in run.notes[0]


# ---- the page ---------------------------------------------------------------------------------------

def open_runs_page(monkeypatch, runs: Path, artifacts: Path) -> AppTest:
    monkeypatch.setenv(RUNS_ENV, str(runs))
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page(RUNS_PAGE)
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_page_without_runs_says_how_to_start_one(monkeypatch, tmp_path):
    at = open_runs_page(monkeypatch, tmp_path / "runs", tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    assert [t.value for t in at.title] == ["Training runs"]
    assert "No training runs" in texts(at.info) and "python -m training.train" in texts(at.info)
    assert "No finished run with a model yet" in texts(at.caption)


def test_page_lists_runs_follows_one_training_and_opens_a_finished_one_for_evaluation(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "done", epochs=3, card=card(3, 3), model=True)
    write_run(runs / "live", epochs=2, progress=running(epoch=3, epochs=5, step=4, steps=10))
    broken = write_run(runs / "broken")
    (broken / "history.csv").write_text("epoch,lr\n1,0.1\n")  # lacks the validation columns
    shipped = write_run(tmp_path / "artifacts", epochs=4, card=card(4, 4), model=True)

    at = open_runs_page(monkeypatch, runs, shipped)
    assert not at.exception, texts(at.exception)
    table = at.dataframe[0].value
    assert list(table["run"]) == ["live", "broken", "done", "shipped: model.pt"]  # training now, newest, shipped
    status = dict(zip(table["run"], table["status"]))
    assert status == {"live": "running", "done": "finished", "broken": "unknown", "shipped: model.pt": "finished"}
    assert "lacks column" in dict(zip(table["run"], table["notes"]))["broken"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epoch"] == "3 / 5" and metrics["Step"] == "4 / 10" and metrics["ETA"] == "6 min 40 s"
    assert at.get("progress")[0].proto.value == 40  # 4 of 10 steps
    # The runs drawn at first: the user's (training now first); the curves of each in one chart.
    assert at.multiselect[0].value == ["live", "broken", "done"]
    assert len(at.get("plotly_chart")) == 1 and "broken" in texts(at.warning)
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert {t["name"] for t in chart["data"]} == {"live", "done"}

    # Only finished runs with a model can be evaluated; one click opens the Evaluation page with it chosen.
    assert at.selectbox(key="evaluate_run").options == ["done", "shipped: model.pt"]
    assert at.button(key="compare_run_button").disabled is False
    at.selectbox(key="evaluate_run").set_value("shipped: model.pt").run()
    assert at.button(key="compare_run_button").disabled  # the shipped model against itself: nothing to compare
    at.selectbox(key="evaluate_run").set_value("done").run()
    at.button(key="compare_run_button").click().run()
    assert at.session_state["compare_model_path"] == str(runs / "done" / "model.pt")
    assert [t.value for t in at.title] == ["Evaluation"]


def test_page_evaluate_button_sets_the_model_of_the_evaluation_page(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "done", epochs=2, card=card(2, 2), model=True)
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    at.button(key="evaluate_run_button").click().run()
    assert at.session_state["evaluate_model_path"] == str(runs / "done" / "model.pt")
    assert [t.value for t in at.title] == ["Evaluation"]


def test_page_draws_a_progress_file_with_fields_of_the_wrong_type(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "odd", progress=running(epoch="three", epochs=[5], step={"n": 1}, steps_per_epoch="ten",
                                             images_per_second="fast", eta_seconds=float("nan"), updated_at=12))
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Epoch"] == "- / ?" and metrics["ETA"] == "estimating" and metrics["Images/s"] == "-"
