"""Can one temperature calibrate both never-seen domains? Measured under the transfer protocol.

    python -m training.crossdomain --recipe plain -- ...                 # first: the recipe's held-out runs
    python -m training.experiments.heldout_temperature --recipe plain    # then: ECE on each never-seen domain per T

Each held-out run (``without-<D>``) fits its temperature on a mix it never trained on (half of FER2013 validation
and its training domains' calibration people); its ECE on all of D says whether that confidence carries to a new
studio. This reads the run's stored TTA logits (``logits.npz``, nothing is run again) and prints, for each
never-seen domain, the ECE at the run's own temperature and over a grid of temperatures, the temperature best on
each domain, and what that one does to the other domain. A temperature worth shipping must help on the domain it
was not chosen on; none exists when the two domains want temperatures on either side of each other's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..crossdomain import LOGITS_NAME, PROJECT_ROOT, domains_of, scores

DEFAULT_TEMPERATURES = "0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.5,1.75,2.0"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="a recipe measured by training.crossdomain")
    p.add_argument("--runs-dir", default=str(PROJECT_ROOT / "runs" / "crossdomain"),
                   help="training.crossdomain's runs (default: %(default)s)")
    p.add_argument("--domain", action="append", default=[],
                   help="the protocol's whole-photo domains (repeatable; default: ../shared/data/cfee and tfeid)")
    p.add_argument("--temperatures", default=DEFAULT_TEMPERATURES,
                   help="temperatures to try, comma-separated (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the table and the cross-domain choice as JSON")
    return p


def parse_temperatures(text: str) -> list[float]:
    try:
        values = sorted({float(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise SystemExit(f"error: --temperatures {text!r}: give numbers separated by commas, e.g. 0.8,1,1.2") from None
    if not values or min(values) <= 0:
        raise SystemExit(f"error: --temperatures {text!r}: give positive numbers")
    return values


def held_out_logits(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Domain name -> (stored view logits on all of it, labels, the run's fitted temperature), from the run that
    never trained on it."""
    held = {}
    for domain in domains_of(args):
        folder = Path(args.runs_dir) / args.recipe / f"without-{domain.name}"
        if not (folder / LOGITS_NAME).is_file() or not (folder / "measure.json").is_file():
            raise SystemExit(f"error: {folder / LOGITS_NAME} is missing: measure the recipe first "
                             f"(python -m training.crossdomain --recipe {args.recipe} ...).")
        with np.load(folder / LOGITS_NAME) as stored:
            key = f"{domain.name}_all"
            if f"{key}/logits" not in stored:
                raise SystemExit(f"error: {folder / LOGITS_NAME} holds no logits of all of {domain.name}")
            held[domain.name] = (stored[f"{key}/logits"], stored[f"{key}/labels"],
                                 json.loads((folder / "measure.json").read_text())["temperature"])
    return held


def temperature_table(held: dict, temperatures: list[float]) -> dict[str, dict]:
    """Domain -> its run's temperature and ECE there, and the ECE at each temperature of the grid."""
    table = {}
    for name, (logits, labels, fitted) in held.items():
        table[name] = {"fitted": fitted, "ece_fitted": scores(logits, labels, fitted)["ece"],
                       "rows": [{"temperature": t, "ece": scores(logits, labels, t)["ece"]} for t in temperatures]}
    return table


def cross_choice(table: dict[str, dict]) -> list[dict]:
    """For each pair of domains: the grid temperature best on the first, and the ECE it gives the second."""
    out = []
    for tuned, entry in table.items():
        best = min(entry["rows"], key=lambda r: r["ece"])
        for other, other_entry in table.items():
            if other != tuned:
                at = next(r for r in other_entry["rows"] if r["temperature"] == best["temperature"])
                out.append({"chosen_on": tuned, "temperature": best["temperature"], "ece_there": best["ece"],
                            "applied_to": other, "ece": at["ece"], "ece_fitted": other_entry["ece_fitted"]})
    return out


def main(args: argparse.Namespace) -> dict:
    temperatures = parse_temperatures(args.temperatures)
    table = temperature_table(held_out_logits(args), temperatures)
    names = list(table)
    print(f"recipe {args.recipe}: ECE on all photos of each never-seen domain (TTA), by temperature")
    print("fitted  " + "  ".join(f"{n}: T={table[n]['fitted']:.3f} ECE {table[n]['ece_fitted']:.3f}" for n in names))
    print("T       " + "  ".join(f"{n} ECE".ljust(12) for n in names))
    for i, t in enumerate(temperatures):
        print(f"{t:<6.2f}  " + "  ".join(f"{table[n]['rows'][i]['ece']:.3f}".ljust(max(12, len(n) + 4))
                                          for n in names))
    choices = cross_choice(table)
    for c in choices:
        print(f"best on {c['chosen_on']}: T={c['temperature']:g} (ECE {c['ece_there']:.3f}); on {c['applied_to']} "
              f"it gives ECE {c['ece']:.3f} (at its run's own temperature: {c['ece_fitted']:.3f})")
    result = {"recipe": args.recipe, "temperatures": temperatures, "table": table, "cross_domain": choices}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
