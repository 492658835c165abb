"""How well the suspicious-label ranking (fer_core.analysis.label_issues) finds wrong labels: flip a share of the labels of a
labelled folder at random and see whether the flagged images are the flipped ones.

    python -m training.experiments.label_noise_check --data ../shared/data/fer2013/images/validation --flip 0.1 --seed 0
    python -m training.experiments.label_noise_check --data ../shared/data/cfee --detect-faces --flip 0.1 --seed 0

The folder is evaluated once (as ``training.evaluate`` does: calibrated probabilities, test-time augmentation);
then ``--flip`` of the images that got a prediction have their label changed to another class drawn at random, and
cleanlab flags the suspicious ones on the flipped labels. Prints the precision and recall of the flagged images
(flipped images found among all flagged) and the precision among the top-ranked ``--flip`` share of the images.
Images whose original label is itself wrong count as false alarms when flagged, so the precision is a lower bound.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fer_core.analysis.datasets import PERSON_SPLITS, list_labelled_folder, split_by_person
from fer_core.analysis.evaluation import evaluate_files
from fer_core.analysis.label_issues import flag_quality, flip_labels, ranked_label_issues
from fer_core.faces.detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS
from fer_core.labels import UnknownClassError
from fer_core.model.inference import NO_TTA_HELP, Predictor
from fer_core.model.weights import DEFAULT_WEIGHTS, CheckpointError

from ..recipe.outputs import require_writable_file


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="labelled folder <data>/<class>/<image>")
    p.add_argument("--flip", type=float, default=0.1, help="share of the labels flipped at random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the flips (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=1,
                   help="flip this many times, seeds --seed, --seed + 1, ...; the mean is reported too (default: 1)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="the model (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help=NO_TTA_HELP)
    p.add_argument("--detect-faces", action="store_true", help="images are whole photos: classify the largest face")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help=f"with --detect-faces: {DETECTOR_HELP}")
    p.add_argument("--person-split", choices=PERSON_SPLITS, default="all",
                   help="only the 'train' or 'test' people, split as training.evaluate splits them (default: all)")
    p.add_argument("--json", dest="json_out", help="write the numbers as JSON to this file")
    return p


def noise_check(probs: np.ndarray, labels: np.ndarray, flip: float, seed: int) -> dict:
    """Flip ``flip`` of ``labels`` (seeded), flag with cleanlab on ``probs`` (N, C), and score the flags; also the
    number flagged on the unflipped labels (``flagged_before_flips``)."""
    noisy, flipped = flip_labels(labels, flip, probs.shape[1], np.random.default_rng(seed))
    quality = flag_quality(ranked_label_issues(noisy, probs), flipped)
    return {**quality, "flip": flip, "seed": seed, "flagged_before_flips": len(ranked_label_issues(labels, probs))}


def main(args: argparse.Namespace) -> dict:
    if args.json_out:
        require_writable_file(args.json_out, "--json")
    try:
        predictor = Predictor.from_checkpoint(args.weights)
        files = split_by_person(list_labelled_folder(args.data), args.person_split)
        result = evaluate_files(predictor, files, detect_faces=args.detect_faces, tta=not args.no_tta,
                                detector=args.detector, split=Path(args.data).name)
    except (CheckpointError, FileNotFoundError, UnknownClassError, ValueError) as e:
        sys.exit(f"error: {e}")
    names = list(predictor.class_names)
    used = [r for r in result.records if r.get("probabilities")]
    probs = np.asarray([[r["probabilities"][n] for n in names] for r in used], np.float64)
    labels = np.asarray([names.index(r["true"]) for r in used], np.int64)
    runs = [noise_check(probs, labels, args.flip, args.seed + i) for i in range(max(1, args.repeats))]
    print(f"{args.data}: {len(used)} images with a prediction (accuracy {result.summary['accuracy']:.2%}); "
          f"flagged on the unflipped labels: {runs[0]['flagged_before_flips']}")
    for run in runs:
        print(f"seed {run['seed']}: {run['n_flipped']} labels flipped ({args.flip:.0%}), {run['n_flagged']} flagged: "
              f"precision {run['precision']:.3f}  recall {run['recall']:.3f}  precision among the top-ranked "
              f"{run['top_k']} ({args.flip:.0%}): {run['precision_top_k']:.3f}")
    mean = {k: float(np.mean([r[k] for r in runs])) for k in ("precision", "recall", "precision_top_k")}
    if len(runs) > 1:
        print(f"mean of {len(runs)} seeds: precision {mean['precision']:.3f}  recall {mean['recall']:.3f}  "
              f"precision among the top-ranked {args.flip:.0%}: {mean['precision_top_k']:.3f}")
    out = {**runs[0], "runs": runs, "mean": mean, "data": str(args.data), "weights": str(args.weights),
           "accuracy": result.summary["accuracy"], "tta": not args.no_tta, "detect_faces": args.detect_faces,
           "person_split": args.person_split}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json_out}")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
