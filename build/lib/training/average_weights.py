"""Average the weights of models fine-tuned from one checkpoint: WiSE-FT and model soups.

    python -m training.average_weights artifacts/model_fer2013.pt:0.5 runs/ft/out/model.pt:0.5 --out runs/wise/model.pt

Each input is ``PATH[:WEIGHT]`` (weight 1 if left out; the weights are normalised to sum to 1). Every tensor of
the result is the weighted mean of the inputs' tensors, BatchNorm running statistics included. With the starting
checkpoint as one input this is WiSE-FT (Wortsman et al., 2022: interpolating a fine-tune back towards its start
keeps more of what transferred); with several fine-tunes of one start it is a uniform or weighted model soup.
Averaging only makes sense for models of one architecture fine-tuned from the same weights; a model of another
size is refused. The result is one ordinary model (the same speed per face as any of its inputs), written with
its ``.onnx`` beside it. It carries no temperature (an average is calibrated anew: ``training.calibrate``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_core.model.weights import CheckpointError

from .recipe.outputs import require_torch


def parse_input(spec: str) -> tuple[Path, float]:
    """``PATH[:WEIGHT]`` -> (path, weight); a weight must be a number > 0."""
    path, sep, weight = spec.rpartition(":")
    if not sep or not path or "/" in weight:  # no weight given (or a colon inside the path)
        return Path(spec), 1.0
    try:
        w = float(weight)
    except ValueError:
        raise SystemExit(f"error: {spec!r}: the weight after ':' must be a number") from None
    if not w > 0:
        raise SystemExit(f"error: {spec!r}: the weight must be > 0")
    return Path(path), w


def average_checkpoints(inputs: list[tuple[Path, float]], out: Path) -> dict:
    """Write the weighted average of ``inputs`` ((checkpoint, weight) pairs) to ``out`` (and its ``.onnx``);
    returns the meta it was saved with."""
    if not inputs:
        raise ValueError("nothing to average")
    import torch

    from fer_core.model.checkpoint import load_checkpoint, save_checkpoint
    from fer_core.model.onnx_file import write_onnx_beside

    total = sum(w for _, w in inputs)
    models = [(load_checkpoint(p), w / total, p) for p, w in inputs]
    (first, preprocess, class_names, meta), _, first_path = models[0]
    config = first.config.to_dict()
    state = {k: torch.zeros_like(v, dtype=torch.float64) if v.is_floating_point() else v.clone()
             for k, v in first.state_dict().items()}
    for (model, _, _, _), w, path in models:
        if model.config.to_dict() != config:
            raise CheckpointError(f"{path} is another architecture than {first_path}: only models fine-tuned from "
                                  f"the same checkpoint can be averaged")
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                state[k] += w * v.double()
    first.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    new_meta = {"variant": meta.get("variant", "?"),
                "averaged_from": [{"weights": str(p), "share": round(w, 6)} for _, w, p in models]}
    save_checkpoint(out, first, preprocess, meta=new_meta, class_names=class_names)
    write_onnx_beside(out)
    return new_meta


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="checkpoints PATH[:WEIGHT], fine-tuned from the same start")
    p.add_argument("--out", required=True, help="where the averaged checkpoint goes (.pt; its .onnx beside it)")
    return p


def main(args: argparse.Namespace) -> dict:
    require_torch("average checkpoints")
    inputs = [parse_input(s) for s in args.inputs]
    try:
        meta = average_checkpoints(inputs, Path(args.out))
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    for item in meta["averaged_from"]:
        print(f"{item['share']:.3f} x {item['weights']}")
    print(f"wrote {args.out}")
    return meta


if __name__ == "__main__":
    main(get_args_parser().parse_args())
