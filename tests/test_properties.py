"""Property tests of every parser and validator that reads what a user or another program hands over (Hypothesis):
random bytes, truncations and mutations of real checkpoints, ONNX graphs, images, zips, batch part files and
manifests, relabel CSVs and run files. Each either reads the input or raises the project's own error type for it;
nothing else escapes, no example takes more than a few seconds, and memory does not grow beyond a set bound.

The examples are derandomized (the same ones on every run) and bounded in number, so the file runs in about a
minute or two in CI.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fer_core.analysis.archive import ArchiveError, extracted_labelled_zip
from fer_core.analysis.label_issues import read_relabels
from fer_core.analysis.runs import read_run, runs_table
from fer_core.faces.images import ImageLoadError, load_image
from fer_core.files import read_text_file
from fer_core.jobs.tables import PHOTO_SCHEMA, part_readable, read_record, record_path
from fer_core.labels import EMOTIONS, UnknownClassError
from fer_core.model.onnx_file import onnx_model_from_bytes
from fer_core.model.weights import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
PROPERTY = settings(max_examples=80, deadline=10_000, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])
MEMORY_BOUND = 600 * 2**20  # resident memory a property test may add over its examples


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def memory_bound():
    """Fails the test when the process's resident memory ends more than MEMORY_BOUND above where it started."""
    start = resident_bytes()
    yield
    assert resident_bytes() - start < MEMORY_BOUND, f"memory grew by {(resident_bytes() - start) / 2**20:.0f} MB"


def mutants(seed: bytes, max_random: int = 4096):
    """Random bytes, truncations of ``seed``, ``seed`` with bytes overwritten, and ``seed`` with bytes inserted."""
    n = len(seed)

    def overwrite(changes):
        data = bytearray(seed)
        for at, value in changes:
            data[at % n] = value
        return bytes(data)

    return st.one_of(
        st.binary(max_size=max_random),
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=24).map(overwrite),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=64)).map(lambda t: seed[:t[0]] + t[1] + seed[t[0]:]),
    )


# JSON-like values, for fields of checkpoints, metadata and run files
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                    | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
                    max_leaves=12)


# ---- checkpoints (.pt) --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint_bytes() -> bytes:
    return (ROOT / "artifacts" / "model.pt").read_bytes()


@PROPERTY
@given(data=st.data())
def test_a_damaged_checkpoint_is_read_or_refused_with_checkpoint_error(data, checkpoint_bytes, memory_bound):
    from fer_core.model.checkpoint import load_checkpoint_bytes

    blob = data.draw(mutants(checkpoint_bytes))
    try:
        load_checkpoint_bytes(blob, "upload.pt")
    except CheckpointError:
        pass


@pytest.fixture(scope="module")
def checkpoint_payload() -> dict:
    import torch

    return torch.load(ROOT / "artifacts" / "model.pt", weights_only=True)


@PROPERTY
@given(field=st.sampled_from(["config", "class_names", "preprocess", "meta"]), key=st.text(max_size=16), value=JSON)
def test_any_value_in_a_checkpoint_field_is_read_or_refused_with_checkpoint_error(field, key, value,
                                                                                  checkpoint_payload, memory_bound):
    import torch

    from fer_core.model.checkpoint import load_checkpoint_bytes

    payload = dict(checkpoint_payload)  # the tensors are shared, the changed field is new
    if isinstance(payload[field], dict) and key:
        payload[field] = {**payload[field], key: value}
    else:
        payload[field] = value
    buf = io.BytesIO()
    torch.save(payload, buf)
    try:
        load_checkpoint_bytes(buf.getvalue(), "upload.pt")
    except CheckpointError:
        pass


# ---- ONNX graphs ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return (ROOT / "artifacts" / "model.onnx").read_bytes()


@PROPERTY
@given(data=st.data())
def test_a_damaged_onnx_file_is_read_or_refused_with_checkpoint_error(data, onnx_bytes, memory_bound):
    try:
        onnx_model_from_bytes(data.draw(mutants(onnx_bytes)), "upload.onnx")
    except CheckpointError:
        pass


@PROPERTY
@given(key=st.text(max_size=16), value=JSON)
def test_any_metadata_of_an_onnx_graph_is_read_or_refused_with_checkpoint_error(key, value, onnx_bytes):
    import onnx

    from fer_core.model.onnx_file import METADATA_KEY

    model = onnx.load_from_string(onnx_bytes)
    prop = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    info = json.loads(prop.value)
    target = info.get(key.split(".")[0]) if isinstance(info.get(key.split(".")[0]), dict) else info
    target[key] = value
    prop.value = json.dumps(info, allow_nan=True)
    try:
        onnx_model_from_bytes(model.SerializeToString(), "upload.onnx")
    except CheckpointError:
        pass


# ---- images and zips ----------------------------------------------------------------------------------------------

def _encoded(ext: str) -> bytes:
    import cv2

    gray = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(64, 48)
    return cv2.imencode(ext, gray)[1].tobytes()


@PROPERTY
@given(data=st.data(), ext=st.sampled_from([".png", ".jpg", ".bmp", ".tiff", ".webp"]))
def test_a_damaged_image_is_read_or_refused_with_image_load_error(data, ext, memory_bound):
    blob = data.draw(mutants(_encoded(ext)))
    try:
        image = load_image(io.BytesIO(blob))
    except ImageLoadError:
        return
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def _zip_of_faces() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in EMOTIONS[:3]:
            z.writestr(f"{name}/a.png", _encoded(".png"))
    return buf.getvalue()


@PROPERTY
@given(data=st.data())
def test_a_damaged_zip_is_read_or_refused_with_an_archive_or_class_error(data, memory_bound):
    try:
        with extracted_labelled_zip(data.draw(mutants(_zip_of_faces()))) as (files, members):
            assert len(files.paths) == len(members)
    except (ArchiveError, UnknownClassError):  # a damaged folder name is not an expression class
        pass


# ---- batch part files and manifests ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def part_bytes(tmp_path_factory) -> bytes:
    import pyarrow as pa

    path = tmp_path_factory.mktemp("part") / "p.arrow"
    table = pa.table({f.name: pa.array([], f.type) for f in PHOTO_SCHEMA}, schema=PHOTO_SCHEMA)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, PHOTO_SCHEMA) as writer:
        writer.write_table(table)
    return path.read_bytes()


@PROPERTY
@given(data=st.data())
def test_a_damaged_part_file_is_only_not_readable(data, part_bytes, tmp_path):
    path = tmp_path / "x.arrow"
    path.write_bytes(data.draw(mutants(part_bytes)))
    assert part_readable(path, PHOTO_SCHEMA) in (True, False)


@PROPERTY
@given(blob=st.one_of(st.binary(max_size=512), JSON.map(lambda v: json.dumps(v).encode())))
def test_a_damaged_manifest_line_is_none_or_an_object(blob, tmp_path):
    path = record_path(tmp_path, "k")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    assert read_record(tmp_path, "k") is None or isinstance(read_record(tmp_path, "k"), dict)


# ---- relabel CSVs -------------------------------------------------------------------------------------------------

RELABELS = ("path,given,suggested,keep\n" + "".join(f"{c}/{i}.png,{c},{EMOTIONS[(i + 1) % 7]},{k}\n"
                                                    for i, (c, k) in enumerate(zip(EMOTIONS, ["no", "yes", ""] * 3))))


@PROPERTY
@given(data=st.data())
def test_any_relabel_file_is_read_or_refused_with_value_error(data, tmp_path):
    path = tmp_path / "relabels.csv"
    path.write_bytes(data.draw(st.one_of(mutants(RELABELS.encode()), st.text(max_size=300).map(str.encode))))
    try:
        decisions = read_relabels(read_text_file(path, 2**20), EMOTIONS)
    except ValueError:
        return
    assert all(isinstance(k, str) and 0 <= v < len(EMOTIONS) for k, v in decisions.items())


# ---- run files (the Training runs page) --------------------------------------------------------------------------

HISTORY = ("epoch,lr,train_loss,train_acc,val_loss,val_acc,val_macro_f1,seconds\n"
           "1,0.001,1.5,0.4,1.4,0.45,0.4,80.5\n2,0.002,1.2,0.55,1.2,0.55,0.5,79.9\n")


@PROPERTY
@given(history=mutants(HISTORY.encode(), 512), progress=JSON, card=JSON,
       raw=st.sampled_from(["progress", "card", None]), garbage=st.binary(max_size=200))
def test_any_run_folder_is_read_with_notes_and_tabled(history, progress, card, raw, garbage, tmp_path):
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "history.csv").write_bytes(history)
    (run / "progress.json").write_bytes(garbage if raw == "progress" else
                                        json.dumps({"status": "running", "phase": progress}).encode())
    (run / "model_card.json").write_bytes(garbage if raw == "card" else
                                          json.dumps({"training": card, "validation": card}).encode())
    result = read_run(run, now=1e9)
    rows = runs_table([result])
    assert len(rows) == 1 and all(isinstance(note, str) for note in result.notes)
