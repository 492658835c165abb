"""The classifier as an ONNX file beside its checkpoint: what the app runs, without torch.

``artifacts/model.pt`` -> ``artifacts/model.onnx``: the network in eval mode (input "faces" (N, 1, S, S) float32,
output "logits" (N, C) float32, dynamic N) and, in the file's metadata (key ``fer_core``, a JSON object),
everything needed to use it: class names (in output order), the preprocessing config, the checkpoint's meta
(calibrated temperatures, epoch, variant, training date), the network config and parameter count, the opset, and
the SHA-256 of the ``.pt`` file it was exported from. The same object is also written as ``model.onnx.json``
beside it, for people and tools; the app reads the copy inside the ``.onnx`` (one file cannot be half-updated).

Writing needs the training install (torch, onnx); reading needs ONNX Runtime only.

    python -m fer_core.model.onnx_file artifacts/model.pt artifacts/model_fer2013.pt   # (re)write the .onnx files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..faces.preprocessing import PreprocessConfig
from ..files import atomic_path
from ..labels import EMOTIONS
from ..onnx_runtime import load_onnxruntime
from .weights import CheckpointError, check_temperatures, import_torch

METADATA_KEY = "fer_core"
FORMAT_VERSION = 1


def onnx_path_for(weights: str | Path) -> Path:
    """The ONNX file that belongs beside a checkpoint: ``model.pt`` -> ``model.onnx``."""
    return Path(weights).with_suffix(".onnx")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_onnx_beside(weights: str | Path) -> Path:
    """Export the checkpoint ``weights`` to :func:`onnx_path_for` (and its metadata to ``<that>.json``); returns
    the ``.onnx`` path. Needs torch and onnx. Files are replaced atomically; call it again after every change to
    the ``.pt`` (training, calibration), since the app only uses an ``.onnx`` whose recorded SHA-256 is the
    ``.pt``'s."""
    weights = Path(weights)
    import_torch(f"export the checkpoint {weights} to ONNX")
    import onnx

    from .backends import ONNX_OPSET, export_onnx
    from .checkpoint import load_checkpoint
    from .network import count_parameters

    model, preprocess, names, meta = load_checkpoint(weights)
    info = {"format": FORMAT_VERSION, "class_names": list(names), "preprocess": preprocess.to_dict(),
            "meta": meta, "config": model.config.to_dict(), "parameters": count_parameters(model),
            "opset": ONNX_OPSET, "input": "faces", "output": "logits",
            "weights_file": weights.name, "weights_sha256": file_sha256(weights)}
    text = json.dumps(info, indent=2, sort_keys=True, default=list)
    graph = onnx.load_from_string(export_onnx(model, preprocess.image_size))
    graph.metadata_props.add(key=METADATA_KEY, value=text)
    graph.doc_string = f"FER expression classifier exported from {weights.name} (fer_core.model.onnx_file)"
    out = onnx_path_for(weights)
    for target, data in ((out, graph.SerializeToString()),
                         (out.with_name(out.name + ".json"), (text + "\n").encode())):
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return out


@dataclass(frozen=True)
class OnnxModel:
    """An exported classifier, read and checked: its graph bytes and what the metadata says about it."""

    path: Path
    onnx_bytes: bytes
    preprocess: PreprocessConfig
    class_names: tuple[str, ...]
    meta: dict  # the checkpoint's meta: temperatures, epoch, variant, trained_at, ...
    info: dict  # the whole metadata object (parameters, opset, weights_sha256, ...)


def read_onnx_model(path: str | Path) -> OnnxModel:
    """Read and check an exported classifier (ONNX Runtime only). Raises CheckpointError, naming the file and
    the field, for a file that is missing, unreadable or lacks usable metadata."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"Cannot read the ONNX model {path}: {e}") from None
    return onnx_model_from_bytes(data, path)


def onnx_model_from_bytes(data: bytes, path: str | Path) -> OnnxModel:
    """:func:`read_onnx_model` of a file's bytes held in memory (an upload); ``path`` is what errors call it."""
    ort = load_onnxruntime()  # telemetry off (fer_core.onnx_runtime)

    path = Path(path)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Read for its metadata and inputs only: no graph optimisation, so nothing of the graph (constant folding)
        # runs here. The sessions that classify faces are made by the backend that runs the model.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    except Exception as e:  # noqa: BLE001 - any of ONNX Runtime's load errors
        raise CheckpointError(f"Cannot read the ONNX model {path}: {e}") from None
    try:
        info = json.loads(text) if text is not None else None
        if not isinstance(info, dict):
            raise ValueError(f"it has no '{METADATA_KEY}' metadata object")
        preprocess, names, meta = _checked_metadata(info)
        inputs = [i.name for i in session.get_inputs()]
        if inputs != ["faces"]:
            raise ValueError(f"its inputs are {inputs}, not ['faces']")
    except ValueError as e:
        raise CheckpointError(f"{path} is not a usable expression model: {e}. Write it again from its checkpoint "
                              f"with `python -m fer_core.model.onnx_file {path.with_suffix('.pt')}`.") from None
    return OnnxModel(path, data, preprocess, names, meta, info)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _checked_metadata(info: dict) -> tuple[PreprocessConfig, tuple[str, ...], dict]:
    """(preprocessing, class names, meta) of a metadata object, each field checked (ValueError otherwise)."""
    if info.get("format") != FORMAT_VERSION:
        raise ValueError(f"metadata format {info.get('format')!r} is not {FORMAT_VERSION}")
    if info.get("class_names") != list(EMOTIONS):
        raise ValueError(f"class_names {info.get('class_names')!r:.120} are not {list(EMOTIONS)}")
    pre = info.get("preprocess")
    if not isinstance(pre, dict):
        raise ValueError("'preprocess' must be an object")
    p = PreprocessConfig.from_dict(pre)
    if not (isinstance(p.image_size, int) and not isinstance(p.image_size, bool) and 16 <= p.image_size <= 512
            and _finite(p.mean) and _finite(p.std) and p.std > 0 and _finite(p.face_margin)
            and 0 <= p.face_margin <= 1):
        raise ValueError(f"preprocess {pre!r:.160} is out of range (image_size 16..512, finite mean, std > 0, "
                         f"face_margin 0..1)")
    meta = info.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("'meta' must be an object")
    check_temperatures(meta)
    return p, tuple(EMOTIONS), meta


def current_onnx(weights: str | Path) -> tuple[OnnxModel | None, str]:
    """(the ``.onnx`` beside ``weights``, read, when it was exported from exactly this ``.pt``; else None and why).

    The SHA-256 recorded inside the ``.onnx`` is compared with the ``.pt``'s: a checkpoint retrained or
    recalibrated since the export is never served through a stale graph."""
    weights = Path(weights)
    path = onnx_path_for(weights)
    if not path.is_file():
        return None, f"there is no {path.name} beside it"
    try:
        model = read_onnx_model(path)
    except CheckpointError as e:
        return None, str(e)
    if model.info.get("weights_sha256") != file_sha256(weights):
        return None, f"{path.name} was exported from other weights (its recorded SHA-256 is not {weights.name}'s)"
    return model, ""


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+", help="checkpoints (.pt) to export; each .onnx is written beside its .pt")
    return p


def main(args: argparse.Namespace) -> int:
    """Write the .onnx of every checkpoint given; 0 on success, 2 when one cannot be read or exported."""
    for weights in args.weights:
        try:
            print(f"wrote {write_onnx_beside(weights)}")
        except CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
