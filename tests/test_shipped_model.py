"""The model the app ships with: its artifacts agree with each other, and its recorded accuracy still holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from fer_core.analysis.evaluation import evaluate_folder
from fer_core.labels import EMOTIONS
from fer_core.model.calibration import expected_calibration_error, negative_log_likelihood
from fer_core.model.inference import probabilities_from_view_logits
from fer_core.model.network import XceptionConfig, count_parameters

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _json(name: str) -> dict:
    path = ARTIFACTS / name
    assert path.is_file(), f"artifacts/{name} is missing"
    return json.loads(path.read_text())


def test_artifacts_describe_the_shipped_weights(predictor):
    card = _json("model_card.json")
    assert card["classes"] == list(EMOTIONS) == list(predictor.class_names)
    assert card["architecture"]["parameters"] == count_parameters(predictor.model)
    # The card's config builds the shipped network (fields added later, e.g. strides, take their defaults).
    assert XceptionConfig.from_dict(card["architecture"]["config"]) == predictor.model.config
    assert card["preprocessing"] == predictor.preprocess.to_dict()
    history = pd.read_csv(ARTIFACTS / "history.csv")
    assert len(history) == card["training"]["epochs_run"]
    selected = card["training"]["selected_epoch"]
    if card["training"]["arguments"].get("select", "best") == "last":  # a fixed schedule: the last epoch ships
        assert selected == len(history)
    else:
        assert selected == int(history.loc[history["val_acc"].idxmax(), "epoch"])
    assert card["validation"]["val_acc"] == history.loc[history["epoch"] == selected, "val_acc"].item()
    assert (ARTIFACTS / "model.pt").stat().st_size < 20 * 2**20, "weights should stay a few MB"


@pytest.fixture(scope="module")
def validation_result(predictor, fer_images_dir):
    """The shipped model on FER2013 validation with TTA, as the app runs it (evaluated once for this module)."""
    return evaluate_folder(predictor, fer_images_dir / "validation", tta=True)


def test_shipped_weights_reproduce_their_recorded_validation_accuracy(validation_result):
    recorded = _json("eval_validation.json")
    assert recorded["tta"] is True and recorded["n_images"] == 3589
    result = validation_result
    assert result.summary["n_images"] == recorded["n_images"]
    assert abs(result.summary["accuracy"] - recorded["accuracy"]) <= 0.01, (
        f"validation accuracy {result.summary['accuracy']:.4f} vs recorded {recorded['accuracy']:.4f}")
    assert abs(result.summary["macro_f1"] - recorded["macro_f1"]) <= 0.01


def test_shipped_temperature_lowers_validation_ece(predictor, validation_result):
    """The shipped temperature is fitted on a mix (half of FER2013 validation and the whole-photo domains'
    calibration people, ``training.calibrate``): on the validation half it was not fitted on it lowers the expected
    calibration error and the NLL of the app's TTA probabilities, on all of validation the NLL (the ECE moves by
    less than half a point), and on both domains' test people, never trained or fitted on, the ECE."""
    s = validation_result.summary
    assert s["temperature"] == predictor.temperature != 1.0
    assert s["nll"] < s["uncalibrated"]["nll"] and s["ece"] < s["uncalibrated"]["ece"] + 0.005
    logits, labels = validation_result.view_logits, _labels(validation_result)
    _, held = train_test_split(np.arange(len(labels)), train_size=0.5, stratify=labels, random_state=0)
    before = probabilities_from_view_logits(logits[:, held], 1.0)
    after = probabilities_from_view_logits(logits[:, held], predictor.temperature)
    assert expected_calibration_error(after, labels[held]) < expected_calibration_error(before, labels[held])
    assert negative_log_likelihood(after, labels[held]) < negative_log_likelihood(before, labels[held])
    splits = _json("calibration.json")["splits"]
    recorded = splits["validation-heldout"]["tta"]
    assert abs(expected_calibration_error(after, labels[held]) - recorded["after"]["ece"]) < 0.005
    for people in ("cfee-test", "tfeid-test"):
        assert splits[people]["tta"]["after"]["ece"] < splits[people]["tta"]["before"]["ece"], people


def _labels(result) -> np.ndarray:
    """Class indices of the classified faces, in the order of ``result.view_logits``."""
    names = list(result.summary["labels"])
    return np.array([names.index(result.records[i]["true"]) for i in result.face_index])


def test_the_card_holds_the_per_domain_results_of_the_shipped_evaluations(tmp_path, monkeypatch):
    card = _json("model_card.json")
    rows = {row["eval_file"]: row for row in card["results"]["domains"]}
    assert set(rows) == {"eval_validation.json", "eval_validation_ferplus.json", "eval_cfee_test.json",
                         "eval_tfeid_test.json", "eval_photos.json"}
    for name, row in rows.items():  # the card says what the evaluation files say, nothing typed by hand
        evaluation = _json(name)
        assert row["accuracy"] == evaluation["accuracy"] and row["ece"] == evaluation["ece"]
        lowest = min(EMOTIONS, key=lambda c: evaluation["per_class"][c]["recall"])
        assert row["lowest_recall"] == {"class": lowest, "recall": evaluation["per_class"][lowest]["recall"]}
        # and which command wrote each of them, as `python -m training.evaluate` recorded it
        assert row["command"] == evaluation["command"]
        assert row["command"].startswith("python -m training.evaluate ") and f"artifacts/{name}" in row["command"]
    assert "CFEE" in rows["eval_cfee_test.json"]["domain"] and rows["eval_tfeid_test.json"]["faces_found"] == 195

    # the command that wrote them rewrites only that block of a card
    from training.results_table import write_card_results

    for name in ["model_card.json", *rows]:
        (tmp_path / name).write_text((ARTIFACTS / name).read_text())
    stripped = {k: v for k, v in card.items() if k != "results"}
    (tmp_path / "model_card.json").write_text(json.dumps(stripped))
    monkeypatch.setenv("FER_ARTIFACTS", str(tmp_path))
    written = write_card_results()
    again = json.loads((tmp_path / "model_card.json").read_text())
    assert {k: v for k, v in again.items() if k != "results"} == stripped
    assert again["results"]["domains"] == written == card["results"]["domains"]
