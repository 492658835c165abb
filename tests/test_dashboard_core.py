"""The fer_core modules behind the dashboard: zip safety, report tables, figures, per-file results, artifacts."""

from __future__ import annotations

import csv
import io
import json
import zipfile

import cv2
import numpy as np
import pytest
from helpers import group_photo, jpeg_bytes, make_zip
from PIL import Image
from sklearn.metrics import classification_report

from fer_core.analysis.archive import (
    ArchiveError,
    evaluate_zip,
    extracted_labelled_zip,
    list_labelled_zip,
    record_image,
)
from fer_core.analysis.metrics import classification_summary
from fer_core.analysis.photos import analyse_image, face_rows, frame_count, results_csv, results_json
from fer_core.analysis.report import NO_FACE, cell_records, classification_table, most_confused, normalize_rows
from fer_core.faces.detection import Face, make_detector
from fer_core.faces.drawing import annotate, display_scale, draw_probability_bars
from fer_core.faces.preprocessing import to_gray
from fer_core.labels import EMOTIONS, UnknownClassError
from fer_core.model.artifacts import ArtifactError, model_overview, read_eval_summary, read_history, read_model_card
from fer_core.model.inference import FacePrediction
from fer_core.ui.plots import confusion_matrix_figure, per_class_f1_figure, probability_bars, training_curves_figure


def face_png(label: int, seed: int = 0) -> bytes:
    """A small generated 48x48 gray "face" (a label-dependent disc on noise), PNG-encoded."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (48, 48), dtype=np.uint8)
    cv2.circle(img, (24, 24), 6 + 2 * label, 200, -1)
    return cv2.imencode(".png", img)[1].tobytes()


def labelled_members(prefix: str = "", classes=("happy", "sad", "Surprise"), per_class: int = 2) -> dict[str, bytes]:
    return {f"{prefix}{c}/img_{i}.png": face_png(EMOTIONS.index(c.lower()), seed=i)
            for c in classes for i in range(per_class)}


# ---- zip archives ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad_name", ["../happy/evil.png", "happy/../../evil.png", "/etc/happy/evil.png",
                                      "C:/happy/evil.png", "happy\\..\\evil.png"])
def test_zip_with_path_tricks_is_refused(bad_name):
    data = make_zip({**labelled_members(), bad_name: face_png(3)})
    with pytest.raises(ArchiveError):
        with extracted_labelled_zip(data):
            pass


def test_zip_with_unknown_class_is_refused_naming_the_folder():
    data = make_zip({**labelled_members(), "bored/img.png": face_png(0)})
    with pytest.raises(UnknownClassError, match="bored"):
        with extracted_labelled_zip(data):
            pass


def test_zip_with_unexpected_layout_or_no_images_is_refused():
    with pytest.raises(ArchiveError, match="layout"):
        list_labelled_zip(zipfile.ZipFile(io.BytesIO(make_zip({"happy/a.png": face_png(3), "loose.png": face_png(3)}))))
    with pytest.raises(ArchiveError, match="no images"):
        with extracted_labelled_zip(make_zip({"happy/readme.txt": b"hello"})):
            pass
    with pytest.raises(ArchiveError, match="zip"):
        with extracted_labelled_zip(b"this is not a zip"):
            pass


def test_zip_is_extracted_to_a_temporary_folder_that_is_removed():
    data = make_zip({**labelled_members(prefix="my_set/"), "__MACOSX/my_set/happy/._img_0.png": b"junk",
                     "my_set/.DS_Store": b"junk"})
    with extracted_labelled_zip(data) as (files, members):
        paths = list(files.paths)
        assert all(p.is_file() for p in paths)
        assert len(members) == len(files) == 6
        assert sorted({EMOTIONS[i] for i in files.labels}) == ["happy", "sad", "surprise"]  # "Surprise" mapped by name
    assert not any(p.exists() for p in paths)
    assert not paths[0].parent.exists()


def test_good_zip_evaluates_and_records_name_the_members(predictor):
    data = make_zip({**labelled_members(), "sad/broken.png": b"not an image"})
    result = evaluate_zip(predictor, data, tta=False, split="my zip")
    s = result.summary
    assert s["n_images"] == 7 and s["n_unreadable"] == 1 and s["split"] == "my zip"
    assert sum(map(sum, s["confusion_matrix"])) == 6  # the unreadable image counts as wrong, not in the matrix
    names = {r["path"] for r in result.records}
    assert "sad/broken.png" in names and "happy/img_0.png" in names
    broken = next(r for r in result.records if r["path"] == "sad/broken.png")
    assert broken["predicted"] is None and broken["error"].startswith("sad/broken.png")
    good = next(r for r in result.records if r["path"] == "happy/img_0.png")
    assert record_image(good, data).shape == (48, 48, 3)  # read back from the zip in memory


# ---- report tables --------------------------------------------------------------------------------

def test_classification_table_matches_sklearn_averages():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 300)  # class 6 (neutral) absent, as in a partial user data set
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(0, 7, 300))
    summary = classification_summary(y_true, y_pred, EMOTIONS)
    rows = {r["class"]: r for r in classification_table(summary["per_class"], EMOTIONS)}
    present = sorted(set(y_true.tolist()))
    ref = classification_report(y_true, y_pred, labels=present, target_names=[EMOTIONS[i] for i in present],
                                output_dict=True, zero_division=0)
    for avg in ("macro avg", "weighted avg"):
        for k, rk in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert rows[avg][k] == pytest.approx(ref[avg][rk])
        assert rows[avg]["support"] == 300
    assert rows["macro avg"]["f1"] == pytest.approx(summary["macro_f1"])
    assert list(rows)[:7] == list(EMOTIONS)


def test_row_normalisation_cells_and_most_confused():
    assert normalize_rows([[3, 1], [0, 0]]) == [[0.75, 0.25], [0.0, 0.0]]
    assert most_confused([[5, 1, 0], [4, 5, 0], [0, 2, 5]], ["a", "b", "c"]) == ("b", "a")
    records = [{"true": "sad", "predicted": "fear", "probabilities": {"fear": 0.4, "sad": 0.3}},
               {"true": "sad", "predicted": "fear", "probabilities": {"fear": 0.9, "sad": 0.1}},
               {"true": "sad", "predicted": None, "probabilities": None},
               {"true": "happy", "predicted": "fear", "probabilities": {"fear": 0.5}}]
    chosen = cell_records(records, "sad", "fear")
    assert [r["probabilities"]["fear"] for r in chosen] == [0.9, 0.4]  # most confident first
    assert len(cell_records(records, "sad", NO_FACE)) == 1


# ---- figures --------------------------------------------------------------------------------------

def test_figures_show_the_numbers_in_label_order():
    probs = dict(zip(reversed(EMOTIONS), np.linspace(0.01, 0.3, 7)))
    bars = probability_bars(probs)
    assert list(bars.data[0].y) == list(EMOTIONS)
    cm = [[8, 2], [1, 3]]
    counts = confusion_matrix_figure(cm, ["happy", "sad"])
    assert counts.data[0].z[0] == (8, 2) or list(counts.data[0].z[0]) == [8, 2]
    norm = confusion_matrix_figure(cm, ["happy", "sad"], normalize=True)
    assert [list(r) for r in norm.data[0].z] == [[0.8, 0.2], [0.25, 0.75]]
    assert list(norm.data[0].text[0]) == ["80%", "20%"]
    f1 = per_class_f1_figure({"sad": {"f1": 0.5, "support": 3}, "happy": {"f1": 0.8, "support": 4}})
    assert list(f1.data[0].x) == ["happy", "sad"]
    import pandas as pd

    history = pd.DataFrame({"epoch": [1, 2], "lr": [0.1, 0.1], "train_loss": [2.0, 1.5], "train_acc": [0.3, 0.5],
                            "val_loss": [1.9, 1.6], "val_acc": [0.35, 0.45], "val_macro_f1": [0.2, 0.3],
                            "seconds": [10, 10]})
    assert len(training_curves_figure(history).data) == 5


# ---- per-file results of the upload page ----------------------------------------------------------

def test_analyse_real_photo_and_bad_file_then_export(predictor, face_photos):
    photo = face_photos.path("astronaut")
    detector = make_detector()
    steps = []
    good = analyse_image(predictor, detector, photo.read_bytes(), photo.name, tta=False,
                         progress=lambda done, total: steps.append((done, total)))
    bad = analyse_image(predictor, detector, b"GIF89a truncated", "broken.gif")
    blank = analyse_image(predictor, detector, cv2.imencode(".png", np.full((120, 160), 128, np.uint8))[1].tobytes(),
                          "wall.png")
    assert good.error is None and len(good.faces) == 1 and good.annotated.shape == (512, 512, 3)
    assert not np.array_equal(good.annotated, cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB))  # boxes drawn
    assert steps == [(0, 1), (1, 1)]  # found, then classified: the page's per-face progress
    assert good.frames == 1 and [t.shape for t in good.thumbnails] == [(96, 96, 3)]
    assert bad.error is not None and "broken.gif" in bad.error and not bad.faces
    assert blank.error is None and blank.faces == []

    rows = face_rows([good, bad, blank], predictor.class_names)
    assert {r["file"] for r in rows} == {photo.name} and rows[0]["face"] == 1
    csv_rows = list(csv.DictReader(io.StringIO(results_csv([good, bad, blank], predictor.class_names).decode())))
    assert list(csv_rows[0]) == ["file", "face", "x", "y", "w", "h", "label", "confidence", "whole_image", *EMOTIONS,
                                 "error"]
    assert [r["file"] for r in csv_rows] == [photo.name, "broken.gif", "wall.png"]  # every file has its row
    assert csv_rows[0]["face"] == "1" and csv_rows[0]["label"] in EMOTIONS and csv_rows[0]["error"] == ""
    assert csv_rows[1]["face"] == "" and csv_rows[1]["label"] == "" and csv_rows[1]["error"] == bad.error
    assert csv_rows[2]["face"] == "" and csv_rows[2]["label"] == "" and csv_rows[2]["error"] == ""
    doc = json.loads(results_json([good, bad]))
    assert doc[0]["faces"][0]["label"] in EMOTIONS and len(doc[0]["faces"][0]["probabilities"]) == 7
    assert doc[0]["frames"] == 1
    assert doc[1] == {"file": "broken.gif", "width": None, "height": None, "frames": None, "error": bad.error,
                      "faces": []}


def test_faces_are_numbered_left_to_right_in_drawing_and_exports(predictor):
    group = group_photo()
    detector = make_detector()
    largest_first = [f.box[0] for f in detector.detect(to_gray(group))]
    assert largest_first != sorted(largest_first)  # the detector's own order is not left to right
    result = analyse_image(predictor, detector, jpeg_bytes(group), "group.jpg", tta=False)
    xs = [f.box[0] for f in result.faces]
    assert len(xs) == 3 and xs == sorted(xs)
    assert [r["x"] for r in face_rows([result], predictor.class_names)] == xs
    assert [f["box"][0] for f in json.loads(results_json([result]))[0]["faces"]] == xs
    # The caption "#1 ..." is drawn above the leftmost face.
    first = annotate(group, result.faces[:1])
    x, y, w, h = result.faces[0].box
    assert (first[max(0, y - 25):y, x:x + w] != group[max(0, y - 25):y, x:x + w]).any()


def test_animated_image_is_read_on_its_first_frame_and_counted(predictor, face_photos):
    frames = [Image.fromarray(face_photos.arrays["astronaut_head"]), Image.new("RGB", (192, 240), (90, 90, 90)),
              Image.new("RGB", (192, 240), (20, 20, 20))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    result = analyse_image(predictor, make_detector(), buf.getvalue(), "renamed.png", tta=False)
    assert result.error is None and result.frames == 3 and len(result.faces) == 1
    assert frame_count(face_photos.path("astronaut").read_bytes()) == 1


def _ink_columns(drawn: np.ndarray) -> np.ndarray:
    """Columns holding caption text (drawn in black on a plain gray image)."""
    return np.where((drawn == 0).all(axis=2).any(axis=0))[0]


def test_small_image_is_enlarged_for_display_with_a_whole_caption():
    face = FacePrediction(Face((0, 0, 48, 48)), {n: 1 / 7 for n in EMOTIONS}, "happy", 0.87, whole_image=True)
    out = annotate(np.full((48, 48, 3), 100, np.uint8), [face])
    assert out.shape == (240, 240, 3)  # 5x, nearest-neighbour
    assert display_scale(48, 48) == 5 and display_scale(512, 512) == 1 and display_scale(100, 2000) == 1
    ink = _ink_columns(out)
    assert ink.max() <= 240 - 3 and ink.max() - ink.min() > 120  # "#1 happy 87%" whole, not cut at the edge

    near_edge = FacePrediction(Face((250, 100, 48, 48)), {n: 1 / 7 for n in EMOTIONS}, "surprise", 0.9)
    ink = _ink_columns(annotate(np.full((300, 300, 3), 100, np.uint8), [near_edge]))
    assert ink.max() <= 300 - 3 and ink.min() < 250  # moved left of its box so that it fits


def test_probability_bars_on_the_video_print_whole_class_names():
    probabilities = {n: 0.1 for n in EMOTIONS}
    canvas = np.zeros((120, 200, 3), np.uint8)
    draw_probability_bars(canvas, probabilities, (0, 0))
    # "surprise" is printed in full: its last letter reaches past where the 7-letter "surpris" would end.
    row = list(EMOTIONS).index("surprise")
    band = canvas[row * 11:(row + 1) * 11]
    text_cols = np.where((band > 150).all(axis=2).any(axis=0))[0]
    full, cut = (cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, 0.32, 1)[0][0] for t in ("surprise", "surpris"))
    assert text_cols.max() >= 2 + cut and text_cols.max() <= 2 + full + 1


# ---- artifacts ------------------------------------------------------------------------------------

def test_artifact_readers_missing_broken_and_overview(tmp_path, predictor):
    assert read_model_card(tmp_path / "model_card.json") is None
    assert read_eval_summary(tmp_path / "eval.json") is None
    assert read_history(tmp_path / "history.csv") is None
    (tmp_path / "eval.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="JSON"):
        read_eval_summary(tmp_path / "eval.json")
    (tmp_path / "eval.json").write_text(json.dumps({"accuracy": 0.5}))
    with pytest.raises(ArtifactError, match="macro_f1"):
        read_eval_summary(tmp_path / "eval.json")
    (tmp_path / "history.csv").write_text("epoch,loss\n1,2\n")
    with pytest.raises(ArtifactError, match="val_acc"):
        read_history(tmp_path / "history.csv")

    info = model_overview(predictor, {"classes": list(EMOTIONS), "trained_at": "2026-01-02T03:04:05+00:00",
                                      "validation": {"val_acc": 0.7, "val_macro_f1": 0.65, "epoch": 30}})
    assert info["classes"] == list(EMOTIONS) and info["parameters"] > 100_000
    assert (info["val_acc"], info["val_macro_f1"], info["selected_epoch"]) == (0.7, 0.65, 30) and info["card_matches"]
    assert model_overview(predictor, None)["val_acc"] is None
    assert not model_overview(predictor, {"classes": ["a", "b"]})["card_matches"]
