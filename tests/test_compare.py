"""Comparing two models: the paired statistics on constructed predictions, the paired evaluation, the command line on
a folder and a zip of the public-domain face photos, and the model files the evaluation page offers."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import make_zip

from fer_core.analysis.compare import (
    compare_results,
    comparison_csv,
    comparison_rows,
    disagreements,
    mcnemar_exact,
    paired_bootstrap,
)
from fer_core.analysis.metrics import classification_summary
from fer_core.labels import EMOTIONS

ROOT = Path(__file__).resolve().parent.parent
FER2013_WEIGHTS = ROOT / "artifacts" / "model_fer2013.pt"


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    b = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return np.asarray(a), np.asarray(b)


def test_mcnemar_exact_p_of_known_tables():
    a, b = outcomes(both=50, only_a=10, only_b=2, neither=8)
    assert mcnemar_exact(a, b) == {"b": 10, "c": 2, "p_value": pytest.approx(0.0386, abs=5e-5)}
    assert mcnemar_exact(*outcomes(20, 0, 0, 5))["p_value"] == 1.0  # never disagree: no evidence either way
    assert mcnemar_exact(*outcomes(0, 3, 3, 0))["p_value"] == 1.0  # as often each way
    assert mcnemar_exact(*outcomes(0, 0, 6, 0))["p_value"] == pytest.approx(2 / 2 ** 6)  # 6 of 6 one way


def test_bootstrap_interval_holds_the_estimate_narrows_with_n_and_repeats():
    rng = np.random.default_rng(1)

    def predictions(n: int):
        y = rng.integers(0, 7, n)
        a = np.where(rng.random(n) < 0.7, y, (y + 1) % 7)
        b = np.where(rng.random(n) < 0.8, y, (y + 2) % 7)
        return y, a, b

    small, large = paired_bootstrap(*predictions(100), 7), paired_bootstrap(*predictions(2000), 7)
    for result in (small, large):
        for metric in ("accuracy", "macro_f1"):
            for k in ("a", "b", "difference"):
                v = result[metric][k]
                assert v["low"] <= v["value"] <= v["high"], (metric, k, v)
    width = {name: r["accuracy"]["difference"]["high"] - r["accuracy"]["difference"]["low"]
             for name, r in (("small", small), ("large", large))}
    assert width["large"] < width["small"] / 2  # about 1/sqrt(20) of it
    assert large["accuracy"]["difference"]["low"] > 0  # B is 10 points better on 2,000 images: clear
    y, a, b = predictions(200)
    assert paired_bootstrap(y, a, b, 7, seed=3) == paired_bootstrap(y, a, b, 7, seed=3)  # seeded


def test_point_estimates_are_the_evaluation_numbers():
    """The bootstrap's accuracy and macro-F1 at full weight are fer_core.analysis.metrics' (sklearn's), no-face (-1) included."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 300)  # one class absent: macro-F1 over the classes present
    a = np.where(rng.random(300) < 0.6, y, rng.integers(-1, 7, 300))
    b = np.where(rng.random(300) < 0.5, y, rng.integers(-1, 7, 300))
    result = paired_bootstrap(y, a, b, 7, n_resamples=10)
    for k, pred in (("a", a), ("b", b)):
        summary = classification_summary(y, pred, EMOTIONS)
        assert result["accuracy"][k]["value"] == pytest.approx(summary["accuracy"])
        assert result["macro_f1"][k]["value"] == pytest.approx(summary["macro_f1"])


def records_of(y_true, y_pred, paths=None) -> tuple[dict, list[dict]]:
    records = []
    for i, (t, p) in enumerate(zip(y_true, y_pred)):
        probs = {n: (0.9 if j == p else 0.1 / 6) for j, n in enumerate(EMOTIONS)} if p >= 0 else None
        records.append({"path": (paths or {}).get(i, f"{i}.png"), "true": EMOTIONS[t],
                        "predicted": EMOTIONS[p] if p >= 0 else None, "probabilities": probs})
    return classification_summary(y_true, y_pred, EMOTIONS), records


def test_identical_models_differ_by_zero_with_p_one():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, 120)
    pred = np.where(rng.random(120) < 0.6, y, (y + 3) % 7)
    summary, records = records_of(y, pred)
    c = compare_results(summary, records, summary, records, names=("one", "same"))
    for metric in ("accuracy", "macro_f1"):
        assert c[metric]["difference"] == {"value": 0.0, "low": 0.0, "high": 0.0}
    assert c["mcnemar"] == {"b": 0, "c": 0, "p_value": 1.0} and c["n_disagreements"] == 0
    assert np.all(np.asarray(c["confusion_difference"]) == 0)
    assert all(v["recall_difference"] == 0 and v["f1_difference"] == 0 for v in c["per_class"].values())
    assert disagreements(records, records) == []
    json.dumps(c)  # plain data


def test_per_class_deltas_confusion_difference_and_disagreements():
    y = np.asarray([3, 3, 3, 3, 4, 4, 4, 4])  # happy x4, sad x4
    a = np.asarray([3, 3, 3, 3, 4, 4, 6, 6])  # A: sad -> neutral twice
    b = np.asarray([3, 3, 3, 4, 4, 4, 4, 4])  # B: gets those right, misses one happy
    c = compare_results(*records_of(y, a), *records_of(y, b), names=("A", "B"))
    assert c["mcnemar"]["b"] == 1 and c["mcnemar"]["c"] == 2
    assert c["per_class"]["sad"]["recall_difference"] == pytest.approx(0.5)
    assert c["per_class"]["happy"]["recall_difference"] == pytest.approx(-0.25)
    diff = np.asarray(c["confusion_difference"])
    assert diff[4, 6] == -2 and diff[4, 4] == 2 and diff[3, 4] == 1 and diff.sum() == 0
    rows = disagreements(records_of(y, a)[1], records_of(y, b)[1])
    assert [r["index"] for r in rows] == [6, 7, 3]  # B right first, then A right
    assert rows[0]["b_correct"] and not rows[0]["a_correct"] and rows[0]["a_predicted"] == "neutral"
    table = comparison_rows(c)
    assert [r["model"] for r in table[:3]] == ["A", "B", "B - A"]
    text = comparison_csv(c, rows).decode()
    assert text.splitlines()[0].startswith("path,true,A predicted") and len(text.splitlines()) == 4


def test_records_of_other_images_are_refused():
    y = np.asarray([0, 1])
    with pytest.raises(ValueError, match="different images"):
        compare_results(*records_of(y, y), *records_of(y, y, paths={0: "other.png"}))


# ---- the paired evaluation and the command line ------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, face_photos) -> Path:
    """<dir>/<class>/<photo>: the six public-domain photos, three labelled happy (she smiles) and three sad."""
    root = tmp_path_factory.mktemp("photo_set")
    for i, path in enumerate(face_photos.paths):
        folder = root / ("happy" if i % 2 == 0 else "sad")
        folder.mkdir(exist_ok=True)
        shutil.copy(path, folder / path.name)
    return root


def test_paired_evaluation_gives_both_models_the_same_faces(photo_folder, predictor):
    from fer_core.analysis.datasets import list_labelled_folder
    from fer_core.analysis.evaluation import evaluate_files, evaluate_models
    from fer_core.model.inference import Predictor

    other = Predictor.from_checkpoint(FER2013_WEIGHTS)
    files = list_labelled_folder(photo_folder)
    a, b = evaluate_models([predictor, other], files, detect_faces=True, tta=False)
    assert [r["box"] for r in a.records] == [r["box"] for r in b.records]  # one detection, both models
    alone = evaluate_files(other, files, detect_faces=True, tta=False)
    assert [r["probabilities"] for r in alone.records] == pytest.approx([r["probabilities"] for r in b.records])
    assert alone.summary["accuracy"] == b.summary["accuracy"]


def test_compare_cli_on_a_folder_and_a_zip(photo_folder, tmp_path, capsys):
    from training.compare import get_args_parser, main

    out_json, out_csv = tmp_path / "cmp.json", tmp_path / "cmp.csv"
    result = main(get_args_parser().parse_args([
        "artifacts/model.pt", str(FER2013_WEIGHTS), str(photo_folder), "--detect-faces", "--no-tta",
        "--resamples", "200", "--json", str(out_json), "--csv", str(out_csv)]))
    printed = capsys.readouterr().out
    assert "McNemar exact test" in printed and "B - A" in printed and "faces found in 6/6" in printed
    saved = json.loads(out_json.read_text())
    assert saved["n_images"] == 6 and saved["mcnemar"] == result["mcnemar"]
    assert len(saved["disagreements"]) == saved["n_disagreements"]
    rows = list(csv.reader(io.StringIO(out_csv.read_text())))
    assert rows[0][:3] == ["path", "true", "artifacts/model.pt predicted"] and len(rows) == 1 + saved["n_disagreements"]

    archive = tmp_path / "photos.zip"
    archive.write_bytes(make_zip({f"{p.parent.name}/{p.name}": p.read_bytes() for p in sorted(photo_folder.rglob("*.jpg"))}))
    from_zip = main(get_args_parser().parse_args([
        "artifacts/model.pt", str(FER2013_WEIGHTS), str(archive), "--detect-faces", "--no-tta", "--resamples", "200"]))
    assert from_zip["accuracy"] == result["accuracy"] and from_zip["mcnemar"] == result["mcnemar"]


def test_compare_cli_errors_are_one_line(tmp_path, photo_folder):
    from training.compare import get_args_parser, main

    (tmp_path / "broken.pt").write_bytes(b"not weights")
    with pytest.raises(SystemExit, match="error: Cannot read weights file"):
        main(get_args_parser().parse_args([str(tmp_path / "broken.pt"), "artifacts/model.pt", str(photo_folder)]))
    with pytest.raises(SystemExit, match="error: Not a folder"):
        main(get_args_parser().parse_args(["artifacts/model.pt", "artifacts/model.pt", str(tmp_path / "missing")]))


# ---- the models the page offers ----------------------------------------------------------------------------

def test_model_choices_list_checkpoints_once(monkeypatch, tmp_path):
    from fer_core.analysis.model_files import MODELS_ENV, model_choices

    run = tmp_path / "runs" / "try1" / "out"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "artifacts" / "model.pt", run / "model.pt")
    shutil.copy(ROOT / "artifacts" / "model_fer2013.onnx", tmp_path / "alone.onnx")
    shutil.copy(ROOT / "artifacts" / "retinaface_mnet025.onnx", tmp_path / "detector.onnx")  # not a classifier
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.pt").write_bytes(b"")
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    paths = [c.path for c in model_choices(extra=(str(run / "model.pt"), str(tmp_path / "gone.pt")))]
    assert paths[0].name == "model.pt" and paths[1].name == "model_fer2013.pt"  # shipped first, then FER2013-only
    assert set(paths[2:]) == {tmp_path / "alone.onnx", run / "model.pt"}  # handed-over path listed once


def test_uploaded_models_are_checked_and_kept_in_memory(tmp_path):
    from fer_core.analysis.model_files import MAX_UPLOAD_BYTES, uploaded_model
    from fer_core.model.weights import CheckpointError

    for name in ("model.pt", "model.onnx"):
        model = uploaded_model(name, (ROOT / "artifacts" / name).read_bytes())
        assert model.class_names == EMOTIONS and model.backend.name == "bounded"  # run in a bounded child
    for name, data, message in (("notes.txt", b"x", "not a model file"), ("x.pt", b"junk", "Cannot read weights"),
                                ("x.onnx", b"junk", "Cannot read the ONNX model"),
                                ("big.pt", b"0" * (MAX_UPLOAD_BYTES + 1), "at most 64 MB")):
        with pytest.raises(CheckpointError, match=message):
            uploaded_model(name, data)


def test_a_pt_without_its_onnx_needs_torch_and_says_so(tmp_path):
    """The app's install has no torch: a .pt with no .onnx beside it, handed over or uploaded, is a CheckpointError
    that names the training install and the export command (run with torch made unimportable)."""
    import subprocess
    import sys

    shutil.copy(ROOT / "artifacts" / "model_fer2013.pt", tmp_path / "alone.pt")
    code = f"""
import sys
sys.modules["torch"] = None  # import torch fails, as without requirements-train.txt
from fer_core.model.inference import Predictor
from fer_core.analysis.model_files import uploaded_model
from fer_core.model.weights import CheckpointError
for load in (lambda: Predictor.from_checkpoint({str(tmp_path / 'alone.pt')!r}),
             lambda: uploaded_model("alone.pt", open({str(tmp_path / 'alone.pt')!r}, "rb").read())):
    try:
        load()
    except CheckpointError as e:
        print(e)
print(uploaded_model("m.onnx", open({str(ROOT / 'artifacts' / 'model_fer2013.onnx')!r}, "rb").read()).backend.name)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("requirements-train.txt" in line for line in lines[:2]), out
    assert "python -m fer_core.model.onnx_file" in lines[1] and lines[2] == "bounded"


# ---- the evaluation page -----------------------------------------------------------------------------------

EVALUATION = "pages/4_Evaluation.py"


@pytest.fixture(scope="module")
def page_artifacts(tmp_path_factory) -> Path:
    """An artifacts folder with the shipped and the FER2013-only models (as links) and nothing else, which is also
    the only models folder, and a run folder elsewhere with a checkpoint to hand over."""
    art = tmp_path_factory.mktemp("artifacts")
    for name in ("model.pt", "model.onnx", "model_fer2013.pt", "model_fer2013.onnx"):
        (art / name).symlink_to(ROOT / "artifacts" / name)
    return art


@pytest.fixture
def page_env(monkeypatch, page_artifacts):
    from fer_core.analysis.model_files import MODELS_ENV
    from fer_core.model.artifacts import ARTIFACTS_ENV

    monkeypatch.setenv(ARTIFACTS_ENV, str(page_artifacts))
    monkeypatch.setenv(MODELS_ENV, str(page_artifacts))
    return page_artifacts


def open_evaluation(session_state: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page(EVALUATION)
    for k, v in (session_state or {}).items():
        at.session_state[k] = v
    return at.run()


def face_zip(per_class: int = 2) -> bytes:
    import cv2
    from helpers import synthetic_face

    return make_zip({f"faces/{name}/{i}.png": cv2.imencode(".png", synthetic_face(label, seed=i))[1].tobytes()
                     for label, name in enumerate(EMOTIONS) for i in range(per_class)})


def no_error(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_page_compares_two_models_on_a_zip(page_env):
    at = open_evaluation()
    no_error(at)
    assert at.selectbox(key="compare_a").value.startswith("shipped model")
    assert at.selectbox(key="compare_b").value.startswith("FER2013-only model")
    at.file_uploader(key="compare_zip").set_value(("faces.zip", face_zip(), "application/zip")).run()
    at.button(key="compare_go").click().run()
    no_error(at)
    run = at.session_state["comparison"]
    c = run["comparison"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Accuracy A"] == f"{c['accuracy']['a']['value']:.1%}"
    assert metrics["McNemar p"] == f"{c['mcnemar']['p_value']:.3g}"
    titles = [json.loads(chart.proto.spec)["layout"]["title"]["text"] for chart in at.get("plotly_chart")]
    assert "Per-class change, B - A" in titles and any(t.startswith("Confusion matrix B - A") for t in titles)
    assert "Where the models disagree" in [s.value for s in at.subheader]
    shown = min(len(run["disagreements"]), 24)
    assert shown and len(at.image) == shown  # one photo per disagreement
    assert {b.key for b in at.get("download_button")} >= {"compare_csv", "compare_json"}
    at.toggle(key="compare_explain").set_value(True).run()
    no_error(at)
    assert len(at.image) == 2 * shown  # the photo, and A's | B's heatmap of its own prediction


def test_page_takes_the_checkpoints_other_pages_hand_over(page_env, tmp_path):
    run = tmp_path / "runs" / "try" / "out"
    run.mkdir(parents=True)
    shutil.copy(ROOT / "artifacts" / "model_fer2013.pt", run / "model.pt")
    shutil.copy(ROOT / "artifacts" / "model_fer2013.onnx", run / "model.onnx")  # readable without torch
    at = open_evaluation({"compare_model_path": str(run / "model.pt")})
    no_error(at)
    assert at.selectbox(key="compare_b").value == str(run / "model.pt")
    assert at.selectbox(key="compare_a").value.startswith("shipped model")
    assert at.selectbox(key="own_model").value.startswith("shipped model")
    at.selectbox(key="compare_b").set_value(at.selectbox(key="compare_a").value).run()  # the visitor's choice stands
    assert at.selectbox(key="compare_b").value.startswith("shipped model")
    assert at.button(key="compare_go").disabled  # two different models are needed
    at.switch_page("pages/1_Upload_images.py").run()  # away, and back as from the other page's button
    at.switch_page(EVALUATION).run()
    assert at.selectbox(key="compare_b").value == str(run / "model.pt")

    at = open_evaluation({"evaluate_model_path": str(run / "model.pt")})
    no_error(at)
    assert at.selectbox(key="own_model").value == str(run / "model.pt") == at.selectbox(key="compare_b").value
    at.file_uploader(key="own_zip").set_value(("faces.zip", face_zip(1), "application/zip")).run()
    at.button(key="own_zip_go").click().run()
    no_error(at)
    assert at.session_state["own_eval"]["model"] == str(run / "model.pt")
    assert f"Model: {run / 'model.pt'}" in [c.value for c in at.caption]

    at = open_evaluation({"evaluate_model_path": str(tmp_path / "gone.pt")})
    assert "does not exist" in " ".join(w.value for w in at.warning)


def test_page_checks_uploaded_models(page_env):
    at = open_evaluation()
    at.file_uploader(key="compare_upload").set_value(("weights.pt", b"not a checkpoint", "application/octet-stream"))
    at.run()
    assert not at.exception and "weights.pt cannot be used" in " ".join(e.value for e in at.error)
    onnx = (ROOT / "artifacts" / "model_fer2013.onnx").read_bytes()
    at.file_uploader(key="compare_upload").set_value(("mine.onnx", onnx, "application/octet-stream")).run()
    no_error(at)
    assert "usable expression model" in " ".join(s.value for s in at.success)
    uploaded = [o for o in at.selectbox(key="compare_b").options if o.startswith("uploaded mine.onnx")]
    assert len(uploaded) == 1
    at.selectbox(key="compare_b").set_value(uploaded[0]).run()
    at.file_uploader(key="compare_zip").set_value(("faces.zip", face_zip(1), "application/zip")).run()
    at.button(key="compare_go").click().run()
    no_error(at)
    assert at.session_state["comparison"]["comparison"]["models"][1] == uploaded[0]
