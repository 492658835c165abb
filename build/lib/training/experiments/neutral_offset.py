"""Would a fixed bias against neutral help on new domains? Measured under the transfer protocol.

    python -m training.crossdomain --recipe plain -- ...        # first: the recipe's held-out runs
    python -m training.experiments.neutral_offset --recipe plain            # then: neutral's logit shifted by each offset

Faint expressions on whole photos of new people are often called neutral. A per-class bias fix at inference would
add an offset b to neutral's logit (b < 0: less neutral). For each held-out run of the recipe (``without-<D>``), this
takes the model's logits on all of D (TTA, the run's fitted temperature) and prints the accuracy and neutral's
precision at each offset. Then it picks the best offset on one never-seen domain and applies it to the other. An
offset worth shipping must help on the domain it was not chosen on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fer_core.analysis.datasets import list_labelled_folder
from fer_core.model.inference import Predictor

from ..crossdomain import NEUTRAL, PROJECT_ROOT, domains_of, scores, set_logits

DEFAULT_OFFSETS = "-2,-1.5,-1,-0.75,-0.5,-0.25,0,0.25,0.5,0.75,1"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="a recipe measured by training.crossdomain")
    p.add_argument("--runs-dir", default=str(PROJECT_ROOT / "runs" / "crossdomain"),
                   help="training.crossdomain's runs (default: %(default)s)")
    p.add_argument("--domain", action="append", default=[],
                   help="the protocol's whole-photo domains (repeatable; default: ../shared/data/cfee and tfeid)")
    p.add_argument("--offsets", default=DEFAULT_OFFSETS,
                   help="offsets added to neutral's logit, comma-separated; write --offsets=-1,0,1 when the first is negative "
                        "(default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the table and the cross-domain choice as JSON")
    return p


def parse_offsets(text: str) -> list[float]:
    try:
        offsets = sorted({float(x) for x in text.split(",") if x.strip()} | {0.0})
    except ValueError:
        raise SystemExit(f"error: --offsets {text!r}: give numbers separated by commas, e.g. --offsets=-1,-0.5,0") from None
    return offsets


def shifted(logits: np.ndarray, offset: float) -> np.ndarray:
    """(V, N, C) view logits with ``offset`` added to neutral's (rows of photos without a face stay NaN)."""
    out = logits.copy()
    out[..., NEUTRAL] += offset
    return out


def held_out_logits(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Domain name -> (view logits on all of it, labels, temperature) from the run that never trained on it."""
    held = {}
    for domain in domains_of(args):
        measured = Path(args.runs_dir) / args.recipe / f"without-{domain.name}" / "measure.json"
        if not measured.is_file():
            raise SystemExit(f"error: {measured} is missing: measure the recipe first (python -m training.crossdomain "
                             f"--recipe {args.recipe} ...).")
        run = json.loads(measured.read_text())
        predictor = Predictor.from_checkpoint(run["weights"])
        files = list_labelled_folder(domain)
        held[domain.name] = (set_logits(predictor, files, True, domain.name)["logits"], files.labels,
                             run["temperature"])
    return held


def offset_table(held: dict, offsets: list[float]) -> dict[str, list[dict]]:
    """Domain -> per offset: accuracy and neutral's precision."""
    table = {}
    for name, (logits, labels, temperature) in held.items():
        rows = []
        for b in offsets:
            s = scores(shifted(logits, b), labels, temperature)
            rows.append({"offset": b, "accuracy": s["accuracy"], "neutral_precision": s["precision"]["neutral"]})
        table[name] = rows
    return table


def cross_choice(table: dict[str, list[dict]]) -> list[dict]:
    """For each pair of domains: the offset best on the first, and what it does to the second."""
    out = []
    for tuned, rows in table.items():
        best = max(rows, key=lambda r: r["accuracy"])
        for other, other_rows in table.items():
            if other == tuned:
                continue
            at = next(r for r in other_rows if r["offset"] == best["offset"])
            zero = next(r for r in other_rows if r["offset"] == 0.0)
            out.append({"chosen_on": tuned, "offset": best["offset"], "applied_to": other,
                        "accuracy": at["accuracy"], "accuracy_without": zero["accuracy"]})
    return out


def main(args: argparse.Namespace) -> dict:
    offsets = parse_offsets(args.offsets)
    table = offset_table(held_out_logits(args), offsets)
    names = list(table)
    print(f"recipe {args.recipe}: all photos of each never-seen domain, TTA, neutral's logit + offset")
    print("offset  " + "  ".join(f"{n} accuracy (neutral P)" for n in names))
    for i, b in enumerate(offsets):
        print(f"{b:+6.2f}  " + "  ".join(f"{table[n][i]['accuracy']:.3f} ({table[n][i]['neutral_precision']:.2f})"
                                          .ljust(len(n) + 22) for n in names))
    choices = cross_choice(table)
    for c in choices:
        print(f"best on {c['chosen_on']}: offset {c['offset']:+.2f}; on {c['applied_to']} it gives "
              f"{c['accuracy']:.3f} (without: {c['accuracy_without']:.3f})")
    result = {"recipe": args.recipe, "offsets": offsets, "table": table, "cross_domain": choices}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
