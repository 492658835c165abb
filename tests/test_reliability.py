"""Regression tests for the defects of docs/RELIABILITY.md (2026-11-26): hostile or broken images, huge images,
bit-exact resume, malformed checkpoints, bf16 on CPUs without it, training/evaluate faults, misleading messages.

Every bad input is built here (Pillow, torch.save, raw bytes); nothing comes from ../shared.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import make_kaggle_tree, synthetic_face
from PIL import Image, PngImagePlugin
from streamlit.testing.v1 import AppTest

from fer_core.analysis.datasets import list_labelled_folder, load_split
from fer_core.analysis.photos import analyse_image
from fer_core.faces.detection import make_detector
from fer_core.faces.images import ImageLoadError, load_image
from fer_core.faces.preprocessing import PreprocessConfig
from fer_core.labels import EMOTIONS
from fer_core.model.artifacts import ARTIFACTS_ENV
from fer_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.model.network import VARIANTS, Xception

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "artifacts" / "model.pt"


# ---- bad image files, built in memory ----------------------------------------------------------------

def _encoded(img: Image.Image, fmt: str) -> bytearray:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return bytearray(buf.getvalue())


def dds_bad() -> bytes:
    """A DDS file whose pixel-format flags are 0 (Pillow: NotImplementedError)."""
    data = _encoded(Image.new("RGB", (16, 16), "gray"), "DDS")
    struct.pack_into("<I", data, 80, 0)
    return bytes(data)


def blp_bad() -> bytes:
    """A BLP2 file with encoding -9 (Pillow: BLPFormatError)."""
    data = _encoded(Image.new("RGB", (16, 16), "gray").convert("P"), "BLP")
    data[8] = 0xF7
    return bytes(data)


def spider_bad() -> bytes:
    """A SPIDER file that claims to be an image inside a stack (Pillow: AttributeError 'stkoffset')."""
    data = _encoded(Image.new("F", (16, 16)), "SPIDER")
    data[104:108] = struct.pack("<f", 1.0)
    return bytes(data)


EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
       b"newpath 0 0 moveto 100 100 lineto stroke\nshowpage\n%%EOF\n")
EXOTIC = {"dds_bad.png": dds_bad, "blp_bad.jpg": blp_bad, "spider_bad.tiff": spider_bad, "eps_as.jpg": lambda: EPS}


def face_png(label: int = 3, seed: int = 0) -> bytes:
    return cv2.imencode(".png", synthetic_face(label, seed=seed))[1].tobytes()


@pytest.mark.parametrize("name", sorted(EXOTIC))
def test_exotic_formats_behind_common_names_are_refused_not_decoded(name):
    with pytest.raises(ImageLoadError, match="not an image file.*supported: JPEG, PNG"):
        load_image(EXOTIC[name]())


@pytest.mark.parametrize("error", [RuntimeError("Failed to decode frame 0"), NotImplementedError("flags 0"),
                                   AttributeError("no attribute 'stkoffset'"), struct.error("unpack"),
                                   subprocess.CalledProcessError(1, ["gs"]), IndexError("tile"), MemoryError()])
def test_any_decoder_exception_becomes_an_image_load_error(monkeypatch, error):
    def broken_decoder(self):
        raise error

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", broken_decoder)
    with pytest.raises(ImageLoadError, match=f"damaged or truncated.*{type(error).__name__}"):
        load_image(face_png())


def test_eps_upload_never_reaches_ghostscript(tmp_path):
    """Defect 5: with a `gs` on PATH, an EPS renamed .jpg must not make Pillow run it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "GS_WAS_RUN"
    fake_gs = bin_dir / "gs"
    fake_gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake_gs.chmod(0o755)
    (tmp_path / "eps_as.jpg").write_bytes(EPS)
    code = ("import sys\nfrom fer_core.faces.images import ImageLoadError, load_image\n"
            "try:\n    load_image(sys.argv[1])\nexcept ImageLoadError as e:\n    print('refused:', e)\n")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "eps_as.jpg")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "refused: eps_as.jpg: not an image file" in proc.stdout
    assert not marker.exists(), "Pillow ran Ghostscript on an uploaded file"


@pytest.fixture
def mixed_folder(tmp_path) -> Path:
    """Two good faces and every undecodable file, interleaved, in one folder."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(face_png(3, seed=1))
    for name, build in EXOTIC.items():
        (folder / f"b_{name}").write_bytes(build())
    (folder / "c_truncated.png").write_bytes(face_png(3, seed=2)[:200])
    (folder / "z_good.png").write_bytes(face_png(5, seed=3))
    return folder


def test_predict_cli_reports_undecodable_files_and_keeps_the_others(mixed_folder, capsys):
    from fer_core.predict import get_args_parser, main

    rc = main(get_args_parser().parse_args([str(mixed_folder), "--json", "--no-tta"]))
    out, err = capsys.readouterr()
    assert rc == 0
    assert [Path(r["path"]).name for r in json.loads(out)] == ["a_good.png", "z_good.png"]
    for name in [*EXOTIC, "truncated.png"]:
        assert name in err
    assert "Traceback" not in err


def test_upload_analysis_keeps_every_file(predictor, mixed_folder):
    detector = make_detector()
    results = [analyse_image(predictor, detector, p.read_bytes(), p.name, tta=False)
               for p in sorted(mixed_folder.iterdir())]
    assert [r.error is None for r in results] == [True, False, False, False, False, False, True]
    assert all(r.name in r.error for r in results if r.error)
    assert results[0].faces and results[-1].faces


# ---- defect 2 / 8: images wider or taller than st.image can encode; bounded display copy --------------

def _show_image(npy_path: str) -> None:
    import numpy as np
    import streamlit as st

    st.image(np.load(npy_path))


@pytest.mark.parametrize("size", [(66_000, 100), (100, 70_000)])
def test_panorama_beyond_the_jpeg_limit_is_shown_scaled_down(predictor, tmp_path, size):
    from fer_core.analysis.photos import DISPLAY_MAX_SIDE

    png = _encoded(Image.new("RGB", size, "gray"), "PNG")
    result = analyse_image(predictor, make_detector(), bytes(png), "panorama.png", tta=False)
    assert result.error is None and result.size == size  # the reported size stays the original one
    assert max(result.annotated.shape[:2]) == DISPLAY_MAX_SIDE
    np.save(tmp_path / "annotated.npy", result.annotated)
    at = AppTest.from_function(_show_image, args=(str(tmp_path / "annotated.npy"),)).run(timeout=120)
    assert not at.exception, [e.value for e in at.exception]


def test_display_copy_is_bounded_and_keeps_small_images():
    from fer_core.analysis.photos import display_copy

    small = np.zeros((300, 400, 3), np.uint8)
    assert display_copy(small) is small
    assert display_copy(np.zeros((7000, 7000, 3), np.uint8)).shape == (4096, 4096, 3)
    assert display_copy(np.zeros((1, 50_000, 3), np.uint8)).shape == (1, 4096, 3)


# ---- training runs on a generated dataset ----------------------------------------------------------

TRAIN_ARGS = ["--cache-dir", "", "--variant", "tiny", "--limit-per-class", "20", "--limit-val", "50",
              "--batch-size", "32", "--epochs", "2", "--threads", "1"]


def train_cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "training.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def train_data(tmp_path_factory) -> Path:
    """Kaggle layout, 20 generated faces per class, plus one truncated image and one unsupported file."""
    data = make_kaggle_tree(tmp_path_factory.mktemp("reliability") / "data", per_class=20)
    (data / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (data / "train" / "sad" / "notes.txt").write_text("not an image")
    return data


@pytest.fixture(scope="module")
def runs(train_data, tmp_path_factory) -> dict[str, Path]:
    """The same 2-epoch run twice: uninterrupted ('full'), and stopped after epoch 1 then resumed ('resumed')."""
    tmp = tmp_path_factory.mktemp("runs")
    full = train_cli("--data", str(train_data), "--out", str(tmp / "full"), "--work-dir", str(tmp / "full_w"),
                     *TRAIN_ARGS)
    common = ["--data", str(train_data), "--out", str(tmp / "resumed"), "--work-dir", str(tmp / "resumed_w"),
              *TRAIN_ARGS]
    train_cli(*common, "--stop-after", "1")
    (tmp / "epoch1_w").mkdir()
    (tmp / "epoch1_w" / "last.pt").write_bytes((tmp / "resumed_w" / "last.pt").read_bytes())
    resumed = train_cli(*common, "--resume")
    assert "Resumed" in resumed.stdout
    return {"root": tmp, "full_stderr": full.stderr, "full_stdout": full.stdout}


def test_resume_repeats_the_uninterrupted_run_bit_for_bit(runs):
    root = runs["root"]
    full, resumed = (pd.read_csv(root / name / "history.csv").drop(columns=["seconds"]) for name in ("full", "resumed"))
    pd.testing.assert_frame_equal(full, resumed, check_exact=True)
    for weights in ("full/model.pt", "full_w/last.pt"):
        a = torch.load(root / weights, weights_only=True)["model"]
        b = torch.load(root / weights.replace("full", "resumed"), weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights


def test_unreadable_training_image_is_skipped_with_a_warning(runs):
    err = runs["full_stderr"]
    assert "broken.jpg" in err and "notes.txt" in err and "Traceback" not in err
    assert "Done in" in runs["full_stdout"]


def _train_main(*args: str):
    from training.train import get_args_parser, main

    return main(get_args_parser().parse_args(list(args)))


@pytest.mark.parametrize("change", [("--variant", "small"), ("--epochs", "3"), ("--batch-size", "16")])
def test_resume_with_other_settings_is_a_clear_message(runs, train_data, tmp_path, change):
    work = tmp_path / "w"
    work.mkdir()
    (work / "last.pt").write_bytes((runs["root"] / "epoch1_w" / "last.pt").read_bytes())
    args = dict(zip(TRAIN_ARGS[::2], TRAIN_ARGS[1::2]))
    args[change[0]] = change[1]
    with pytest.raises(SystemExit) as exc:
        _train_main("--data", str(train_data), "--out", str(tmp_path / "out"), "--work-dir", str(work), "--resume",
                    *[x for kv in args.items() for x in kv])
    message = str(exc.value.code)
    assert "other settings" in message and change[0].lstrip("-").replace("-", "_") in message
    assert str(work / "last.pt") in message


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_resume_from_a_damaged_state_is_a_clear_message(runs, train_data, tmp_path, damage):
    work = tmp_path / "w"
    work.mkdir()
    state = (runs["root"] / "epoch1_w" / "last.pt").read_bytes()
    if damage == "truncated":
        (work / "last.pt").write_bytes(state[: len(state) // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, work / "last.pt")
    with pytest.raises(SystemExit) as exc:
        _train_main("--data", str(train_data), "--out", str(tmp_path / "out"), "--work-dir", str(work), "--resume",
                    *TRAIN_ARGS)
    assert str(work / "last.pt") in str(exc.value.code) and "start afresh" in str(exc.value.code)


@pytest.mark.parametrize("flag", ["--out", "--work-dir"])
def test_unusable_output_folder_is_reported_before_any_work(tmp_path, flag, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    target = blocker / "sub"  # cannot be created: its parent is a file (works even as root)
    args = {"--out": str(tmp_path / "out"), "--work-dir": str(tmp_path / "w"), flag: str(target)}
    with pytest.raises(SystemExit) as exc:
        _train_main("--data", str(tmp_path / "no_data_needed"), *[x for kv in args.items() for x in kv], *TRAIN_ARGS)
    assert f"{flag} {target} is not a writable folder" in str(exc.value.code)
    assert "Loading data" not in capsys.readouterr().out


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_existing_read_only_output_folder_is_reported_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(SystemExit, match="--out .* is not a writable folder"):
            _train_main("--data", str(tmp_path), "--out", str(out), "--work-dir", str(tmp_path / "w"), *TRAIN_ARGS)
    finally:
        out.chmod(stat.S_IRWXU)


# ---- defect 10: bf16 autocast only where the CPU has it ----------------------------------------------

@pytest.mark.parametrize("avx512_bf16,amx,expected", [(False, False, False), (True, False, True), (False, True, True)])
def test_bf16_only_on_cpus_with_native_support(monkeypatch, avx512_bf16, amx, expected):
    from training.recipe.loop import use_bf16
    from training.train import get_args_parser

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    args = get_args_parser().parse_args([])
    chosen, why = use_bf16(args, torch.device("cpu"))
    assert chosen is expected and ("bf16" in why if expected else why.startswith("fp32"))
    assert use_bf16(get_args_parser().parse_args(["--no-bf16"]), torch.device("cpu"))[0] is False
    assert use_bf16(args, torch.device("cuda"))[0] is True  # GPUs keep bf16


# ---- defects 6 / 7: malformed checkpoints -------------------------------------------------------------

@pytest.fixture(scope="module")
def good_payload(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(path, Xception(VARIANTS["tiny"]).eval(), PreprocessConfig(), meta={"epoch": 1})
    return torch.load(path, weights_only=True)


def _with(payload: dict, **changes) -> dict:
    out = {**payload, **changes}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


def _nan_weights(payload: dict, value: float) -> dict:
    model = {k: v.clone() for k, v in payload["model"].items()}
    name = next(k for k, v in model.items() if v.is_floating_point() and v.ndim == 4)
    model[name].view(-1)[0] = value
    return _with(payload, model=model)


BAD_CHECKPOINTS = {
    "config_not_a_dict": (lambda p: _with(p, config=[1, 2, 3]), "'config' must be a dict"),
    "config_wrong_type": (lambda p: _with(p, config={**p["config"], "middle_blocks": "8"}), "middle_blocks"),
    "config_width_text": (lambda p: _with(p, config={**p["config"], "stem_channels": "ab"}), "stem_channels"),
    "config_dropout_text": (lambda p: _with(p, config={**p["config"], "dropout": "x"}), "dropout"),
    "config_absurd_width": (lambda p: _with(p, config={**p["config"], "entry_channels": [20000] * 3}), "entry_channels"),
    "config_three_exit_channels": (lambda p: _with(p, config={**p["config"], "exit_channels": [1, 2, 3]}), "exit_channels"),
    "config_rgb_input": (lambda p: _with(p, config={**p["config"], "in_channels": 3}), "in_channels"),
    "config_stride_three": (lambda p: _with(p, config={**p["config"], "entry_strides": [2, 2, 3]}), "entry_strides"),
    "config_strides_too_few": (lambda p: _with(p, config={**p["config"], "entry_strides": [2, 2]}), "entry_strides"),
    "config_stem_stride_text": (lambda p: _with(p, config={**p["config"], "stem_stride": "2"}), "stem_stride"),
    "class_names_not_a_list": (lambda p: _with(p, class_names="angry"), "'class_names' must be a list"),
    "class_names_numbers": (lambda p: _with(p, class_names=list(range(7))), "'class_names' must be a list"),
    "class_names_too_few": (lambda p: _with(p, class_names=list(EMOTIONS[:5])), "5 class names for 7 model outputs"),
    "class_names_too_many": (lambda p: _with(p, class_names=[*EMOTIONS, "x", "y"]), "9 class names for 7"),
    "class_names_letters": (lambda p: _with(p, class_names=list("abcdefg")), "not the seven expressions"),
    "class_names_duplicate": (lambda p: _with(p, class_names=[*EMOTIONS[:6], "angry"]), "exactly once"),
    "nan_weights": (lambda p: _nan_weights(p, float("nan")), "NaN or infinite"),
    "inf_weights": (lambda p: _nan_weights(p, float("inf")), "NaN or infinite"),
    "model_not_a_dict": (lambda p: _with(p, model=[1, 2]), "state dict"),
    "preprocess_not_a_dict": (lambda p: _with(p, preprocess="48"), "'preprocess' must be a dict"),
    "preprocess_std_zero": (lambda p: _with(p, preprocess={**p["preprocess"], "std": 0.0}), "std"),
    "preprocess_std_nan": (lambda p: _with(p, preprocess={**p["preprocess"], "std": float("nan")}), "std"),
    "preprocess_size_zero": (lambda p: _with(p, preprocess={**p["preprocess"], "image_size": 0}), "image_size"),
    "preprocess_size_huge": (lambda p: _with(p, preprocess={**p["preprocess"], "image_size": 100_000}), "image_size"),
    "meta_not_a_dict": (lambda p: _with(p, meta=[1]), "'meta' must be a dict"),
}


@pytest.fixture
def no_real_build_of_a_bad_config(monkeypatch):
    """Fail (instead of allocating gigabytes) if load_checkpoint builds a real model wider than any shipped one."""
    import fer_core.model.checkpoint as checkpoint

    real = checkpoint.Xception

    def guarded(config, *args, **kwargs):
        if torch.get_default_device().type != "meta":
            widths = [*config.stem_channels, *config.entry_channels, *config.exit_channels, *config.exit_convs]
            assert max(widths) <= 1024, f"a model was allocated for config {config} before it was checked"
        return real(config, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "Xception", guarded)


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_malformed_checkpoint_is_a_checkpoint_error(good_payload, tmp_path, kind, no_real_build_of_a_bad_config):
    build, match = BAD_CHECKPOINTS[kind]
    path = tmp_path / "model.pt"
    torch.save(build(good_payload), path)
    with pytest.raises(CheckpointError, match=match) as exc:
        load_checkpoint(path)
    assert str(path) in str(exc.value)


def test_config_that_does_not_fit_the_weights_is_refused_before_building(good_payload, tmp_path,
                                                                         no_real_build_of_a_bad_config):
    wide = {**good_payload["config"], "entry_channels": [2048, 2048, 2048], "middle_blocks": 32}
    torch.save(_with(good_payload, config=wide), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="do not fit the config"):
        load_checkpoint(tmp_path / "model.pt")


def test_class_names_in_another_order_are_mapped_by_name(good_payload, tmp_path):
    """A checkpoint listing the classes reversed (with its classifier rows to match) is the same model: it loads
    with EMOTIONS order and gives identical probabilities per expression, so evaluation scores by name."""
    reversed_model = {k: v.clone() for k, v in good_payload["model"].items()}
    for key in ("head.5.weight", "head.5.bias"):
        reversed_model[key] = reversed_model[key].flip(0)
    torch.save(good_payload, tmp_path / "good.pt")
    torch.save(_with(good_payload, model=reversed_model, class_names=list(reversed(EMOTIONS))), tmp_path / "rev.pt")
    model, _, names, _ = load_checkpoint(tmp_path / "good.pt")
    model_rev, _, names_rev, _ = load_checkpoint(tmp_path / "rev.pt")
    assert names == names_rev == EMOTIONS
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model_rev(x))


def test_evaluate_cli_exits_2_with_the_checkpoint_message(good_payload, train_data, tmp_path, capsys):
    from training.evaluate import get_args_parser, main

    torch.save(_with(good_payload, class_names=list(EMOTIONS[:5])), tmp_path / "model.pt")
    with pytest.raises(SystemExit) as exc:
        main(get_args_parser().parse_args([str(train_data / "validation"), "--weights", str(tmp_path / "model.pt")]))
    assert exc.value.code == 2
    assert "5 class names for 7 model outputs" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["config_not_a_dict", "meta_not_a_dict", "class_names_too_many"])
def test_home_page_shows_the_could_not_be_loaded_box(good_payload, tmp_path, monkeypatch, kind):
    torch.save(BAD_CHECKPOINTS[kind][0](good_payload), tmp_path / "model.pt")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("could not be loaded" in e.value for e in at.error)


# ---- defect 11: evaluate --json checked first; defect 13: misleading or silent handling -------------------

def test_evaluate_checks_the_json_path_before_evaluating(train_data, tmp_path, monkeypatch):
    import training.evaluate as evaluate

    def must_not_run(*args, **kwargs):
        raise AssertionError("evaluated although the results could not be written")

    monkeypatch.setattr(evaluate, "evaluate_files", must_not_run)
    (tmp_path / "a_file").write_text("")
    target = tmp_path / "a_file" / "eval.json"
    with pytest.raises(SystemExit) as exc:
        evaluate.main(evaluate.get_args_parser().parse_args([str(train_data / "validation"), "--json", str(target)]))
    assert "--json" in str(exc.value.code) and str(tmp_path / "a_file") in str(exc.value.code)


def test_evaluate_keeps_going_past_bad_files_and_names_skipped_ones(mixed_folder, tmp_path, capsys):
    from training.evaluate import get_args_parser, main

    happy = tmp_path / "labelled" / "happy"
    happy.mkdir(parents=True)
    for f in mixed_folder.iterdir():
        (happy / f.name).write_bytes(f.read_bytes())
    (happy / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic")
    (happy / "drawing.svg").write_text("<svg/>")
    main(get_args_parser().parse_args([str(tmp_path / "labelled"), "--no-tta", "--json", str(tmp_path / "e.json")]))
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["n_images"] == 7 and result["n_unreadable"] == 5 and result["n_faces_found"] == 2
    assert [Path(s.split(":")[0]).name for s in result["skipped_files"]] == ["drawing.svg", "photo.heic"]
    err = capsys.readouterr().err
    assert "2 file(s)" in err and "photo.heic: unsupported format (.heic)" in err


def test_folder_scan_reports_what_it_leaves_out(tmp_path):
    make_kaggle_tree(tmp_path, per_class=2, splits=("train",))
    (tmp_path / "train" / "fear" / "clip.avif").write_bytes(b"x")
    (tmp_path / "train" / "fear" / ".DS_Store").write_bytes(b"x")  # hidden: ignored without a note
    os.mkfifo(tmp_path / "train" / "fear" / "pipe.png")
    files = list_labelled_folder(tmp_path / "train")
    assert len(files) == 14
    assert sorted(Path(s.split(":")[0]).name for s in files.skipped) == ["clip.avif", "pipe.png"]
    assert any("not a regular file" in s for s in files.skipped)


def test_unreadable_image_is_left_out_of_the_decoded_split(train_data):
    arrays = load_split(train_data, "train", 48, cache_dir=None)
    assert len(arrays) == 7 * 20
    assert any("broken.jpg: unreadable" in s for s in arrays.skipped)


@pytest.mark.parametrize("header", [b"P5\n10000 6000\n255\n", b"P5\n20000 10000\n255\n", b"P5\n60000 60000\n255\n"])
def test_every_image_over_the_pixel_limit_is_too_large_not_damaged(header):
    with pytest.raises(ImageLoadError, match=r"too large \(limit 50 megapixels\)"):
        load_image(header + b"\0" * 64)


def test_float_tiff_in_0_to_1_is_scaled_to_0_to_255():
    gray = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    rgb = load_image(bytes(_encoded(Image.fromarray(gray), "TIFF")))
    assert rgb.max() == 255 and abs(int(rgb[32, 32, 0]) - 128) <= 2


def test_fifo_is_not_called_missing(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(tmp_path / "pipe.jpg")


@pytest.mark.parametrize("folder_name", ["empty", "dir.jpg"])
def test_predict_on_a_folder_without_images_says_so_and_fails(tmp_path, capsys, folder_name):
    from fer_core.predict import get_args_parser, main

    (tmp_path / folder_name).mkdir()
    (tmp_path / folder_name / "readme.txt").write_text("no images here")
    rc = main(get_args_parser().parse_args([str(tmp_path / folder_name)]))
    err = capsys.readouterr().err
    assert rc == 2 and "no image files" in err and folder_name in err


def test_unreadable_file_is_an_image_load_error(tmp_path, monkeypatch):
    (tmp_path / "locked.jpg").write_bytes(face_png())

    def no_permission(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", no_permission)  # chmod 000 does not stop root
    with pytest.raises(ImageLoadError, match="locked.jpg: cannot read the file"):
        load_image(tmp_path / "locked.jpg")
