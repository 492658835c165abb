"""Fit the temperature of a checkpoint on FER2013 validation, report calibration, and ship the temperature.

    python -m training.calibrate --write          # fit, report, write T into artifacts/model.pt (+ .onnx) + model card

One scalar T divides the logits of every test-time view before its softmax (the app's probabilities are the
mean of the views' softmaxes: :func:`fer_core.model.inference.probabilities_from_view_logits`). T is fitted by
minimising the negative log-likelihood with test-time augmentation on, as the upload and evaluation pages run.
A second scalar is fitted the same way without it (view 0 alone: the live page, ``--no-tta``), because the mean
of six views' softmaxes is less peaked than one view's and the two need different temperatures.

Splits (labels of each face are its folder's):
  * ``validation-fit``: half of FER2013 PublicTest (stratified by class, seed 0): T is fitted here only;
  * ``validation-heldout``: the other half, never fitted on;
  * ``validation``: all 3,589 images (half of them fitted on: for comparison with the evaluation page);
  * ``cfee-test``: CFEE's test people (``--person-split test``), whole photos through the app's detector and
    alignment; never trained or fitted on.
Each split is reported with TTA and without it (view 0 of the same logits), each at its own temperature.

The same fitting faces give the pages' default "uncertain" threshold (with and without TTA): the calibrated
confidence at which a face was as often right as wrong (a logistic fit of correctness on confidence,
:func:`fer_core.model.calibration.uncertain_threshold`). With ``--domain``, whole photos of people the model never saw
join that fit, so the default follows how the model does on new people rather than on FER2013 alone. ``--write``
stores both thresholds beside the temperatures; each split's report gives the share of faces set aside at it and
the accuracy of the others.

The logits of every view are computed once per split and weights and cached in ``--cache`` (an .npz per split,
keyed on a digest of the weights, not of the temperature), so a second run only refits and reports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fer_core.analysis.datasets import FER_IMAGES, list_labelled_folder, split_by_person
from fer_core.analysis.evaluation import evaluate_files
from fer_core.faces.images import load_image
from fer_core.faces.preprocessing import to_gray
from fer_core.model.artifacts import MODEL_CARD_NAME
from fer_core.model.calibration import N_BINS, calibration_summary, fit_temperature, pool_alike, uncertain_threshold
from fer_core.model.inference import Predictor, probabilities_from_view_logits
from fer_core.model.weights import DEFAULT_WEIGHTS

from .recipe.outputs import require_torch, require_writable_file
from .recipe.shifted_faces import shifted_view_logits

CFEE = FER_IMAGES.parent.parent / "cfee"


THRESHOLD_KEYS = ("uncertain_below", "uncertain_below_no_tta")  # with / without TTA (Predictor.uncertain_below_for)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to calibrate (default: %(default)s)")
    p.add_argument("--validation", default=str(FER_IMAGES / "validation"),
                   help="FER2013 validation folder <dir>/<class>/<image> (default: %(default)s)")
    p.add_argument("--cfee", default=str(CFEE),
                   help="CFEE whole photos; its test people are a second held-out split; '' to skip "
                        "(default: %(default)s)")
    p.add_argument("--domain", action="append", default=[],
                   help="a whole-photo domain <dir>/<class>/<person>_<n>.jpg (repeatable): the faces of its calibration "
                        "people (never trained on; training.train --calibration-fraction) join the fit, every set "
                        "weighted alike, and its test people are reported (default: FER2013 validation only)")
    p.add_argument("--calibration-fraction", type=float, default=0.15,
                   help="with --domain: the share of people training.train kept out for calibration (default: %(default)s)")
    p.add_argument("--temperature-from", default="mix", choices=["mix", "validation"],
                   help="fit the temperatures on every fitting set ('mix': FER2013 validation-fit and each --domain's "
                        "calibration people, weighted alike) or on FER2013 validation-fit alone; the default "
                        "'uncertain' thresholds use the mix either way (default: %(default)s)")
    p.add_argument("--shifted-copy", action="store_true",
                   help="fit the temperatures with one more set, weighted like the others: the validation-fit faces "
                        "copied at four strengths of another camera (gamma, blur, scaling, noise, JPEG; "
                        "training/recipe/shifted_faces.py), so that the confidence carries to new studios "
                        "(docs/calibration.md); the 'uncertain' thresholds stay fitted on real faces")
    p.add_argument("--fit-fraction", type=float, default=0.5,
                   help="share of validation that T is fitted on, stratified by class (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fit / held-out split (default: %(default)s)")
    p.add_argument("--cache", default="runs/calibration", help="folder of the cached logits (default: %(default)s)")
    p.add_argument("--json", dest="json_out", default="artifacts/calibration.json",
                   help="write the report here (default: %(default)s)")
    p.add_argument("--write", action="store_true",
                   help="store the fitted temperature in the checkpoint's meta (the other fields unchanged) and in "
                        "the model card next to it")
    return p


def file_digest(path: Path) -> str:
    """SHA-256 of the weights: what cached logits belong to (the temperature is not part of the logits)."""
    h = hashlib.sha256()
    from fer_core.model.checkpoint import load_checkpoint  # torch: required by main

    model, *_ = load_checkpoint(path)
    for name, tensor in model.state_dict().items():  # the weights only: writing T must not invalidate the cache
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()[:16]


def cached_logits(predictor: Predictor, name: str, files, cache: Path, digest: str, **kwargs) -> dict:
    """{"view_logits": (V, F, C), "labels": (F,), "n_images": N} of a split: from the cache, or computed with
    :func:`fer_core.analysis.evaluation.evaluate_files` (with TTA, exactly as ``training.evaluate`` runs) and cached."""
    path = cache / f"{name}_{digest}.npz"
    if path.is_file():
        with np.load(path) as d:
            return {k: d[k] for k in d.files}
    print(f"computing the logits of {name} ({len(files)} images)...", file=sys.stderr)
    result = evaluate_files(predictor, files, tta=True, **kwargs)
    out = {"view_logits": result.view_logits, "labels": files.labels[result.face_index],
           "n_images": np.array(len(files))}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def cached_shifted(predictor: Predictor, val_files, fit_idx: np.ndarray, cache: Path, digest: str) -> dict:
    """{"view_logits", "labels"} of the camera-shifted copies of the validation-fit faces
    (:func:`training.recipe.shifted_faces.shifted_view_logits`), cached like :func:`cached_logits`."""
    path = cache / f"validation-fit-shifted_{digest}.npz"
    if path.is_file():
        with np.load(path) as d:
            return {k: d[k] for k in d.files}
    print(f"computing the logits of the shifted copies of {len(fit_idx)} validation-fit faces...", file=sys.stderr)
    faces = [to_gray(load_image(val_files.paths[i])) for i in fit_idx]
    view_logits, labels = shifted_view_logits(predictor, faces, val_files.labels[fit_idx])
    out = {"view_logits": view_logits, "labels": labels}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def report_split(view_logits: np.ndarray, labels: np.ndarray, t_tta: float, t_no_tta: float,
                 thresholds: dict | None = None) -> dict:
    """Before (T = 1) and after calibration, with TTA (at ``t_tta``) and without (view 0, at ``t_no_tta``); with
    ``thresholds``, also the share of faces the default "uncertain" threshold sets aside and the accuracy of the
    others."""
    out = {"n_faces": int(len(labels))}
    for mode, logits, temperature in (("tta", view_logits, t_tta), ("no_tta", view_logits[:1], t_no_tta)):
        probs = {"before": probabilities_from_view_logits(logits, 1.0),
                 "after": probabilities_from_view_logits(logits, temperature)}
        out[mode] = {"temperature": temperature, **{k: calibration_summary(p, labels) for k, p in probs.items()},
                     "accuracy": {k: float(np.mean(p.argmax(1) == labels)) for k, p in probs.items()}}
        threshold = (thresholds or {}).get("uncertain_below" + ("" if mode == "tta" else "_no_tta"))
        if threshold is not None and len(labels):
            sure = probs["after"].max(1) >= threshold
            out[mode]["uncertain"] = {"threshold": threshold, "share_uncertain": float(1 - sure.mean()),
                                      "accuracy_of_the_rest": float(np.mean(probs["after"][sure].argmax(1)
                                                                            == labels[sure])) if sure.any() else None}
    return out


def default_threshold(view_logits: np.ndarray, labels: np.ndarray, temperature: float, weights: np.ndarray):
    """The pages' default "uncertain" threshold for these calibration faces at ``temperature``: the confidence
    where a face is as often right as wrong (:func:`fer_core.model.calibration.uncertain_threshold`)."""
    probs = probabilities_from_view_logits(view_logits, temperature)
    return uncertain_threshold(probs.max(1), probs.argmax(1) == labels, weights=weights)


def main(args: argparse.Namespace) -> dict:
    require_torch("calibrate a checkpoint")
    if args.json_out:
        require_writable_file(args.json_out, "--json")
    weights = Path(args.weights)
    predictor = Predictor.from_checkpoint(weights)
    digest = file_digest(weights)
    cache = Path(args.cache)
    val_files = list_labelled_folder(args.validation)
    val = cached_logits(predictor, "validation", val_files, cache, digest, split="FER2013 PublicTest")
    idx = np.arange(len(val["labels"]))
    fit_idx, held_idx = train_test_split(idx, train_size=args.fit_fraction, stratify=val["labels"],
                                         random_state=args.seed)
    fit_idx, held_idx = np.sort(fit_idx), np.sort(held_idx)
    fit_sets = {"validation-fit": (val["view_logits"][:, fit_idx], val["labels"][fit_idx])}
    domain_tests = {}
    for folder in map(Path, args.domain):
        files = list_labelled_folder(folder)
        for part in ("calibration", "test"):
            part_files = split_by_person(files, part, 0.3, calibration_fraction=args.calibration_fraction)
            d = cached_logits(predictor, f"{folder.name}_{part}", part_files, cache, digest, detect_faces=True,
                              split=f"{folder.name} {part} people")
            (fit_sets if part == "calibration" else domain_tests)[f"{folder.name}-{part}"] = (
                d["view_logits"], d["labels"], f"{folder.name} {part} people, whole photos "
                f"({int(d['n_images'])} photos, {len(d['labels'])} faces found)")
    logits, labels, set_weights = pool_alike(v[:2] for v in fit_sets.values())  # every set weighted alike
    t_sets = dict(fit_sets)
    if args.shifted_copy:
        if len(val["labels"]) != len(val_files):
            raise SystemExit("error: --shifted-copy needs every validation image readable (the copies are made of the "
                             "validation-fit faces by their index)")
        shifted = cached_shifted(predictor, val_files, fit_idx, cache, digest)
        t_sets["validation-fit-shifted"] = (shifted["view_logits"], shifted["labels"])
    t_logits, t_labels, t_weights = pool_alike(v[:2] for v in t_sets.values())
    if args.temperature_from == "validation":  # the thresholds still see every fitting set
        t_logits, t_labels = fit_sets["validation-fit"]
        t_weights = None
    temperature = fit_temperature(t_logits, t_labels, weights=t_weights)
    temperature_no_tta = fit_temperature(t_logits[:1], t_labels, weights=t_weights)
    print(f"temperature {temperature:.4f} with TTA, {temperature_no_tta:.4f} without (fitted on "
          + (f"validation-fit ({len(t_labels)} faces))" if args.temperature_from == "validation" else
             f"{', '.join(f'{k} ({len(v[1])} faces)' for k, v in t_sets.items())}, each set weighted alike)"))
    thresholds = dict(zip(THRESHOLD_KEYS, (default_threshold(logits, labels, temperature, set_weights),
                                            default_threshold(logits[:1], labels, temperature_no_tta, set_weights))))
    print("default 'uncertain' threshold (a face below it was more often wrong than right on the same faces): "
          + ", ".join(f"{k} {v:.2f}" if v is not None else f"{k} none" for k, v in thresholds.items()))

    splits = {
        "validation-fit": (val["view_logits"][:, fit_idx], val["labels"][fit_idx],
                           f"FER2013 PublicTest, the {len(fit_idx)} faces T was fitted on"),
        "validation-heldout": (val["view_logits"][:, held_idx], val["labels"][held_idx],
                               f"FER2013 PublicTest, the other {len(held_idx)} faces (not fitted on)"),
        "validation": (val["view_logits"], val["labels"], f"FER2013 PublicTest, all {len(idx)} faces (half fitted on)"),
        **{k: v for k, v in fit_sets.items() if k != "validation-fit"}, **domain_tests,
    }
    if "validation-fit-shifted" in t_sets:
        splits["validation-fit-shifted"] = (*t_sets["validation-fit-shifted"],
                                            "the validation-fit faces, each at four strengths of another camera")
    if args.cfee:
        cfee_files = split_by_person(list_labelled_folder(args.cfee), "test", 0.3)
        cfee = cached_logits(predictor, "cfee_test", cfee_files, cache, digest, detect_faces=True,
                             split="CFEE test people")
        splits["cfee-test"] = (cfee["view_logits"], cfee["labels"],
                               f"CFEE test people, whole photos ({int(cfee['n_images'])} photos, "
                               f"{len(cfee['labels'])} faces found; never trained or fitted on)")
    report = {
        "temperature": temperature,
        "temperature_no_tta": temperature_no_tta,
        **thresholds,
        "fitted_on": "validation-fit" if args.temperature_from == "validation" else " + ".join(t_sets),
        "thresholds_fitted_on": " + ".join(fit_sets),
        "objective": "NLL of the mean over the 6 TTA views of softmax(logits / T); without TTA, of view 0",
        "n_bins": N_BINS,
        "weights": args.weights if args.weights != str(DEFAULT_WEIGHTS) else "artifacts/model.pt",
        "command": "python -m training.calibrate " + shlex.join(sys.argv[1:]),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "splits": {},
    }
    print(f"{'split':20s} {'mode':7s} {'n':>5s}  {'ECE before':>10s} {'ECE after':>9s}  {'NLL before':>10s} "
          f"{'NLL after':>9s}  {'acc before':>10s} {'acc after':>9s}")
    for name, (logits, labels, description) in splits.items():
        r = report_split(logits, labels, temperature, temperature_no_tta, thresholds)
        report["splits"][name] = {"description": description, **r}
        for mode in ("tta", "no_tta"):
            m = r[mode]
            print(f"{name:20s} {mode:7s} {r['n_faces']:5d}  {m['before']['ece']:10.4f} {m['after']['ece']:9.4f}  "
                  f"{m['before']['nll']:10.4f} {m['after']['nll']:9.4f}  {m['accuracy']['before']:10.4f} "
                  f"{m['accuracy']['after']:9.4f}")
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    if args.write:
        write_temperature(weights, report)
    return report


def write_temperature(weights: Path, report: dict) -> None:
    """Store both temperatures in the checkpoint's meta (weights, config, class names and preprocessing unchanged)
    and a summary in the model card beside it (when there is one)."""
    from fer_core.model.checkpoint import load_checkpoint, save_checkpoint  # torch: required by main
    from fer_core.model.onnx_file import write_onnx_beside

    model, preprocess, names, meta = load_checkpoint(weights)
    held = report["splits"]["validation-heldout"]
    temperatures = {"temperature": report["temperature"], "temperature_no_tta": report["temperature_no_tta"],
                    **{k: report[k] for k in THRESHOLD_KEYS if report.get(k) is not None}}
    summary = {**temperatures,
               "fitted_on": "; ".join(report["splits"][k]["description"] for k in report["fitted_on"].split(" + ")),
               "thresholds_fitted_on": "; ".join(report["splits"][k]["description"]
                                                 for k in report["thresholds_fitted_on"].split(" + ")),
               "command": report["command"], "created_at": report["created_at"],
               "heldout": {mode: {"ece_before": held[mode]["before"]["ece"], "ece_after": held[mode]["after"]["ece"],
                                  "nll_before": held[mode]["before"]["nll"], "nll_after": held[mode]["after"]["nll"]}
                           for mode in ("tta", "no_tta")}}
    kept = {k: v for k, v in meta.items() if k not in THRESHOLD_KEYS}  # a threshold not refitted is not kept
    save_checkpoint(weights, model, preprocess, {**kept, **temperatures, "calibration": summary}, names)
    print(f"wrote temperatures {temperatures} into {weights} and {write_onnx_beside(weights)}")
    card_path = weights.parent / MODEL_CARD_NAME
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        card["calibration"] = summary
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"wrote the calibration into {card_path}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
