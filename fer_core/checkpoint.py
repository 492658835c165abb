"""Plain-dict checkpoints: weights + everything needed to rebuild and use the model.

Saved: ``{"model": state_dict, "config": dict, "class_names": list, "preprocess": dict, "meta": dict}``.
Loaded with ``weights_only=True``; no pickled modules.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .labels import EMOTIONS
from .model import Xception, XceptionConfig
from .preprocessing import PreprocessConfig

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "artifacts" / "model.pt"


class CheckpointError(RuntimeError):
    """A weights file that is missing, unreadable or does not describe an expression model."""


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
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path = DEFAULT_WEIGHTS) -> tuple[Xception, PreprocessConfig, tuple[str, ...], dict]:
    """Rebuild (model in eval mode, preprocessing config, class names, meta) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Model weights not found at {path}. Train one with `python -m training.train` "
                              f"or restore artifacts/model.pt from the repository.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/foreign files
        raise CheckpointError(f"Cannot read weights file {path}: {e}") from e
    if not isinstance(payload, dict) or not {"model", "config", "class_names"} <= payload.keys():
        raise CheckpointError(f"{path} is not a fer_core checkpoint (expected model/config/class_names entries).")
    config = XceptionConfig.from_dict(payload["config"])
    model = Xception(config)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise CheckpointError(f"Weights in {path} do not match their config: {e}") from e
    model.eval()
    preprocess = PreprocessConfig.from_dict(payload.get("preprocess", {}))
    return model, preprocess, tuple(payload["class_names"]), payload.get("meta", {})
