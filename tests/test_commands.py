"""Every documented command, as users type it: its --help, and one real invocation on small data.

The commands kept their names when their code moved into fer_core's wings and training's recipe/, experiments/ and
benchmarks/ (fer_core.batch, fer_core.video, training.benchmark and training.video_benchmark hand over to the new
homes); a command that stopped working, or a --help that became a traceback, fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_kaggle_tree
from PIL import Image
from video_helpers import switching_video

from fer_core.locations import ARTIFACTS

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    "fer_core.predict", "fer_core.batch", "fer_core.video", "fer_core.serve", "fer_core.cli",
    "training.train", "training.evaluate", "training.compare", "training.calibrate", "training.crossdomain",
    "training.average_weights", "training.results_table", "training.benchmark", "training.video_benchmark",
    "training.experiments.face_framing", "training.experiments.label_noise_check",
    "training.experiments.neutral_offset", "training.experiments.heldout_temperature",
    "training.experiments.shifted_calibration",
    "training.experiments.explain_examples",
    "training.experiments.explain_faithfulness",
]


def run(module: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("module", COMMANDS)
def test_help_works(module):
    proc = run(module, "--help", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", COMMANDS)
def test_help_works_without_torch(module):
    """The light install (requirements.txt) has no PyTorch: every --help still works there."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "no_torch.py"), module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")


@pytest.mark.parametrize("module, args", [
    ("training.train", ["--epochs", "1"]),
    ("training.calibrate", []),
    ("training.average_weights", ["a.pt", "b.pt", "--out", "c.pt"]),
    ("training.benchmark", ["--skip-training"]),
])
def test_torch_commands_say_what_to_install_without_torch(module, args):
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "no_torch.py"), module, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pip install -r requirements-train.txt" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_kaggle_tree(tmp_path_factory.mktemp("commands") / "tiny", per_class=4)


def test_predict_batch_and_video(face_photos, tmp_path):
    photo = face_photos.paths[0]
    proc = run("fer_core.predict", photo, "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)[0]["faces"]) == 1

    proc = run("fer_core.batch", photo, "--out", tmp_path / "batch", "--csv", "--workers", 1)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "batch" / "photos.csv").read_text().count("\n") == 2  # header + the one face

    video = switching_video(tmp_path / "two_faces.mp4", seconds=1.0)
    proc = run("fer_core.video", video, "--csv", tmp_path / "video.csv")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "video.csv").read_text().count("\n") > 2


def test_train_evaluate_compare_average(tiny, tmp_path):
    out = tmp_path / "run"
    proc = run("training.train", "--data", tiny, "--epochs", 1, "--batch-size", 8, "--variant", "tiny",
               "--out", out, "--work-dir", tmp_path / "work", "--cache-dir", "", "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    assert (out / "model.pt").is_file() and (out / "model.onnx").is_file()

    proc = run("training.evaluate", tiny / "validation", "--weights", out / "model.pt", "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    assert 0.0 <= json.loads((tmp_path / "e.json").read_text())["accuracy"] <= 1.0

    proc = run("training.compare", ARTIFACTS / "model.pt", out / "model.pt", tiny / "validation", "--resamples", 200)
    assert proc.returncode == 0, proc.stderr
    assert "McNemar" in proc.stdout

    proc = run("training.average_weights", f"{ARTIFACTS / 'model.pt'}:0.5", f"{ARTIFACTS / 'model_fer2013.pt'}:0.5",
               "--out", tmp_path / "avg" / "model.pt")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "avg" / "model.onnx").is_file()


def test_calibrate_crossdomain_and_results_table(tiny, tmp_path):
    proc = run("training.calibrate", "--validation", tiny / "validation", "--cfee", "", "--json", tmp_path / "c.json")
    assert proc.returncode == 0, proc.stderr
    assert "temperature" in json.loads((tmp_path / "c.json").read_text())

    proc = run("training.crossdomain", "--table", "--runs-dir", tmp_path / "none")
    assert proc.returncode == 0 and "no measured recipe" in proc.stdout

    proc = run("training.results_table")
    assert proc.returncode == 0, proc.stderr
    assert "FER2013 PublicTest (validation)" in proc.stdout


def test_benchmarks(face_photos, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "one.jpg").write_bytes(face_photos.paths[0].read_bytes())
    proc = run("training.benchmark", "--batch", "--batch-workers", 1, "--batch-photos", folder, "--batch-copies", 1,
               "--batch-videos", 0, "--photo", face_photos.paths[0])
    assert proc.returncode == 0, proc.stderr
    assert "faces/s" in proc.stdout

    proc = run("training.video_benchmark", "--seconds", 1, "--fps-settings", "default", "--photo", face_photos.paths[0])
    assert proc.returncode == 0, proc.stderr
    assert "s of video per second" in proc.stdout


def test_experiments(tiny, face_photos, tmp_path):
    proc = run("training.experiments.face_framing", "--data", tiny, "--limit", 8, "--out", tmp_path / "framing.json")
    assert proc.returncode == 1 and "no face found" in proc.stderr and "Traceback" not in proc.stderr
    faces = tmp_path / "faces" / "train" / "happy"
    faces.mkdir(parents=True)
    for path in face_photos.paths:
        Image.open(path).convert("L").resize((96, 96)).save(faces / path.name)
    proc = run("training.experiments.face_framing", "--data", faces.parent.parent, "--out", tmp_path / "framing.json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((tmp_path / "framing.json").read_text())["landmarks_in_48px"]) == 5

    proc = run("training.experiments.label_noise_check", "--data", tiny / "validation", "--repeats", 1,
               "--json", tmp_path / "noise.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "noise.json").is_file()

    proc = run("training.experiments.explain_faithfulness", "--folder", tiny / "validation", "--n", 4,
               "--random-masks", 2, "--json", tmp_path / "faith.json")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "faith.json").is_file()
