"""Classify the expressions of every face in images.

    python -m fer_core.predict photo.jpg more_photos/            # one line per face
    python -m fer_core.predict photo.jpg --json                  # machine-readable

Unreadable files are reported on stderr and skipped; the others still run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .checkpoint import DEFAULT_WEIGHTS, CheckpointError
from .datasets import IMAGE_SUFFIXES
from .face_detection import DEFAULT_DETECTOR, DETECTOR_HELP, DETECTORS, make_detector
from .images import ImageLoadError
from .inference import NO_TTA_HELP, Predictor


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
    return p


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
    paths = expand_paths(args.paths)
    if not paths:
        print(f"error: no image files in {', '.join(args.paths)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}); "
              f"give image files or folders that contain some.", file=sys.stderr)
        return 2
    try:
        predictor = Predictor.from_checkpoint(args.weights)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    detector = make_detector(args.detector, min_face_size=args.min_face_size)
    results, failures = [], 0
    for path in paths:
        try:
            faces = predictor.predict(path, detector, tta=not args.no_tta, whole_image_if_no_face=args.whole_image)
        except ImageLoadError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failures += 1
            continue
        results.append({"path": str(path), "faces": [f.to_dict() for f in faces]})
        if not args.json:
            if not faces:
                print(f"{path}: no face found")
            for i, f in enumerate(faces, start=1):
                x, y, w, h = f.box
                print(f"{path}: face {i} at x={x} y={y} w={w} h={h}: {f.label} ({f.confidence:.1%})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures and not results else 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
