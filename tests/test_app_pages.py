"""Smoke tests of every dashboard page with Streamlit's AppTest: the pages' own code paths, real model and photos.

The app reads its artifacts from $FER_ARTIFACTS here: a temporary folder with the shipped weights, a model
card, a training history and an evaluation JSON written by ``training.evaluate`` on a small generated folder.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import group_photo, jpeg_bytes, make_zip
from PIL import Image
from streamlit.proto.Block_pb2 import Block as BlockProto
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

from fer_core.labels import EMOTIONS
from fer_core.model.artifacts import ARTIFACTS_ENV
from fer_core.model.inference import Predictor

ROOT = Path(__file__).resolve().parent.parent
HOME, UPLOAD, EVALUATION = "app.py", "pages/1_Upload_images.py", "pages/4_Evaluation.py"
TIMEOUT = 120  # seconds per script run; the test machine can be slow


def face_png(label: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (48, 48), dtype=np.uint8)
    cv2.circle(img, (24, 24), 6 + 2 * label, 200, -1)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory) -> Path:
    """<dir>/<class>/<image>: 3 generated pre-cropped faces per class."""
    root = tmp_path_factory.mktemp("labelled")
    for label, name in enumerate(EMOTIONS):
        (root / name).mkdir()
        for i in range(3):
            (root / name / f"{i}.png").write_bytes(face_png(label, seed=i))
    return root


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory, labelled_dir, predictor) -> Path:
    """A complete artifacts folder; eval_validation.json comes from the real `python -m training.evaluate` code."""
    from training.evaluate import get_args_parser, main

    art = tmp_path_factory.mktemp("artifacts")
    (art / "model.pt").symlink_to(ROOT / "artifacts" / "model.pt")
    (art / "model.onnx").symlink_to(ROOT / "artifacts" / "model.onnx")  # what the app runs (no torch needed)
    (art / "calibration.json").symlink_to(ROOT / "artifacts" / "calibration.json")
    main(get_args_parser().parse_args([str(labelled_dir), "--split", "generated test set", "--no-tta",
                                       "--json", str(art / "eval_validation.json")]))
    (art / "model_card.json").write_text(json.dumps({
        "name": "FER Xception-test", "classes": list(EMOTIONS), "trained_at": "2026-11-25T21:45:00+00:00",
        "architecture": {"parameters": 1, "macs_per_face": 123_000_000},
        "validation": {"split": "FER2013 PublicTest (validation folder)", "val_acc": 0.6789, "val_macro_f1": 0.6123,
                       "epoch": 42}}))
    (art / "history.csv").write_text("epoch,lr,train_loss,train_acc,val_loss,val_acc,val_macro_f1,seconds\n"
                                     "1,0.001,1.9,0.3,1.8,0.35,0.2,90\n2,0.002,1.5,0.45,1.4,0.5,0.4,91\n")
    return art


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if page != HOME:
        at.switch_page(page)
    return at.run()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def no_exception(at: AppTest) -> None:
    assert not at.exception, texts(at.exception)


# ---- home -----------------------------------------------------------------------------------------

def test_home_shows_the_model_card_and_links(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(HOME)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    # Headline numbers come from the shipped evaluation JSON (as the app runs), not the card's training metric.
    shipped = json.loads((artifacts_dir / "eval_validation.json").read_text())
    assert metrics["Validation accuracy"] == f"{shipped['accuracy']:.1%}"
    assert metrics["Validation macro-F1"] == f"{shipped['macro_f1']:.3f}"
    assert "generated test set" in texts(at.caption)
    assert "runs on ONNX Runtime" in texts(at.caption)  # the fast backend, not a silent fallback to torch
    assert metrics["Trained"] == "2026-11-25"
    assert metrics["Parameters"].endswith(" M")  # counted from the loaded weights, not copied from the card
    assert all(f"`{c}`" in texts(at.markdown) for c in EMOTIONS)
    links = [link.proto.page for link in at.page_link]
    assert any("Upload_images" in p for p in links) and any("Evaluation" in p for p in links)


def test_home_shows_the_whole_photo_accuracy_when_evaluated(monkeypatch, artifacts_dir, tmp_path):
    for name in ("model.pt", "model_card.json", "eval_validation.json"):
        (tmp_path / name).symlink_to(artifacts_dir / name)
    photos = {**json.loads((artifacts_dir / "eval_validation.json").read_text()),
              "accuracy": 0.8026, "macro_f1": 0.8084, "n_images": 228, "n_faces_found": 228,
              "split": "CFEE test people (68 people, 228 photos)", "detect_faces": True}
    (tmp_path / "eval_cfee_test.json").write_text(json.dumps(photos))
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(HOME)
    no_exception(at)
    metric = next(m for m in at.metric if m.label == "Whole photos accuracy")
    assert metric.value == "80.3%" and "CFEE test people" in metric.proto.help
    (tmp_path / "eval_cfee_test.json").unlink()  # no whole-photo evaluation: no metric, no error
    at = open_page(HOME)
    no_exception(at)
    assert "Whole photos accuracy" not in {m.label for m in at.metric}


def test_home_falls_back_on_the_card_without_an_evaluation(monkeypatch, artifacts_dir, tmp_path):
    for name in ("model.pt", "model_card.json"):
        (tmp_path / name).symlink_to(artifacts_dir / name)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(HOME)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validation accuracy"] == "67.9%" and metrics["Validation macro-F1"] == "0.612"
    assert "selection metric" in texts(at.caption)


def test_home_without_weights_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(HOME)
    no_exception(at)
    assert "could not be loaded" in texts(at.error) and "model.pt" in texts(at.error).replace("\\", "")  # Markdown-escaped
    assert "python -m training.train" in texts(at.markdown)
    assert len(at.page_link) >= 2  # the pages are still reachable


def test_model_error_boxes_keep_code_spans_and_show_everything_else_as_text():
    from fer_core.ui.widgets import plain_with_code

    shown = plain_with_code("no weights at `model.pt`: run `python -m training.train` ![x](http://203.0.113.9/a.png)")
    assert "`model.pt`" in shown and "`python -m training.train`" in shown  # code spans, not literal backticks
    assert "\\!\\[x\\]\\(http" in shown  # the image outside the spans is escaped: never fetched
    assert plain_with_code("name `![x](http://203.0.113.9/a.png)` end").count("`") == 2  # inside a span: text
    assert plain_with_code("an odd ` backtick *here*") == "an odd \\` backtick \\*here\\*"


def test_upload_page_without_weights_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(UPLOAD)
    no_exception(at)
    assert "could not be loaded" in texts(at.error)
    assert not at.file_uploader  # the page stops before offering an upload it cannot serve


# ---- upload ---------------------------------------------------------------------------------------

def blocks(node) -> list[Block]:
    """Every container below ``node`` (depth first)."""
    found = []
    for child in getattr(node, "children", {}).values():
        if isinstance(child, Block):
            found += [child, *blocks(child)]
    return found


def image_captions(at: AppTest) -> list[str]:
    return [img.proto.imgs[0].caption for img in at.image if img.proto.imgs[0].caption]


def test_upload_real_photo_and_a_bad_file(monkeypatch, artifacts_dir, face_photos):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    photo = face_photos.path("astronaut")
    at = open_page(UPLOAD)
    no_exception(at)
    assert "Upload one or more images" in texts(at.info)
    at.file_uploader(key="uploads").set_value([(photo.name, photo.read_bytes(), "image/jpeg"),
                                               ("holiday.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")]).run()
    no_exception(at)
    assert "Upload one or more images" not in texts(at.info)  # the hint gave way to the progress box
    assert [s.label for s in at.status] == ["Analysed 2 image(s)"] and at.status[0].state == "complete"
    assert "holiday.jpg" in texts(at.error)  # the bad file has its own error ...
    assert "Face #1:" in texts(at.markdown)  # ... and the photo was still processed
    assert image_captions(at) == ["512x512 px"] and len(at.get("plotly_chart")) == 1
    table = at.dataframe[0].value  # fits a narrow window: no box or probability columns ...
    assert list(table.columns) == ["file", "face", "label", "confidence"]
    assert list(table["file"].unique()) == [photo.name]
    probabilities = at.dataframe[1].value  # ... they are in their own table, in an expander
    assert list(probabilities.columns) == ["file", "face", *EMOTIONS]
    assert len(at.download_button) == 2

    at.toggle[0].set_value(False).run()  # test-time augmentation off still works
    no_exception(at)
    assert "Face #1:" in texts(at.markdown)


def test_upload_uncertain_policy_and_explanations(monkeypatch, artifacts_dir, face_photos, tmp_path):
    """Off by default; with the policy on, the slider starts at the model's own calibrated default (here a copy of the
    shipped model whose default is 0.70, so a fixed 0.50 cannot pass, and whose temperature 2.0 keeps the smile's
    confidence under the slider's top), and with a threshold above the face's confidence,
    the face is "uncertain" on the page, in the table and in the downloads. The explanation toggle shows the Grad-CAM
    of the predicted class over the face crop, and the class picker shows it for another class."""
    from fer_core.model.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.model.onnx_file import write_onnx_beside

    own = tmp_path / "artifacts"
    own.mkdir()
    for f in artifacts_dir.iterdir():
        if f.name not in ("model.pt", "model.onnx"):
            (own / f.name).write_bytes(f.read_bytes())
    model, preprocess, names, meta = load_checkpoint(artifacts_dir / "model.pt")
    save_checkpoint(own / "model.pt", model, preprocess, {**meta, "uncertain_below": 0.70, "temperature": 2.0}, names)
    write_onnx_beside(own / "model.pt")
    artifacts_dir = own
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    photo = face_photos.path("astronaut")
    at = open_page(UPLOAD)
    assert at.toggle(key="upload_uncertain_on").value is False and at.toggle(key="explain").value is False
    at.file_uploader(key="uploads").set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    no_exception(at)
    assert "**Face #1: happy**" in texts(at.markdown)
    assert not [s for s in at.selectbox if s.label == "Explain"]  # explanations are off by default

    at.toggle(key="upload_uncertain_on").set_value(True).run()
    default = Predictor.from_checkpoint(artifacts_dir / "model.pt").uncertain_below_for(tta=True)
    start = at.slider(key="upload_uncertain_threshold").value  # the model's calibrated default, to the slider's step
    assert default == pytest.approx(0.70) and start == pytest.approx(0.70)
    at.slider(key="upload_uncertain_threshold").set_value(0.95).run()
    no_exception(at)
    assert "**Face #1: uncertain (most likely happy)**" in texts(at.markdown)
    assert list(at.dataframe[0].value["label"]) == ["uncertain"]
    result = next(r for k, r in at.session_state["_upload_results"].items() if 0.95 in k)
    assert result.labels() == ["uncertain"]

    at.toggle(key="explain").set_value(True).run()
    no_exception(at)
    picker = next(s for s in at.selectbox if s.label == "Explain")
    assert picker.value == "happy"  # the predicted class first
    heat = next(img for img in at.image if img.proto.imgs[0].caption.startswith("Where the model saw"))
    assert heat.proto.imgs[0].caption.startswith("Where the model saw happy")
    picker.set_value("surprise").run()
    no_exception(at)
    captions = [img.proto.imgs[0].caption for img in at.image]
    assert any(c.startswith("Where the model saw surprise") for c in captions)
    assert len(next(iter(at.session_state["_upload_heatmaps"].values()))) == len(EMOTIONS)  # computed once


def test_upload_results_are_not_recomputed_on_a_rerun(monkeypatch, artifacts_dir, face_photos):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    photo = face_photos.path("astronaut_head")
    at = open_page(UPLOAD)
    at.file_uploader(key="uploads").set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    first = next(iter(at.session_state["_upload_results"].values()))
    at.run()  # any click reruns the page
    no_exception(at)
    assert not at.status  # nothing left to analyse: no progress box
    assert next(iter(at.session_state["_upload_results"].values())) is first


def test_upload_face_detector_choice(monkeypatch, artifacts_dir, face_photos):
    """RetinaFace (landmarks, aligned crops) by default; the Haar fallback one select box away."""
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    photo = face_photos.path("astronaut")
    at = open_page(UPLOAD)
    assert at.selectbox(key="detector").value == "retinaface"
    at.file_uploader(key="uploads").set_value((photo.name, photo.read_bytes(), "image/jpeg")).run()
    no_exception(at)
    def landmarks(detector: str) -> list[int]:  # landmark counts of the faces found with that detector
        results = at.session_state["_upload_results"].items()
        return [len(f.face.landmarks) for key, r in results if detector in key for f in r.faces]

    assert landmarks("retinaface") == [5]
    at.selectbox(key="detector").set_value("haar").run()
    no_exception(at)
    assert "Face #1:" in texts(at.markdown)
    assert landmarks("haar") == [0]  # Haar gives boxes only


def test_upload_group_photo_numbers_faces_left_to_right_in_a_grid(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(UPLOAD)
    at.file_uploader(key="uploads").set_value(("group.jpg", jpeg_bytes(group_photo()), "image/jpeg")).run()
    no_exception(at)
    faces = [m.value for m in at.markdown if m.value.startswith("**Face #")]
    assert [f.split(":")[0] for f in faces] == ["**Face #1", "**Face #2", "**Face #3"]
    xs = [int(f.split("at x=")[1].split(",")[0]) for f in faces]
    assert xs == sorted(xs) and xs[0] < 300 < xs[1] < 600 < xs[2]
    assert list(at.dataframe[0].value["face"]) == [1, 2, 3]
    assert len(at.get("plotly_chart")) == 3
    # The three faces' cells are side by side in one wrapping row (not one long column below the image).
    grids = [b for b in blocks(at.main) if getattr(b.proto, "flex_container", None) and b.proto.flex_container.wrap
             and b.proto.flex_container.direction == BlockProto.FlexContainer.HORIZONTAL
             and [isinstance(c, Block) and bool(c.get("plotly_chart")) for c in b.children.values()] == [True] * 3]
    assert len(grids) == 1


def test_upload_without_face_offers_the_whole_image(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(UPLOAD)
    blank = cv2.imencode(".png", np.full((200, 300), 128, np.uint8))[1].tobytes()
    at.file_uploader(key="uploads").set_value(("wall.png", blank, "image/png")).run()
    no_exception(at)
    assert "No face found" in texts(at.warning)
    at.checkbox[0].check().run()
    no_exception(at)
    assert "whole image" in texts(at.markdown) and "Face #1:" in texts(at.markdown)


def test_small_face_crop_is_one_face_shown_enlarged(monkeypatch, artifacts_dir, face_photos):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    crop = cv2.resize(face_photos.arrays["astronaut_head"][40:190, 20:170], (48, 48), interpolation=cv2.INTER_AREA)
    at = open_page(UPLOAD)
    at.file_uploader(key="uploads").set_value(("face48.png", cv2.imencode(".png", crop)[1].tobytes(),
                                               "image/png")).run()
    no_exception(at)
    assert not at.warning and texts(at.markdown).count("Face #") == 1  # one face, without asking
    assert image_captions(at) == ["48x48 px, shown 5x enlarged"]
    result = next(iter(at.session_state["_upload_results"].values()))
    assert result.annotated.shape[:2] == (240, 240)


@pytest.mark.parametrize("name", ["animated.gif", "animated_gif_renamed.png"])
def test_animated_gif_is_analysed_on_its_first_frame_with_a_note(monkeypatch, artifacts_dir, face_photos, name):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    frames = [Image.fromarray(face_photos.arrays["astronaut_head"]), Image.new("RGB", (192, 240), (90, 90, 90))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    at = open_page(UPLOAD)
    at.file_uploader(key="uploads").set_value((name, buf.getvalue(), "image/gif")).run()
    no_exception(at)
    assert not at.error, texts(at.error)
    assert "2 frames" in texts(at.info) and "only the first frame" in texts(at.info)
    assert "Face #1:" in texts(at.markdown)  # the face of the first frame, not the blank second frame


# ---- evaluation -----------------------------------------------------------------------------------

def test_evaluation_page_shows_shipped_results(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(EVALUATION)
    no_exception(at)
    shipped = json.loads((artifacts_dir / "eval_validation.json").read_text())
    assert f"{shipped['accuracy']:.1%}" in [m.value for m in at.metric]
    assert "generated test set" in texts(at.caption)
    charts = at.get("plotly_chart")
    # confusion matrix, per-class F1, reliability diagram, confidence histograms, training curves
    assert len(charts) == 5
    report = at.dataframe[0].value
    assert list(report["class"]) == [*EMOTIONS, "macro avg", "weighted avg"]
    at.radio(key="shipped_cm_mode").set_value("Row-normalised").run()
    no_exception(at)


def test_evaluation_page_shows_calibration_before_and_after(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(EVALUATION)
    no_exception(at)
    shipped = json.loads((artifacts_dir / "eval_validation.json").read_text())
    metrics = {m.label: m.value for m in at.metric}
    t = shipped["temperature"]
    assert metrics[f"ECE calibrated (T = {t:.2f})"] == f"{shipped['ece']:.3f}"
    assert metrics["ECE uncalibrated (T = 1)"] == f"{shipped['uncalibrated']['ece']:.3f}"
    assert metrics["NLL uncalibrated (T = 1)"] == f"{shipped['uncalibrated']['nll']:.3f}"
    assert "Calibration: can the probabilities be trusted?" in texts(at.subheader)
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    reliability = next(f for f in figures if f["layout"]["title"]["text"] == "Reliability diagram")
    names = [trace.get("name") for trace in reliability["data"]]
    assert "uncalibrated (T = 1)" in names and f"calibrated (T = {t:.2f})" in names
    counts = next(trace for trace in reliability["data"] if trace["type"] == "bar")["y"]
    assert sum(counts) == shipped["n_faces_found"]  # the bin counts cover every classified face
    assert any(f["layout"]["title"]["text"] == "Confidence per predicted class" for f in figures)
    # The table of the shipped calibration report: every split, with and without TTA, before and after.
    table = at.dataframe[1].value
    report = json.loads((artifacts_dir / "calibration.json").read_text())
    assert set(table["split"]) == set(report["splits"]) >= {"validation-fit", "validation-heldout", "cfee-test"}
    assert {"ECE before", "ECE after", "NLL before", "NLL after"} <= set(table.columns)


def test_evaluation_page_without_artifacts_says_how_to_create_them(monkeypatch, tmp_path):
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(EVALUATION)
    no_exception(at)
    info = texts(at.info)
    assert "python -m training.evaluate" in info and "python -m training.train" in info


def test_evaluate_own_zip_then_drill_into_a_cell(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(EVALUATION)
    data = make_zip({f"my_faces/{name}/{i}.png": face_png(label, seed=i)
                     for label, name in enumerate(EMOTIONS) for i in range(2)})
    at.file_uploader(key="own_zip").set_value(("my_faces.zip", data, "application/zip")).run()
    at.button(key="own_zip_go").click().run()
    no_exception(at)
    assert not at.error, texts(at.error)
    assert "my_faces.zip" in texts(at.subheader)
    # the own run adds its confusion matrix, F1 chart, reliability diagram and confidence histograms
    assert len(at.get("plotly_chart")) == 9
    assert "Calibration: can the probabilities be trusted?" in [s.value for s in at.subheader][-3:]  # then 'Browse the mistakes', 'Suspicious labels'
    records = at.session_state["own_eval"]["records"]
    assert len(records) == 14 and all(r["path"].startswith("my_faces/") for r in records)
    true, pred = records[0]["true"], records[0]["predicted"]
    at.selectbox(key="own_true").set_value(true).run()
    at.selectbox(key="own_pred").set_value(pred).run()
    no_exception(at)
    in_cell = [r for r in records if (r["true"], r["predicted"]) == (true, pred)]
    assert len(at.image) == len(in_cell)  # one picture per image of the chosen cell, read back from the zip
    assert f"{len(in_cell)} image(s) of true class" in texts(at.caption)
    # Explanations: beside each image, the Grad-CAM of the true class and of the predicted class.
    at.toggle(key="own_explain").set_value(True).run()
    no_exception(at)
    assert len(at.image) == 2 * len(in_cell)
    pairs = [img.proto.imgs[0] for img in at.image if img.proto.imgs[0].caption]
    assert len(pairs) == len(in_cell) and all(p.caption.startswith(f"{true} ") and f"| {pred} " in p.caption
                                              for p in pairs)
    assert len(at.session_state["_explanations"]) == len(in_cell)


@pytest.mark.parametrize("members, message", [
    ({"../happy/evil.png": b"x", "happy/a.png": b"x"}, "outside"),
    ({"bored/a.png": b"x"}, "bored"),
    ({"a.png": b"x"}, "layout"),
])
def test_bad_zip_gets_a_clear_error(monkeypatch, artifacts_dir, members, message):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    at = open_page(EVALUATION)
    at.file_uploader(key="own_zip").set_value(("bad.zip", make_zip(members), "application/zip")).run()
    at.button(key="own_zip_go").click().run()
    no_exception(at)
    assert message in texts(at.error)


def test_server_folders_are_off_unless_the_operator_allows_them(monkeypatch, artifacts_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    monkeypatch.delenv("FER_ALLOW_SERVER_FOLDERS", raising=False)
    at = open_page(EVALUATION)
    no_exception(at)
    assert not at.text_input and not any(b.key == "own_folder_go" for b in at.button)
    assert "FER_ALLOW_SERVER_FOLDERS=1" in texts(at.info)
    assert at.file_uploader(key="own_zip")  # a zip can still be evaluated


def test_evaluate_folder_on_the_server(monkeypatch, artifacts_dir, labelled_dir, tmp_path):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    monkeypatch.setenv("FER_ALLOW_SERVER_FOLDERS", "1")
    at = open_page(EVALUATION)
    box = at.text_input(key="own_folder")
    assert box.placeholder.startswith("e.g. ") and not Path(box.placeholder.removeprefix("e.g. ")).exists()
    # Errors name nothing of the server's files: a missing path and a file read alike, sub-folders are not listed.
    (tmp_path / "notes.txt").write_text("private")
    (tmp_path / "private_scans").mkdir()
    errors = []
    for path in (tmp_path / "missing", tmp_path / "notes.txt", tmp_path):
        at.text_input(key="own_folder").input(str(path)).run()
        at.button(key="own_folder_go").click().run()
        no_exception(at)
        errors.append(texts(at.error).replace(str(path), "<path>"))
    assert errors[0] == errors[1] and "Not a readable folder" in errors[0]
    assert "private_scans" not in errors[2] and "notes.txt" not in errors[2] and "expression" in errors[2]
    at.text_input(key="own_folder").input(str(labelled_dir)).run()
    at.button(key="own_folder_go").click().run()
    no_exception(at)
    assert not at.error and f"{len(EMOTIONS) * 3:,}" in [m.value for m in at.metric]


def test_one_minimum_face_size_default_on_the_pages_and_the_clis(monkeypatch, artifacts_dir):
    from fer_core.predict import get_args_parser as predict_args
    from training.evaluate import get_args_parser as evaluate_args

    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    upload, evaluation = open_page(UPLOAD), open_page(EVALUATION)
    assert upload.sidebar.slider[0].label == "Minimum face size (pixels)" and upload.sidebar.slider[0].value == 20
    assert evaluation.slider(key="own_min_face").value == 20
    assert predict_args().parse_args(["x.jpg"]).min_face_size == 20
    assert evaluate_args().parse_args(["folder"]).min_face_size == 20


def test_evaluation_page_draws_its_headline_before_the_heavy_imports(artifacts_dir):
    """AppTest in a fresh process, timed: the headline numbers are drawn from the JSON alone, before scikit-learn
    (the evaluation code's dependency) is imported and before any chart is built."""
    probe = f"""
import json, sys, time
import streamlit as st
from streamlit.proto.Block_pb2 import Block as BlockProto
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block
start, seen, real_metric, real_chart = time.perf_counter(), {{}}, st.metric, st.plotly_chart
def metric(*args, **kwargs):
    seen.setdefault("metric_s", time.perf_counter() - start)
    seen.setdefault("sklearn_before_metric", "sklearn" in sys.modules)
    return real_metric(*args, **kwargs)
def chart(*args, **kwargs):
    seen.setdefault("chart_s", time.perf_counter() - start)
    return real_chart(*args, **kwargs)
st.metric, st.plotly_chart = metric, chart
at = AppTest.from_file({str(ROOT / EVALUATION)!r}, default_timeout={TIMEOUT}).run()
seen["total_s"] = time.perf_counter() - start
seen["exception"] = [str(e.value) for e in at.exception]
print(json.dumps(seen))
"""
    env = {**os.environ, ARTIFACTS_ENV: str(artifacts_dir), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not seen["exception"], seen
    assert seen["sklearn_before_metric"] is False
    assert seen["metric_s"] < seen["chart_s"] <= seen["total_s"]
    print(f"evaluation page, cold process: headline at {seen['metric_s']:.2f} s, first chart at "
          f"{seen['chart_s']:.2f} s, run done at {seen['total_s']:.2f} s")


def test_shipped_results_drill_down_reevaluates_the_local_folder(monkeypatch, artifacts_dir, labelled_dir):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    monkeypatch.setattr("fer_core.model.artifacts.LOCAL_VALIDATION_DIR", labelled_dir)  # stands in for FER2013 validation
    at = open_page(EVALUATION)
    button = next(b for b in at.button if "Evaluate the validation images again" in b.label)
    button.click().run()
    no_exception(at)
    assert "fresh evaluation" in texts(at.caption) and f"({len(EMOTIONS) * 3} images" in texts(at.caption)
    shown = next(c.value for c in at.caption if "image(s) of true class" in c.value)
    assert len(at.image) == min(int(shown.split()[0]), 24)
    # The re-evaluation is kept for the next session (e.g. after a page reload).
    again = open_page(EVALUATION)
    assert "fresh evaluation" in texts(again.caption)
    assert not any("Evaluate the validation images again" in b.label for b in again.button)


def test_home_with_corrupt_weights_says_what_to_do(monkeypatch, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"these are not weights")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page(HOME)
    no_exception(at)
    assert "Cannot read weights file" in texts(at.error)


def encoded_variants(photo: Path) -> list[tuple[str, bytes, str]]:
    """The same real photo as WebP, BMP, 16-bit TIFF, RGBA PNG, palette PNG and an EXIF-rotated portrait JPEG."""
    rgb = Image.open(photo).convert("RGB")
    out = []

    def save(name, img, fmt, mime, **kw):
        buf = io.BytesIO()
        img.save(buf, fmt, **kw)
        out.append((name, buf.getvalue(), mime))

    save("photo.webp", rgb, "WEBP", "image/webp", quality=95)
    save("photo.bmp", rgb, "BMP", "image/bmp")
    gray16 = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)  # mode I;16
    save("photo16.tiff", gray16, "TIFF", "image/tiff")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(255)
    save("photo_rgba.png", rgba, "PNG", "image/png")
    save("photo_palette.png", rgb.convert("P", palette=Image.Palette.ADAPTIVE), "PNG", "image/png")
    # Portrait (w x h+100) stored rotated on its side; EXIF orientation 6 says "turn 90 degrees clockwise to view".
    portrait = Image.new("RGB", (rgb.width, rgb.height + 100), (128, 128, 128))
    portrait.paste(rgb, (0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    save("photo_exif.jpg", portrait.transpose(Image.Transpose.ROTATE_90), "JPEG", "image/jpeg", exif=exif, quality=95)
    return out


def test_upload_formats_modes_and_exif_orientation(monkeypatch, artifacts_dir, face_photos):
    monkeypatch.setenv(ARTIFACTS_ENV, str(artifacts_dir))
    photo = face_photos.path("astronaut_head")
    files = encoded_variants(photo)
    at = open_page(UPLOAD)
    at.file_uploader(key="uploads").set_value(files).run()
    no_exception(at)
    assert not at.error, texts(at.error)
    assert texts(at.markdown).count("Face #1:") == len(files)  # a face in every variant
    width, height = Image.open(photo).size
    assert any(c.startswith(f"{width}x{height + 100} px") for c in image_captions(at))  # upright again
