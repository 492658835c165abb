"""Print the README's results table from the shipped artifacts (nothing is typed by hand).

    python -m training.results_table

Reads artifacts/model_card.json, artifacts/eval_validation.json (TTA),
artifacts/eval_validation_no_tta.json and, if present, artifacts/eval_photos.json.
"""

from __future__ import annotations

import argparse

from fer_core.artifacts import artifact_path, read_eval_summary, read_model_card
from fer_core.labels import EMOTIONS

EVALS = (
    ("eval_validation.json", "FER2013 PublicTest (validation), 3,589 faces, TTA on"),
    ("eval_validation_no_tta.json", "FER2013 PublicTest (validation), 3,589 faces, TTA off"),
    ("eval_photos.json", "../shared/data/photos (126 real photos, noisy labels), Haar detection + TTA"),
)


def get_args_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def main(_args: argparse.Namespace) -> str:
    lines = ["| evaluation | accuracy | macro-F1 | " + " | ".join(f"{c} recall" for c in EMOTIONS) + " |",
             "|---|---|---|" + "---|" * len(EMOTIONS)]
    for name, title in EVALS:
        s = read_eval_summary(artifact_path(name))
        if s is None:
            continue
        recalls = " | ".join(f"{s['per_class'][c]['recall']:.2f}" for c in EMOTIONS)
        found = f" (faces found in {s['n_faces_found']}/{s['n_images']})" if s.get("detect_faces") else ""
        lines.append(f"| {title}{found} | {s['accuracy']:.2%} | {s['macro_f1']:.3f} | {recalls} |")
    card = read_model_card()
    if card:
        arch, tr = card["architecture"], card["training"]
        lines += ["", f"Model: Xception-{arch['variant']}, {arch['parameters']:,} parameters, "
                      f"{arch['macs_per_face'] / 1e6:.0f} M MACs per face; trained from scratch for {tr['epochs_run']} epochs "
                      f"in {tr['wall_time_seconds'] / 60:.0f} min wall time ({tr['device']}); selected epoch "
                      f"{tr['selected_epoch']} on validation accuracy."]
    table = "\n".join(lines)
    print(table)
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
