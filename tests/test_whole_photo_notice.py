"""Whole photos evaluated as if they were face crops: the commands and the page say so instead of printing a low
score silently; face crops and --detect-faces get no such note."""

from __future__ import annotations

import subprocess
import sys

import cv2
from helpers import jpeg_bytes, public_domain_faces, synthetic_face
from test_label_issues import ROOT

from fer_core.analysis.report import whole_photo_warning
from fer_core.labels import EMOTIONS


def whole_photos(folder):
    for name, rgb in public_domain_faces().items():
        if "head" not in name:  # the full 512x512 portrait: the face covers about a twentieth of it
            (folder / "happy").mkdir(parents=True, exist_ok=True)
            (folder / "happy" / f"{name}.jpg").write_bytes(jpeg_bytes(rgb))
    return folder


def evaluate(*args):
    return subprocess.run([sys.executable, "-m", "training.evaluate", *map(str, args), "--no-tta"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_evaluating_whole_photos_as_crops_warns_and_detecting_faces_does_not(tmp_path):
    folder = whole_photos(tmp_path / "photos")
    plain = evaluate(folder)
    assert plain.returncode == 0 and "whole photos" in plain.stderr and "--detect-faces" in plain.stderr
    detected = evaluate(folder, "--detect-faces")
    assert detected.returncode == 0 and "whole photos" not in detected.stderr


def test_face_crops_get_no_warning(predictor, tmp_path):
    from fer_core.analysis.datasets import list_labelled_folder
    from fer_core.analysis.evaluation import evaluate_files

    for label, name in enumerate(EMOTIONS):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "0.png"), synthetic_face(label))
    summary = evaluate_files(predictor, list_labelled_folder(tmp_path), tta=False).summary
    assert summary["whole_photo_check"]["checked"] == 7 and whole_photo_warning(summary) is None


def test_the_evaluation_page_warns_about_whole_photos(monkeypatch, tmp_path):
    import io
    import zipfile

    from test_compare import open_evaluation

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for path in whole_photos(tmp_path / "photos").rglob("*.jpg"):
            z.write(path, f"happy/{path.name}")
    at = open_evaluation()
    at.file_uploader(key="own_zip").set_value(("photos.zip", buf.getvalue(), "application/zip"))
    at.run(timeout=120)
    at.button(key="own_zip_go").click().run(timeout=300)
    assert not at.exception
    assert any("whole photos" in w.value and "Images are whole photos" in w.value for w in at.warning)


def test_a_newcomer_without_a_photo_can_try_the_sample():
    from test_app_pages import UPLOAD, no_exception, open_page, texts

    at = open_page(UPLOAD)
    no_exception(at)
    assert "file(s)" not in texts(at.markdown)  # nothing analysed yet
    at.toggle(key="use_sample").set_value(True).run()
    no_exception(at)
    assert "1 file(s), 1 face(s)" in texts(at.markdown)
    assert "public domain" in texts(at.caption)
    assert at.toggle(key="use_sample").value  # the switch stays, so the sample can be turned off again
    main = [type(e).__name__ for e in at.main]
    assert main.index("Toggle") == main.index("FileUploader") + 1  # right under the uploader, above the results
    at.toggle(key="use_sample").set_value(False).run()
    no_exception(at)
    assert "file(s)" not in texts(at.markdown) and any("Upload one or more images" in i.value for i in at.info)
