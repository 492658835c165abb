"""Preprocessing and inference: the shipped model on real public-domain photographs and awkward image formats.

Only the accuracy check on the labelled photos of ../shared/data needs that folder; everything else uses the
``face_photos`` fixture (the NASA astronaut portrait and copies of it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fer_core.analysis.datasets import list_labelled_folder, load_face_arrays
from fer_core.faces.alignment import face_crop
from fer_core.faces.detection import make_detector
from fer_core.faces.images import ImageLoadError, load_image
from fer_core.faces.preprocessing import PreprocessConfig, crop_face, faces_to_tensor, to_gray
from fer_core.labels import EMOTIONS
from fer_core.model.inference import TTA_ZOOMS, predict_probabilities, tta_views, zoom


def test_training_eval_path_and_app_path_give_identical_tensors(face_photos, tmp_path):
    """48x48 face crops stored as FER2013 stores them (gray JPEG) and as PNG: dataset reader (training-time
    evaluation) vs the app's upload path."""
    for name, rgb in face_photos.arrays.items():
        crop = Image.fromarray(rgb).convert("L").resize((48, 48), Image.Resampling.LANCZOS)
        for label, fmt in (("happy", "JPEG"), ("neutral", "PNG")):
            (tmp_path / label).mkdir(exist_ok=True)
            crop.save(tmp_path / label / f"{name}.{fmt.lower()}", fmt)
    files = list_labelled_folder(tmp_path)
    picks = list(files.paths)
    train_path = faces_to_tensor(load_face_arrays(files, 48).images, PreprocessConfig())
    with open(picks[0], "rb") as f:
        uploaded = f.read()
    app_path = faces_to_tensor([to_gray(load_image(uploaded))] + [to_gray(load_image(p)) for p in picks[1:]])
    assert train_path.shape == (len(picks), 1, 48, 48)
    assert torch.equal(train_path, app_path)


def test_faces_to_tensor_normalises_and_resizes():
    cfg = PreprocessConfig(mean=0.5, std=0.25)
    x = faces_to_tensor([np.full((100, 80), 255, np.uint8), np.zeros((48, 48, 3), np.uint8)], cfg)
    assert x.shape == (2, 1, 48, 48) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full((1, 48, 48), 2.0)) and torch.allclose(x[1], torch.full((1, 48, 48), -2.0))


def test_crop_face_clips_to_image():
    gray = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    assert crop_face(gray, (90, 90, 20, 20)).shape == (10, 10)
    with pytest.raises(ValueError):
        crop_face(gray, (200, 200, 10, 10))


def test_real_photos_give_a_face_with_7_probabilities(face_photos, predictor):
    detector = make_detector()
    for path in face_photos.paths:
        faces = predictor.predict(path, detector, tta=False)
        assert len(faces) == 1, path.name
        face = faces[0]
        assert set(face.probabilities) == set(EMOTIONS)
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert face.label == max(face.probabilities, key=face.probabilities.get)
        x, y, w, h = face.box
        assert 80 <= w <= 130 and 100 <= h <= 150, (path.name, face.box)  # the face, not the whole photo


def test_happy_photos_are_mostly_recognised_as_happy(photos_dir, predictor):
    """Accuracy regression on ../shared/data/photos (skips without it). Labels of the photos are noisy, but a
    working model gets clear smiles right more often than not."""
    faces = [predictor.predict(p, whole_image_if_no_face=True)[0] for p in sorted((photos_dir / "happy").glob("*.jpg"))]
    share = np.mean([f.label == "happy" for f in faces])
    assert share >= 0.5, f"only {share:.0%} of happy photos predicted happy"


def test_several_faces_in_one_image_are_all_classified(face_photos, predictor):
    a = face_photos.arrays["astronaut_head"]
    b = face_photos.arrays["astronaut_head_dark"]
    h = max(a.shape[0], b.shape[0])
    canvas = np.full((h, a.shape[1] + b.shape[1] + 40, 3), 255, np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] + 40:] = b
    faces = predictor.predict(canvas)
    assert len(faces) == 2
    assert {f.box[0] < a.shape[1] for f in faces} == {True, False}


def test_tta_changes_probabilities_but_both_are_distributions(face_photos, predictor):
    path = face_photos.path("astronaut")
    with_tta = predictor.predict(path, tta=True)[0].probabilities
    without = predictor.predict(path, tta=False)[0].probabilities
    assert sum(without.values()) == pytest.approx(1.0, abs=1e-4)
    assert with_tta != without


def test_no_face_returns_empty_or_whole_image(predictor):
    blank = np.full((300, 300, 3), 127, np.uint8)
    assert predictor.predict(blank) == []
    whole = predictor.predict(blank, whole_image_if_no_face=True)
    assert len(whole) == 1 and whole[0].whole_image and whole[0].box == (0, 0, 300, 300)


def test_tiny_image_is_handled_without_error(predictor):
    assert predictor.predict(np.zeros((10, 10), np.uint8)) == []


def test_bgr_and_rgb_arrays_agree(face_photos, predictor):
    rgb = face_photos.arrays["astronaut"]
    a = predictor.predict(rgb, channel_order="RGB")[0]
    b = predictor.predict(np.ascontiguousarray(rgb[:, :, ::-1]), channel_order="BGR")[0]
    assert a.label == b.label and a.box == b.box


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_image_formats_and_modes_load_as_rgb(face_photos):
    base = Image.open(face_photos.path("astronaut_head")).convert("RGB")
    cases = {
        "gray": base.convert("L"),
        "rgba": base.convert("RGBA"),
        "palette": base.convert("P"),
        "16bit": Image.fromarray((np.asarray(base.convert("L")).astype(np.uint16) * 257)),
    }
    for name, img in cases.items():
        fmt = "PNG"
        arr = load_image(_encode(img, fmt))
        assert arr.shape == (base.height, base.width, 3) and arr.dtype == np.uint8, name
    for fmt in ("WEBP", "BMP", "TIFF"):
        assert load_image(_encode(base, fmt)).shape == (base.height, base.width, 3), fmt
    # 16-bit content is scaled, not clipped to white.
    sixteen = load_image(_encode(cases["16bit"], "PNG"))[:, :, 0]
    assert np.abs(sixteen.astype(int) - np.asarray(base.convert("L")).astype(int)).max() <= 1


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (60, 30), "white")
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    arr = load_image(_encode(img, "JPEG", exif=exif.tobytes()))
    assert arr.shape[:2] == (60, 30)


@pytest.mark.parametrize("payload,match", [(b"", "empty"), (b"not an image at all", "not an image")])
def test_bad_bytes_are_clear_errors(payload, match):
    with pytest.raises(ImageLoadError, match=match):
        load_image(payload)


def test_truncated_jpeg_is_a_clear_error(face_photos):
    data = face_photos.path("astronaut").read_bytes()
    with pytest.raises(ImageLoadError, match="damaged or truncated"):
        load_image(data[: len(data) // 3])


def test_tta_views_are_mirrored_and_zoomed_about_the_centre():
    x = np.arange(48 * 48, dtype=np.float32).reshape(1, 1, 48, 48)
    views = tta_views(x)
    assert len(views) == 2 * len(TTA_ZOOMS)
    np.testing.assert_array_equal(views[0], x)
    np.testing.assert_array_equal(views[1], x[..., ::-1])
    closer = zoom(x, 1.25)
    # Zooming in keeps the centre and brings inner pixels to the border.
    assert abs(float(closer[0, 0, 24, 24] - x[0, 0, 24, 24])) < 48
    assert float(closer[0, 0, 0, 0]) > float(x[0, 0, 0, 0]) + 48 * 4


@pytest.mark.parametrize("factor", TTA_ZOOMS + (1.25, 0.8))
def test_zoom_samples_like_grid_sample(factor):
    """The separable zoom (numpy, as the app runs it) is the bilinear, border-replicating resampling of torch's
    grid_sample."""
    x = torch.rand(3, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]]).expand(3, 2, 3)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    expected = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    np.testing.assert_allclose(zoom(x.numpy(), factor), expected.numpy(), atol=1e-5, rtol=0)


def test_onnx_runtime_backend_gives_the_torch_models_probabilities(face_photos, predictor):
    """The default backend runs the same weights: same labels, probabilities within 1e-4, with and without TTA."""
    assert predictor.backend.name == "onnxruntime"
    gray = to_gray(face_photos.arrays["astronaut"])
    faces = make_detector().detect(gray)
    crops = [face_crop(gray, faces[0], 48, predictor.preprocess.face_margin)]
    crops += [np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8) for i in range(20)]
    x = faces_to_tensor(crops, predictor.preprocess)
    for tta in (False, True):
        fast = predict_probabilities(predictor.backend, x, tta=tta)
        eager = predict_probabilities(predictor.model, x, tta=tta)
        np.testing.assert_allclose(fast, eager, atol=1e-4)
        assert (fast.argmax(1) == eager.argmax(1)).all()


def test_backend_is_chosen_by_argument_or_environment(monkeypatch):
    from fer_core.model.backends import make_backend
    from fer_core.model.network import Xception, XceptionConfig

    model = Xception(XceptionConfig())
    assert make_backend(model, "torch").name == "torch"
    monkeypatch.setenv("FER_BACKEND", "torch")
    assert make_backend(model).name == "torch"
    monkeypatch.setenv("FER_BACKEND", "tensorflow")
    with pytest.raises(ValueError, match="FER_BACKEND='tensorflow' is not a backend"):
        make_backend(model)
    monkeypatch.delenv("FER_BACKEND")
    assert make_backend(model).name == "onnxruntime"


def test_tta_gives_a_face_and_its_mirror_image_the_same_prediction(face_photos, predictor):
    x0, y0, w, h = make_detector().detect(to_gray(face_photos.arrays["astronaut"]))[0].box
    gray = to_gray(face_photos.arrays["astronaut"])[y0:y0 + h, x0:x0 + w]  # the face, not the whole photo
    x = faces_to_tensor([gray], predictor.preprocess)
    mirrored = torch.flip(x, dims=[3])
    with_tta = predict_probabilities(predictor.model, torch.cat([x, mirrored]), tta=True)
    np.testing.assert_allclose(with_tta[0], with_tta[1], atol=1e-4)
    without = predict_probabilities(predictor.model, torch.cat([x, mirrored]), tta=False)
    assert np.abs(without[0] - without[1]).max() > 1e-3  # the model alone is not mirror-symmetric
