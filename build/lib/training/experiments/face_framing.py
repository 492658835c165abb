"""Measure how FER2013 frames its faces: where the detector's five landmarks sit in the 48x48 crop.

    python -m training.experiments.face_framing                       # -> artifacts/face_framing.json

Runs the default face detector on FER2013 training images (it upscales a 48x48 image and gives it a border,
see ``RetinaFaceDetector.min_side``), keeps the largest face of each, and records the median position of each
landmark as a fraction of the crop side. The two sides are averaged with their mirror image (a mirrored face is
as likely as the face), so the eyes of the framing are level and symmetric about the vertical centre line.
``fer_core.faces.alignment`` maps every detected face onto these positions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fer_core.analysis.datasets import FER_IMAGES, decode_gray, list_labelled_folder, resolve_split_dir
from fer_core.faces.alignment import FRAMING_FILE
from fer_core.faces.detection import RetinaFaceDetector

MIRROR = [1, 0, 2, 4, 3]  # landmark order after a left-right flip


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(FER_IMAGES), help="FER2013 images root with train/ (default: %(default)s)")
    p.add_argument("--limit", type=int, default=6000, help="images to measure, a seeded random sample (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--out", default=str(FRAMING_FILE), help="output JSON (default: %(default)s)")
    return p


def symmetric_median(points: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks as fractions of the side -> (5, 2) medians of the faces and their mirror images."""
    mirrored = points[:, MIRROR].copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    return np.median(np.concatenate([points, mirrored]), axis=0)


def main(args: argparse.Namespace) -> dict:
    files = list_labelled_folder(resolve_split_dir(args.data, "train"))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(files))[: args.limit]
    detector = RetinaFaceDetector(min_face_size=1)
    points, missed = [], 0
    for i in tqdm(order, desc="detecting", unit="img"):
        gray = decode_gray(files.paths[i])
        faces = detector.detect(gray)
        if not faces:
            missed += 1
            continue
        points.append(np.asarray(faces[0].landmarks) / np.array([gray.shape[1], gray.shape[0]]))
    if not points:
        raise SystemExit(f"error: no face found in the {len(order)} training images of {args.data}: the framing is "
                         "measured on face crops such as FER2013's")
    points = np.asarray(points)
    median = symmetric_median(points)
    iqr = np.percentile(points, 75, axis=0) - np.percentile(points, 25, axis=0)
    doc = {
        "landmarks": np.round(median, 4).tolist(),
        "order": ["eye (image left)", "eye (image right)", "nose tip", "mouth corner (image left)",
                  "mouth corner (image right)"],
        "units": "fraction of the square crop side; x right, y down",
        "landmarks_in_48px": np.round(median * 48, 2).tolist(),
        "iqr_in_48px": np.round(iqr * 48, 2).tolist(),
        "images": int(len(order)),
        "faces_found": int(len(points)),
        "missed": missed,
        "data": str(args.data),
        "command": "python -m training.experiments.face_framing " + (f"--limit {args.limit} --seed {args.seed}"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({k: doc[k] for k in ("landmarks_in_48px", "faces_found", "missed")}))
    print(f"wrote {out}")
    return doc


if __name__ == "__main__":
    main(get_args_parser().parse_args())
