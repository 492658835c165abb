"""FER+ crowd votes: majority labels for scoring (training.evaluate --labels), vote distributions as training targets
(training.train --fer-labels ferplus-votes), on tiny made-up data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import make_kaggle_tree

from fer_core.analysis.datasets import list_labelled_folder
from fer_core.analysis.votes import (
    VOTE_COLUMNS,
    VotesError,
    majority_labels,
    read_votes,
    vote_distributions,
    with_majority_labels,
)
from fer_core.labels import EMOTIONS
from training.recipe.fer_labels import vote_targets

ROOT = Path(__file__).resolve().parent.parent
HAPPY, NEUTRAL, ANGRY = EMOTIONS.index("happy"), EMOTIONS.index("neutral"), EMOTIONS.index("angry")


def counts(**votes) -> list[int]:
    return [votes.get(c, 0) for c in VOTE_COLUMNS]


def write_votes(path: Path, rows: dict[str, list[int]], bom: bool = False) -> Path:
    text = "file,original_label," + ",".join(VOTE_COLUMNS) + ",match_mad\n" + "".join(
        f"{name},{name.split('/')[0]}," + ",".join(map(str, c)) + ",0.5\n" for name, c in rows.items())
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


def test_majority_labels_leave_out_ties_and_non_emotions():
    table = np.array([counts(happiness=6, neutral=4), counts(neutral=5, sadness=5), counts(contempt=6, anger=4),
                      counts(NF=7, fear=3), counts(unknown=4, anger=3, disgust=3), counts(anger=9, unknown=1)])
    assert majority_labels(table).tolist() == [HAPPY, -1, -1, -1, -1, ANGRY]


def test_vote_distributions_drop_contempt_unknown_and_not_a_face():
    dist = vote_distributions(np.array([counts(happiness=6, neutral=2, contempt=2), counts(contempt=5, NF=5)]))
    assert dist[0, HAPPY] == pytest.approx(0.75) and dist[0, NEUTRAL] == pytest.approx(0.25)
    assert dist[0].sum() == pytest.approx(1.0) and np.isnan(dist[1]).all()


def test_vote_targets_mix_the_label_with_the_votes():
    labels = np.array([ANGRY, ANGRY])
    table = np.array([counts(neutral=8, anger=2), counts(unknown=10)])
    hard, voted = vote_targets(labels, table, 1.0)
    assert voted == 1 and (hard.argmax(1) == ANGRY).all() and hard.max() == 1.0
    soft, _ = vote_targets(labels, table, 0.0)
    assert soft[0, NEUTRAL] == pytest.approx(0.8) and soft[1, ANGRY] == 1.0  # no emotion vote: its own label
    half, _ = vote_targets(labels, table, 0.5)
    assert half[0, ANGRY] == pytest.approx(0.6) and half[0, NEUTRAL] == pytest.approx(0.4)
    assert np.allclose(half.sum(1), 1.0)
    with pytest.raises(ValueError):
        vote_targets(labels, table, 1.5)


def test_read_votes_accepts_a_bom_and_refuses_other_files(tmp_path):
    path = write_votes(tmp_path / "v.csv", {"angry/a.jpg": counts(anger=10)}, bom=True)
    assert read_votes(path).names == ["angry/a.jpg"]
    (tmp_path / "bad.csv").write_text("file,label\nangry/a.jpg,angry\n")
    with pytest.raises(VotesError, match="no column"):
        read_votes(tmp_path / "bad.csv")
    (tmp_path / "nan.csv").write_text("file," + ",".join(VOTE_COLUMNS) + "\nangry/a.jpg," + ",".join("x" * 10) + "\n")
    with pytest.raises(VotesError, match="numbers"):
        read_votes(tmp_path / "nan.csv")
    (tmp_path / "latin.csv").write_bytes(b"file\xe9\n")
    with pytest.raises(VotesError, match="UTF-8"):
        read_votes(tmp_path / "latin.csv")
    with pytest.raises(VotesError, match="not a file"):
        read_votes(tmp_path)


@pytest.fixture
def tiny_with_votes(tmp_path):
    """A tiny folder of 7 classes x 2 faces, and votes that call the angry faces neutral and leave one out."""
    root = make_kaggle_tree(tmp_path / "tiny", per_class=2)
    rows = {}
    for split in ("train", "validation"):
        for c in EMOTIONS:
            for i, ext in ((0, ".jpg"), (1, ".png")):
                key = f"{c}/{split}_{i}{ext}"
                rows[key] = counts(neutral=7, anger=3) if c == "angry" else counts(
                    **{VOTE_COLUMNS[[EMOTIONS.index(x) for x in ("neutral", "happy", "surprise", "sad", "angry",
                                                                  "disgust", "fear")].index(EMOTIONS.index(c))]: 10})
        rows.pop(f"fear/{split}_0.jpg")  # a face FER+ dropped: no votes
    return root, write_votes(tmp_path / "train_votes.csv", {k: v for k, v in rows.items() if "train_" in k}), \
        write_votes(tmp_path / "validation_votes.csv", {k: v for k, v in rows.items() if "validation_" in k})


def test_majority_labels_of_a_folder(tiny_with_votes):
    root, _, val_votes = tiny_with_votes
    files, report = with_majority_labels(list_labelled_folder(root / "validation"), read_votes(val_votes))
    assert report["images"] == 14 and report["kept"] == 13 and report["no_votes"] == 1 and report["relabelled"] == 2
    assert {Path(p).parent.name for p, y in zip(files.paths, files.labels) if y == NEUTRAL} == {"angry", "neutral"}


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_evaluate_scores_against_the_majority(tiny_with_votes, tmp_path):
    root, _, val_votes = tiny_with_votes
    proc = run("-m", "training.evaluate", root / "validation", "--labels", val_votes, "--no-tta",
               "--json", tmp_path / "e.json")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "e.json").read_text())
    assert s["n_images"] == 13 and s["label_source"]["labels"] == "FER+ majority vote"
    assert s["per_class"]["neutral"]["support"] == 4  # the two neutral faces and the two angry ones
    proc = run("-m", "training.evaluate", root / "validation", "--labels", tmp_path / "missing.csv")
    assert proc.returncode == 1 and "not a file" in proc.stderr and "Traceback" not in proc.stderr


def test_train_on_votes_records_them_in_the_card(tiny_with_votes, tmp_path):
    root, train_votes, _ = tiny_with_votes
    common = ("-m", "training.train", "--data", root, "--epochs", 3, "--batch-size", 4, "--variant", "tiny",
              "--cache-dir", "", "--threads", 1, "--fer-labels", "ferplus-votes", "--votes", train_votes)
    proc = run(*common, "--fer-label-weight", 0.25, "--out", tmp_path / "out", "--work-dir", tmp_path / "work")
    assert proc.returncode == 0, proc.stderr
    labels = json.loads((tmp_path / "out" / "model_card.json").read_text())["data"]["fer2013_labels"]
    assert labels["labels"] == "ferplus-votes" and labels["fer2013_label_weight"] == 0.25
    assert labels["faces"] == 14 and labels["faces_with_votes"] == 13
    assert labels["target_argmax_agrees_with_fer2013"] == pytest.approx(12 / 14, abs=1e-4)  # the two angry faces: neutral
    proc = run(*common, "--mixup-alpha", 0.2, "--out", tmp_path / "o2", "--work-dir", tmp_path / "w2")
    assert proc.returncode == 1 and "choose one" in proc.stderr and "Traceback" not in proc.stderr
