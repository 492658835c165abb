"""Regressions of the 2026-12-06 audit (docs/reliability.md): each test reproduces one defect as the audit did and
asserts what a user should see instead. Training runs page: R1 (an epoch of inf), R2 (an epoch of 1e300), R3 (a
Markdown image in a run's phase), and the minor ones (a wall time of 1e308 s, a long history re-read every refresh).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from run_helpers import HISTORY_HEADER, history_rows, running, write_run
from test_runs import card, open_runs_page, texts

from fer_core.analysis.runs import discover_runs, read_run_history


def test_r1_an_epoch_of_inf_is_a_note_on_its_run_not_the_page(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "good", epochs=3, card=card(3, 3), model=True)
    broken = write_run(runs / "broken", card=card(3, 3))
    (broken / "history.csv").write_text(HISTORY_HEADER + history_rows(range(1, 3)) + "inf,0.001,1,0.5,1,0.5,0.5,60\n")
    by_name = {r.name: r for r in discover_runs(runs, shipped="")}
    assert by_name["broken"].epochs_run == 2 and any("left out" in n for n in by_name["broken"].notes)
    assert by_name["good"].epochs_run == 3 and not by_name["good"].notes
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    table = at.dataframe[0].value
    assert set(table["run"]) >= {"good", "broken"}


def test_r2_absurd_numbers_are_blanked_and_the_table_draws(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    folder = write_run(runs / "absurd", card={**card(2, 2), "training": {**card(2, 2)["training"],
                                                                         "wall_time_seconds": 1e308}})
    (folder / "history.csv").write_text(HISTORY_HEADER + "1,0.001,1,0.5,1,0.5,0.5,60\n"
                                        "1e300,0.001,1,0.5,1,7.5,0.5,60\n2,1e400,-1,0.5,1,0.6,0.5,nan\n")
    history = read_run_history(folder / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and history["lr"].isna().tolist() == [False, True]
    assert len(history.attrs["notes"]) == 3  # the epoch row, lr, train_loss
    run = discover_runs(runs, shipped="")[0]
    assert run.wall_seconds == 60.0  # 1e308 in the card is no number: the history's seconds are summed instead
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    assert "1e+308" not in str(at.dataframe[0].value.to_dict())


def test_r3_markdown_from_a_run_file_is_shown_as_text(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    image = "![pixel](http://203.0.113.9/track.png) [link](http://203.0.113.9/)"
    write_run(runs / "![x](http://203.0.113.9/name.png)", progress=running(phase=image, host=image))
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)
    shown = [e.value for e in [*at.markdown, *at.caption]]
    unescaped = [v for v in shown if re.search(r"(?<!\\)!\\?\[|(?<!\\)\]\(", v) and "203.0.113.9" in v]
    assert not unescaped, unescaped
    assert any("203" in v and "track" in v for v in shown)  # the text is still there, as text


def test_a_long_history_is_parsed_once_until_it_changes(tmp_path):
    folder = write_run(tmp_path / "long", epochs=0, card=card(3, 3))
    path = folder / "history.csv"
    path.write_text(HISTORY_HEADER + history_rows(range(1, 200_001)))
    started = time.perf_counter()
    first = read_run_history(path)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    again = read_run_history(path)
    assert again is first, "an unchanged file is not parsed again"
    assert time.perf_counter() - started < first_s
    with path.open("a") as f:
        f.write(history_rows(range(200_001, 200_002)))
    assert len(read_run_history(path)) == 200_001  # a change is read


def test_r_json_card_with_absurd_epochs_does_not_break_the_table(monkeypatch, tmp_path):
    runs = tmp_path / "runs"
    folder = write_run(runs / "card_only", card={**card(3, 3), "training": {**card(3, 3)["training"],
                                                                           "epochs_run": 1e300,
                                                                           "selected_epoch": float("inf")}})
    (folder / "model_card.json").write_text(json.dumps(json.loads((folder / "model_card.json").read_text())))
    at = open_runs_page(monkeypatch, runs, tmp_path / "no_artifacts")
    assert not at.exception, texts(at.exception)


# --- label issues and relabels (L1, L2) ---

def test_l1_relabels_from_a_device_or_fifo_are_refused_at_once(tmp_path):
    import os
    import subprocess
    import sys

    import cv2
    from helpers import synthetic_face
    from test_label_issues import ROOT

    fifo = tmp_path / "decisions.csv"
    os.mkfifo(fifo)
    folder = tmp_path / "faces" / "happy"
    folder.mkdir(parents=True)
    cv2.imwrite(str(folder / "0.png"), synthetic_face(3))
    for source in ("/dev/zero", str(fifo)):
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "training.evaluate", str(folder.parent), "--relabels", source],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "not a regular file" in proc.stderr and "Traceback" not in proc.stderr
        assert time.perf_counter() - started < 60


def test_l2_relabels_from_a_spreadsheet_are_read_as_meant(tmp_path):
    import pytest

    from fer_core.analysis.label_issues import read_relabel_file, read_relabels
    from fer_core.labels import EMOTIONS

    excel = tmp_path / "edited.csv"  # Excel's "CSV UTF-8": a BOM, CRLF line ends, labels with spaces and capitals
    excel.write_bytes("\ufeffrank,path,given,suggested,confidence,given_probability,keep\r\n"
                      "1,sad/a.png,sad, Happy ,0.9,0.01, no\r\n2,sad/b.png,sad,happiness,0.9,0.01,NO\r\n"
                      .encode("utf-8"))
    assert read_relabels(read_relabel_file(excel), EMOTIONS) == {"sad/a.png": EMOTIONS.index("happy"),
                                                                 "sad/b.png": EMOTIONS.index("happy")}
    with pytest.raises(ValueError, match="line 3: sad/a.png is on line 2 too"):
        read_relabels("path,suggested,keep\nsad/a.png,happy,no\nsad/a.png,angry,no\n", EMOTIONS)
    assert read_relabels("path,suggested,keep\nsad/a.png,happy,no\nsad/a.png,happy,no\n", EMOTIONS) == {
        "sad/a.png": EMOTIONS.index("happy")}  # the same decision twice is no conflict


def test_l2_relabel_paths_match_relative_to_the_data_folder(tmp_path, capsys):
    import cv2
    from helpers import synthetic_face

    from fer_core.labels import EMOTIONS
    from training.evaluate import get_args_parser, main

    root = tmp_path / "faces"
    for label, name in enumerate(EMOTIONS):
        (root / name).mkdir(parents=True)
        cv2.imwrite(str(root / name / "0.png"), synthetic_face(label, seed=0))
    (tmp_path / "edited.csv").write_text("path,suggested,keep\nsad/0.png,happy,no\n"
                                         f"{(root / 'fear' / '0.png').resolve()},angry,no\n")
    main(get_args_parser().parse_args([str(root), "--no-tta", "--relabels", str(tmp_path / "edited.csv")]))
    assert "relabelled 2 image(s)" in capsys.readouterr().err


# --- uploaded and command-line models (C3) ---

def _expanded_checkpoint(path, config: dict):
    """A checkpoint whose every tensor is one stored number expanded (stride 0) to the shape ``config`` needs."""
    import torch

    from fer_core.faces.preprocessing import PreprocessConfig
    from fer_core.labels import EMOTIONS
    from fer_core.model.network import Xception, XceptionConfig

    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in Xception(XceptionConfig.from_dict(config)).state_dict().items()}
    state = {k: torch.ones(1, dtype=dtype).expand(shape) if len(shape) else torch.ones((), dtype=dtype)
             for k, (shape, dtype) in shapes.items()}
    torch.save({"model": state, "config": config, "class_names": list(EMOTIONS),
                "preprocess": PreprocessConfig().to_dict(), "meta": {}}, path)
    return path


def test_c3_expanded_tensors_and_giant_architectures_are_refused_before_anything_is_built(tmp_path):
    import resource

    import pytest

    from fer_core.model.checkpoint import CheckpointError, load_checkpoint
    from fer_core.model.variants import VARIANTS

    small = _expanded_checkpoint(tmp_path / "small.pt", VARIANTS["small"].to_dict())
    assert small.stat().st_size < 500_000
    with pytest.raises(CheckpointError, match="does not hold its own"):
        load_checkpoint(small)
    giant_config = {**VARIANTS["base"].to_dict(), "entry_channels": [4096, 4096, 4096], "middle_blocks": 64,
                    "exit_channels": [4096, 4096], "exit_convs": [4096], "hidden_units": 4096}
    giant = _expanded_checkpoint(tmp_path / "giant.pt", giant_config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="more than the"):
        load_checkpoint(giant)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 300_000  # KB: nothing of its size built


# --- batch (B10) ---

def test_b10_workers_out_of_range_are_refused_or_capped(face_photos, tmp_path):
    import os
    import subprocess
    import sys

    from test_label_issues import ROOT

    def batch(*args):
        return subprocess.run([sys.executable, "-m", "fer_core.batch", str(face_photos.paths[0]), "--out",
                               str(tmp_path / "out"), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    for bad in (0, -1):
        proc = batch("--workers", bad)
        assert proc.returncode == 2 and "--workers must be 1 or more" in proc.stderr and "Traceback" not in proc.stderr
    proc = batch("--workers", 1000)
    assert proc.returncode == 0, proc.stderr
    assert f"running {len(os.sched_getaffinity(0))}" in proc.stderr


def _batch(*args, timeout: float = 300):
    import subprocess
    import sys

    from test_label_issues import ROOT

    return subprocess.run([sys.executable, "-m", "fer_core.batch", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _manifest(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def test_b2_a_fifo_named_like_a_video_fails_alone_instead_of_hanging(face_photos, tmp_path):
    import os

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    proc = _batch(fifo, face_photos.paths[0], "--out", tmp_path / "out", "--workers", 1, timeout=120)
    assert proc.returncode == 1, proc.stderr  # one input failed, the other done
    status = {Path(r["path"]).name: (r["status"], r["error"]) for r in _manifest(tmp_path / "out")}
    assert status["clip.mp4"][0] == "failed" and "not a regular file" in status["clip.mp4"][1]
    assert status[face_photos.paths[0].name][0] == "done"


def test_b4_b8_inputs_are_compared_resolved(face_photos, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    photo = inputs / "a.jpg"
    photo.write_bytes(face_photos.paths[0].read_bytes())
    (inputs / "link.jpg").symlink_to(photo)
    twice = [photo, inputs / ".." / "inputs" / "a.jpg", inputs / "link.jpg"]
    proc = _batch(*twice, "--out", tmp_path / "out", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert len(_manifest(tmp_path / "out")) == 1  # one file reached three ways is one input (B8)
    out = inputs / ".." / "inputs" / "results"  # inside the inputs, named through ..
    for _ in range(2):  # the annotated outputs of the first run must not become inputs of the second (B4)
        proc = _batch(inputs, "--out", out, "--annotated", "--workers", 1)
        assert proc.returncode == 0, proc.stderr
        assert len(_manifest(out.resolve())) == 1, [r["path"] for r in _manifest(out.resolve())]


def test_b1_a_file_name_that_is_not_utf8_is_analysed_like_any_other(face_photos, tmp_path):
    import os

    import pandas as pd

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "plain.jpg").write_bytes(face_photos.paths[0].read_bytes())
    with open(os.path.join(os.fsencode(inputs), b"caf\xe9.jpg"), "wb") as f:  # Latin-1 bytes: not UTF-8
        f.write(face_photos.paths[0].read_bytes())
    for run in range(2):
        proc = _batch(inputs, "--out", tmp_path / "out", "--workers", 2, "--csv")
        assert proc.returncode == 0, proc.stderr
        statuses = sorted(r["status"] for r in _manifest(tmp_path / "out"))
        assert statuses == (["done", "done"] if run == 0 else ["skipped", "skipped"]), statuses
    table = pd.read_parquet(tmp_path / "out" / "photos.parquet")
    assert sorted(Path(s).name for s in table["source"]) == ["caf\\xe9.jpg", "plain.jpg"]


def test_b7_damaged_part_files_are_analysed_again_not_a_crash_forever(face_photos, tmp_path):
    import pandas as pd
    import pyarrow as pa

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i, path in enumerate(face_photos.paths[:4]):
        (inputs / f"{i}.jpg").write_bytes(path.read_bytes())
    out = tmp_path / "out"
    assert _batch(inputs, "--out", out, "--workers", 1).returncode == 0
    reference = pd.read_parquet(out / "photos.parquet")
    keys = [r["key"] for r in _manifest(out)]
    parts = out / "parts"
    arrow = (parts / f"{keys[0]}.arrow").read_bytes()
    (parts / f"{keys[0]}.arrow").write_bytes(arrow[: len(arrow) // 2])  # truncated
    (parts / f"{keys[1]}.json").write_text("[1, 2]")  # valid JSON, not a manifest line
    with pa.OSFile(str(parts / f"{keys[2]}.arrow"), "wb") as f:  # another schema
        with pa.ipc.new_file(f, pa.schema([("x", pa.int64())])) as w:
            w.write_table(pa.table({"x": [1]}))
    proc = _batch(inputs, "--out", out, "--workers", 1)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    status = {r["key"]: r["status"] for r in _manifest(out)}
    assert [status[k] for k in keys] == ["done", "done", "done", "skipped"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / "photos.parquet"), reference)


def test_b9_another_jobs_out_is_refused_unless_forced(face_photos, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, photo in ((first, face_photos.paths[0]), (second, face_photos.paths[1])):
        folder.mkdir()
        (folder / "a.jpg").write_bytes(photo.read_bytes())
    out = tmp_path / "out"
    assert _batch(first, "--out", out, "--workers", 1, "--csv").returncode == 0
    proc = _batch(second, "--out", out, "--workers", 1)
    assert proc.returncode == 2 and "holds the results of another job" in proc.stderr
    assert (out / "photos.csv").is_file() and len(_manifest(out)) == 1  # the first job's results are untouched
    assert _batch(first, second, "--out", out, "--workers", 1).returncode == 0  # adding inputs is the same job
    proc = _batch(second, "--out", out, "--workers", 1, "--force")
    assert proc.returncode == 0 and [Path(r["path"]).parent.name for r in _manifest(out)] == ["second"]


def test_b3_a_long_file_name_with_annotated_outputs_is_done(face_photos, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    long = inputs / ("é" * 120 + "x" * 7 + ".jpg")  # 251 bytes in UTF-8: the longest names a disk takes
    long.write_bytes(face_photos.paths[0].read_bytes())
    proc = _batch(inputs, "--out", tmp_path / "out", "--annotated", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    (record,) = _manifest(tmp_path / "out")
    assert record["status"] == "done" and Path(record["annotated"]).is_file()


def _group(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (from /proc)."""
    import os

    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and "Z" not in open(f"/proc/{entry}/stat").read().split()[2]:
                    alive.append(int(entry))
            except (ProcessLookupError, PermissionError, FileNotFoundError):
                continue
    return alive


def test_b6_workers_end_with_their_job_when_it_is_killed(face_photos, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from test_label_issues import ROOT
    from video_helpers import switching_video

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(3):
        switching_video(inputs / f"clip{i}.mp4", seconds=20.0)
    for signum in (signal.SIGKILL, signal.SIGTERM):
        proc = subprocess.Popen([sys.executable, "-m", "fer_core.batch", str(inputs), "--out",
                                 str(tmp_path / f"out{signum}"), "--workers", "2"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(_group(proc.pid)) < 3 and time.monotonic() < deadline:  # the job, its workers (and a tracker)
            time.sleep(0.2)
        assert len(_group(proc.pid)) >= 3, "the workers did not start"
        time.sleep(2.0)  # the workers are analysing
        os.kill(proc.pid, signum)  # the job only, not its group
        proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while _group(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _group(proc.pid)
        for pid in left:  # do not leave them to the next test
            os.kill(pid, signal.SIGKILL)
        assert not left, f"processes left after {signal.Signals(signum).name} of the job: {left}"


def test_b6_ctrl_c_ends_the_job_with_one_line_and_no_tracebacks(face_photos, tmp_path):
    import signal
    import subprocess
    import sys

    from test_label_issues import ROOT
    from video_helpers import switching_video

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for i in range(2):
        switching_video(inputs / f"clip{i}.mp4", seconds=20.0)
    # as from a terminal: Ctrl+C's signal handled, even when these tests run in a background job (`cmd &` without job
    # control), which would hand the job an ignored SIGINT
    proc = subprocess.Popen([sys.executable, "-m", "fer_core.batch", str(inputs), "--out", str(tmp_path / "out"),
                             "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while len(_group(proc.pid)) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)
    import os

    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl+C in a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    deadline = time.monotonic() + 30
    while _group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _group(proc.pid)


def test_b5_a_full_disk_is_a_message_and_the_last_tables_stay(face_photos, tmp_path, monkeypatch, capsys):
    import errno

    import fer_core.jobs.tables as tables
    from fer_core.jobs.batch import get_args_parser, main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.jpg").write_bytes(face_photos.paths[0].read_bytes())
    out = tmp_path / "out"
    assert main(get_args_parser().parse_args([str(inputs), "--out", str(out), "--workers", "1"])) == 0
    before = (out / "photos.parquet").read_bytes()
    (inputs / "b.jpg").write_bytes(face_photos.paths[1].read_bytes())

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tables.TableWriter, "commit", full)  # the disk fills while the tables are written
    capsys.readouterr()
    assert main(get_args_parser().parse_args([str(inputs), "--out", str(out), "--workers", "1"])) == 2
    err = capsys.readouterr().err
    assert "no space left in --out" in err and "Traceback" not in err
    assert (out / "photos.parquet").read_bytes() == before


# --- uploaded and command-line models (C1, C2, C4, C5): a first run in a bounded child process ---

def _onnx(nodes, inits=()) -> bytes:
    """An ONNX graph faces -> logits that carries the shipped model's metadata (so every static check passes)."""
    import onnx
    from onnx import TensorProto, helper
    from test_label_issues import ROOT

    faces = helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 1, 48, 48])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "hostile", [faces], [logits], list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)])
    for prop in onnx.load(str(ROOT / "artifacts" / "model.onnx")).metadata_props:
        model.metadata_props.add(key=prop.key, value=prop.value)
    return model.SerializeToString()


def per_face(row) -> bytes:
    """logits = each face's mean x ``row``: (N, len(row))."""
    import numpy as np
    from onnx import helper, numpy_helper

    return _onnx([helper.make_node("ReduceMean", ["faces"], ["m"], axes=[1, 2, 3], keepdims=0),
                  helper.make_node("Unsqueeze", ["m", "one"], ["u"]), helper.make_node("Mul", ["u", "row"], ["logits"])],
                 [numpy_helper.from_array(np.array([1], np.int64), "one"),
                  numpy_helper.from_array(np.asarray([row], np.float32), "row")])


def huge() -> bytes:
    """A 64 KB-class graph that asks for 6 GB (ConstantOfShape [220e6, 1, 7])."""
    import numpy as np
    from onnx import helper, numpy_helper

    return _onnx([helper.make_node("ConstantOfShape", ["shape"], ["logits"],
                                   value=numpy_helper.from_array(np.array([1.0], np.float32)))],
                 [numpy_helper.from_array(np.array([220_000_000, 1, 7], np.int64), "shape")])


def endless() -> bytes:
    """A Loop of 2^62 trips whose condition stays true."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "step"], ["v_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 7])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 7])],
        [numpy_helper.from_array(np.ones((1, 7), np.float32), "step")])
    return _onnx([helper.make_node("Loop", ["trips", "cond", "v0"], ["logits"], body=body)],
                 [numpy_helper.from_array(np.array(2**62, np.int64), "trips"),
                  numpy_helper.from_array(np.array(True), "cond"),
                  numpy_helper.from_array(np.zeros((1, 7), np.float32), "v0")])


def test_c1_c2_c5_hostile_models_cost_one_bounded_child_never_the_server():
    import pytest
    from test_label_issues import ROOT

    from fer_core.model.trial import TrialLimits, trial_run
    from fer_core.model.weights import CheckpointError

    limits = TrialLimits(cpu_seconds=4, memory_bytes=4 * 2**30, wall_seconds=60)
    trial_run((ROOT / "artifacts" / "model.onnx").read_bytes(), "model.onnx", limits)  # the shipped model passes
    trial_run(per_face([1.0] * 7), "plain.onnx", limits)
    cases = {"endless.onnx": (endless(), "was stopped"), "huge.onnx": (huge(), "refused"),
             "nan.onnx": (per_face([float("nan")] * 7), "NaN or infinite"),
             "three.onnx": (per_face([1.0] * 3), "not \\(4, 7\\)")}
    for name, (data, message) in cases.items():
        started = time.perf_counter()
        with pytest.raises(CheckpointError, match=message) as refused:
            trial_run(data, name, limits)
        assert time.perf_counter() - started < 60
        assert "/work" not in str(refused.value) and str(ROOT) not in str(refused.value)  # no server paths


def test_c4_c5_compare_refuses_a_model_that_fails_on_faces_with_one_line(tmp_path):
    import subprocess
    import sys

    import cv2
    from helpers import synthetic_face
    from test_label_issues import ROOT

    from fer_core.labels import EMOTIONS

    for label, name in enumerate(EMOTIONS):
        (tmp_path / "faces" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "faces" / name / "0.png"), synthetic_face(label))
    (tmp_path / "nan.onnx").write_bytes(per_face([float("nan")] * 7))
    proc = subprocess.run([sys.executable, "-m", "training.compare", str(ROOT / "artifacts" / "model.pt"),
                           str(tmp_path / "nan.onnx"), str(tmp_path / "faces")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "NaN or infinite" in proc.stderr and "Traceback" not in proc.stderr


def test_c1_the_evaluation_page_refuses_an_uploaded_endless_model(monkeypatch):
    from test_compare import open_evaluation

    import fer_core.model.trial as trial

    monkeypatch.setattr(trial, "TRIAL_LIMITS", trial.TrialLimits(cpu_seconds=4, wall_seconds=60))
    at = open_evaluation()
    at.file_uploader(key="compare_upload").set_value(("loop.onnx", endless(), "application/octet-stream")).run()
    assert not at.exception
    assert "loop.onnx cannot be used" in " ".join(e.value for e in at.error)
    assert not [o for o in at.selectbox(key="compare_b").options if "loop.onnx" in o]
