"""The classifier as artifacts/model.onnx: the same logits as the torch checkpoint on real faces, metadata that
rebuilds everything without torch, no stale graph ever served, and the app's install path running with torch
made unimportable (a subprocess that blocks ``import torch``)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fer_core.analysis.datasets import decode_gray, list_labelled_folder
from fer_core.faces.alignment import face_crop
from fer_core.faces.detection import make_detector
from fer_core.faces.preprocessing import faces_to_array, to_gray
from fer_core.model.checkpoint import load_checkpoint, save_checkpoint
from fer_core.model.inference import Predictor, predict_view_logits
from fer_core.model.network import count_parameters
from fer_core.model.onnx_file import current_onnx, file_sha256, onnx_path_for, read_onnx_model, write_onnx_beside
from fer_core.model.weights import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "artifacts" / "model.pt", ROOT / "artifacts" / "model_fer2013.pt"]
# Run before the code of a subprocess: any import of torch fails, as in an install without it.
BLOCK_TORCH = textwrap.dedent("""
    import importlib.abc, sys
    class _NoTorch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("No module named 'torch' (blocked: the app's install has no torch)")
    sys.meta_path.insert(0, _NoTorch())
""")


def run_without_torch(code: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_onnx_is_current_and_carries_what_the_app_needs(weights):
    """Each shipped .pt has its .onnx beside it, exported from exactly that file (re-export with
    `python -m fer_core.model.onnx_file artifacts/<name>.pt` after replacing a .pt), with the checkpoint's classes,
    preprocessing, temperatures and parameter count in its metadata."""
    exported, why = current_onnx(weights)
    assert exported is not None, f"{why}: run `python -m fer_core.model.onnx_file {weights.relative_to(ROOT)}`"
    model, preprocess, names, meta = load_checkpoint(weights)
    assert exported.class_names == names and exported.preprocess == preprocess
    assert exported.meta.get("temperature") == meta.get("temperature")
    assert exported.meta.get("temperature_no_tta") == meta.get("temperature_no_tta")
    assert exported.info["parameters"] == count_parameters(model) and exported.info["opset"] == 17
    sidecar = json.loads(onnx_path_for(weights).with_suffix(".onnx.json").read_text())
    assert sidecar == exported.info and sidecar["weights_sha256"] == file_sha256(weights)


def real_faces(predictor, face_photos, fer_dir: Path | None, n: int = 64) -> list[np.ndarray]:
    """The astronaut's aligned face and (when ../shared/data is there) ``n`` FER2013 validation faces."""
    gray = to_gray(face_photos.arrays["astronaut"])
    faces = [face_crop(gray, make_detector().detect(gray)[0], 48, predictor.preprocess.face_margin)]
    if fer_dir is not None:
        files = list_labelled_folder(fer_dir)
        picks = np.random.default_rng(0).choice(len(files), n, replace=False)
        faces += [decode_gray(files.paths[i], 48) for i in picks]
    return faces


def test_onnx_and_torch_give_the_same_logits_on_real_faces(predictor, face_photos):
    fer_dir = ROOT.parent / "shared" / "data" / "fer2013" / "images" / "validation"
    crops = real_faces(predictor, face_photos, fer_dir if fer_dir.is_dir() else None)
    x = faces_to_array(crops, predictor.preprocess)
    assert predictor.backend.name == "onnxruntime"  # served from model.onnx
    assert Predictor.from_checkpoint(SHIPPED[0])._model is None  # torch weights only on demand (the shared fixture
    # may have loaded them for an earlier test)
    for tta in (False, True):
        fast = predict_view_logits(predictor.backend, x, tta=tta)
        eager = predict_view_logits(predictor.model, x, tta=tta)
        np.testing.assert_allclose(fast, eager, atol=1e-4, rtol=0)
    torch_predictor = Predictor.from_checkpoint(SHIPPED[0], backend="torch")
    np.testing.assert_allclose(predictor.classify_crops(crops), torch_predictor.classify_crops(crops), atol=1e-5)


def test_a_changed_checkpoint_is_never_served_through_its_old_onnx(tmp_path, caplog, face_photos):
    model, preprocess, names, meta = load_checkpoint(SHIPPED[0])
    pt = tmp_path / "model.pt"
    save_checkpoint(pt, model, preprocess, meta, names)
    write_onnx_beside(pt)
    assert current_onnx(pt)[0] is not None
    save_checkpoint(pt, model, preprocess, {**meta, "temperature": 2.0}, names)  # recalibrated, not re-exported
    exported, why = current_onnx(pt)
    assert exported is None and "other weights" in why
    with caplog.at_level(logging.WARNING):
        stale = Predictor.from_checkpoint(pt)
    assert stale.temperature == 2.0 and "exporting it in memory" in caplog.text
    write_onnx_beside(pt)
    fresh = Predictor.from_checkpoint(pt)
    assert fresh._model is None and fresh.temperature == 2.0
    crop = to_gray(face_photos.arrays["astronaut_head"])[40:190, 20:170]
    np.testing.assert_allclose(fresh.classify_crops([crop]), stale.classify_crops([crop]), atol=1e-5)


def test_an_onnx_without_usable_metadata_is_a_clear_error(tmp_path):
    import onnx

    graph = onnx.load(str(onnx_path_for(SHIPPED[0])))
    info = json.loads(graph.metadata_props[0].value)
    graph.metadata_props[0].value = json.dumps({**info, "class_names": ["happy", "sad"]})
    bad = tmp_path / "model.onnx"
    bad.write_bytes(graph.SerializeToString())
    with pytest.raises(CheckpointError, match="not a usable expression model: class_names"):
        read_onnx_model(bad)
    bad.write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="Cannot read the ONNX model"):
        read_onnx_model(bad)


def test_the_app_install_runs_without_torch(face_photos, tmp_path):
    """With torch unimportable: the shipped predictor classifies and explains a real photo, every page's library
    imports, `fer_core.predict` runs, and a .pt without its .onnx says what to install."""
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(SHIPPED[0], lone / "model.pt")
    proc = run_without_torch(f"""
        import sys
        import fer_core.ui.widgets, fer_core.ui.plots, fer_core.analysis.photos, fer_core.video.analyse, fer_core.video.live, fer_core.analysis.archive
        import fer_core.analysis.evaluation, fer_core.model.artifacts, training.evaluate
        from fer_core.model.explain import explain_crop
        from fer_core.faces.detection import make_detector
        from fer_core.model.inference import Predictor
        from fer_core.predict import get_args_parser, main
        from fer_core.model.weights import CheckpointError

        predictor = Predictor.from_checkpoint()
        faces = predictor.predict({str(face_photos.path("astronaut"))!r}, make_detector())
        assert [f.label for f in faces] == ["happy"], faces
        print("parameters", predictor.parameters)
        from fer_core.faces.alignment import face_crop
        from fer_core.faces.images import load_image
        from fer_core.faces.preprocessing import to_gray
        gray = to_gray(load_image({str(face_photos.path("astronaut"))!r}))
        heat = explain_crop(predictor.backend, predictor.preprocess, face_crop(gray, faces[0].face, 48, 0.0))
        assert heat.shape == (7, 48, 48) and heat.max() > 0
        assert main(get_args_parser().parse_args([{str(face_photos.path("astronaut"))!r}, "--json"])) == 0
        try:
            Predictor.from_checkpoint({str(lone / "model.pt")!r})
        except CheckpointError as e:
            print("ERROR", e)
        assert "torch" not in sys.modules
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"label": "happy"' in proc.stdout
    assert f"parameters {read_onnx_model(onnx_path_for(SHIPPED[0])).info['parameters']}" in proc.stdout
    error = proc.stdout.split("ERROR ", 1)[1]
    assert "pip install -r requirements-train.txt" in error and "python -m fer_core.model.onnx_file" in error


def test_every_page_runs_without_torch():
    """In a process where torch cannot be imported: every module each page imports loads, and Streamlit's AppTest
    runs the home page and every page but the live one (its WebRTC component needs a browser: test_live_page)."""
    proc = run_without_torch("""
        import ast, importlib, sys
        from pathlib import Path
        from streamlit.testing.v1 import AppTest
        scripts = [Path("app.py"), *sorted(Path("pages").glob("*.py"))]
        for script in scripts:
            for node in ast.walk(ast.parse(script.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    importlib.import_module(node.module)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        importlib.import_module(alias.name)
        for script in scripts:
            if "Live" in script.name:
                continue
            at = AppTest.from_file("app.py", default_timeout=300)
            if script.name != "app.py":
                at.switch_page(str(script))
            at.run()
            assert not at.exception, (script, [e.value for e in at.exception])
            assert not at.error, (script, [e.value for e in at.error])
            print("page ok", script)
        assert "torch" not in sys.modules
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("page ok") == len(list((ROOT / "pages").glob("*.py")))  # home + every page but the live one


def test_a_checkpoint_without_its_onnx_tells_the_app_user_what_to_install(tmp_path):
    """Without torch, an artifacts folder holding a .pt but no .onnx: the home and upload pages show an error that
    names requirements-train.txt and the export command, not a traceback."""
    shutil.copy(SHIPPED[0], tmp_path / "model.pt")
    proc = run_without_torch(f"""
        import os
        os.environ["FER_ARTIFACTS"] = {str(tmp_path)!r}
        from streamlit.testing.v1 import AppTest
        for page in ("app.py", "pages/1_Upload_images.py"):
            at = AppTest.from_file("app.py", default_timeout=300)
            if page != "app.py":
                at.switch_page(page)
            at.run()
            assert not at.exception, [e.value for e in at.exception]
            print("ERROR", page, " ".join(e.value for e in at.error).replace(chr(92), ""))  # Markdown-escaped
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in proc.stdout.splitlines():
        if line.startswith("ERROR"):
            assert "pip install -r requirements-train.txt" in line and "python -m fer_core.model.onnx_file" in line, line
    assert proc.stdout.count("ERROR") == 2
