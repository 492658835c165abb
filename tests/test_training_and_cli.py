"""The training, evaluation and prediction command lines, end to end on small data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import make_fer_csv, make_kaggle_tree

from fer_core.labels import EMOTIONS
from fer_core.model.checkpoint import load_checkpoint
from fer_core.model.network import count_parameters
from fer_core.model.onnx_file import current_onnx

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One epoch of the real training script on a small generated Kaggle-layout dataset."""
    tmp = tmp_path_factory.mktemp("train")
    data = make_kaggle_tree(tmp / "data", per_class=8)
    out = tmp / "out"
    run("-m", "training.train", "--data", str(data), "--out", str(out), "--work-dir", str(tmp / "work"),
        "--cache-dir", "", "--variant", "tiny", "--epochs", "1", "--batch-size", "16", "--threads", "1")
    return data, out, tmp


def test_one_epoch_writes_loadable_artifacts(trained):
    data, out, _ = trained
    model, pre, names, meta = load_checkpoint(out / "model.pt")
    assert names == EMOTIONS and meta["variant"] == "tiny"
    exported, why = current_onnx(out / "model.pt")  # the app's copy beside it, from exactly these weights
    assert exported is not None and exported.info["parameters"] == count_parameters(model), why
    card = json.loads((out / "model_card.json").read_text())
    assert card["architecture"]["parameters"] > 0 and card["classes"] == list(EMOTIONS)
    assert card["data"]["train_images"] == 7 * 8 and card["training"]["epochs_run"] == 1
    assert "torch" in card["library_versions"]
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [1]
    assert {"train_loss", "val_acc", "val_macro_f1", "lr", "seconds"} <= set(history.columns)


def test_mixup_mixstyle_and_sgd_recipe_trains_and_is_recorded_in_the_card(trained, tmp_path):
    data, _, _ = trained
    out = tmp_path / "out"
    run("-m", "training.train", "--data", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work"),
        "--cache-dir", "", "--variant", "tiny", "--epochs", "1", "--batch-size", "16", "--threads", "1",
        "--mixup-alpha", "0.4", "--optimizer", "sgd", "--lr", "0.05", "--mixstyle", "0.5")
    load_checkpoint(out / "model.pt")
    exported, why = current_onnx(out / "model.pt")  # MixStyle adds nothing to the exported network
    assert exported is not None, why
    args = json.loads((out / "model_card.json").read_text())["training"]["arguments"]
    assert args["mixup_alpha"] == 0.4 and args["optimizer"] == "sgd" and args["mixstyle"] == 0.5
    assert pd.read_csv(out / "history.csv")["train_loss"].notna().all()


def test_an_interrupted_run_resumes_after_its_last_epoch(trained, tmp_path):
    data, _, _ = trained
    common = ["-m", "training.train", "--data", str(data), "--out", str(tmp_path / "out"), "--work-dir",
              str(tmp_path / "work"), "--cache-dir", "", "--variant", "tiny", "--epochs", "2", "--batch-size", "16",
              "--threads", "1"]
    first = run(*common, "--stop-after", "1")
    assert "continue with --resume" in first.stdout and not (tmp_path / "out" / "model_card.json").exists()
    proc = run(*common, "--resume")
    assert "Resumed" in proc.stdout and "after epoch 1" in proc.stdout
    assert list(pd.read_csv(tmp_path / "out" / "history.csv")["epoch"]) == [1, 2]
    training = json.loads((tmp_path / "out" / "model_card.json").read_text())["training"]
    assert training["epochs_run"] == 2
    # Where and how long each slice trained is written down: its command, hardware, epochs and wall time.
    slices = training["slices"]
    assert [(s["first_epoch"], s["last_epoch"]) for s in slices] == [(1, 1), (2, 2)]
    assert "--stop-after 1" in slices[0]["command"] and "--resume" in slices[1]["command"]
    assert all(s["seconds"] > 0 and s["hardware"]["cpu_cores"] >= 1 and s["hardware"]["cpu"] for s in slices)
    assert training["hardware"]["torch_threads"] == 1


def test_training_reads_fer2013_csv(tmp_path):
    csv = make_fer_csv(tmp_path / "fer2013.csv", rows_per_usage=20)
    run("-m", "training.train", "--data", str(csv), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w"),
        "--variant", "tiny", "--epochs", "1", "--batch-size", "4", "--threads", "1")
    assert (tmp_path / "out" / "model.pt").is_file()


def test_evaluate_writes_the_json_the_app_reads(trained):
    data, out, tmp = trained
    target = tmp / "eval.json"
    proc = run("-m", "training.evaluate", str(data / "validation"), "--weights", str(out / "model.pt"),
               "--json", str(target), "--no-tta")
    assert "macro avg" in proc.stdout  # sklearn's classification report is printed
    result = json.loads(target.read_text())
    assert result["n_images"] == 7 * 8 and result["n_faces_found"] == 7 * 8 and result["tta"] is False
    assert result["labels"] == list(EMOTIONS)
    cm = result["confusion_matrix"]
    assert len(cm) == 7 and sum(map(sum, cm)) == 7 * 8 and [sum(r) for r in cm] == [8] * 7
    assert set(result["per_class"]["fear"]) == {"precision", "recall", "f1", "support"}
    assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1


def test_evaluate_on_a_subset_of_classes_and_unknown_folder(trained, tmp_path):
    data, out, _ = trained
    sub = tmp_path / "sub"
    for name in ("happy", "sad"):
        (sub / name).mkdir(parents=True)
        for f in (data / "validation" / name).iterdir():
            (sub / name / f.name).write_bytes(f.read_bytes())
    result = json.loads(run("-m", "training.evaluate", str(sub), "--weights", str(out / "model.pt"), "--json",
                            str(tmp_path / "e.json")).stdout.split("wrote")[0] and (tmp_path / "e.json").read_text())
    assert result["n_images"] == 16 and result["per_class"]["angry"]["support"] == 0
    (sub / "bored").mkdir()
    proc = run("-m", "training.evaluate", str(sub), "--weights", str(out / "model.pt"), check=False)
    assert proc.returncode != 0 and "bored" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_detect_faces_counts_images_without_faces(trained):
    data, out, tmp = trained
    result = json.loads(run("-m", "training.evaluate", str(data / "validation"), "--weights", str(out / "model.pt"),
                            "--detect-faces", "--json", str(tmp / "d.json")) and (tmp / "d.json").read_text())
    # Generated blobs are not faces: every image counts as wrong, and is counted.
    assert result["n_images"] == 56 and result["n_faces_found"] == 0 and result["accuracy"] == 0


def test_predict_cli_reports_bad_files_and_keeps_going(face_photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    good = face_photos.path("astronaut")
    proc = run("-m", "fer_core.predict", str(bad), str(good), "--json", "--whole-image")
    assert "broken.jpg" in proc.stderr and "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert [r["path"] for r in result] == [str(good)]
    face = result[0]["faces"][0]
    assert len(face["box"]) == 4 and set(face["probabilities"]) == set(EMOTIONS)
    text = run("-m", "fer_core.predict", str(face_photos.folder)).stdout
    assert text.count("\n") >= len(face_photos.paths) and "happy" in text  # one line per face; the astronaut smiles


def test_weight_ema_follows_the_model_in_its_first_steps():
    """The EMA that is evaluated and shipped must not hold on to the random initial weights for epochs (the first
    model's EMA predicted one class for epochs 3-7): after 50 steps it has moved most of the way to the model,
    and later it averages over the full ``decay`` horizon."""
    from torch.optim.swa_utils import AveragedModel

    from training.recipe.loop import warmed_up_ema

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))
    ema = AveragedModel(model, multi_avg_fn=warmed_up_ema(0.998), use_buffers=True)
    ema.update_parameters(model)  # the initial weights
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # the model moves away by 1 and stays there
    for _ in range(50):
        ema.update_parameters(model)
    left = float((ema.module[0].weight.detach() - start).mean())  # how far the EMA has followed: 0 = not at all, 1 = fully
    assert left > 0.8  # a fixed decay of 0.998 would have moved 1 - 0.998 ** 50 = 0.095 of the way
    for _ in range(5000):  # (1 + t) / (10 + t) reaches 0.998 at t = 4,491
        ema.update_parameters(model)
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.update_parameters(model)
    step = float((ema.module[0].weight.detach() - start).mean()) - 1.0
    assert step == pytest.approx(0.002, abs=1e-4)  # late steps move it by 1 - decay


def test_distillation_into_the_fast_layout_starts_from_the_teachers_weights(trained, tmp_path):
    """`--init-weights small --variant small-fast --teacher small`: the student starts from the teacher's weights in
    the faster layout (same shapes, other strides) and learns from its predictions; the card says so."""
    data, _, _ = trained
    teacher = tmp_path / "teacher.pt"
    run("-m", "training.train", "--data", str(data), "--out", str(tmp_path / "t"), "--work-dir", str(tmp_path / "tw"),
        "--cache-dir", "", "--variant", "small", "--epochs", "1", "--batch-size", "16", "--threads", "1")
    (tmp_path / "t" / "model.pt").rename(teacher)
    out = tmp_path / "out"
    proc = run("-m", "training.train", "--data", str(data), "--out", str(out), "--work-dir", str(tmp_path / "work"),
               "--cache-dir", "", "--init-weights", str(teacher), "--variant", "small-fast", "--teacher", str(teacher),
               "--epochs", "1", "--batch-size", "16", "--threads", "1")
    assert "its weights in variant small-fast" in proc.stdout and "Distilling" in proc.stdout
    model, _, _, meta = load_checkpoint(out / "model.pt")
    assert meta["variant"] == "small-fast" and model.config.stem_stride == 2
    card = json.loads((out / "model_card.json").read_text())
    assert card["training"]["arguments"]["teacher"] == str(teacher)
    assert card["architecture"]["macs_per_face"] < 0.5 * 137.7e6  # `small`: 137.6 M multiply-adds per face


def test_init_weights_that_do_not_fit_the_variant_are_a_clear_error(trained, tmp_path):
    data, out, _ = trained  # `tiny` weights
    proc = run("-m", "training.train", "--data", str(data), "--out", str(tmp_path / "o"), "--work-dir",
               str(tmp_path / "w"), "--cache-dir", "", "--init-weights", str(out / "model.pt"), "--variant", "small",
               "--epochs", "1", "--threads", "1", check=False)
    assert proc.returncode != 0 and "does not fit --variant small" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_distillation_loss_is_zero_when_the_student_agrees_with_the_teacher():
    from training.recipe.loop import distill_loss

    logits = torch.randn(8, 7)
    assert float(distill_loss(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distill_loss(logits, torch.randn(8, 7), 2.0)) > 0.01


def test_benchmark_times_the_shipped_model_beside_a_candidate(capsys):
    """`training.benchmarks.speed --compare CKPT`: every (checkpoint, backend) pair gets its ms/face rows, in one run."""
    from fer_core.faces.preprocessing import PreprocessConfig
    from fer_core.model.inference import Predictor
    from fer_core.model.network import build_model
    from training.benchmarks.speed import bench_classifier

    def predictor(variant: str) -> Predictor:
        return Predictor(build_model(variant), PreprocessConfig(), EMOTIONS)

    bench_classifier(predictor("tiny"), repeats=2, rounds=1, others={"candidate": predictor("small")})
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("classifier shipped: 0.66 M parameters") for line in lines)
    assert any(line.startswith("classifier candidate: 1.45 M parameters") for line in lines)
    for case in ("batch 1, 1 thread, TTA off", "batch 1, 1 thread, TTA on", "batch 128"):
        rows = [line for line in lines if line.startswith(f"classifier, {case}")]
        assert {row.split(":")[0].split(",")[-1].strip() for row in rows} == {
            "shipped torch", "shipped onnxruntime", "candidate torch", "candidate onnxruntime"}
        assert all("ms/face" in row for row in rows)


@pytest.mark.parametrize("option, value", [("--mixstyle", "1.5"), ("--grey-mix", "-0.1"), ("--blend-prob", "2"),
                                           ("--mixstyle-alpha", "0")])
def test_shares_outside_0_1_are_a_clear_error(option, value, tmp_path):
    proc = run("-m", "training.train", "--out", str(tmp_path / "o"), "--work-dir", str(tmp_path / "w"), option, value,
               check=False)
    assert proc.returncode == 2 and option in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
