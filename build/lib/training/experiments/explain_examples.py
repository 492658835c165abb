"""Write the example explanations of docs/explanations.md: heatmaps on a public-domain face photo.

    python -m training.experiments.explain_examples --out docs/

The photo is NASA's portrait of astronaut Eileen Collins (public domain, shipped inside scikit-image as
``skimage.data.astronaut()``), so the PNGs may be committed (FER2013 and CFEE images may not). Each PNG shows the
face crop the model classifies (detected, aligned, 48x48) and beside it the map of one class (where hiding the
face lowers that class's probability most, :mod:`fer_core.model.explain`); the printed
lines give each class's probability and where the heatmap's weight lies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fer_core.faces.alignment import face_crop
from fer_core.faces.detection import make_detector
from fer_core.faces.images import rotate_image
from fer_core.faces.preprocessing import to_gray
from fer_core.model.explain import explain_crop, overlay
from fer_core.model.inference import Predictor
from fer_core.model.weights import DEFAULT_WEIGHTS

SIDE = 144  # pixels of each half of a PNG (the 48x48 crop enlarged 3x)
# (file name, roll of the photo in degrees, class to explain or None for the predicted one)
EXAMPLES = (("explain_happy.png", 0.0, None), ("explain_surprise.png", 0.0, "surprise"),
            ("explain_rolled_30.png", 30.0, None))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: %(default)s)")
    p.add_argument("--out", default="docs", help="folder for the PNGs (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> None:
    from skimage import data

    predictor = Predictor.from_checkpoint(args.weights)
    names = list(predictor.class_names)
    detector = make_detector()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for file_name, roll, target in EXAMPLES:
        gray = rotate_image(to_gray(np.ascontiguousarray(data.astronaut())), roll)
        face = detector.detect(gray)[0]
        crop = face_crop(gray, face, predictor.preprocess.image_size, predictor.preprocess.face_margin)
        probs = predictor.classify_crops([crop])[0]
        target = target or names[int(np.argmax(probs))]
        heat = explain_crop(predictor.backend, predictor.preprocess, crop, classes=[names.index(target)])[0]
        face_rgb = cv2.resize(cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
        picture = np.hstack([face_rgb, np.full((SIDE, 4, 3), 255, np.uint8), overlay(crop, heat, SIDE)])
        cv2.imwrite(str(out / file_name), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        weight = heat / max(float(heat.sum()), 1e-12)
        row, col = np.unravel_index(int(np.argmax(heat)), heat.shape)
        print(f"{out / file_name}: photo rolled {roll:+.0f} deg, predicted {names[int(np.argmax(probs))]} "
              f"({probs.max():.0%}), explained {target} ({probs[names.index(target)]:.0%}); map "
              f"weight in rows 0-15 (eyes, brows, forehead) {weight[:16].sum():.0%}, rows 16-31 (nose, cheeks) "
              f"{weight[16:32].sum():.0%}, rows 32-47 (mouth, chin) {weight[32:].sum():.0%}; peak at x={col}, y={row}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
