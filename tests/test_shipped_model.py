"""The model the app ships with: its artifacts agree with each other, and its recorded accuracy still holds."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from fer_core.evaluation import evaluate_folder
from fer_core.labels import EMOTIONS
from fer_core.model import count_parameters

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _json(name: str) -> dict:
    path = ARTIFACTS / name
    assert path.is_file(), f"artifacts/{name} is missing"
    return json.loads(path.read_text())


def test_artifacts_describe_the_shipped_weights(predictor):
    card = _json("model_card.json")
    assert card["classes"] == list(EMOTIONS) == list(predictor.class_names)
    assert card["architecture"]["parameters"] == count_parameters(predictor.model)
    assert card["architecture"]["config"] == json.loads(json.dumps(predictor.model.config.to_dict()))
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


def test_shipped_weights_reproduce_their_recorded_validation_accuracy(predictor, fer_images_dir):
    recorded = _json("eval_validation.json")
    assert recorded["tta"] is True and recorded["n_images"] == 3589
    result = evaluate_folder(predictor, fer_images_dir / "validation", tta=True)
    assert result.summary["n_images"] == recorded["n_images"]
    assert abs(result.summary["accuracy"] - recorded["accuracy"]) <= 0.01, (
        f"validation accuracy {result.summary['accuracy']:.4f} vs recorded {recorded['accuracy']:.4f}")
    assert abs(result.summary["macro_f1"] - recorded["macro_f1"]) <= 0.01
