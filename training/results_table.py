"""Print the results tables of docs/evaluation.md from the shipped artifacts (nothing is typed by hand).

    python -m training.results_table               # print them
    python -m training.results_table --write-card  # also store the per-domain results in artifacts/model_card.json

Reads artifacts/model_card.json, artifacts/eval_validation.json (TTA),
artifacts/eval_validation_no_tta.json and, if present, artifacts/eval_validation_ferplus.json (FER+ majority labels)
and artifacts/eval_photos.json; then the whole-photo table
(CFEE's test people: detectors, alignment, the FER2013-only vs the shipped model, rolled heads) from
artifacts/eval_cfee_test*.json, each written by the `training.evaluate` command in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fer_core.files import write_text_atomically
from fer_core.labels import EMOTIONS
from fer_core.model.artifacts import MODEL_CARD_NAME, artifact_path, read_eval_summary, read_model_card

EVALS = (
    ("eval_validation.json", "FER2013 PublicTest (validation), 3,589 faces, TTA on"),
    ("eval_validation_no_tta.json", "FER2013 PublicTest (validation), 3,589 faces, TTA off"),
    ("eval_validation_ferplus.json", "FER2013 PublicTest (validation) scored against FER+'s majority labels "
                                     "(the faces with one), TTA on"),
    ("eval_photos.json", "../shared/data/photos (126 real photos, noisy labels), RetinaFace + alignment + TTA"),
)
# CFEE's test people (never trained on), TTA on: each pipeline step and each model, then rolled heads.
REAL_FACE_EVALS = (
    ("eval_cfee_test_fer2013_haar.json", "FER2013-only model", "Haar, box crop (the previous pipeline)"),
    ("eval_cfee_test_fer2013_no_align.json", "FER2013-only model", "RetinaFace, box crop"),
    ("eval_cfee_test_fer2013.json", "FER2013-only model", "RetinaFace + alignment"),
    ("eval_cfee_test_haar.json", "shipped (all domains)", "Haar, box crop"),
    ("eval_cfee_test_no_align.json", "shipped (all domains)", "RetinaFace, box crop"),
    ("eval_cfee_test.json", "shipped (all domains)", "**RetinaFace + alignment (the app's default)**"),
    ("eval_cfee_test_roll-40.json", "shipped (all domains)", "RetinaFace + alignment, heads rolled -40 deg"),
    ("eval_cfee_test_roll-20.json", "shipped (all domains)", "RetinaFace + alignment, heads rolled -20 deg"),
    ("eval_cfee_test_roll20.json", "shipped (all domains)", "RetinaFace + alignment, heads rolled +20 deg"),
    ("eval_cfee_test_roll40.json", "shipped (all domains)", "RetinaFace + alignment, heads rolled +40 deg"),
    ("eval_cfee_test_roll40_haar.json", "shipped (all domains)", "Haar, box crop, heads rolled +40 deg"),
)


# One row per domain of the model card's "results": the shipped model on data of each kind it meets.
DOMAIN_EVALS = (
    ("eval_validation.json", "FER2013 PublicTest (validation): 48x48 crops, TTA on"),
    ("eval_validation_ferplus.json", "FER2013 PublicTest (validation), FER+ majority labels (ten people per face; "
                                     "faces without a majority left out)"),
    ("eval_cfee_test.json", "CFEE test people: whole studio photos of 68 people never trained on"),
    ("eval_tfeid_test.json", "Taiwanese performers' test people (Chen, Cho & Tseng 2013): whole photos of 4 people of another studio and culture, never trained on"),
    ("eval_photos.json", "../shared/data/photos: 126 real photos, noisy labels"),
)
CARD_COMMAND = "python -m training.results_table --write-card"


def domain_results() -> list[dict]:
    """The model card's per-domain table, from the shipped evaluation files (those present)."""
    rows = []
    for name, title in DOMAIN_EVALS:
        s = read_eval_summary(artifact_path(name))
        if s is None:
            continue
        recalls = {c: s["per_class"][c]["recall"] for c in EMOTIONS if c in s["per_class"]}
        lowest = min(recalls, key=recalls.get)
        rows.append({"domain": title, "eval_file": name, "command": s.get("command"), "images": s.get("n_images"),
                     "faces_found": s.get("n_faces_found") if s.get("detect_faces") else None,
                     "accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "ece": s.get("ece"), "nll": s.get("nll"),
                     "neutral_precision": s["per_class"].get("neutral", {}).get("precision"),
                     "lowest_recall": {"class": lowest, "recall": recalls[lowest]}, "recall": recalls})
    return rows


def update_card(key: str, value) -> Path:
    """Set ``key`` of the shipped model card to ``value``, the rest of the card unchanged; the card's path."""
    path = artifact_path(MODEL_CARD_NAME)
    card = read_model_card(path)
    if card is None:
        raise SystemExit(f"error: there is no model card at {path}.")
    card[key] = value
    write_text_atomically(path, json.dumps(card, indent=2) + "\n")
    return path


def write_card_results() -> list[dict]:
    """Store :func:`domain_results` in the shipped model card as "results" (the rest of the card unchanged)."""
    rows = domain_results()
    update_card("results", {"command": CARD_COMMAND, "tta": True,
                            "note": "accuracy on whole photos counts a photo without a detected face as wrong",
                            "domains": rows})
    return rows


def write_card_protocol(rows: list[dict], recipes: list[str]) -> dict:
    """Store the protocol rows of ``recipes`` in the shipped model card as "transfer_protocol" (the rest of the card
    unchanged): each recipe's held-out row and all-domains row, and the mean held-out accuracy over the recipes."""
    chosen = [{k: (None if isinstance(v, float) and np.isnan(v) else v.item() if isinstance(v, np.generic) else v)
               for k, v in r.items()} for r in rows if r["recipe"].removesuffix(" (all domains)") in recipes]
    held = [r["held_out_mean"] for r in chosen if r.get("held_out_mean") is not None]
    missing = [name for name in recipes if not any(r["recipe"] == name for r in chosen)]
    if missing:
        raise SystemExit(f"error: --write-card {', '.join(missing)}: no held-out runs measured under that name")
    protocol = {
        "command": "python -m training.crossdomain --table " + " ".join(f"--write-card {r}" for r in recipes),
        "note": "held_out_mean: accuracy on all photos of a whole-photo domain the run never trained on, averaged "
                "over the domains; rows '(all domains)' trained on every domain's training people (their test "
                "columns are test people); ece: at each run's own temperature, fitted on half of FER2013 validation "
                "and its training domains' calibration people, without the camera-shifted copies the shipped "
                "temperature is also fitted on (that rule's protocol ECE: docs/calibration.md)",
        "held_out_mean": float(np.mean(held)), "recipes": list(recipes), "rows": chosen}
    path = update_card("transfer_protocol", protocol)
    print(f"wrote the protocol rows of {', '.join(recipes)} (held-out mean {np.mean(held):.3f}) into {path}")
    return protocol


def _recalls(summary: dict) -> str:
    return " | ".join(f"{summary['per_class'][c]['recall']:.2f}" for c in EMOTIONS)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write-card", action="store_true",
                   help="also store the per-domain results (FER2013 validation with FER2013's and FER+'s labels, CFEE's and the "
                        "Taiwanese performers' test people, the real photos) in the model card")
    return p


def main(args: argparse.Namespace) -> str:
    lines = ["| evaluation | accuracy | macro-F1 | " + " | ".join(f"{c} recall" for c in EMOTIONS) + " |",
             "|---|---|---|" + "---|" * len(EMOTIONS)]
    for name, title in EVALS:
        s = read_eval_summary(artifact_path(name))
        if s is None:
            continue
        found = f" (faces found in {s['n_faces_found']}/{s['n_images']})" if s.get("detect_faces") else ""
        lines.append(f"| {title}{found} | {s['accuracy']:.2%} | {s['macro_f1']:.3f} | {_recalls(s)} |")
    lines += ["", "| model | pipeline (CFEE test people, TTA on) | faces found | accuracy | macro-F1 | "
              + " | ".join(EMOTIONS) + " |", "|---|---|---|---|---|" + "---|" * len(EMOTIONS)]
    for name, model, pipeline in REAL_FACE_EVALS:
        s = read_eval_summary(artifact_path(name))
        if s is not None:
            lines.append(f"| {model} | {pipeline} | {s['n_faces_found']}/{s['n_images']} | {s['accuracy']:.1%} | "
                         f"{s['macro_f1']:.3f} | {_recalls(s)} |")
    card = read_model_card()
    if card:
        arch, tr = card["architecture"], card["training"]
        lines += ["", f"Model: Xception-{arch['variant']}, {arch['parameters']:,} parameters, "
                      f"{arch['macs_per_face'] / 1e6:.0f} M MACs per face; {tr['epochs_run']} epochs in "
                      f"{tr['wall_time_seconds'] / 60:.0f} min wall time ({tr['device']}); selection: {tr['selection']}, "
                      f"epoch {tr['selected_epoch']}."]
    table = "\n".join(lines)
    print(table)
    if args.write_card:
        rows = write_card_results()
        print(f"\nwrote the results of {len(rows)} domains into {artifact_path(MODEL_CARD_NAME)}")
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
