"""Suspicious labels: cleanlab's ranking on synthetic probabilities with injected flips, the relabel CSV, the
measurement helpers, ``training.evaluate --label-issues`` and ``training.experiments.label_noise_check`` on a tiny folder."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fer_core.analysis.label_issues import (
    RELABEL_FIELDS,
    flag_quality,
    flip_labels,
    ranked_label_issues,
    relabel_csv,
    suspicious_labels,
)
from fer_core.labels import EMOTIONS

ROOT = Path(__file__).resolve().parent.parent


def confident_probabilities(labels: np.ndarray, rng: np.random.Generator, accuracy: float = 0.9) -> np.ndarray:
    """(N, 7) probabilities of a model that is right about ``accuracy`` of the time, mostly confidently."""
    n = len(labels)
    guess = np.where(rng.random(n) < accuracy, labels, rng.integers(0, 7, n))
    probs = rng.dirichlet(np.full(7, 0.5), n) * 0.3
    probs[np.arange(n), guess] += 0.7
    return probs / probs.sum(axis=1, keepdims=True)


def test_flipped_labels_are_ranked_first():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 7, 700)
    probs = confident_probabilities(truth, rng)
    noisy, flipped = flip_labels(truth, 0.1, 7, rng)
    assert flipped.sum() == 70 and np.all(noisy[flipped] != truth[flipped]) and np.all(noisy[~flipped] == truth[~flipped])
    ranked = ranked_label_issues(noisy, probs)
    given = probs[ranked, noisy[ranked]]
    assert np.all(np.diff(given) >= 0)  # self-confidence: the least probable given label first
    quality = flag_quality(ranked, flipped)
    assert quality["n_flipped"] == 70 and quality["top_k"] == 70
    assert quality["recall"] > 0.7 and quality["precision_top_k"] > 0.6
    clean = ranked_label_issues(truth, probs)
    assert len(clean) < len(ranked)  # the flips are what cleanlab finds


def test_flag_quality_counts():
    flipped = np.asarray([True, True, False, False, False, False, False, False, False, False])
    q = flag_quality([0, 5, 1], flipped, top_fraction=0.2)
    assert q == {"n_images": 10, "n_flipped": 2, "n_flagged": 3, "precision": pytest.approx(2 / 3), "recall": 1.0,
                 "top_k": 2, "precision_top_k": 0.5}
    assert flag_quality([], flipped)["precision"] == 0.0


def test_read_relabels_takes_the_no_rows():
    from fer_core.analysis.label_issues import read_relabels

    text = "rank,path,given,suggested,confidence,given_probability,keep\n1,a.png,sad,happy,0.9,0.01,no\n" \
           "2,b.png,sad,fear,0.8,0.02,yes\n3,c.png,fear,angry,0.7,0.03,\n4,d.png,fear,sad,0.7,0.03,No \n"
    assert read_relabels(text, EMOTIONS) == {"a.png": EMOTIONS.index("happy"), "d.png": EMOTIONS.index("sad")}
    with pytest.raises(ValueError, match="line 2: keep"):
        read_relabels("path,suggested,keep\na.png,happy,maybe\n", EMOTIONS)
    with pytest.raises(ValueError, match="lacks the column"):
        read_relabels("path,keep\n", EMOTIONS)


def test_tiny_or_bad_inputs():
    assert len(ranked_label_issues([3], np.full((1, 7), 1 / 7))) == 0
    with pytest.raises(ValueError, match="need"):
        ranked_label_issues([0, 1], np.ones((3, 7)) / 7)


def test_suspicious_labels_rows_and_the_editable_csv():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 7, 300)
    probs = confident_probabilities(truth, rng, accuracy=1.0)
    noisy, flipped = flip_labels(truth, 0.1, 7, rng)
    records = [{"path": f"{EMOTIONS[t]}/{i}.png", "true": EMOTIONS[t],
                "probabilities": {n: float(p[j]) for j, n in enumerate(EMOTIONS)}} for i, (t, p) in enumerate(zip(noisy, probs))]
    records.append({"path": "sad/no_face.png", "true": "sad", "probabilities": None})  # left out
    rows = suspicious_labels(records, EMOTIONS)
    assert rows and [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    first = rows[0]
    assert first["given"] == records[first["record"]]["true"] and first["suggested"] != first["given"]
    assert first["confidence"] > first["given_probability"] and first["keep"] == ""
    assert np.mean([flipped[r["record"]] for r in rows[:30]]) > 0.8
    table = list(csv.DictReader(io.StringIO(relabel_csv(rows).decode())))
    assert tuple(table[0]) == RELABEL_FIELDS and table[0]["path"] == first["path"] and table[0]["keep"] == ""
    assert relabel_csv([]).decode().strip() == ",".join(RELABEL_FIELDS)
    assert suspicious_labels([records[-1]], EMOTIONS) == []


def test_cleanlab_does_not_import_torch():
    """The app's install has no torch: cleanlab's ranking must not pull it in."""
    code = ("import sys; import fer_core.analysis.label_issues as l, numpy as np; "
            "l.ranked_label_issues(np.arange(20) % 2, np.tile([[0.6, 0.4], [0.3, 0.7]], (10, 1))); "
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> Path:
    """<dir>/<class>/<image>: 4 generated 48x48 faces per class."""
    import cv2
    from helpers import synthetic_face

    root = tmp_path_factory.mktemp("faces")
    for label, name in enumerate(EMOTIONS):
        (root / name).mkdir()
        for i in range(4):
            cv2.imwrite(str(root / name / f"{i}.png"), synthetic_face(label, seed=i))
    return root


def test_evaluate_writes_the_relabel_csv_and_the_noise_check_runs(face_folder, tmp_path, capsys):
    from training.evaluate import get_args_parser as evaluate_args
    from training.evaluate import main as evaluate
    from training.experiments.label_noise_check import get_args_parser as check_args
    from training.experiments.label_noise_check import main as check

    out = tmp_path / "issues.csv"
    evaluate(evaluate_args().parse_args([str(face_folder), "--no-tta", "--label-issues", str(out)]))
    assert "suspicious label(s) of 28 classified images" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert all(r["given"] in EMOTIONS and r["suggested"] in EMOTIONS and r["keep"] == "" for r in rows)
    assert all(Path(r["path"]).parent.name == r["given"] for r in rows)
    # Fed back: the rows marked keep = no are scored against their suggested label.
    decided = [{**r, "keep": "no"} for r in rows[:2]] + [{**r, "keep": "yes"} for r in rows[2:]]
    (tmp_path / "edited.csv").write_bytes(relabel_csv(decided))
    summary = evaluate(evaluate_args().parse_args([str(face_folder), "--no-tta", "--relabels", str(tmp_path / "edited.csv")]))
    before = evaluate(evaluate_args().parse_args([str(face_folder), "--no-tta"]))
    assert summary["accuracy"] == pytest.approx(before["accuracy"] + min(2, len(rows)) / 28)  # both now right
    result = check(check_args().parse_args(["--data", str(face_folder), "--flip", "0.25", "--seed", "0", "--no-tta",
                                            "--json", str(tmp_path / "check.json")]))
    assert result["n_flipped"] == 7 and result["n_images"] == 28
    assert "precision among the top-ranked 7 (25%)" in capsys.readouterr().out


def test_evaluation_page_lists_suspicious_labels_with_an_editable_csv(monkeypatch, tmp_path):
    """Own data on the evaluation page: "Find suspicious labels" shows the flagged images (given -> suggested) and a
    relabel table whose 'keep' column can be edited and downloaded."""
    import cv2
    from helpers import make_zip, synthetic_face
    from streamlit.testing.v1 import AppTest

    from fer_core.analysis.model_files import MODELS_ENV
    from fer_core.model.artifacts import ARTIFACTS_ENV

    for name in ("model.pt", "model.onnx"):
        (tmp_path / name).symlink_to(ROOT / "artifacts" / name)
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    data = make_zip({f"{name}/{i}.png": cv2.imencode(".png", synthetic_face(label, seed=i))[1].tobytes()
                     for label, name in enumerate(EMOTIONS) for i in range(4)})
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.switch_page("pages/4_Evaluation.py")
    at.run()
    at.file_uploader(key="own_zip").set_value(("faces.zip", data, "application/zip")).run()
    at.button(key="own_zip_go").click().run()
    assert "Suspicious labels" in [s.value for s in at.subheader]
    images_before = len(at.image)
    at.button(key="own_issues_go").click().run()
    assert not at.exception and not at.error
    rows = at.session_state["own_eval"]["issues"]
    assert rows, "the model disagrees with many labels of these generated faces"
    shown = min(len(rows), 24)
    assert len(at.image) == images_before + shown
    captions = [img.proto.imgs[0].caption for img in at.image[images_before:]]
    assert captions[0].startswith(f"#1 given {rows[0]['given']} ") and f"→ {rows[0]['suggested']} " in captions[0]
    assert any(b.key == "own_issues_csv" for b in at.get("download_button"))
    at.toggle(key="own_issues_explain").set_value(True).run()
    assert not at.exception and len(at.image) == images_before + 2 * shown  # photo | given and suggested heatmaps
