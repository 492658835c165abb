"""Do the app's explanations hold up? A deletion test and three plain checks on FER2013 validation faces.

    python -m training.experiments.explain_faithfulness --n 200                    # the app's method (occlusion sensitivity)
    python -m training.experiments.explain_faithfulness --n 200 --method gradcam   # the Grad-CAM it replaced (needs torch)

For each of ``--n`` faces drawn at random (``--seed``) from the folder, the explained class is the one the app
predicts (test-time views, calibrated temperature) and its map is what the upload page shows. Then:

* **deletion test**: hide the 20 % of pixels the map ranks highest and, separately, a random 20 % (the mean of
  ``--random-masks`` draws); the map passes on a face when hiding its top pixels lowers the explained class's
  probability more. Hidden pixels are replaced in three ways, each reported: by the preprocessing mean (a flat
  gray), by a blurred copy of the face (the replacement the occlusion method itself uses), and inpainted from the
  pixels around them (no new edges or noise). The random pixels are drawn as blobs and as scattered single pixels.
* **empty maps**: maps with no weight anywhere, on confidently classified faces (probability >= ``--confident``).
* **border mass**: the share of a map's weight in the crop's outer ring (``--border`` pixels wide; a flat map
  puts 44 % there), and how often its peak lies in that ring.
* **seconds per face** of the explanation as the upload page asks for it (every class's map of one face).

Targets (issue 22): pass on >= 90 % of faces, no empty map on a confident face, <= 1 s per face on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from fer_core.analysis.datasets import FER_IMAGES, decode_gray, list_labelled_folder
from fer_core.faces.preprocessing import faces_to_array
from fer_core.model.explain import blurred, explain_crop
from fer_core.model.inference import Predictor, predict_probabilities
from fer_core.model.weights import DEFAULT_WEIGHTS

from ..recipe.outputs import require_writable_file

METHODS = ("occlusion", "gradcam")
FILLS = ("mean", "blur", "inpaint")  # what hidden pixels become
TESTS = tuple(f"{fill}_{kind}" for fill in FILLS for kind in ("blobs", "pixels"))  # (replacement, random kind)
INPAINT_RADIUS = 3  # pixels of the neighbourhood cv2.inpaint fills a hidden pixel from


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default=str(FER_IMAGES / "validation"),
                   help="labelled face crops <folder>/<class>/* (default: %(default)s)")
    p.add_argument("--n", type=int, default=200, help="faces to test, drawn at random (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draw of faces and random masks (default: 0)")
    p.add_argument("--method", choices=METHODS, default="occlusion",
                   help="occlusion: the app's explanation (fer_core.model.explain); gradcam: the Grad-CAM it replaced "
                        "(training.experiments.gradcam, needs torch) (default: %(default)s)")
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint (default: %(default)s)")
    p.add_argument("--fraction", type=float, default=0.2, help="share of pixels hidden (default: %(default)s)")
    p.add_argument("--random-masks", type=int, default=8,
                   help="random masks per face, their drops averaged (default: %(default)s)")
    p.add_argument("--random-sigma", type=float, default=4.0,
                   help="smoothness of the random masks' blobs, pixels (default: %(default)s); scattered single "
                        "pixels are reported too")
    p.add_argument("--confident", type=float, default=0.9,
                   help="probability from which a face counts as confidently classified (default: %(default)s)")
    p.add_argument("--border", type=int, default=6, help="width of the crop's outer ring, pixels (default: 6)")
    p.add_argument("--json", metavar="PATH", help="also write the summary and the per-face rows as JSON")
    return p


def explainer(method: str, predictor: Predictor):
    """crop -> (C, S, S) maps of every class, as the upload page asks for them."""
    if method == "gradcam":
        from .gradcam import grad_cam_crop

        model = predictor.model
        return lambda crop: grad_cam_crop(model, predictor.preprocess, crop)
    return lambda crop: explain_crop(predictor.backend, predictor.preprocess, crop)


def top_mask(heat: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) bool: the ``k`` pixels of highest weight (ties in random order, so an empty map hides random ones)."""
    order = np.lexsort((rng.random(heat.size), -heat.ravel()))
    mask = np.zeros(heat.size, bool)
    mask[order[:k]] = True
    return mask.reshape(heat.shape)


def random_mask(shape: tuple[int, int], k: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """(S, S) bool, ``k`` pixels: the top of uniform noise smoothed by a Gaussian of ``sigma`` pixels (random blobs
    about as coarse as a map), or scattered single pixels with ``sigma`` 0."""
    noise = rng.random(shape).astype(np.float32)
    if sigma > 0:
        noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)
    return top_mask(noise, k, rng)


def hide(x: np.ndarray, mask: np.ndarray, fill: str) -> np.ndarray:
    """``x`` (S, S) preprocessed face with the pixels of ``mask`` hidden: set to the preprocessing mean (a flat gray),
    to a blurred copy of the face, or inpainted from the pixels around them (OpenCV's Telea inpainting: the
    information goes without adding edges or noise the network never saw; cf. the imputation of ROAD, Rong et al.,
    ICML 2022)."""
    if fill == "mean":
        return np.where(mask, np.float32(0.0), x)  # 0 = the preprocessing mean after normalisation
    if fill == "blur":
        return np.where(mask, blurred(x), x)
    lo, hi = float(x.min()), float(x.max())
    face8 = np.uint8(np.round((x - lo) / max(hi - lo, 1e-6) * 255))
    filled = cv2.inpaint(face8, mask.astype(np.uint8), INPAINT_RADIUS, cv2.INPAINT_TELEA)
    return np.where(mask, filled.astype(np.float32) / 255 * (hi - lo) + lo, x).astype(np.float32)


def deletion_drops(predictor: Predictor, x: np.ndarray, target: int, heat: np.ndarray, args,
                   rng: np.random.Generator) -> dict[str, tuple[float, float]]:
    """For each (replacement, random kind): (drop of the target's probability when the map's top ``--fraction``
    of pixels is hidden, mean drop when a random ``--fraction`` is). ``x``: (S, S) preprocessed face."""
    k = int(round(args.fraction * x.size))
    kinds = {"blobs": args.random_sigma, "pixels": 0.0}
    masks = [top_mask(heat, k, rng)] + [random_mask(x.shape, k, sigma, rng) for sigma in kinds.values()
                                        for _ in range(args.random_masks)]
    fills = FILLS
    batch = [x] + [hide(x, m, fill) for fill in fills for m in masks]
    probs = predict_probabilities(predictor.backend, np.stack(batch)[:, None], tta=True,
                                  temperature=predictor.temperature)[:, target]
    drops = (probs[0] - probs[1:]).reshape(len(fills), len(masks))
    out = {}
    for fill, row in zip(fills, drops):
        for j, kind in enumerate(kinds):
            randoms = row[1 + j * args.random_masks:1 + (j + 1) * args.random_masks]
            out[f"{fill}_{kind}"] = (float(row[0]), float(randoms.mean()))
    return out


def measure_face(predictor: Predictor, explain, gray: np.ndarray, args, rng: np.random.Generator) -> dict:
    """One face's row: label, confidence, deletion drops, emptiness, border share, seconds."""
    probs = predictor.classify_crops([gray])[0]
    target = int(np.argmax(probs))
    start = time.perf_counter()
    heat = explain(gray)[target]
    seconds = time.perf_counter() - start
    ring = np.ones(heat.shape, bool)
    ring[args.border:-args.border, args.border:-args.border] = False
    total = float(heat.sum())
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    x = faces_to_array([gray], predictor.preprocess)[0, 0]
    drops = deletion_drops(predictor, x, target, heat, args, rng)
    return {"label": predictor.class_names[target], "confidence": float(probs[target]), "seconds": seconds,
            "empty": not (np.isfinite(heat).all() and heat.max() > 0),
            "border_share": float(heat[ring].sum() / total) if total > 0 else None,
            "peak_in_border": bool(ring[peak]) if total > 0 else None,
            **{f"drop_top_{r}": d[0] for r, d in drops.items()},
            **{f"drop_random_{r}": d[1] for r, d in drops.items()}}


def summarise(rows: list[dict], args) -> dict:
    """The numbers the targets are about, over all faces."""
    confident = [r for r in rows if r["confidence"] >= args.confident]
    shares = [r["border_share"] for r in rows if r["border_share"] is not None]
    size = 48  # the model's input side: the ring's share of the area, for comparison
    out = {"method": args.method, "faces": len(rows), "seed": args.seed, "fraction": args.fraction,
           "confident_faces": len(confident), "empty_maps_confident": sum(r["empty"] for r in confident),
           "empty_maps": sum(r["empty"] for r in rows),
           "border_width": args.border, "border_area_share": 1 - ((size - 2 * args.border) / size) ** 2,
           "border_mass_share": float(np.mean(shares)) if shares else None,
           "peaks_in_border": float(np.mean([r["peak_in_border"] for r in rows if r["peak_in_border"] is not None]
                                            or [0.0])),
           "seconds_per_face_median": float(np.median([r["seconds"] for r in rows])),
           "seconds_per_face_mean": float(np.mean([r["seconds"] for r in rows]))}
    for name in TESTS:
        top = np.array([r[f"drop_top_{name}"] for r in rows])
        rand = np.array([r[f"drop_random_{name}"] for r in rows])
        out[f"deletion_pass_{name}"] = float(np.mean(top > rand))
        out[f"mean_drop_top_{name}"], out[f"mean_drop_random_{name}"] = float(top.mean()), float(rand.mean())
    return out


def main(args: argparse.Namespace) -> int:
    if args.json:
        require_writable_file(args.json, "--json")
    try:
        files = list_labelled_folder(args.folder)
    except FileNotFoundError as e:
        print(f"error: {e} (the FER2013 validation faces; see --folder)", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    picks = sorted(rng.choice(len(files), size=min(args.n, len(files)), replace=False))
    predictor = Predictor.from_checkpoint(args.weights)
    explain = explainer(args.method, predictor)
    explain(decode_gray(files.paths[picks[0]], predictor.preprocess.image_size))  # warm-up, not timed
    rows = []
    for i in picks:
        gray = decode_gray(files.paths[i], predictor.preprocess.image_size)
        rows.append({"file": files.paths[i].name, **measure_face(predictor, explain, gray, args, rng)})
    summary = summarise(rows, args)
    print(f"{args.method} on {summary['faces']} faces of {args.folder} (seed {args.seed}):")
    for name in TESTS:
        fill, kind = name.split("_")
        print(f"  deletion test, hidden pixels -> {fill}, random {kind}: top {args.fraction:.0%} beats random on "
              f"{summary[f'deletion_pass_{name}']:.1%} of faces (mean drop of the explained probability "
              f"{summary[f'mean_drop_top_{name}']:.3f} vs {summary[f'mean_drop_random_{name}']:.3f})")
    print(f"  empty maps: {summary['empty_maps_confident']} of {summary['confident_faces']} confidently classified "
          f"faces (p >= {args.confident}), {summary['empty_maps']} of {summary['faces']} in all")
    print(f"  map weight in the outer {args.border}-pixel ring: {summary['border_mass_share']:.1%} (the ring is "
          f"{summary['border_area_share']:.1%} of the crop); peak in the ring on {summary['peaks_in_border']:.1%} "
          f"of faces")
    print(f"  seconds per face (every class's map): median {summary['seconds_per_face_median']:.3f}, "
          f"mean {summary['seconds_per_face_mean']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "faces": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
