"""Regression tests for the defects D1..D12 and the observations of the 2026-12-03 reliability audit: a damaged
later TIFF page, thin images on the pages, unvalidated temperatures, BatchNorm statistics and weight types, corrupt
or size-lying zip members, unusable --explain folders, training data faults, annotated videos kept forever, face
numbering, the video summary's wording, and unclear messages; and what the home page says about its whole-photo
accuracy.

Every bad input is built here (Pillow, torch.save, raw bytes); nothing comes from ../shared.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import jpeg_bytes, make_kaggle_tree, make_zip, synthetic_face
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_reliability import good_payload  # noqa: F401 - the fixture: a tiny model's checkpoint, as loaded

from fer_core.analysis.archive import ArchiveError, evaluate_zip, extracted_labelled_zip, read_member
from fer_core.analysis.photos import analyse_image, frame_count
from fer_core.faces.detection import Face, make_detector
from fer_core.faces.images import ImageLoadError, load_image
from fer_core.labels import EMOTIONS
from fer_core.model.artifacts import ARTIFACTS_ENV
from fer_core.model.checkpoint import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds per AppTest script run; the test machine can be slow


def png(size: tuple[int, int], color="gray") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def face_png(label: int = 3, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_face(label, seed=seed)).save(buf, "PNG")
    return buf.getvalue()


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    if page != "app.py":
        at.switch_page(page)
    return at.run()


@pytest.fixture
def shipped_artifacts(tmp_path, monkeypatch) -> Path:
    """An artifacts folder that serves the shipped model (and its evaluations), through $FER_ARTIFACTS."""
    art = tmp_path / "artifacts"
    art.mkdir()
    for f in (ROOT / "artifacts").iterdir():
        if f.suffix in (".pt", ".json", ".csv", ".onnx"):
            (art / f.name).symlink_to(f)
    monkeypatch.setenv(ARTIFACTS_ENV, str(art))
    return art


# ---- D1: a multi-page TIFF whose later page is damaged ----------------------------------------------------

def tiff_with_damaged_page2() -> bytes:
    """A 2-page TIFF whose second page has lost its ImageWidth tag (Pillow's n_frames: TypeError)."""
    buf = io.BytesIO()
    page = Image.new("RGB", (64, 64), "gray")
    page.save(buf, "TIFF", save_all=True, append_images=[page])
    d = bytearray(buf.getvalue())
    first = struct.unpack("<I", d[4:8])[0]
    n = struct.unpack("<H", d[first:first + 2])[0]
    second = struct.unpack("<I", d[first + 2 + 12 * n:first + 6 + 12 * n])[0]
    for k in range(struct.unpack("<H", d[second:second + 2])[0]):
        entry = second + 2 + 12 * k
        if struct.unpack("<H", d[entry:entry + 2])[0] == 256:  # ImageWidth -> an unknown tag
            d[entry:entry + 2] = struct.pack("<H", 65000)
    return bytes(d)


def test_d1_damaged_later_tiff_page_is_one_analysed_frame(predictor):
    data = tiff_with_damaged_page2()
    assert frame_count(data) == 1  # the count is unknown: the first page is what is analysed anyway
    result = analyse_image(predictor, make_detector(), data, "bad_page2.tif", tta=False)
    assert result.error is None and result.frames == 1 and result.size == (64, 64)


# ---- D2 / D3: very wide, thin images on the pages ----------------------------------------------------------

def test_d2_thin_images_are_shown_and_the_files_after_them_too(shipped_artifacts, face_photos):
    at = open_page("pages/1_Upload_images.py")
    files = [("a_2000x1.png", png((2000, 1)), "image/png"), ("b_4000x2.png", png((4000, 2)), "image/png"),
             ("c_70000x3.png", png((70000, 3)), "image/png"),
             ("d_photo.jpg", face_photos.paths[0].read_bytes(), "image/jpeg")]
    at.file_uploader(key="uploads").set_value(files).run()
    assert not at.exception, texts(at.exception)
    shown = [m.value.removeprefix("##### ").replace("\\", "") for m in at.markdown if m.value.startswith("##### ")]
    cards = [name for name in shown if name in {f[0] for f in files}]
    assert cards == [f[0] for f in files]  # every file has its card, in order
    assert "Face #1" in texts(at.markdown)  # the photo after the thin images has its result
    assert len(at.get("download_button")) == 2


def test_d3_wide_image_in_an_evaluation_zip_is_shown_in_the_gallery(shipped_artifacts, face_photos):
    at = open_page("pages/4_Evaluation.py")
    data = make_zip({"happy/a.jpg": face_photos.paths[0].read_bytes(), "happy/wide.png": png((70000, 3))})
    at.file_uploader(key="own_zip").set_value(("wide.zip", data, "application/zip")).run()
    at.button(key="own_zip_go").click().run()
    assert not at.exception, texts(at.exception)
    records = at.session_state["own_eval"]["records"]
    wide = next(r for r in records if r["path"] == "happy/wide.png")
    at.selectbox(key="own_true").set_value("happy").run()
    at.selectbox(key="own_pred").set_value(wide["predicted"]).run()
    assert not at.exception, texts(at.exception)
    in_cell = [r for r in records if r["true"] == "happy" and r["predicted"] == wide["predicted"]]
    assert len(at.image) == len(in_cell)  # the wide image among them, shrunk to the gallery's width


# ---- D4 / D5 / D11: checkpoint fields that give nonsense or a traceback ---------------------------------

def _tensor_changed(payload: dict, suffix: str, change) -> dict:
    model = {k: v.clone() for k, v in payload["model"].items()}
    name = next(k for k in model if k.endswith(suffix))
    model[name] = change(model[name])
    return {**payload, "model": model}


def _negative_var(t: torch.Tensor) -> torch.Tensor:
    t.view(-1)[0] = -1.0
    return t


BAD_FIELDS = {
    "temperature_text": (lambda p: {**p, "meta": {"temperature": "hot"}}, "temperature"),
    "temperature_zero": (lambda p: {**p, "meta": {"temperature": 0.0}}, "temperature"),
    "temperature_negative": (lambda p: {**p, "meta": {"temperature": -1.0}}, "temperature"),
    "temperature_nan": (lambda p: {**p, "meta": {"temperature": float("nan")}}, "temperature"),
    "temperature_bool": (lambda p: {**p, "meta": {"temperature": True}}, "temperature"),
    "temperature_no_tta_inf": (lambda p: {**p, "meta": {"temperature_no_tta": float("inf")}}, "temperature_no_tta"),
    "negative_running_var": (lambda p: _tensor_changed(p, "running_var", _negative_var), "running_var"),
    "int64_weight": (lambda p: _tensor_changed(p, "head.5.weight", lambda t: t.to(torch.int64)), "floating-point"),
    "complex_weight": (lambda p: _tensor_changed(p, "head.5.weight", lambda t: t.to(torch.complex64)),
                       "floating-point"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FIELDS))
def test_d4_d5_d11_bad_checkpoint_fields_are_a_checkpoint_error(good_payload, tmp_path, kind):
    build, match = BAD_FIELDS[kind]
    torch.save(build(good_payload), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=match) as exc:
        load_checkpoint(tmp_path / "model.pt")
    assert str(tmp_path / "model.pt") in str(exc.value)


def test_d4_calibrated_temperatures_still_load(good_payload, tmp_path):
    torch.save({**good_payload, "meta": {"temperature": 0.83, "temperature_no_tta": 1}}, tmp_path / "model.pt")
    assert load_checkpoint(tmp_path / "model.pt")[3]["temperature"] == 0.83


def test_d4_predict_cli_says_error_with_rc_2(good_payload, tmp_path, capsys):
    from fer_core.predict import get_args_parser, main

    torch.save(BAD_FIELDS["temperature_text"][0](good_payload), tmp_path / "model.pt")
    (tmp_path / "face.png").write_bytes(face_png())
    rc = main(get_args_parser().parse_args([str(tmp_path / "face.png"), "--weights", str(tmp_path / "model.pt")]))
    assert rc == 2 and "error:" in capsys.readouterr().err


def test_d4_upload_page_shows_the_could_not_be_loaded_box(good_payload, tmp_path, monkeypatch):
    torch.save(BAD_FIELDS["temperature_zero"][0](good_payload), tmp_path / "model.pt")
    monkeypatch.setenv(ARTIFACTS_ENV, str(tmp_path))
    at = open_page("pages/1_Upload_images.py")
    assert not at.exception, texts(at.exception)
    assert "could not be loaded" in texts(at.error) and "temperature" in texts(at.error)
    assert str(tmp_path) not in texts(at.error)  # N1 (2026-12-06): the box names no server folder


# ---- D6 / D7: corrupt and size-lying zip members ------------------------------------------------------------

def test_d6_corrupt_deflate_data_is_an_archive_error(predictor):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("happy/a.png", np.random.default_rng(0).integers(0, 255, 20_000, dtype=np.uint8).tobytes())
    d = bytearray(buf.getvalue())
    for i in range(60, 2000, 97):  # damage the compressed stream, not the headers
        d[i] ^= 0xFF
    with pytest.raises(ArchiveError, match="happy/a.png"):
        evaluate_zip(predictor, bytes(d))
    with pytest.raises(ArchiveError, match="happy/a.png"):
        read_member(bytes(d), "happy/a.png")


def size_lying_zip(inflated: int, declared: int = 1000) -> bytes:
    """A zip whose one member 'happy/a.jpg' says it holds ``declared`` bytes but inflates to ``inflated``."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    comp = b"".join(co.compress(bytes(1 << 20)) for _ in range(inflated >> 20)) + co.flush()
    name = b"happy/a.jpg"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(comp), declared, len(name), 0)
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(comp), declared,
                          len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(name) + len(comp), 0)
    return local + name + comp + central + end


def test_d7_member_that_understates_its_size_is_read_in_bounded_memory():
    data = size_lying_zip(256 << 20)  # 256 MB of zeros behind a 1000-byte header
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match="happy/a.jpg"):
            with extracted_labelled_zip(data):
                pass
        with pytest.raises(ArchiveError, match="happy/a.jpg"):
            read_member(data, "happy/a.jpg")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MB allocated to read a member that declares 1000 bytes"


# ---- D8: predict --explain DIR -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    from helpers import astronaut

    path = tmp_path_factory.mktemp("photo") / "ok.jpg"
    path.write_bytes(jpeg_bytes(astronaut()))
    return path


@pytest.mark.parametrize("where", ["a_file", "below_a_file", "proc"])
def test_d8_unusable_explain_folder_is_reported_before_any_work(photo_file, tmp_path, capsys, where, monkeypatch):
    import fer_core.predict as predict

    (tmp_path / "a_file").write_text("x")
    target = {"a_file": tmp_path / "a_file", "below_a_file": tmp_path / "a_file" / "sub",
              "proc": Path("/proc/1/heat")}[where]
    monkeypatch.setattr(predict.Predictor, "from_checkpoint",
                        lambda *a, **k: pytest.fail("the model was loaded before --explain was checked"))
    rc = predict.main(predict.get_args_parser().parse_args([str(photo_file), "--explain", str(target)]))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: --explain") and str(target) in err


def test_d8_long_file_names_get_heatmaps_that_fit_the_file_system(photo_file, tmp_path, capsys):
    from fer_core.predict import get_args_parser, main

    long = tmp_path / (("é" * 60 + "x" * 120) + ".jpg")  # 240 bytes in UTF-8: too long once numbered
    long.write_bytes(photo_file.read_bytes())
    rc = main(get_args_parser().parse_args([str(photo_file), str(long), "--no-tta", "--json",
                                            "--explain", str(tmp_path / "heat")]))
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(doc) == 2
    heatmaps = [Path(f["heatmap"]) for entry in doc for f in entry["faces"]]
    assert len(heatmaps) == 2 and all(p.is_file() and len(p.name.encode()) <= 255 for p in heatmaps)


# ---- D9 / D12: training data faults ----------------------------------------------------------------------

def run_train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.train", "--cache-dir", "", "--variant", "tiny",
                           "--threads", "1", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("layout", ["missing", "empty", "no_validation"])
def test_d9_missing_data_folder_or_split_is_an_error_line(tmp_path, layout):
    data = tmp_path / "data"
    if layout == "empty":
        data.mkdir()
    elif layout == "no_validation":
        make_kaggle_tree(data, per_class=2, splits=("train",))
    done = run_train("--data", str(data), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                     "--epochs", "1")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr and str(data) in done.stderr


def test_d12_an_empty_class_folder_is_warned_about(tmp_path):
    data = make_kaggle_tree(tmp_path / "data", per_class=12)
    for f in (data / "train" / "fear").iterdir():
        f.unlink()
    done = run_train("--data", str(data), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
                     "--epochs", "2", "--batch-size", "16")
    assert done.returncode == 0, done.stderr
    assert "warning:" in done.stderr and "fear" in done.stderr.split("warning:", 1)[1]


# ---- D10: annotated videos of ended sessions -------------------------------------------------------------

def test_d10_old_annotated_videos_are_removed(tmp_path):
    from fer_core.video.codec import prune_annotated_videos

    old, fresh, other = tmp_path / "old_annotated.mp4", tmp_path / "new_annotated.mp4", tmp_path / "notes.txt"
    for f in (old, fresh, other):
        f.write_bytes(b"x")
    hours_ago = time.time() - 3 * 3600
    os.utime(old, (hours_ago, hours_ago))
    os.utime(other, (hours_ago, hours_ago))
    assert prune_annotated_videos(tmp_path, max_age_s=3600) == [old]
    assert not old.exists() and fresh.exists() and other.exists()


def test_d10_the_video_page_removes_old_annotated_videos_when_it_writes_one(tmp_path, predictor):
    from video_helpers import switching_video

    data = switching_video(tmp_path / "clip.mp4", seconds=1.0).read_bytes()
    at = AppTest.from_file(str(ROOT / "pages" / "3_Video_files.py"), default_timeout=TIMEOUT).run()
    at.file_uploader(key="video_file").set_value(("clip.mp4", data, "video/mp4")).run()
    next(b for b in at.button if b.label == "Analyse video").click().run()
    assert not at.exception, texts(at.exception)
    folder = Path(at.session_state["video_run"]["video"]).parent  # this server process's folder of videos
    ended = folder / "of_an_ended_session_annotated.mp4"
    ended.write_bytes(b"an annotated video nobody looked at for hours")
    hours_ago = time.time() - 3 * 3600
    os.utime(ended, (hours_ago, hours_ago))
    next(b for b in at.button if b.label == "Analyse video").click().run()
    assert not at.exception, texts(at.exception)
    assert not ended.exists() and Path(at.session_state["video_run"]["video"]).is_file()


# ---- face numbering and the video summary ---------------------------------------------------------------

def test_predict_cli_numbers_faces_left_to_right_like_the_page(photo_file, capsys, monkeypatch):
    """A detector that reports the right face first: the CLI, like the page, numbers the left one 1."""
    import fer_core.predict as predict

    class RightFirst:
        def detect(self, gray):
            return [Face((300, 100, 150, 150), 0.9), Face((20, 100, 150, 150), 0.95)]

    monkeypatch.setattr(predict, "make_detector", lambda *a, **k: RightFirst())
    rc = predict.main(predict.get_args_parser().parse_args([str(photo_file), "--json", "--no-tta"]))
    faces = json.loads(capsys.readouterr().out)[0]["faces"]
    assert rc == 0 and [f["box"][0] for f in faces] == [20, 300]


def _rows(labels: list[str], probs: list[dict]) -> pd.DataFrame:
    from fer_core.faces.detection import landmark_values
    from fer_core.video.analyse import COLUMNS, timestamp

    out = []
    for frame, (label, p) in enumerate(zip(labels, probs)):
        p = dict.fromkeys(EMOTIONS, 0.0) | p
        out.append((frame, frame / 5, timestamp(frame / 5), 1, 0, 0, 50, 50, label, max(p.values()),
                    *(p[n] for n in EMOTIONS), *landmark_values(())))
    return pd.DataFrame(out, columns=list(COLUMNS))


def test_video_summary_lists_changes_of_expression_not_same_label_moves():
    from fer_core.video.summary import summarise

    rows = _rows(["surprise", "surprise", "happy"],
                 [{"surprise": 0.95, "fear": 0.05}, {"surprise": 0.5, "fear": 0.45, "happy": 0.05},
                  {"happy": 0.6, "surprise": 0.4}])
    changes = summarise(rows).loc[0, "largest_changes"]
    assert "surprise->surprise" not in changes and "surprise->happy" in changes


def test_video_summary_says_so_on_a_tie():
    from fer_core.video.summary import summarise

    rows = _rows(["happy", "surprise", "happy", "surprise"],
                 [{"happy": 0.9}, {"surprise": 0.6}, {"happy": 0.9}, {"surprise": 0.6}])
    dominant = summarise(rows).loc[0, "dominant"]
    assert dominant == "happy / surprise"  # not "happy" for its higher confidence
    from fer_core.video.summary import dominant_text

    assert dominant_text(dominant) == "happy and surprise equally" and dominant_text("sad") == "mostly sad"


# ---- observations: unclear messages ---------------------------------------------------------------------

def test_o1_undecodable_member_name_says_what_to_do():
    data = bytearray(make_zip({"happy/abcdef.png": face_png()}))
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):  # set the UTF-8 flag and spoil the name, in both headers
        at = data.index(sig)
        struct.pack_into("<H", data, at + (6 if sig == b"PK\x03\x04" else 8), 0x800)
        name_at = data.index(b"happy/abcdef.png", at)
        data[name_at + 6] = 0xFF
    with pytest.raises(ArchiveError, match="names") as exc:
        with extracted_labelled_zip(bytes(data)):
            pass
    assert "UTF-8" in str(exc.value) and "zip" in str(exc.value)


def test_o4_evaluate_summary_counts_the_unreadable_images(tmp_path, capsys):
    from training.evaluate import get_args_parser, main

    data = make_kaggle_tree(tmp_path / "data", per_class=1, splits=("validation",)) / "validation"
    (data / "happy" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    main(get_args_parser().parse_args([str(data), "--no-tta"]))
    out = capsys.readouterr().out
    assert "1 unreadable" in out


def test_o2_server_folder_errors_do_not_tell_what_exists(shipped_artifacts, tmp_path, monkeypatch):
    """With server folders turned on, a visitor cannot tell a missing path from a file, a folder of other things or
    an empty folder by the error."""
    monkeypatch.setenv("FER_ALLOW_SERVER_FOLDERS", "1")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "other" / "scans").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    at = open_page("pages/4_Evaluation.py")
    errors = set()
    for path in (tmp_path / "missing", tmp_path / "a_file", tmp_path / "other", tmp_path / "empty"):
        at.text_input(key="own_folder").input(str(path)).run()
        at.button(key="own_folder_go").click().run()
        assert not at.exception, texts(at.exception)
        errors.add(texts(at.error).replace(str(path), "<path>"))
    assert len(errors) == 1, errors


def test_o6_negative_bmp_width_is_damaged_not_too_large():
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buf, "BMP")
    d = bytearray(buf.getvalue())
    struct.pack_into("<i", d, 18, -64)
    with pytest.raises(ImageLoadError) as exc:
        load_image(bytes(d))
    assert "too large" not in str(exc.value)


# ---- what a newcomer hit (the browser side is in test_browser_newcomer.py) ------------------------------------

def test_home_says_what_the_whole_photos_accuracy_was_measured_on(shipped_artifacts):
    photos = json.loads((shipped_artifacts / "eval_cfee_test.json").read_text())
    at = open_page("app.py")
    assert not at.exception, texts(at.exception)
    assert next(m for m in at.metric if m.label == "Whole photos accuracy").value == f"{photos['accuracy']:.1%}"
    shown = texts(at.caption)
    assert f"whole photos accuracy: {photos['split']}" in shown  # on the page, not only in a tooltip
    assert f"{photos['n_faces_found']} of {photos['n_images']} faces found" in shown
