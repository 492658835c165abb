"""Does a temperature fitted with camera-shifted copies carry to new studios? Measured under the transfer protocol.

    python -m training.crossdomain --recipe plain -- ...                  # first: the recipe's held-out runs
    python -m training.experiments.shifted_calibration --recipe plain     # then: its temperatures refitted

Each held-out run (``without-<D>``) fitted its temperature on half of FER2013 validation and its training domains'
calibration people. Here the same fit gets one more set, weighted like each of the others: that half of FER2013
validation again, every face copied at four strengths of another camera (:mod:`training.recipe.shifted_faces`).
Nothing of D is looked at to fit. The table gives, per run, both temperatures and the ECE and accuracy at each on
all of D (never seen), on the test people of the domains it trained on, and on FER2013 validation; the shifted
copies' logits are computed once per run (``shifted_logits.npz`` beside its ``logits.npz``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fer_core.analysis.datasets import FER_IMAGES, list_labelled_folder
from fer_core.faces.images import load_image
from fer_core.faces.preprocessing import to_gray
from fer_core.model.calibration import fit_temperature, pool_alike
from fer_core.model.inference import Predictor

from ..crossdomain import LOGITS_NAME, PROJECT_ROOT, domains_of, scores, validation_fit_half
from ..recipe.shifted_faces import shifted_view_logits

SHIFTED_NAME = "shifted_logits.npz"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="a trained recipe measured by training.crossdomain")
    p.add_argument("--runs-dir", default=str(PROJECT_ROOT / "runs" / "crossdomain"),
                   help="training.crossdomain's runs (default: %(default)s)")
    p.add_argument("--domain", action="append", default=[],
                   help="the protocol's whole-photo domains (repeatable; default: ../shared/data/cfee and tfeid)")
    p.add_argument("--validation", default=str(FER_IMAGES / "validation"),
                   help="FER2013 validation folder, as given to training.crossdomain (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    return p


def fit_half(validation: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """The faces and labels of the half of FER2013 validation that training.crossdomain fits temperatures on."""
    files = list_labelled_folder(validation)
    fit_idx = validation_fit_half(files.labels)
    return [to_gray(load_image(files.paths[i])) for i in fit_idx], files.labels[fit_idx]


def run_logits(folder: Path, faces: list[np.ndarray],
               labels: np.ndarray) -> tuple[dict, dict, tuple[np.ndarray, np.ndarray]]:
    """A run's stored measurement, its stored logits, and the shifted copies' (logits, labels) (computed once)."""
    stored = folder / LOGITS_NAME
    weights = folder / "out" / "model.pt"
    if not stored.is_file() or not (folder / "measure.json").is_file():
        raise SystemExit(f"error: {stored} is missing: measure the recipe first (python -m training.crossdomain ...)")
    if not weights.is_file():
        raise SystemExit(f"error: {weights} is missing: this experiment needs a trained recipe (not an ensemble)")
    with np.load(stored) as z:
        logits = dict(z)
    cached = folder / SHIFTED_NAME
    if not cached.is_file():
        shifted, shifted_labels = shifted_view_logits(Predictor.from_checkpoint(weights), faces, labels)
        np.savez_compressed(cached, logits=shifted, labels=shifted_labels)
    with np.load(cached) as z:
        shifted = (z["logits"], z["labels"] if "labels" in z else np.tile(labels, len(z["logits"][0]) // len(labels)))
    return json.loads((folder / "measure.json").read_text()), logits, shifted


def refit(logits: dict, shifted: tuple[np.ndarray, np.ndarray]) -> float:
    """The run's temperature fit (its stored fitting sets, each weighted alike) with the shifted copies' (logits,
    labels) as one more set."""
    fit_sets = [(logits[f"{n}/logits"], logits[f"{n}/labels"])
                for n in sorted({k.split("/")[0] for k in logits if k.startswith("fit")})]
    pooled, pooled_labels, weights = pool_alike([*fit_sets, shifted])
    return fit_temperature(pooled, pooled_labels, weights=weights)


def main(args: argparse.Namespace) -> dict:
    faces, labels = fit_half(Path(args.validation))
    rows = []
    for held in domains_of(args):
        folder = Path(args.runs_dir) / args.recipe / f"without-{held.name}"
        measured, logits, shifted = run_logits(folder, faces, labels)
        temperatures = {"as measured": measured["temperature"], "with shifted copies": refit(logits, shifted)}
        splits = {"held_out": f"{held.name}_all", "fer_val": "fer_val",
                  **{k.split("/")[0]: k.split("/")[0] for k in sorted(logits)
                     if k.endswith("_test/logits") and not k.startswith(f"{held.name}_")}}
        for fit, t in temperatures.items():
            row = {"run": folder.name, "fit": fit, "temperature": t}
            for column, split in splits.items():
                s = scores(logits[f"{split}/logits"], logits[f"{split}/labels"], t)
                row[f"{column} ece"], row[f"{column} acc"] = s["ece"], s["accuracy"]
            rows.append(row)
    import pandas as pd

    table = pd.DataFrame(rows)
    print(f"recipe {args.recipe}: temperatures refitted with camera-shifted copies of the FER2013 fitting half "
          "(TTA; held_out: all of the domain the run never saw)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    result = {"recipe": args.recipe, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
