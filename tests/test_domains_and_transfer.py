"""Training on several whole-photo domains: person splits, doses, intensity blends, camera augmentation,
colour-to-grey variations, and the transfer protocol (training.crossdomain) end to end on tiny data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import jpeg_bytes, make_kaggle_tree, public_domain_faces

from fer_core.analysis.datasets import FaceArrays, LabelledFiles, person_of, split_by_person
from fer_core.labels import EMOTIONS
from training.recipe.augment import CAMERA, AugmentConfig, GreyVariation, augment_batch, camera_batch
from training.recipe.data_sources import DomainSpec, IntensityBlend, assemble
from training.recipe.loop import soft_cross_entropy

ROOT = Path(__file__).resolve().parent.parent
NEUTRAL, HAPPY = EMOTIONS.index("neutral"), EMOTIONS.index("happy")


def run(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def people_files(people: int, photos_each: int) -> LabelledFiles:
    paths = [Path(f"/x/happy/p{p}_{i}.jpg") for p in range(people) for i in range(photos_each)]
    return LabelledFiles(paths, np.full(len(paths), HAPPY))


def test_person_split_keeps_people_apart_and_test_people_fixed():
    files = people_files(40, 3)
    parts = {part: {person_of(p) for p in split_by_person(files, part, 0.3, calibration_fraction=0.2).paths}
             for part in ("train", "test", "calibration")}
    assert [len(parts[k]) for k in ("test", "calibration", "train")] == [12, 8, 20]
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["calibration"])
    assert not (parts["test"] & parts["calibration"])
    # the test people do not move when calibration people are set aside: evaluations stay comparable
    assert parts["test"] == {person_of(p) for p in split_by_person(files, "test", 0.3).paths}
    assert parts["train"] | parts["calibration"] == {person_of(p) for p in split_by_person(files, "train", 0.3).paths}


def test_domain_spec_reads_an_optional_dose():
    assert DomainSpec.parse("data/cfee") == DomainSpec(Path("data/cfee"), 0)
    assert DomainSpec.parse("data/cfee:1500") == DomainSpec(Path("data/cfee"), 1500)
    assert DomainSpec.parse("data/cfee:1500").name == "cfee"


def faces(n: int, label: int, people: list[str] | None = None, value: int = 0) -> FaceArrays:
    return FaceArrays(np.full((n, 48, 48), value, np.uint8), np.full(n, label),
                      people=None if people is None else np.asarray(people))


def test_each_source_gives_its_dose_per_epoch():
    fer = faces(100, HAPPY)
    domain = faces(10, NEUTRAL, [f"p{i % 3}" for i in range(10)])
    pool = assemble(fer, 30, [(DomainSpec(Path("d"), 25), domain)])
    assert pool.epoch_size == 55
    order = pool.epoch_order(torch.Generator().manual_seed(0))
    assert len(order) == 55
    from_domain = order[order >= 100]
    assert len(from_domain) == 25
    assert set(from_domain.tolist()) == set(range(100, 110))  # a dose above the size: every face at least twice
    assert len(set(order[order < 100].tolist())) == 30  # a dose below the size: a subset without repeats
    assert pool.epoch_class_counts()["neutral"] == 25 and pool.epoch_class_counts()["happy"] == 30
    assert [r["people"] for r in pool.report()] == [0, 3]
    # the order is a function of the generator only: a resumed run draws the same epochs
    assert torch.equal(order, pool.epoch_order(torch.Generator().manual_seed(0)))


def test_intensity_blends_mix_a_face_with_its_own_persons_neutral_face():
    expressive = faces(4, HAPPY, ["a", "a", "b", "c"], value=200)
    neutral = faces(2, NEUTRAL, ["a", "b"], value=40)
    fer = faces(3, HAPPY)
    pool = assemble(fer, 0, [(DomainSpec(Path("d")), FaceArrays(np.concatenate([expressive.images, neutral.images]),
                                                               np.concatenate([expressive.labels, neutral.labels]),
                                                               people=np.concatenate([expressive.people,
                                                                                      neutral.people])))])
    blend = IntensityBlend(pool, prob=1.0, min_share=0.3)
    assert blend.blendable == 3  # a's two faces and b's one; c has no neutral face, FER2013's people are unknown
    images = torch.from_numpy(pool.images).float().unsqueeze(1)
    labels = torch.from_numpy(pool.labels)
    idx = torch.arange(len(pool))
    x, target = blend(idx, images, labels, torch.Generator().manual_seed(1))
    assert torch.allclose(target.sum(1), torch.ones(len(pool)))
    share = target[:, HAPPY]
    for row in (3, 4):  # blended: the pixels are the same mix as the label
        assert 0.3 <= share[row] < 1.0
        assert torch.allclose(x[row], share[row] * 200 + (1 - share[row]) * 40)
        assert target[row, NEUTRAL] == pytest.approx(1 - share[row].item())
    for row in (0, 1, 2, 6, 7, 8):  # FER2013, person c, and the neutral faces themselves stay as they are
        assert torch.equal(x[row], images[row]) and target[row].max() == 1.0


def test_soft_cross_entropy_of_one_hot_labels_is_the_usual_loss():
    logits = torch.randn(16, 7, generator=torch.Generator().manual_seed(0))
    y = torch.arange(16) % 7
    weights = torch.linspace(0.5, 2.0, 7)
    expected = F.cross_entropy(logits, y, weight=weights)
    assert soft_cross_entropy(logits, F.one_hot(y, 7).float(), weights, 0.0).item() == pytest.approx(expected.item())


def test_camera_augmentation_is_off_by_default_and_changes_faces_when_on():
    x = torch.randn(32, 1, 48, 48, generator=torch.Generator().manual_seed(0)).clamp(-2, 2)
    gen = torch.Generator().manual_seed(3)
    assert torch.equal(camera_batch(x, 0.5, 0.25, AugmentConfig(), gen), x)
    assert gen.initial_seed() == 3 and torch.equal(gen.get_state(), torch.Generator().manual_seed(3).get_state())
    on = camera_batch(x, 0.5, 0.25, AugmentConfig(**CAMERA), torch.Generator().manual_seed(3))
    assert on.shape == x.shape and torch.isfinite(on).all()
    changed = (on - x).abs().flatten(1).amax(1) > 1e-3
    assert changed.float().mean() > 0.5  # gamma alone moves almost every face
    # the default recipe's random stream is untouched: the same draws as before the camera options existed
    a = augment_batch(x, 0.25, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(x, 0.25, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_grey_variations_remake_colour_faces_and_leave_gray_faces_alone():
    rng = np.random.default_rng(0)
    colour = np.zeros((6, 48, 48, 3), np.uint8)
    colour[:3] = rng.integers(0, 256, (3, 48, 48, 3))  # colour faces
    colour[3:] = rng.integers(0, 256, (3, 48, 48, 1))  # gray faces (FER2013): three equal channels
    gray = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in colour])  # the standard conversion
    x = (torch.from_numpy(gray).float().unsqueeze(1) / 255 - 0.5) / 0.25
    grey = GreyVariation(torch.from_numpy(colour).permute(0, 3, 1, 2).contiguous(), 1.0, 0.5, 0.25)
    idx = torch.arange(6)
    out = grey(idx, x, torch.Generator().manual_seed(0))
    change = (out - x).abs().flatten(1).amax(1) * 0.25 * 255  # in gray levels
    assert (change[:3] > 5).all()  # other channel weights: another gray image of the same face
    assert (change[3:] < 1.0).all()  # any weights give a gray face back
    for i in range(3):  # still a weighted mean of the channels: between the darkest and brightest channel
        lo, hi = colour[i].min(-1).astype(np.float32), colour[i].max(-1).astype(np.float32)
        levels = (out[i, 0].numpy() * 0.25 + 0.5) * 255
        assert (levels >= lo - 0.5).all() and (levels <= hi + 0.5).all()
    assert torch.equal(grey(idx, x, torch.Generator().manual_seed(0)), out)  # one reproducible stream
    off = GreyVariation(torch.from_numpy(colour).permute(0, 3, 1, 2).contiguous(), 0.0, 0.5, 0.25)
    assert torch.equal(off(idx, x, torch.Generator().manual_seed(0)), x)


def test_whole_photo_faces_come_in_colour_aligned_like_the_gray_ones(tmp_path):
    from fer_core.analysis.datasets import detect_face_arrays, list_labelled_folder

    files = list_labelled_folder(write_domain(tmp_path / "d", "d_p", 2))
    gray = detect_face_arrays(files, cache_dir=tmp_path / "cache")
    both = detect_face_arrays(files, cache_dir=tmp_path / "cache", colour=True)
    assert gray.colour is None and both.colour.shape == (len(files.paths), 48, 48, 3)
    assert np.array_equal(both.images, gray.images)
    remade = np.stack([cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) for c in both.colour])
    assert np.abs(remade.astype(int) - both.images).max() <= 3  # the same crop, up to rounding
    assert (both.colour.std(-1) > 1).mean() > 0.2  # real colour, not gray in three channels
    cached = detect_face_arrays(files, cache_dir=tmp_path / "cache", colour=True)
    assert np.array_equal(cached.colour, both.colour)


def write_domain(root: Path, prefix: str, people: int) -> Path:
    """A tiny whole-photo domain of real (public-domain) face photos: each person a neutral and a happy photo,
    named <prefix><person>_<n>.jpg like CFEE and the Taiwanese performers set."""
    photos = list(public_domain_faces().values())
    for p in range(people):
        for n, label in enumerate(("neutral", "happy")):
            folder = root / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{prefix}{p}_{n}.jpg").write_bytes(jpeg_bytes(photos[(p + n) % len(photos)]))
    return root


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny FER2013 layout, two tiny whole-photo domains and a tiny checkpoint to fine-tune."""
    tmp = tmp_path_factory.mktemp("domains")
    data = make_kaggle_tree(tmp / "fer", per_class=8)
    first = write_domain(tmp / "first", "first_p", 3)
    second = write_domain(tmp / "second", "second_p", 3)
    run("-m", "training.train", "--data", str(data), "--out", str(tmp / "init"), "--work-dir", str(tmp / "init_work"),
        "--cache-dir", "", "--variant", "tiny", "--epochs", "1", "--batch-size", "16", "--threads", "1")
    return tmp, data, first, second


def test_training_takes_domains_with_doses_blends_and_camera_augmentation(tiny_world):
    tmp, data, first, second = tiny_world
    out = tmp / "multi"
    proc = run("-m", "training.train", "--data", str(data), "--init-weights", str(tmp / "init" / "model.pt"),
               "--domain", f"{first}:12", "--domain", str(second), "--fer-dose", "20", "--blend-prob", "0.5",
               "--camera-aug", "--jpeg-aug", "--out", str(out), "--work-dir", str(tmp / "multi_work"), "--cache-dir", "",
               "--epochs", "1", "--batch-size", "8", "--threads", "1")
    assert "source first: 4 faces of 2 training people, 12 per epoch" in proc.stdout
    card = json.loads((out / "model_card.json").read_text())
    doses = {s["source"]: s["dose_per_epoch"] for s in card["data"]["sources"]}
    assert doses == {"fer2013": 20, "first": 12, "second": 4}  # no dose: each training face once
    assert card["data"]["intensity_blends"]["blendable_faces"] == 4  # the happy faces of the 2 + 2 training people
    assert card["augmentation"]["gamma"] == list(CAMERA["gamma"]) and card["augmentation"]["jpeg_prob"] > 0
    assert card["training"]["arguments"]["domain"] == [f"{first}:12", f"{second}:0"]


def test_training_with_colour_to_grey_variations(tiny_world):
    tmp, data, first, second = tiny_world
    out = tmp / "grey"
    proc = run("-m", "training.train", "--data", str(data), "--init-weights", str(tmp / "init" / "model.pt"),
               "--domain", f"{first}:12", "--fer-dose", "20", "--grey-mix", "0.5", "--out", str(out),
               "--work-dir", str(tmp / "grey_work"), "--cache-dir", "", "--epochs", "1", "--batch-size", "8",
               "--threads", "1")
    assert "colour-to-grey variations: 50% of the faces" in proc.stdout
    assert json.loads((out / "model_card.json").read_text())["training"]["arguments"]["grey_mix"] == 0.5
    alone = subprocess.run([sys.executable, "-m", "training.train", "--data", str(data), "--grey-mix", "0.5",
                            "--out", str(tmp / "g2"), "--work-dir", str(tmp / "g2w"), "--cache-dir", "",
                            "--variant", "tiny", "--epochs", "1"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert alone.returncode != 0 and "needs a --domain" in alone.stderr and "Traceback" not in alone.stderr


def test_a_missing_domain_folder_is_a_clear_error(tiny_world):
    tmp, data, _, _ = tiny_world
    proc = subprocess.run([sys.executable, "-m", "training.train", "--data", str(data), "--domain",
                           str(tmp / "nowhere"), "--out", str(tmp / "x"), "--work-dir", str(tmp / "xw"),
                           "--cache-dir", "", "--variant", "tiny", "--epochs", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr


def test_transfer_protocol_holds_each_domain_out_and_prints_one_table(tiny_world):
    tmp, data, first, second = tiny_world
    runs = tmp / "protocol"
    common = ["-m", "training.crossdomain", "--runs-dir", str(runs), "--init-weights", str(tmp / "init" / "model.pt"),
              "--domain", str(first), "--domain", str(second), "--validation", str(data / "validation"),
              "--photos", "", "--dose", "6"]
    proc = run(*common, "--recipe", "tiny", "--combined", "--", "--data", str(data), "--cache-dir", "",
               "--fer-dose", "24", "--epochs", "1", "--batch-size", "8", "--threads", "1")
    for run_name, trained_on in (("without-first", ["second"]), ("without-second", ["first"]),
                                 ("all-domains", ["first", "second"])):
        measured = json.loads((runs / "tiny" / run_name / "measure.json").read_text())
        assert measured["train_domains"] == trained_on
        card = json.loads((runs / "tiny" / run_name / "out" / "model_card.json").read_text())
        assert sorted(s["source"] for s in card["data"]["sources"]) == sorted(["fer2013", *trained_on])
    held = json.loads((runs / "tiny" / "without-first" / "measure.json").read_text())["splits"]
    assert held["first_all"]["n"] == 6 and held["second_test"]["n"] == 2  # all of the held-out domain; 1 test person
    assert 0.0 <= held["first_all"]["accuracy"] <= 1.0 and held["first_all"]["ece"] >= 0.0
    for column in ("heldout_first", "heldout_second", "first_test", "second_test", "held_out_mean",
                   "neutral_precision"):
        assert column in proc.stdout
    assert "tiny (all domains)" in proc.stdout
    # a second call reuses the finished runs and measurements: no training
    again = run(*common, "--table")
    assert "training.train" not in again.stdout and "tiny (all domains)" in again.stdout
    assert (runs / "table.csv").is_file() and (runs / "table.txt").is_file()


def test_transfer_protocol_trains_from_random_weights_when_asked(tiny_world):
    tmp, data, first, second = tiny_world
    runs = tmp / "scratch"
    common = ["-m", "training.crossdomain", "--runs-dir", str(runs), "--init-weights", "", "--domain", str(first),
              "--domain", str(second), "--validation", str(data / "validation"), "--photos", "", "--dose", "6"]
    recipe = ["--recipe", "scratch", "--", "--data", str(data), "--cache-dir", "", "--variant", "tiny",
              "--fer-dose", "24", "--epochs", "1", "--batch-size", "8", "--threads", "1"]
    # a long recipe can be split: one held-out run now, the other later (or on another machine)
    first_only = run(*common, "--run", "without-first", *recipe)
    assert (runs / "scratch" / "without-first" / "measure.json").is_file()
    assert not (runs / "scratch" / "without-second").exists()
    partial = pd.read_csv(runs / "table.csv").set_index("recipe").loc["scratch"]
    assert np.isnan(partial["held_out_mean"]) and not np.isnan(partial["heldout_first"])  # no mean over half of them
    proc = run(*common, *recipe)
    assert proc.stdout.count("$ ") == 1  # the finished run is reused
    assert "--init-weights" not in proc.stdout.split("$ ", 1)[1].splitlines()[0]
    assert "--init-weights" not in first_only.stdout.split("$ ", 1)[1].splitlines()[0]
    whole = pd.read_csv(runs / "table.csv").set_index("recipe").loc["scratch"]
    assert whole["held_out_mean"] == pytest.approx((whole["heldout_first"] + whole["heldout_second"]) / 2, abs=1e-3)
    for run_name in ("without-first", "without-second"):
        card = json.loads((runs / "scratch" / run_name / "out" / "model_card.json").read_text())
        assert card["training"]["arguments"]["init_weights"] == ""
        assert card["architecture"]["variant"] == "tiny"
    assert "scratch" in proc.stdout and "held_out_mean" in proc.stdout
    refused = subprocess.run([sys.executable, *common, "--recipe", "x", "--no-train"], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and "--init-weights" in refused.stderr and "Traceback" not in refused.stderr
    unknown = subprocess.run([sys.executable, *common, "--recipe", "x", "--run", "without-third"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert unknown.returncode != 0 and "without-first" in unknown.stderr and "Traceback" not in unknown.stderr
    untrained = subprocess.run([sys.executable, *common, "--init-weights", str(tmp / "init" / "model.pt"), "--recipe",
                                "x", "--no-train", "--run", "without-first"], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
    assert untrained.returncode != 0 and "--no-train" in untrained.stderr and "Traceback" not in untrained.stderr


def test_calibration_fits_on_validation_and_each_domains_calibration_people(tiny_world):
    tmp, data, first, _ = tiny_world
    out = tmp / "calibration.json"
    proc = run("-m", "training.calibrate", "--weights", str(tmp / "init" / "model.pt"), "--validation",
               str(data / "validation"), "--cfee", "", "--domain", str(first), "--calibration-fraction", "0.34",
               "--cache", str(tmp / "cal_cache"), "--json", str(out))
    report = json.loads(out.read_text())
    assert report["fitted_on"] == "validation-fit + first-calibration"
    assert report["splits"]["first-calibration"]["n_faces"] == 2  # one calibration person, two photos
    assert report["splits"]["first-test"]["n_faces"] == 2 and "each set weighted alike" in proc.stdout


def test_shifted_copies_change_the_camera_more_at_each_severity_and_reproducibly():
    from training.recipe.shifted_faces import SEVERITIES, shifted_copies

    faces = [cv2.resize(rgb[..., 1], (48, 48)) for rgb in public_domain_faces().values()]
    labels = np.arange(len(faces)) % 7
    copies, copy_labels = shifted_copies(faces, labels, seed=3)
    assert len(copies) == len(SEVERITIES) * len(faces) and copy_labels.tolist() == np.tile(labels, 4).tolist()
    assert all(c.shape == (48, 48) and c.dtype == np.uint8 for c in copies)
    again, _ = shifted_copies(faces, labels, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(copies, again))  # one seed, the same faces
    change = [np.mean([np.abs(copies[k * len(faces) + i].astype(float) - f).mean() for i, f in enumerate(faces)])
              for k in range(len(SEVERITIES))]
    assert change == sorted(change) and change[0] > 0.5 and change[-1] > 2 * change[0]  # stronger at each severity


def test_calibration_with_shifted_copies_fits_one_more_set_and_keeps_the_thresholds_on_real_faces(tiny_world):
    tmp, data, first, _ = tiny_world
    common = ["-m", "training.calibrate", "--weights", str(tmp / "init" / "model.pt"), "--validation",
              str(data / "validation"), "--cfee", "", "--domain", str(first), "--calibration-fraction", "0.34",
              "--cache", str(tmp / "cal_cache")]
    run(*common, "--json", str(tmp / "plain.json"))
    proc = run(*common, "--shifted-copy", "--json", str(tmp / "shifted.json"))
    plain, shifted = (json.loads((tmp / f"{n}.json").read_text()) for n in ("plain", "shifted"))
    assert shifted["fitted_on"] == "validation-fit + first-calibration + validation-fit-shifted"
    assert shifted["thresholds_fitted_on"] == plain["thresholds_fitted_on"] == "validation-fit + first-calibration"
    fit = shifted["splits"]["validation-fit"]["n_faces"]
    assert shifted["splits"]["validation-fit-shifted"]["n_faces"] == 4 * fit  # every fitting face at 4 strengths
    assert "validation-fit-shifted (" in proc.stdout  # named among the sets the temperature was fitted on
    assert list((tmp / "cal_cache").glob("validation-fit-shifted_*.npz"))  # computed once, then read back


def test_weight_averaging_is_the_weighted_mean_of_every_tensor_and_refuses_another_architecture(tmp_path):
    from fer_core.faces.preprocessing import PreprocessConfig
    from fer_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from fer_core.model.network import Xception, XceptionConfig, build_model
    from training.average_weights import average_checkpoints, parse_input

    torch.manual_seed(0)
    a, b = build_model("tiny"), build_model("tiny")
    for i, m in enumerate((a, b)):
        m.train()(torch.randn(4, 1, 48, 48) + i)  # different BatchNorm running statistics
        m.eval()
        save_checkpoint(tmp_path / f"{i}.pt", m, PreprocessConfig())
    meta = average_checkpoints([(tmp_path / "0.pt", 1.0), (tmp_path / "1.pt", 3.0)], tmp_path / "avg" / "model.pt")
    assert [x["share"] for x in meta["averaged_from"]] == [0.25, 0.75]
    avg = load_checkpoint(tmp_path / "avg" / "model.pt")[0].state_dict()
    for k, v in avg.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, 0.25 * a.state_dict()[k] + 0.75 * b.state_dict()[k])
    assert (tmp_path / "avg" / "model.onnx").is_file()  # the app's copy, as for every saved model
    assert parse_input("runs/x/model.pt:0.3") == (Path("runs/x/model.pt"), 0.3)
    assert parse_input("runs/x/model.pt") == (Path("runs/x/model.pt"), 1.0)
    with pytest.raises(SystemExit, match="must be > 0"):
        parse_input("a.pt:0")
    other = Xception(XceptionConfig(**{**a.config.to_dict(), "hidden_units": a.config.hidden_units + 8}))
    save_checkpoint(tmp_path / "other.pt", other.eval(), PreprocessConfig())
    with pytest.raises(CheckpointError, match="another architecture"):
        average_checkpoints([(tmp_path / "0.pt", 1.0), (tmp_path / "other.pt", 1.0)], tmp_path / "bad.pt")


def test_transfer_protocol_measures_a_weight_average_of_measured_recipes(tiny_world):
    import shutil

    tmp, data, first, second = tiny_world
    runs = tmp / "averaging"
    for run_name in ("without-first", "without-second"):  # a measured recipe "tiny": here, copies of a checkpoint
        (runs / "tiny" / run_name / "out").mkdir(parents=True)
        shutil.copy(tmp / "init" / "model.pt", runs / "tiny" / run_name / "out" / "model.pt")
    common = ["-m", "training.crossdomain", "--runs-dir", str(runs), "--init-weights", str(tmp / "init" / "model.pt"),
              "--domain", str(first), "--domain", str(second), "--validation", str(data / "validation"),
              "--photos", ""]
    proc = run(*common, "--recipe", "wise", "--average", "init:1", "--average", "tiny:1")
    assert "training.train" not in proc.stdout and "wise" in proc.stdout
    for run_name in ("without-first", "without-second"):
        model = runs / "wise" / run_name / "out" / "model.pt"
        shares = torch.load(model, weights_only=True)["meta"]["averaged_from"]
        assert [s["share"] for s in shares] == [0.5, 0.5]
        assert shares[1]["weights"].endswith(f"tiny/{run_name}/out/model.pt")
        assert json.loads((runs / "wise" / run_name / "measure.json").read_text())["train_domains"]
    missing = subprocess.run([sys.executable, *common, "--recipe", "w2", "--average", "nothing:1"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "measure recipe nothing first" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_neutral_offsets_are_measured_on_the_never_seen_domains(tiny_world):
    tmp, data, first, second = tiny_world
    runs = tmp / "protocol"
    common = ["--runs-dir", str(runs), "--domain", str(first), "--domain", str(second)]
    run("-m", "training.crossdomain", *common, "--init-weights", str(tmp / "init" / "model.pt"), "--validation",
        str(data / "validation"), "--photos", "", "--dose", "6", "--recipe", "tiny", "--", "--data", str(data),
        "--cache-dir", "", "--fer-dose", "24", "--epochs", "1", "--batch-size", "8", "--threads", "1")  # reused if there
    out = tmp / "offsets.json"
    proc = run("-m", "training.experiments.neutral_offset", *common, "--recipe", "tiny", "--offsets=-1,1", "--json", str(out))
    result = json.loads(out.read_text())
    assert result["offsets"] == [-1.0, 0.0, 1.0]  # no offset is always measured, to compare with
    for name in ("first", "second"):  # all 6 photos of each domain, from the run that never saw it
        assert [r["offset"] for r in result["table"][name]] == [-1.0, 0.0, 1.0]
        assert all(0.0 <= r["accuracy"] <= 1.0 for r in result["table"][name])
    measured = json.loads((runs / "tiny" / "without-first" / "measure.json").read_text())
    at_zero = next(r for r in result["table"]["first"] if r["offset"] == 0.0)
    assert at_zero["accuracy"] == pytest.approx(measured["splits"]["first_all"]["accuracy"])  # the protocol's number
    assert {(c["chosen_on"], c["applied_to"]) for c in result["cross_domain"]} == {("first", "second"),
                                                                                 ("second", "first")}
    assert "best on first" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "training.experiments.neutral_offset", *common, "--recipe", "nothing"],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "measure the recipe first" in missing.stderr and "Traceback" not in missing.stderr


def test_temperatures_are_measured_on_the_never_seen_domains_from_stored_logits(tiny_world):
    tmp, data, first, second = tiny_world
    runs = tmp / "protocol"
    common = ["--runs-dir", str(runs), "--domain", str(first), "--domain", str(second)]
    run("-m", "training.crossdomain", *common, "--init-weights", str(tmp / "init" / "model.pt"), "--validation",
        str(data / "validation"), "--photos", "", "--dose", "6", "--recipe", "tiny", "--", "--data", str(data),
        "--cache-dir", "", "--fer-dose", "24", "--epochs", "1", "--batch-size", "8", "--threads", "1")  # reused if there
    out = tmp / "temperatures.json"
    proc = run("-m", "training.experiments.heldout_temperature", *common, "--recipe", "tiny", "--temperatures",
               "0.5,1,2", "--json", str(out))
    result = json.loads(out.read_text())
    for name in ("first", "second"):  # all of each domain, from the run that never saw it, at its own temperature
        measured = json.loads((runs / "tiny" / f"without-{name}" / "measure.json").read_text())
        entry = result["table"][name]
        assert entry["fitted"] == measured["temperature"]
        assert entry["ece_fitted"] == pytest.approx(measured["splits"][f"{name}_all"]["ece"])  # the protocol's ECE
        assert [r["temperature"] for r in entry["rows"]] == [0.5, 1.0, 2.0]
        assert all(0.0 <= r["ece"] <= 1.0 for r in entry["rows"])
    assert {(c["chosen_on"], c["applied_to"]) for c in result["cross_domain"]} == {("first", "second"),
                                                                                 ("second", "first")}
    assert "best on first" in proc.stdout
    for bad, says in ((["--recipe", "nothing"], "measure the recipe first"),
                      (["--recipe", "tiny", "--temperatures", "0,1"], "positive")):
        refused = subprocess.run([sys.executable, "-m", "training.experiments.heldout_temperature", *common, *bad],
                                 cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert refused.returncode != 0 and says in refused.stderr and "Traceback" not in refused.stderr


def test_shifted_calibration_refits_each_held_out_run_without_looking_at_its_domain(tiny_world):
    tmp, data, first, second = tiny_world
    runs = tmp / "protocol"
    common = ["--runs-dir", str(runs), "--domain", str(first), "--domain", str(second)]
    run("-m", "training.crossdomain", *common, "--init-weights", str(tmp / "init" / "model.pt"), "--validation",
        str(data / "validation"), "--photos", "", "--dose", "6", "--recipe", "tiny", "--", "--data", str(data),
        "--cache-dir", "", "--fer-dose", "24", "--epochs", "1", "--batch-size", "8", "--threads", "1")  # reused if there
    out = tmp / "shifted.json"
    proc = run("-m", "training.experiments.shifted_calibration", *common, "--recipe", "tiny", "--validation",
               str(data / "validation"), "--json", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["run"], r["fit"]) for r in rows] == [(f"without-{d}", f) for d in ("first", "second")
                                                    for f in ("as measured", "with shifted copies")]
    for r in rows[::2]:  # "as measured" is the protocol's own number
        measured = json.loads((runs / "tiny" / r["run"] / "measure.json").read_text())
        assert r["temperature"] == measured["temperature"]
        held = r["run"].removeprefix("without-")
        assert r["held_out ece"] == pytest.approx(measured["splits"][f"{held}_all"]["ece"])
    assert all((runs / "tiny" / f"without-{d}" / "shifted_logits.npz").is_file() for d in ("first", "second"))
    assert "with shifted copies" in proc.stdout


def test_transfer_protocol_measures_an_ensemble_from_the_members_logits(tiny_world):
    """--ensemble averages the measured recipes' logits split by split: an ensemble of one recipe with itself scores
    exactly as the recipe, with the same temperature; a recipe not measured yet is a one-line error."""
    import shutil

    tmp, data, first, second = tiny_world
    runs = tmp / "ensembles"
    common = ["-m", "training.crossdomain", "--runs-dir", str(runs), "--domain", str(first), "--domain", str(second),
              "--validation", str(data / "validation"), "--photos", ""]
    for run_name in ("without-first", "without-second"):  # a measured recipe "a": the tiny start, as it is
        (runs / "a" / run_name / "out").mkdir(parents=True)
        shutil.copy(tmp / "init" / "model.pt", runs / "a" / run_name / "out" / "model.pt")
    run(*common, "--recipe", "a", "--average", "init:1", "--init-weights", str(tmp / "init" / "model.pt"))
    proc = run(*common, "--recipe", "a-and-a", "--ensemble", "a", "--ensemble", "a")
    assert "training.train" not in proc.stdout and "a-and-a" in proc.stdout
    # FER+ votes that agree with every validation label: the ferplus_val column equals fer_val, added to the stored
    # measurements from their logits
    from fer_core.analysis.datasets import list_labelled_folder
    from fer_core.analysis.votes import VOTE_COLUMNS, face_key

    column = {"angry": "anger", "happy": "happiness", "sad": "sadness"}
    votes = tmp / "votes.csv"
    votes.write_text("file," + ",".join(VOTE_COLUMNS) + "\n" + "".join(
        f"{face_key(p)}," + ",".join("10" if c == column.get(EMOTIONS[y], EMOTIONS[y]) else "0" for c in VOTE_COLUMNS)
        + "\n" for p, y in zip(*(lambda f: (f.paths, f.labels))(list_labelled_folder(data / "validation")))))
    proc = run(*common, "--table", "--votes", str(votes))
    assert "ferplus_val" in proc.stdout
    for recipe in ("a", "a-and-a"):
        measured = json.loads((runs / recipe / "without-first" / "measure.json").read_text())["splits"]
        assert measured["ferplus_val"]["accuracy"] == measured["fer_val"]["accuracy"]

    # the shipped recipe's protocol rows go into the model card, beside what the card already holds
    card = tmp / "card"
    card.mkdir()
    (card / "model_card.json").write_text(json.dumps({"name": "kept"}))
    env = {**os.environ, "FER_ARTIFACTS": str(card)}
    proc = subprocess.run([sys.executable, *common, "--table", "--write-card", "a", "--write-card", "a-and-a"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    written = json.loads((card / "model_card.json").read_text())
    protocol = written["transfer_protocol"]
    assert written["name"] == "kept" and protocol["recipes"] == ["a", "a-and-a"]
    assert protocol["held_out_mean"] == pytest.approx(np.mean([r["held_out_mean"] for r in protocol["rows"]]))
    assert protocol["command"].endswith("--write-card a --write-card a-and-a")
    proc = subprocess.run([sys.executable, *common, "--table", "--write-card", "nothing"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "no held-out runs measured" in proc.stderr and "Traceback" not in proc.stderr
    for run_name in ("without-first", "without-second"):
        alone = json.loads((runs / "a" / run_name / "measure.json").read_text())
        pair = json.loads((runs / "a-and-a" / run_name / "measure.json").read_text())
        assert pair["ensemble"] == ["a", "a"] and pair["train_domains"] == alone["train_domains"]
        assert pair["temperature"] == pytest.approx(alone["temperature"], rel=1e-4)
        for split, s in alone["splits"].items():
            assert pair["splits"][split]["pred"] == s["pred"], split
    missing = subprocess.run([sys.executable, *common, "--recipe", "x", "--ensemble", "nothing"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "measure recipe nothing first" in missing.stderr
    assert "Traceback" not in missing.stderr
