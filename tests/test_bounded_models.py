"""A model from outside runs in a bounded child process for its whole use, not only for its trial: a graph that
behaves on the trial's faces and misbehaves on real ones (a never-ending Loop, scores that turn NaN, gigabytes asked
for) costs that child, and the page or command says so in one line. Also N1: extreme but finite weights or
temperatures are refused or reported, never "angry (nan%)"."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from helpers import synthetic_face, write_face_photos
from test_audit_2026_12_06 import _onnx
from test_label_issues import ROOT

from fer_core.labels import EMOTIONS
from fer_core.model.bounded import BoundedBackend, RunLimits, bounded_predictor, outside_predictor
from fer_core.model.trial import TrialLimits, trial_run
from fer_core.model.weights import CheckpointError

FAST = RunLimits(call_seconds=5, seconds_per_image=0.0, load_seconds=60)


def sleeper(real_faces: str) -> bytes:
    """A graph whose scores are each face's mean x (1, 2, ..., 7) on the trial's faces (pixels in [0, 1)), and that
    misbehaves on faces with a negative input (every normalised real face): ``real_faces`` is "endless" (a Loop of
    2^62 trips), "nan" or "memory" (ConstantOfShape of 6 GB)."""
    from onnx import TensorProto, helper, numpy_helper

    consts = {"one": np.array([1], np.int64), "row": np.arange(1, 8, dtype=np.float32)[None],
              "zero": np.array(0.0, np.float32), "zero_row": np.zeros((1, 7), np.float32)}
    nodes = [helper.make_node("ReduceMean", ["faces"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "one"], ["u"]), helper.make_node("Mul", ["u", "row"], ["good"]),
             helper.make_node("ReduceMin", ["faces"], ["low"], keepdims=0),
             helper.make_node("Less", ["low", "zero"], ["real"])]
    if real_faces == "nan":
        nodes += [helper.make_node("Sqrt", ["low"], ["root"]), helper.make_node("Mul", ["root", "zero"], ["bad"]),
                  helper.make_node("Add", ["good", "bad"], ["logits"])]
    elif real_faces == "endless":
        body = helper.make_graph(
            [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])],
            "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                     helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                     helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 7])],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 7])])
        consts.update(big=np.array(2**62, np.int64), yes=np.array(True))
        nodes += [helper.make_node("Cast", ["real"], ["r"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["r", "big"], ["trips"]),
                  helper.make_node("Loop", ["trips", "yes", "zero_row"], ["v"], body=body),
                  helper.make_node("Add", ["good", "v"], ["logits"])]
    else:
        consts.update(scale=np.array([220_000_000, 0, 0], np.int64), base=np.array([1, 1, 7], np.int64))
        nodes += [helper.make_node("Cast", ["real"], ["r"], to=TensorProto.INT64),
                  helper.make_node("Mul", ["r", "scale"], ["extra"]), helper.make_node("Add", ["extra", "base"], ["shape"]),
                  helper.make_node("ConstantOfShape", ["shape"], ["block"]),
                  helper.make_node("ReduceSum", ["block"], ["s"], keepdims=0),
                  helper.make_node("Mul", ["s", "zero"], ["nothing"]),
                  helper.make_node("Add", ["good", "nothing"], ["logits"])]
    return _onnx(nodes, [numpy_helper.from_array(v, k) for k, v in consts.items()])


def real_batch(n: int = 3) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (n, 1, 48, 48)).astype(np.float32)


@pytest.mark.parametrize("kind, message", [("endless", "did not classify"), ("nan", "NaN or infinite"),
                                           ("memory", "memory|fails on these faces|was stopped")])
def test_a_model_that_passes_its_trial_and_misbehaves_on_real_faces_costs_one_bounded_child(kind, message):
    data = sleeper(kind)
    trial_run(data, f"{kind}.onnx", TrialLimits(cpu_seconds=10, wall_seconds=60))  # it passes the first run
    backend = BoundedBackend(data, f"{kind}.onnx", 7, FAST)
    calm = np.random.default_rng(0).random((2, 1, 48, 48), dtype=np.float32)
    assert backend(calm).shape == (2, 7)  # behaves on pixels in [0, 1)
    started = time.perf_counter()
    with pytest.raises(CheckpointError, match=message) as refused:
        backend(real_batch())
    assert time.perf_counter() - started < 40
    assert str(ROOT) not in str(refused.value)
    if kind == "endless":  # a model that broke a limit is not run again, and its child is gone
        with pytest.raises(CheckpointError, match="did not classify"):
            backend(calm)
        assert backend._proc is None


def test_the_bounded_child_gives_the_in_process_scores_and_ends_with_its_backend():
    from fer_core.model.inference import Predictor

    shipped = Predictor.from_checkpoint()
    outside = bounded_predictor((ROOT / "artifacts" / "model.onnx").read_bytes(), "model.onnx", FAST)
    batch = real_batch(5)
    np.testing.assert_array_equal(outside.backend(batch), shipped.backend(batch))
    child = outside.backend._proc
    del outside
    child.wait(timeout=10)  # garbage-collected backend: its child is killed


def test_an_idle_child_ends_and_the_next_call_starts_another():
    backend = BoundedBackend((ROOT / "artifacts" / "model.onnx").read_bytes(), "model.onnx", 7,
                             RunLimits(idle_seconds=1.0))
    first = backend(real_batch(1))
    child = backend._proc
    child.wait(timeout=30)  # ended by itself after a second without calls
    np.testing.assert_array_equal(backend(real_batch(1)), first)
    assert backend._proc is not child
    backend.close()


def test_commands_run_outside_models_bounded_and_the_shipped_one_in_process(tmp_path):
    (tmp_path / "copy.onnx").write_bytes((ROOT / "artifacts" / "model.onnx").read_bytes())
    assert type(outside_predictor(tmp_path / "copy.onnx").backend).__name__ == "BoundedBackend"
    assert type(outside_predictor(ROOT / "artifacts" / "model.pt").backend).__name__ != "BoundedBackend"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_job_runs_an_outside_model_bounded_in_every_worker(tmp_path, workers):
    (tmp_path / "photos").mkdir()
    photos = write_face_photos(tmp_path / "photos")
    (tmp_path / "endless.onnx").write_bytes(sleeper("endless"))  # passes the job's trial, never ends on real faces
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "fer_core.batch", str(tmp_path / "photos"), "--out",
                           str(tmp_path / "out"), "--weights", str(tmp_path / "endless.onnx"), "--workers",
                           str(workers), "--no-tta"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert time.perf_counter() - started < 200  # one deadline per worker, then the model is refused at once
    lines = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == len(photos.arrays) and proc.returncode == 1 and "Traceback" not in proc.stderr
    for line in lines:
        assert line["status"] == "failed" and line["error"].startswith("endless.onnx did not classify")
        assert str(tmp_path) not in line["error"]


def test_compare_stops_with_one_line_when_a_model_turns_nan_on_real_faces(tmp_path):
    for label, name in enumerate(EMOTIONS):
        (tmp_path / "faces" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "faces" / name / "0.png"), synthetic_face(label))
    (tmp_path / "sleeper.onnx").write_bytes(sleeper("nan"))
    proc = subprocess.run([sys.executable, "-m", "training.compare", str(ROOT / "artifacts" / "model.pt"),
                           str(tmp_path / "sleeper.onnx"), str(tmp_path / "faces")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and "NaN or infinite" in proc.stderr and "Traceback" not in proc.stderr


def test_the_evaluation_page_stops_a_comparison_whose_uploaded_model_never_ends(monkeypatch):
    import io
    import zipfile

    from test_compare import open_evaluation

    import fer_core.model.bounded as bounded

    monkeypatch.setattr(bounded, "RUN_LIMITS", FAST)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for label, name in enumerate(EMOTIONS):
            z.writestr(f"{name}/0.png", cv2.imencode(".png", synthetic_face(label))[1].tobytes())
    at = open_evaluation()
    at.file_uploader(key="compare_upload").set_value(("sleeper.onnx", sleeper("endless"), "application/octet-stream"))
    at.run(timeout=120)
    assert not at.exception and not at.error
    option = next(o for o in at.selectbox(key="compare_b").options if "sleeper.onnx" in o)
    at.selectbox(key="compare_b").set_value(option)
    at.file_uploader(key="compare_zip").set_value(("faces.zip", buf.getvalue(), "application/zip"))
    at.run(timeout=120)
    at.button(key="compare_go").click().run(timeout=120)
    assert not at.exception
    assert "did not classify" in " ".join(e.value for e in at.error)


# --- N1: extreme but finite checkpoints ---

def _shipped_checkpoint(tmp_path, name, change):
    import torch

    checkpoint = torch.load(ROOT / "artifacts" / "model.pt", weights_only=True)
    change(checkpoint)
    torch.save(checkpoint, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("temperature", [1e-300, 1e300, 0.0, float("inf")])
def test_n1_temperatures_outside_a_calibrated_range_are_refused(tmp_path, temperature):
    from fer_core.model.checkpoint import load_checkpoint

    path = _shipped_checkpoint(tmp_path, "t.pt", lambda c: c["meta"].update(temperature=temperature))
    with pytest.raises(CheckpointError, match="calibrated temperature"):
        load_checkpoint(path)


def test_n1_a_model_whose_scores_overflow_gives_an_error_not_angry_nan(tmp_path):
    from fer_core.analysis.photos import analyse_image
    from fer_core.faces.detection import make_detector
    from fer_core.model.inference import Predictor

    def overflow(checkpoint):
        for key, value in checkpoint["model"].items():
            if value.is_floating_point() and value.shape[:1] == (7,):
                value.fill_(3e38)

    predictor = Predictor.from_checkpoint(_shipped_checkpoint(tmp_path, "overflow.pt", overflow), backend="torch")
    photo = cv2.imencode(".png", synthetic_face(3))[1].tobytes()
    result = analyse_image(predictor, make_detector(), photo, "face.png", whole_image_if_no_face=True)
    assert result.error and "NaN or infinite" in result.error and not result.faces
    proc = subprocess.run([sys.executable, "-m", "fer_core.predict", "--weights", str(tmp_path / "overflow.pt"),
                           str(ROOT / "docs" / "screenshot_upload.png")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2 and "NaN or infinite" in proc.stderr and "nan%" not in proc.stdout
