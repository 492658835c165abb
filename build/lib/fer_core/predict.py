"""Classify the expressions of every face in images.

    python -m fer_core.predict photo.jpg more_photos/            # one line per face
    python -m fer_core.predict photo.jpg --json                  # machine-readable
    python -m fer_core.predict photo.jpg --explain heatmaps/     # + one heatmap PNG per face
    python -m fer_core.predict photo.jpg --uncertain-below 0.5   # label faces under 50 % "uncertain"

Unreadable files are reported on stderr and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .analysis.datasets import IMAGE_SUFFIXES
from .analysis.photos import classify_image, heatmap_png, image_entry
from .faces.detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS, make_detector
from .faces.images import ImageLoadError
from .files import fitting_name, unusable_folder
from .model.bounded import outside_predictor
from .model.calibration import UNCERTAIN_BELOW_HELP, threshold_arg
from .model.inference import NO_TTA_HELP, Predictor
from .model.weights import DEFAULT_WEIGHTS, CheckpointError

HEATMAP_SIDE = 192  # pixels of each --explain PNG (the 48x48 crop enlarged 4x)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text lines")
    p.add_argument("--no-tta", action="store_true", help=NO_TTA_HELP)
    p.add_argument("--min-face-size", type=int, default=20, help="smallest face to detect, in pixels (default: %(default)s)")
    p.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR, help=DETECTOR_HELP)
    p.add_argument("--whole-image", action="store_true",
                   help="when no face is detected, classify the whole image as one face (pre-cropped faces)")
    p.add_argument("--uncertain-below", type=threshold_arg, default=None, metavar="P", help=UNCERTAIN_BELOW_HELP)
    p.add_argument("--explain", metavar="DIR",
                   help="write a heatmap of where the model looked for the predicted class, one PNG per face, into "
                        "DIR (<n>_<file>_face<i>_<label>.png; n numbers the images in the order given)")
    return p


def heatmap_path(folder: Path, n: int, image: Path, face: int, label: str) -> Path:
    """``<folder>/<n>_<file>_face<i>_<label>.png``, the file's name cut to fit the file system's name length."""
    return folder / fitting_name(image.stem, f"_face{face}_{label}.png", prefix=f"{n:03d}_")


def write_heatmap(predictor: Predictor, gray, prediction, path: Path) -> None:
    """:func:`fer_core.analysis.photos.heatmap_png` of the predicted class, written to ``path`` (OSError when it
    cannot be written)."""
    path.write_bytes(heatmap_png(predictor, gray, prediction, side=HEATMAP_SIDE))


def expand_paths(paths: list[str]) -> list[Path]:
    """Files as given; folders replaced by the image files under them (a folder without any is noted on stderr)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                print(f"note: no image files in folder {p}", file=sys.stderr)
            out += found
        else:
            out.append(p)
    return out


def main(args: argparse.Namespace) -> int:
    """Print the faces of every image; 0 when at least one image was read (or none failed), 1 when every image
    failed, 2 when there is nothing to do (no image files, unusable weights)."""
    threshold = args.uncertain_below
    paths = expand_paths(args.paths)
    if not paths:
        print(f"error: no image files in {', '.join(args.paths)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
              f"give image files or folders that contain some.", file=sys.stderr)
        return 2
    explain_dir = Path(args.explain) if args.explain else None
    if explain_dir is not None:  # before any work, so that no result is lost to an unusable folder
        problem = unusable_folder("--explain", explain_dir)
        if problem:
            print(problem, file=sys.stderr)
            return 2
    try:
        # a model from outside runs once in a bounded child process first, then in one for every photo
        predictor = outside_predictor(args.weights)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    detector = make_detector(args.detector, min_face_size=args.min_face_size)
    results, failures = [], 0
    for n, path in enumerate(paths, start=1):
        try:
            _, gray, faces = classify_image(predictor, detector, path, tta=not args.no_tta,
                                            whole_image_if_no_face=args.whole_image)
        except ImageLoadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failures += 1
            continue
        entry = image_entry(str(path), faces, threshold)
        for i, (f, face) in enumerate(zip(faces, entry["faces"]), start=1):
            label = face["label"]
            if explain_dir is not None:
                face["heatmap"] = str(heatmap_path(explain_dir, n, path, i, f.label))
                try:
                    write_heatmap(predictor, gray, f, Path(face["heatmap"]))
                except OSError as e:  # e.g. the disk filled up: this heatmap is missing, every result is kept
                    print(f"warning: no heatmap for {path} face {i}: {e}", file=sys.stderr)
                    face["heatmap"] = None
            if not args.json:
                x, y, w, h = f.box
                print(f"{path}: face {i} at x={x} y={y} w={w} h={h}: {label} ({f.confidence:.1%})"
                      + (f", heatmap {face['heatmap']}" if face.get("heatmap") else ""))
        if not args.json and not faces:
            print(f"{path}: no face found")
        results.append(entry)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures and not results else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
