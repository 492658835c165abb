"""Evaluate a trained model on a labelled folder ``<dir>/<class>/*`` (any subset of the 7 classes).

    python -m training.evaluate ../shared/data/fer2013/images/validation --json artifacts/eval_validation.json
    python -m training.evaluate ../shared/data/photos --detect-faces
    python -m training.evaluate ../shared/data/fer2013/images/validation \
        --labels ../shared/data/ferplus/validation_votes.csv     # scored against FER+'s majority labels

Prints sklearn's classification report; ``--json`` writes accuracy, macro_f1, n_images,
n_faces_found, labels, confusion_matrix (rows = true, columns = predicted), per_class, and the calibration of the
classified faces: ece, nll, reliability (15 bins), temperature, confidence_histograms and uncalibrated (at T = 1).
``--label-issues OUT.csv`` writes the images whose given label the model most confidently disagrees with
(fer_core.analysis.label_issues: cleanlab on the calibrated probabilities), with a suggested label and an empty ``keep``
column to fill in.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from tqdm import tqdm

from fer_core.analysis.datasets import (
    PERSON_SPLITS,
    LabelledFiles,
    describe_skipped,
    list_labelled_folder,
    split_by_person,
)
from fer_core.analysis.evaluation import evaluate_files
from fer_core.analysis.label_issues import read_relabel_file, read_relabels, relabel_csv, suspicious_labels
from fer_core.analysis.report import whole_photo_warning
from fer_core.analysis.votes import read_votes, with_majority_labels
from fer_core.faces.detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS
from fer_core.labels import UnknownClassError
from fer_core.model.backends import BACKEND_HELP, BACKENDS, intra_op_threads
from fer_core.model.bounded import outside_predictor
from fer_core.model.inference import NO_TTA_HELP
from fer_core.model.weights import DEFAULT_WEIGHTS, CheckpointError

from .recipe.outputs import require_writable_file


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="labelled folder: <folder>/<class>/<image>")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to evaluate (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help=NO_TTA_HELP)
    p.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    p.add_argument("--detect-faces", action="store_true",
                   help="images are whole photos: detect faces and classify the largest; no face counts as wrong")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help=f"with --detect-faces: {DETECTOR_HELP}")
    p.add_argument("--min-face-size", type=int, default=20, help="with --detect-faces: smallest face in pixels (default: %(default)s)")
    p.add_argument("--person-split", choices=PERSON_SPLITS, default="all",
                   help="evaluate only the 'train' or 'test' people of the folder (file names <person>_<n>.<ext>, e.g. "
                        "CFEE's cfee_id<subject>_<n>.jpg), split as `training.train --photos` splits them (default: all)")
    p.add_argument("--calibration-fraction", type=float, default=0.0,
                   help="with --person-split: share of the people kept out of training for calibration, as given to "
                        "training.train (the 'calibration' part; the test people do not depend on it) (default: 0)")
    p.add_argument("--test-fraction", type=float, default=0.3,
                   help="with --person-split: share of the people in the test part (default: %(default)s)")
    p.add_argument("--no-align", action="store_true",
                   help="with --detect-faces: crop the detector's box instead of aligning the face on its landmarks "
                        "(an ablation; the app always aligns)")
    p.add_argument("--rotate", type=float, default=0.0,
                   help="roll every image by this many degrees before detection, to test tilted heads (default: 0)")
    p.add_argument("--split", default="", help="name of the data split, recorded in the JSON (e.g. 'FER2013 PublicTest')")
    p.add_argument("--json", dest="json_out", help="write the results as JSON to this file")
    p.add_argument("--with-images", action="store_true", help="include per-image predictions in the JSON")
    p.add_argument("--label-issues", dest="label_issues_out",
                   help="write the images whose label the model most confidently disagrees with (cleanlab, "
                        "fer_core.analysis.label_issues) as an editable relabel CSV to this file")
    p.add_argument("--labels", metavar="VOTES_CSV",
                   help="score against the crowd's majority label of a FER+ votes file (fer_core.analysis.votes; "
                        "file, neutral, happiness, ..., contempt, unknown, NF) instead of the folder's labels; images "
                        "without a majority (ties, contempt, unknown, not a face) or without votes are left out")
    p.add_argument("--relabels", help="an edited relabel CSV (from --label-issues or the evaluation page): the images "
                                      "whose 'keep' is 'no' are scored against their suggested label")
    return p


def relabelled(files: LabelledFiles, folder: str | Path, text: str, class_names) -> LabelledFiles:
    """``files`` with the labels an edited relabel CSV changes (keep = no: the suggested label); says how many. A
    CSV path may name a file as the evaluation listed it, relative to the data ``folder`` (``sad/a.jpg``), relative to
    the working folder, or absolute."""
    changes = read_relabels(text, class_names)
    folder = Path(folder)
    index = {}
    for i, p in enumerate(files.paths):
        index[str(p)] = index[str(Path(p).resolve())] = i
    labels = files.labels.copy()
    unknown = []
    for path, label in changes.items():
        i = next((index[k] for k in (path, str(Path(path).resolve()), str((folder / path).resolve())) if k in index),
                 None)
        if i is None:
            unknown.append(path)
        else:
            labels[i] = label
    print(f"relabelled {len(changes) - len(unknown)} image(s)" + (f"; {len(unknown)} path(s) of the CSV are not in "
          f"this folder, e.g. {unknown[0]}" if unknown else ""), file=sys.stderr)
    return dataclasses.replace(files, labels=labels)


def main(args: argparse.Namespace, argv: list[str] | None = None) -> dict:
    """Evaluate as ``args`` say; ``argv``, the command line they were parsed from, is recorded in the JSON."""
    for out, flag in ((args.json_out, "--json"), (args.label_issues_out, "--label-issues")):
        if out:
            require_writable_file(out, flag)  # before the evaluation, not after it
    try:
        # a model from outside runs once in a bounded child process first, then in one for the whole evaluation
        predictor = outside_predictor(args.weights, backend=args.backend)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    bar = tqdm(total=0, unit="img", desc="evaluating", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    started = time.perf_counter()
    try:
        files = split_by_person(list_labelled_folder(args.folder), args.person_split, args.test_fraction,
                                calibration_fraction=args.calibration_fraction)
        if files.skipped:  # unsupported formats, non-files: named, not silently ignored
            print(describe_skipped(files.skipped, args.folder), file=sys.stderr)
        label_source = None
        if args.labels:
            files, label_source = with_majority_labels(files, read_votes(args.labels))
            print(f"FER+ majority labels: {label_source['kept']} of {label_source['images']} images scored "
                  f"({label_source['relabelled']} with another label than their folder's), "
                  f"{label_source['no_majority']} without a majority, {label_source['no_votes']} without votes",
                  file=sys.stderr)
        if args.relabels:
            files = relabelled(files, args.folder, read_relabel_file(args.relabels), predictor.class_names)
        result = evaluate_files(predictor, files, detect_faces=args.detect_faces, tta=not args.no_tta,
                                min_face_size=args.min_face_size, detector=args.detector, rotate=args.rotate,
                                align=not args.no_align,
                                progress=progress, split=args.split or Path(args.folder).name)
    except (OSError, UnknownClassError, ValueError) as e:
        sys.exit(f"error: {e}")
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    s = result.summary
    s["weights"] = str(args.weights)
    s["person_split"] = args.person_split
    s["label_source"] = ({"labels": "FER+ majority vote", **label_source} if label_source
                         else {"labels": "folder names"})
    s["skipped_files"] = files.skipped  # left out by the folder scan: unsupported formats, non-files
    if argv is not None:  # every number in a JSON file says which command wrote it
        s["command"] = "python -m training.evaluate " + shlex.join(argv)
    print(result.report)
    print(f"accuracy {s['accuracy']:.4f}  macro-F1 {s['macro_f1']:.4f}  images {s['n_images']}  "
          f"faces found {s['n_faces_found']}  TTA {'on' if s['tta'] else 'off'}"
          + (f"  ({s['n_unreadable']} unreadable, counted as wrong)" if s.get("n_unreadable") else ""))
    if whole_photo_warning(s):
        print(f"warning: {whole_photo_warning(s)}", file=sys.stderr)
    if "ece" in s:
        print(f"calibration at T = {s['temperature']:.3f}: ECE {s['ece']:.4f}  NLL {s['nll']:.4f}  "
              f"(at T = 1: ECE {s['uncalibrated']['ece']:.4f}  NLL {s['uncalibrated']['nll']:.4f})")
    print(f"{seconds:.1f} s for {s['n_images']} images ({s['n_images'] / max(seconds, 1e-9):.1f} images/s; "
          f"classifier backend {predictor.backend.name}, {intra_op_threads()} threads)")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = result.to_json() if args.with_images else s
        out.write_text(json.dumps(payload, indent=2))
        print(f"wrote {out}")
    if args.label_issues_out:
        rows = suspicious_labels(result.records, predictor.class_names)
        Path(args.label_issues_out).write_bytes(relabel_csv(rows))
        print(f"{len(rows)} suspicious label(s) of {s['n_faces_found']} classified images; wrote {args.label_issues_out}")
    return s


if __name__ == "__main__":
    main(get_args_parser().parse_args(), sys.argv[1:])
