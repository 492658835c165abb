"""Plain-dict checkpoints: weights + everything needed to rebuild and use the model.

Saved: ``{"model": state_dict, "config": dict, "class_names": list, "preprocess": dict, "meta": dict}``.
Loaded with ``weights_only=True``; no pickled modules. Every field is checked before it is used (sizes are
bounded before any model is built), so a malformed or hostile file is a :class:`CheckpointError`, never a
traceback, a huge allocation or silently wrong labels.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import torch

from ..faces.preprocessing import PreprocessConfig
from ..files import atomic_path
from ..labels import EMOTIONS, UnknownClassError, canonical_name
from .network import Xception, XceptionConfig
from .weights import DEFAULT_WEIGHTS, CheckpointError, check_temperatures  # noqa: F401  (CheckpointError re-exported)

# Sane bounds of a checkpoint's config (the shipped "base" is at most 512 wide, 8 middle blocks, 48 px input).
MAX_WIDTH = 4096  # channels of any layer, hidden units
MAX_LAYERS = 16  # entries of stem_channels / entry_channels / exit_convs
MAX_MIDDLE_BLOCKS = 64
IMAGE_SIZE_RANGE = (16, 512)  # preprocess image_size, pixels
MAX_PARAMETERS = 20_000_000  # of the declared architecture (80 MB in float32); the variants have 0.7-2.6 M


def save_checkpoint(path: str | Path, model: Xception, preprocess: PreprocessConfig, meta: dict | None = None,
                    class_names: tuple[str, ...] = EMOTIONS) -> None:
    """Write the model atomically (a crash never leaves a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    payload = {
        "model": state,
        "config": model.config.to_dict(),
        "class_names": list(class_names),
        "preprocess": preprocess.to_dict(),
        "meta": meta or {},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path = DEFAULT_WEIGHTS) -> tuple[Xception, PreprocessConfig, tuple[str, ...], dict]:
    """Rebuild (model in eval mode, preprocessing config, class names, meta) from a checkpoint file.

    The class names returned are always EMOTIONS, in that order: a checkpoint that stores the seven expressions
    in another order has its classifier rows reordered to match, so output index i always means EMOTIONS[i].
    Raises CheckpointError, with a message naming the file and the field, for anything that is not a usable
    expression model: unreadable file, wrong types, absurd sizes, class names that are not the seven
    expressions, weights that do not fit the config or are not finite, unusable preprocessing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model weights not found at {path}. Train one with `python -m training.train` "
                              f"or restore artifacts/model.pt from the repository.")
    return _checkpoint_from(path, path)


def load_checkpoint_bytes(data: bytes, name: str) -> tuple[Xception, PreprocessConfig, tuple[str, ...], dict]:
    """:func:`load_checkpoint` of a checkpoint held in memory (an upload), with the same checks; ``name`` is what
    the error messages call it. Nothing is written to disk."""
    return _checkpoint_from(io.BytesIO(data), name)


def _checkpoint_from(source, name) -> tuple[Xception, PreprocessConfig, tuple[str, ...], dict]:
    """:func:`load_checkpoint` of ``source`` (a path or a binary file object), called ``name`` in errors."""
    try:
        payload = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/foreign files
        raise CheckpointError(f"Cannot read weights file {name}: {e}") from e
    if not isinstance(payload, dict) or not {"model", "config", "class_names"} <= payload.keys():
        raise CheckpointError(f"{name} is not a fer_core checkpoint (expected model/config/class_names entries).")
    try:
        config = _checked_config(payload["config"])
        order = _class_order(payload["class_names"], config.num_classes)
        preprocess = _checked_preprocess(payload.get("preprocess", {}))
        meta = _checked_meta(payload.get("meta", {}))
        state = _checked_state(payload["model"], config)
    except ValueError as e:
        raise CheckpointError(f"{name} is not a usable expression model: {e}. Retrain it with "
                              f"`python -m training.train` or use the shipped artifacts/model.pt.") from None
    model = Xception(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"Weights in {name} do not match their config: {e}") from e
    _reorder_classes(model, order)
    model.eval()
    return model, preprocess, EMOTIONS, meta


def _is_int(v) -> bool:
    """A whole number (bool excluded, although Python counts it as an int)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    """A finite int or float (bool excluded)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_widths(name: str, value, min_len: int, max_len: int) -> None:
    if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len:
        raise ValueError(f"config {name!r} must be a list of {min_len}..{max_len} channel widths, got {value!r:.80}")
    if not all(_is_int(v) and 1 <= v <= MAX_WIDTH for v in value):
        raise ValueError(f"config {name!r} must hold whole numbers 1..{MAX_WIDTH}, got {value!r:.80}")


def _checked_config(d) -> XceptionConfig:
    """The model config, with every field's type and size checked before anything is allocated."""
    if not isinstance(d, dict):
        raise ValueError(f"'config' must be a dict, not {type(d).__name__}")
    for name in ("stem_channels", "entry_channels", "exit_convs"):
        if name in d:
            _check_widths(name, d[name], 1, MAX_LAYERS)
    if "exit_channels" in d:
        _check_widths("exit_channels", d["exit_channels"], 2, 2)
    entry = d.get("entry_channels", XceptionConfig.entry_channels)
    strides = d.get("entry_strides", (2,) * len(entry))
    if not (isinstance(strides, (list, tuple)) and len(strides) == len(entry) and all(s in (1, 2) for s in strides)):
        raise ValueError(f"config 'entry_strides' must be 1 or 2 per entry block ({len(entry)}), got {strides!r:.80}")
    d = {**d, "entry_strides": list(strides)}  # older checkpoints: every entry block strided
    bounds = {"in_channels": (1, 1), "num_classes": (1, 1000), "middle_blocks": (0, MAX_MIDDLE_BLOCKS),
              "hidden_units": (1, MAX_WIDTH), "stem_stride": (1, 2)}
    for name, (low, high) in bounds.items():
        if name in d and not (_is_int(d[name]) and low <= d[name] <= high):
            raise ValueError(f"config {name!r} must be a whole number {low}..{high}, got {d[name]!r:.80}")
    if "dropout" in d and not (_is_number(d["dropout"]) and 0 <= d["dropout"] < 1):
        raise ValueError(f"config 'dropout' must be a number in [0, 1), got {d['dropout']!r:.80}")
    return XceptionConfig.from_dict(d)


def _class_order(names, num_classes: int) -> list[int]:
    """For each EMOTIONS entry, the model output that scores it. ``names`` must be the seven expressions (any
    order, aliases such as 'happiness' accepted), one per model output."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"'class_names' must be a list of {len(EMOTIONS)} strings, got {names!r:.120}")
    if len(names) != num_classes:
        raise ValueError(f"it has {len(names)} class names for {num_classes} model outputs")
    try:
        canonical = [canonical_name(n) for n in names]
    except UnknownClassError as e:
        raise ValueError(f"class_names {list(names)} are not the seven expressions: {e}") from None
    if sorted(canonical) != sorted(EMOTIONS):
        raise ValueError(f"class_names {list(names)} must name each of {', '.join(EMOTIONS)} exactly once")
    return [canonical.index(e) for e in EMOTIONS]


def _checked_preprocess(d) -> PreprocessConfig:
    """The preprocessing config: image_size within IMAGE_SIZE_RANGE, finite mean, std > 0, margin in [0, 1]."""
    if not isinstance(d, dict):
        raise ValueError(f"'preprocess' must be a dict, not {type(d).__name__}")
    low, high = IMAGE_SIZE_RANGE
    if "image_size" in d and not (_is_int(d["image_size"]) and low <= d["image_size"] <= high):
        raise ValueError(f"preprocess 'image_size' must be a whole number {low}..{high}, got {d['image_size']!r:.80}")
    if "mean" in d and not _is_number(d["mean"]):
        raise ValueError(f"preprocess 'mean' must be a finite number, got {d['mean']!r:.80}")
    if "std" in d and not (_is_number(d["std"]) and d["std"] > 0):
        raise ValueError(f"preprocess 'std' must be a number > 0, got {d['std']!r:.80}")
    if "face_margin" in d and not (_is_number(d["face_margin"]) and 0 <= d["face_margin"] <= 1):
        raise ValueError(f"preprocess 'face_margin' must be a number in [0, 1], got {d['face_margin']!r:.80}")
    return PreprocessConfig.from_dict(d)


def _checked_meta(meta) -> dict:
    """The meta dict, with the calibrated temperatures (when present) in range (:func:`check_temperatures`)."""
    if not isinstance(meta, dict):
        raise ValueError(f"'meta' must be a dict, not {type(meta).__name__}")
    check_temperatures(meta)
    return meta


def _checked_state(state, config: XceptionConfig) -> dict[str, torch.Tensor]:
    """The state dict, checked against the shapes ``config`` implies (computed on the meta device: nothing is
    allocated) and for non-finite values, so a model is only ever built to the size of the weights in the file."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("'model' must be a state dict of tensors")
    with torch.device("meta"):
        expected = Xception(config).state_dict()
    if state.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
        raise ValueError(f"the weights do not fit the config (missing {missing[:3]}, unexpected {extra[:3]})")
    for name, tensor in state.items():  # shapes first: comparing them computes nothing
        if tensor.shape != expected[name].shape:
            raise ValueError(f"the weights do not fit the config: {name} is {tuple(tensor.shape)}, "
                             f"the config needs {tuple(expected[name].shape)}")
    declared = sum(v.numel() for v in expected.values())
    if declared > MAX_PARAMETERS:
        raise ValueError(f"its config declares {declared:,} numbers of weights, more than the {MAX_PARAMETERS:,} an "
                         "expression model of this family may have")
    for name, tensor in state.items():
        if not tensor.is_contiguous() or tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            # an expanded (stride-0) or sliced tensor: a few stored numbers standing for many, which a model built
            # from it would allocate in full
            raise ValueError(f"weight {name} does not hold its own {tuple(tensor.shape)} numbers (an expanded or "
                             "shared tensor: not a saved model)")
        if expected[name].is_floating_point() and not tensor.is_floating_point():
            raise ValueError(f"weight {name} must hold floating-point numbers, not {str(tensor.dtype).split('.')[-1]}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"weight {name} holds NaN or infinite values (a diverged or damaged training run)")
        if name.endswith("running_var") and bool((tensor < 0).any()):  # its square root would be NaN
            raise ValueError(f"BatchNorm statistics {name} hold negative variances (a damaged file)")
    return state


def _reorder_classes(model: Xception, order: list[int]) -> None:
    """Permute the classifier's output rows so that output i scores EMOTIONS[i] (``order[i]`` is its old row)."""
    if order == list(range(len(order))):
        return
    final = model.head[-1]
    with torch.no_grad():
        final.weight.copy_(final.weight[order])
        final.bias.copy_(final.bias[order])
