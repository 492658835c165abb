"""Compare two models on the same labelled data: is B better than A beyond noise?

    python -m training.compare artifacts/model_fer2013.pt artifacts/model.pt my_faces/
    python -m training.compare A.pt B.onnx photos.zip --detect-faces --json cmp.json --csv disagreements.csv

DATA is a labelled folder ``<class>/<image>`` or a zip of one (as the evaluation page takes it). Every image goes
through both models on the same detected face (fer_core.analysis.evaluation.evaluate_models). Prints the accuracy and
macro-F1 of each with 95 % paired-bootstrap intervals, the difference B - A with its interval, McNemar's exact test
on the images only one of them gets right, and the per-class recall / F1 deltas (fer_core.analysis.compare). A model is a
``.pt`` checkpoint (served through the ``.onnx`` beside it when there is one) or an ``.onnx`` file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fer_core.analysis.archive import ArchiveError, evaluate_zip_models
from fer_core.analysis.compare import (
    N_BOOTSTRAP,
    SEED,
    compare_results,
    comparison_csv,
    comparison_table,
    disagreements,
)
from fer_core.analysis.datasets import PERSON_SPLITS, describe_skipped, list_labelled_folder, split_by_person
from fer_core.analysis.evaluation import evaluate_models
from fer_core.analysis.report import whole_photo_warning
from fer_core.faces.detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS
from fer_core.labels import UnknownClassError
from fer_core.model.bounded import outside_predictor
from fer_core.model.inference import NO_TTA_HELP, Predictor
from fer_core.model.weights import CheckpointError

from .recipe.outputs import require_writable_file


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_a", help="model A (.pt or .onnx), e.g. the shipped artifacts/model.pt")
    p.add_argument("model_b", help="model B (.pt or .onnx): the differences are B - A")
    p.add_argument("data", help="labelled folder <data>/<class>/<image>, or a zip of one")
    p.add_argument("--detect-faces", action="store_true",
                   help="images are whole photos: detect faces and classify the largest; no face counts as wrong")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help=f"with --detect-faces: {DETECTOR_HELP}")
    p.add_argument("--min-face-size", type=int, default=20, help="with --detect-faces: smallest face in pixels (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help=NO_TTA_HELP)
    p.add_argument("--person-split", choices=PERSON_SPLITS, default="all",
                   help="a folder's 'train' or 'test' people (file names <person>_<n>.<ext>), split as training.evaluate "
                        "splits them (default: all)")
    p.add_argument("--resamples", type=int, default=N_BOOTSTRAP, help="bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=SEED, help="seed of the bootstrap (default: %(default)s)")
    p.add_argument("--json", dest="json_out", help="write the comparison and the disagreements as JSON to this file")
    p.add_argument("--csv", dest="csv_out", help="write the images the models disagree on as CSV to this file")
    return p


def evaluate_both(predictors: list[Predictor], data: str, args: argparse.Namespace) -> list:
    """The two paired evaluations of a folder or a zip."""
    options = dict(detect_faces=args.detect_faces, tta=not args.no_tta, min_face_size=args.min_face_size,
                   detector=args.detector, split=Path(data).name)
    if Path(data).suffix.lower() == ".zip" and Path(data).is_file():
        if args.person_split != "all":
            raise ValueError("--person-split works on a folder, not a zip")
        return evaluate_zip_models(predictors, Path(data).read_bytes(), **options)
    files = split_by_person(list_labelled_folder(data), args.person_split)
    if files.skipped:
        print(describe_skipped(files.skipped, data), file=sys.stderr)
    return evaluate_models(predictors, files, **options)


def main(args: argparse.Namespace) -> dict:
    for out, flag in ((args.json_out, "--json"), (args.csv_out, "--csv")):
        if out:
            require_writable_file(out, flag)
    try:
        # a model from outside runs once in a bounded child process first, then in one for the whole comparison
        predictors = [outside_predictor(args.model_a), outside_predictor(args.model_b)]
        result_a, result_b = evaluate_both(predictors, args.data, args)
    except (CheckpointError, ArchiveError, FileNotFoundError, UnknownClassError, ValueError) as e:
        sys.exit(f"error: {e}")
    comparison = compare_results(result_a.summary, result_a.records, result_b.summary, result_b.records,
                                 names=(args.model_a, args.model_b), n_resamples=args.resamples, seed=args.seed)
    comparison.update(data=str(args.data), person_split=args.person_split, tta=not args.no_tta,
                      detect_faces=args.detect_faces, detector=args.detector if args.detect_faces else None,
                      n_faces_found=result_a.summary["n_faces_found"])
    disagreeing = disagreements(result_a.records, result_b.records)
    print(f"A = {args.model_a}\nB = {args.model_b}\ndata: {args.data}"
          + (f" ({args.person_split} people)" if args.person_split != "all" else "")
          + (f", faces found in {comparison['n_faces_found']}/{comparison['n_images']}" if args.detect_faces else ""))
    print(comparison_table(comparison))
    if whole_photo_warning(result_a.summary):
        print(f"warning: {whole_photo_warning(result_a.summary)}", file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({**comparison, "disagreements": disagreeing}, indent=2))
        print(f"wrote {args.json_out}")
    if args.csv_out:
        Path(args.csv_out).write_bytes(comparison_csv(comparison, disagreeing))
        print(f"wrote {args.csv_out}")
    return comparison


if __name__ == "__main__":
    main(get_args_parser().parse_args())
