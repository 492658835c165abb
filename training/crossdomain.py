"""The transfer protocol: fine-tune with one whole-photo domain held out entirely, and measure on it.

    python -m training.crossdomain --recipe plain -- --fer-dose 8000 --epochs 4 --lr 5e-4
    python -m training.crossdomain --recipe blend --combined -- --fer-dose 8000 --epochs 4 --blend-prob 0.3
    python -m training.crossdomain --recipe wise-plain --average init:0.5 --average plain:0.5   # WiSE-FT
    python -m training.crossdomain --table        # print the table of every recipe measured so far

For each whole-photo domain D (default: cfee and tfeid), ``training.train`` fine-tunes ``--init-weights`` (default:
the FER2013-only model, which saw no whole photo) on FER2013 plus the training people of every other domain, and the
result is measured on all of D (never seen: other people, another studio), on the other domains' test people, on
FER2013 validation and on ../shared/data/photos. ``--combined`` also trains on the training people of every domain:
the candidate to ship. Everything after ``--`` goes to ``training.train`` as it is (the recipe).

The held-out-domain accuracies predict how a model does on photos of people, studios and cultures nobody here has:
choose recipes by their mean, never by one set. Each model's temperature is fitted on a mix that it never trained
on (half of FER2013 validation and the calibration people of its training domains, each set weighted alike), and
ECE is reported at that temperature on every whole-photo split.

Runs go to ``--runs-dir/<recipe>/<run>/`` (model, card, history, the measurement as JSON); a killed protocol resumes
where it stopped (training resumes from its last epoch; finished runs and measurements are reused).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from fer_core.analysis.datasets import (
    FER_IMAGES,
    SHARED_DATA,
    LabelledFiles,
    list_labelled_folder,
    person_of,
    split_by_person,
)
from fer_core.analysis.evaluation import evaluate_files
from fer_core.analysis.metrics import classification_summary
from fer_core.analysis.votes import face_key, majority_labels, read_votes, votes_for
from fer_core.labels import EMOTIONS
from fer_core.locations import PROJECT_ROOT
from fer_core.model.calibration import calibration_summary, fit_temperature, pool_alike
from fer_core.model.inference import Predictor, probabilities_from_view_logits

NEUTRAL = EMOTIONS.index("neutral")
FIRST_COLUMNS = ["recipe", "fer_val", "ferplus_val"]
INIT = "init"  # --average's name of --init-weights
LOGITS_NAME = "logits.npz"  # beside measure.json: every split's TTA logits (V, N, 7), NaN rows where no face was found
LAST_COLUMNS = ["held_out_mean", "photos", "neutral_precision", "min_recall", "min_recall_class", "ece"]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--recipe", default="", help="name of the recipe (a folder under --runs-dir); the training arguments follow --")
    a("--runs-dir", default=str(PROJECT_ROOT / "runs" / "crossdomain"), help="where runs go (default: %(default)s)")
    a("--init-weights", default=str(PROJECT_ROOT / "artifacts" / "model_fer2013.pt"),
      help="the checkpoint every run fine-tunes (default: %(default)s, trained on FER2013 only); '' trains every "
           "run from random weights")
    a("--domain", action="append", default=[],
      help="a whole-photo domain <dir>/<class>/<person>_<n>.jpg (repeatable; default: ../shared/data/cfee and tfeid)")
    a("--dose", type=int, default=1500, help="faces drawn per epoch from each training domain (default: %(default)s)")
    a("--test-fraction", type=float, default=0.3, help="share of each domain's people kept for testing (default: %(default)s)")
    a("--calibration-fraction", type=float, default=0.15,
      help="share of each domain's people kept out of training to fit the temperature (default: %(default)s)")
    a("--validation", default=str(FER_IMAGES / "validation"), help="FER2013 validation folder (default: %(default)s)")
    a("--photos", default=str(SHARED_DATA / "photos"), help="small real photos, another set measured ('' to skip)")
    a("--votes", default=str(SHARED_DATA / "ferplus" / "validation_votes.csv"),
      help="FER+ votes of the validation faces: FER2013 validation is also scored against FER+'s majority labels "
           "(column ferplus_val; '' or a missing file: not) (default: %(default)s)")
    a("--combined", action="store_true", help="also train on every domain's training people (the candidate to ship)")
    a("--run", action="append", default=[], metavar="RUN",
      help="only these runs (repeatable: without-<domain>, all-domains), e.g. to split a long recipe over machines; "
           "the table shows a recipe's held-out mean once all its held-out runs are measured")
    a("--no-train", action="store_true", help="measure --init-weights itself as the recipe (no fine-tuning)")
    a("--average", action="append", default=[], metavar="RECIPE[:WEIGHT]",
      help="instead of training, average each run's weights over these recipes' same runs (repeatable; "
           f"'{INIT}' is --init-weights: WiSE-FT; several fine-tunes: a model soup; training.average_weights)")
    a("--ensemble", action="append", default=[], metavar="RECIPE",
      help="instead of training, measure the ensemble of these recipes (repeatable): each run's TTA logits averaged "
           "over the recipes' same runs (their logits.npz), the temperature refitted on the same calibration mix; "
           "the network this stands for outputs the mean of the members' logits")
    a("--write-card", action="append", default=[], metavar="RECIPE",
      help="with --table: store these recipes' protocol rows (held-out runs and their all-domains run) and their "
           "held-out mean in the shipped model card as 'transfer_protocol' (repeatable: seeds of the shipped recipe)")
    a("--table", action="store_true", help="only print the table of the recipes measured under --runs-dir")
    a("--limit-val", type=int, default=0, help="measure on a random N validation images, for quick checks")
    a("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of training.train (the recipe)")
    return p


def domains_of(args: argparse.Namespace) -> list[Path]:
    return [Path(d) for d in args.domain] or [SHARED_DATA / "cfee", SHARED_DATA / "tfeid"]


def plan_runs(domains: list[Path], combined: bool) -> dict[str, list[Path]]:
    """Run name -> the domains it trains on: one run per held-out domain, and the combined run."""
    runs = {f"without-{held.name}": [d for d in domains if d != held] for held in domains}
    if combined:
        runs["all-domains"] = list(domains)
    return runs


def train_run(args: argparse.Namespace, folder: Path, train_domains: list[Path]) -> Path:
    """Fine-tune (or train from scratch, or resume) one run in a child process; returns its model.pt. A finished run
    is reused."""
    out = folder / "out"
    if (out / "model_card.json").is_file():
        return out / "model.pt"
    recipe = [a for a in args.train_args if a != "--"]
    start = ["--init-weights", args.init_weights] if args.init_weights else []  # '': from random weights
    cmd = [sys.executable, "-m", "training.train", *start,
           *[x for d in train_domains for x in ("--domain", f"{d}:{args.dose}")],
           "--photo-test-fraction", str(args.test_fraction), "--calibration-fraction", str(args.calibration_fraction),
           "--select", "last", *recipe, "--out", str(out), "--work-dir", str(folder / "work"), "--resume"]
    print("$ " + " ".join(cmd), flush=True)
    (folder).mkdir(parents=True, exist_ok=True)
    subprocess.run(cmd, check=True, cwd=PROJECT_ROOT)
    return out / "model.pt"


def average_run(args: argparse.Namespace, folder: Path, run: str) -> Path:
    """The weighted average of the ``--average`` recipes' models of ``run`` (reused once written)."""
    out = folder / "out" / "model.pt"
    if out.is_file():
        return out
    from training.average_weights import (  # torch: only when averaging
        average_checkpoints,
        parse_input,
    )

    inputs = []
    for spec in args.average:
        name, weight = parse_input(spec)
        source = Path(args.init_weights) if str(name) == INIT else Path(args.runs_dir) / name / run / "out" / "model.pt"
        if not source.is_file():
            raise SystemExit(f"error: --average {spec}: {source} is not there (measure recipe {name} first)")
        inputs.append((source, weight))
    average_checkpoints(inputs, out)
    return out


def ensemble_run(args: argparse.Namespace, run: str, train_domains: list[Path], out: Path) -> dict:
    """The measurement of the ``--ensemble`` recipes' run ``run`` together: their logits averaged split by split."""
    if out.is_file():
        return json.loads(out.read_text())
    members = []
    for name in args.ensemble:
        path = Path(args.runs_dir) / name / run / LOGITS_NAME
        if not path.is_file():
            raise SystemExit(f"error: --ensemble {name}: {path} is not there (measure recipe {name} first)")
        with np.load(path) as z:
            members.append(dict(z))
    keys = members[0].keys()
    for name, m in zip(args.ensemble, members):
        if m.keys() != keys or any(not np.array_equal(m[k], members[0][k]) for k in keys if k.endswith("/labels")):
            raise SystemExit(f"error: --ensemble {name}: its run {run} was measured on other splits")
    mean = {k: np.mean([m[k] for m in members], axis=0) if k.endswith("/logits") else members[0][k] for k in keys}
    names = sorted({k.split("/")[0] for k in keys})
    sets = {n: (mean[f"{n}/logits"], mean[f"{n}/labels"]) for n in names if not n.startswith("fit")}
    if "ferplus_val" not in sets and "fer_val" in sets and (ferplus := ferplus_split(args, sets["fer_val"][0])):
        sets["ferplus_val"] = ferplus
    fit_sets = [(mean[f"{n}/logits"], mean[f"{n}/labels"]) for n in sorted(n for n in names if n.startswith("fit"))]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out.with_name(LOGITS_NAME), **mean)
    return scored(sets, fit_sets, {"ensemble": list(args.ensemble), "train_domains": [d.name for d in train_domains]},
                  out)


def split_mask(files: LabelledFiles, part: str, args: argparse.Namespace) -> np.ndarray:
    """(N,) bool: the files of ``files`` that belong to person-split ``part``."""
    people = {person_of(p) for p in split_by_person(files, part, args.test_fraction,
                                                    calibration_fraction=args.calibration_fraction).paths}
    return np.array([person_of(p) in people for p in files.paths])


def validation_fit_half(labels: np.ndarray) -> np.ndarray:
    """Indices of the half of FER2013 validation (stratified, seed 0) that every run fits its temperature on."""
    return train_test_split(np.arange(len(labels)), train_size=0.5, stratify=labels, random_state=0)[0]


def set_logits(predictor: Predictor, files: LabelledFiles, detect: bool, name: str) -> dict:
    """Uncalibrated TTA logits of every image (a face per image; NaN rows where no face was found) and labels."""
    print(f"measuring {name} ({len(files)} images)...", file=sys.stderr, flush=True)
    result = evaluate_files(predictor, files, detect_faces=detect, tta=True, split=name)
    logits = np.full((result.view_logits.shape[0], len(files), len(EMOTIONS)), np.nan, np.float32)
    logits[:, result.face_index] = result.view_logits
    return {"logits": logits, "labels": files.labels, "paths": [str(p) for p in files.paths]}


def scores(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """Accuracy, macro-F1, per-class recall and precision of (V, N, C) logits (no face: wrong), with ECE and NLL
    at ``temperature`` over the faces found."""
    found = ~np.isnan(logits[0, :, 0])
    pred = np.full(len(labels), -1)
    probs = probabilities_from_view_logits(logits[:, found], temperature) if found.any() else np.zeros((0, 7))
    pred[found] = probs.argmax(1)
    s = classification_summary(labels, pred, EMOTIONS)
    cal = calibration_summary(probs, labels[found]) if found.any() else {"ece": float("nan"), "nll": float("nan")}
    return {"n": int(len(labels)), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"],
            "recall": {k: v["recall"] for k, v in s["per_class"].items()},
            "precision": {k: v["precision"] for k, v in s["per_class"].items()},
            "ece": cal["ece"], "nll": cal["nll"], "temperature": temperature,
            "pred": pred.tolist(), "labels": labels.tolist()}


def measure(args: argparse.Namespace, weights: Path, train_domains: list[Path], out: Path) -> dict:
    """Every split of one model (cached in ``out``): held-out domains whole, training domains' test people,
    FER2013 validation, photos; the temperature fitted on the calibration mix."""
    if out.is_file():
        return with_ferplus(args, out)
    predictor = Predictor.from_checkpoint(weights)
    val_files = list_labelled_folder(args.validation)
    if args.limit_val:
        keep = np.sort(np.random.default_rng(0).permutation(len(val_files))[:args.limit_val])
        val_files = LabelledFiles([val_files.paths[i] for i in keep], val_files.labels[keep])
    val = set_logits(predictor, val_files, False, "FER2013 validation")
    fit_idx = validation_fit_half(val_files.labels)
    fit_sets = [(val["logits"][:, fit_idx], val["labels"][fit_idx])]
    sets = {"fer_val": (val["logits"], val["labels"])}
    ferplus = ferplus_split(args, val["logits"])
    if ferplus is not None:
        sets["ferplus_val"] = ferplus
    for domain in domains_of(args):
        files = list_labelled_folder(domain)
        d = set_logits(predictor, files, True, domain.name)
        if domain in train_domains:
            for part in ("test", "calibration"):
                m = split_mask(files, part, args)
                sets[f"{domain.name}_{part}"] = (d["logits"][:, m], d["labels"][m])
            fit_sets.append(sets.pop(f"{domain.name}_calibration"))
        else:
            sets[f"{domain.name}_all"] = (d["logits"], d["labels"])
            m = split_mask(files, "test", args)
            sets[f"{domain.name}_test"] = (d["logits"][:, m], d["labels"][m])
    if args.photos:
        files = list_labelled_folder(args.photos)
        d = set_logits(predictor, files, True, "photos")
        sets["photos"] = (d["logits"], d["labels"])
    np.savez_compressed(out.with_name(LOGITS_NAME),  # every split's TTA logits: ensembles are measured from them
                        **{f"{name}/logits": lg for name, (lg, _) in sets.items()},
                        **{f"{name}/labels": lb for name, (_, lb) in sets.items()},
                        **{f"fit{i}/logits": lg for i, (lg, _) in enumerate(fit_sets)},
                        **{f"fit{i}/labels": lb for i, (_, lb) in enumerate(fit_sets)})
    return scored(sets, fit_sets, {"weights": str(weights), "train_domains": [d.name for d in train_domains]}, out)


def ferplus_split(args: argparse.Namespace, val_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """FER2013 validation against FER+'s majority labels: the (V, n, 7) logits and labels of the faces that have a
    majority (fer_core.analysis.votes), from the logits of every validation face in listing order; None without a
    votes file, with --limit-val, or when the votes describe no face of the folder."""
    if not args.votes or not Path(args.votes).is_file() or args.limit_val:
        return None
    majority = validation_majority(str(args.validation), str(args.votes))
    if len(majority) != val_logits.shape[1] or not (majority >= 0).any():
        return None
    keep = majority >= 0
    return val_logits[:, keep], majority[keep]


@lru_cache(maxsize=4)
def validation_majority(validation: str, votes: str) -> np.ndarray:
    """(N,) FER+ majority label of each face of the validation folder in listing order (-1: none); read once per
    process, however many measurements the table adds the column to."""
    files = list_labelled_folder(validation)
    return majority_labels(votes_for([face_key(p) for p in files.paths], read_votes(votes)))


def with_ferplus(args: argparse.Namespace, out: Path) -> dict:
    """A measurement read back, with the FER+ column added from its stored logits when it was measured without."""
    result = json.loads(out.read_text())
    logits_path = out.with_name(LOGITS_NAME)
    if "ferplus_val" in result["splits"] or not logits_path.is_file():
        return result
    with np.load(logits_path) as z:
        split = ferplus_split(args, z["fer_val/logits"]) if "fer_val/logits" in z else None
    if split is not None:
        result["splits"]["ferplus_val"] = scores(*split, result["temperature"])
        out.write_text(json.dumps(result))
    return result


def scored(sets: dict, fit_sets: list, about: dict, out: Path) -> dict:
    """Fit the temperature on ``fit_sets`` (each weighted alike), score every split of ``sets`` at it, and write the
    measurement to ``out``."""
    logits, labels, set_weights = pool_alike(fit_sets)  # every fitting set weighted alike
    temperature = fit_temperature(logits, labels, weights=set_weights)
    result = {**about, "temperature": temperature,
              "fitted_on": ["fer_val half"] + [f"{d}_calibration" for d in about["train_domains"]],
              "splits": {name: scores(lg, lb, temperature) for name, (lg, lb) in sets.items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))
    return result


def pooled(splits: list[dict]) -> dict:
    """Neutral precision and the lowest class recall over several splits' predictions together."""
    pred = np.concatenate([s["pred"] for s in splits])
    labels = np.concatenate([s["labels"] for s in splits])
    s = classification_summary(labels, pred, EMOTIONS)
    return {"neutral_precision": s["per_class"]["neutral"]["precision"],
            "min_recall": min(v["recall"] for v in s["per_class"].values()),
            "min_recall_class": min(s["per_class"], key=lambda k: s["per_class"][k]["recall"])}


def table_rows(recipe: str, measured: dict[str, dict]) -> list[dict]:
    """The protocol's rows of one recipe: the held-out runs together, and the combined run on its own."""
    rows = []
    held = {k: v for k, v in measured.items() if k.startswith("without-")}
    if held:
        sp = {k: v["splits"] for k, v in held.items()}
        row = {"recipe": recipe, "fer_val": np.mean([s["fer_val"]["accuracy"] for s in sp.values()]),
               "ferplus_val": np.mean([s["ferplus_val"]["accuracy"] if "ferplus_val" in s else np.nan
                                       for s in sp.values()])}
        for run, s in sp.items():
            held_name = run.removeprefix("without-")
            # a domain's own test people, from the run that trained on it (untrained weights: from any run)
            for name in held[run]["train_domains"] or [n.removesuffix("_test") for n in s if n.endswith("_test")]:
                row[f"{name}_test"] = s[f"{name}_test"]["accuracy"]
            row[f"heldout_{held_name}"] = s[f"{held_name}_all"]["accuracy"]  # trained on the other domains only
        held_all = [s[f"{run.removeprefix('without-')}_all"] for run, s in sp.items()]
        named = {d for run, m in held.items() for d in [run.removeprefix("without-"), *m["train_domains"]]}
        complete = all(f"without-{d}" in held for d in named)  # a mean over some held-out domains is not the mean
        row["held_out_mean"] = float(np.mean([h["accuracy"] for h in held_all])) if complete else np.nan
        row["photos"] = np.mean([s["photos"]["accuracy"] for s in sp.values() if "photos" in s] or [np.nan])
        row.update(pooled(held_all))
        row["ece"] = " ".join(f"{run.removeprefix('without-')}:{s[run.removeprefix('without-') + '_all']['ece']:.3f}"
                              for run, s in sp.items())
        rows.append(row)
    if "all-domains" in measured:
        s = measured["all-domains"]["splits"]
        tests = [v for k, v in s.items() if k.endswith("_test")]
        row = {"recipe": f"{recipe} (all domains)", "fer_val": s["fer_val"]["accuracy"],
               "ferplus_val": s["ferplus_val"]["accuracy"] if "ferplus_val" in s else np.nan,
               **{k: v["accuracy"] for k, v in s.items() if k.endswith("_test")},
               "photos": s["photos"]["accuracy"] if "photos" in s else np.nan, **pooled(tests),
               "ece": " ".join(f"{k.removesuffix('_test')}:{v['ece']:.3f}" for k, v in s.items() if k.endswith("_test"))}
        rows.append(row)
    return rows


def print_table(runs_dir: Path, args: argparse.Namespace) -> list[dict]:
    """Every recipe measured under ``runs_dir``, one or two rows each; written as table.csv and table.md too."""
    import pandas as pd

    rows = []
    for recipe_dir in sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []:
        measured = {m.parent.name: with_ferplus(args, m) for m in sorted(recipe_dir.glob("*/measure.json"))}
        rows += table_rows(recipe_dir.name, measured)
    if not rows:
        print(f"no measured recipe under {runs_dir}")
        return rows
    middle = sorted({k for r in rows for k in r} - set(FIRST_COLUMNS) - set(LAST_COLUMNS),
                    key=lambda k: (not k.endswith("_test"), k))  # test people, then held-out domains
    df = pd.DataFrame(rows).reindex(columns=FIRST_COLUMNS + middle + LAST_COLUMNS)
    pd.set_option("display.width", 250)
    text = df.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
    print("accuracy on each split (TTA on; whole photos through the app's detector and alignment; no face = wrong)")
    print(text)
    df.to_csv(runs_dir / "table.csv", index=False)
    (runs_dir / "table.txt").write_text(text + "\n")
    if args.write_card:
        from .results_table import write_card_protocol

        write_card_protocol(rows, args.write_card)
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    runs_dir = Path(args.runs_dir)
    if args.table:
        return print_table(runs_dir, args)
    if not args.recipe:
        raise SystemExit("error: name the recipe with --recipe NAME (or print the table with --table)")
    if not args.init_weights and (args.no_train or any(str(a).split(":")[0] == INIT for a in args.average)):
        raise SystemExit("error: --no-train and --average init need --init-weights (a checkpoint)")
    domains = domains_of(args)
    for d in domains:
        if not d.is_dir():
            raise SystemExit(f"error: --domain {d} is not a folder")
    planned = plan_runs(domains, args.combined or "all-domains" in args.run)
    unknown = sorted(set(args.run) - set(planned))
    if unknown:
        raise SystemExit(f"error: --run {unknown[0]} is not a run of this protocol (runs: {', '.join(planned)})")
    if args.run and args.no_train:
        raise SystemExit("error: --run does not go with --no-train (one measurement serves every run)")
    if args.run:
        planned = {run: train_domains for run, train_domains in planned.items() if run in args.run}
    for run, train_domains in planned.items():
        folder = runs_dir / args.recipe / run
        if args.ensemble:
            ensemble_run(args, run, train_domains, folder / "measure.json")
            continue
        if args.no_train:
            weights = Path(args.init_weights)
        elif args.average:
            weights = average_run(args, folder, run)
        else:
            weights = train_run(args, folder, train_domains)
        measure(args, weights, [] if args.no_train else train_domains, folder / "measure.json")
        if args.no_train:
            break  # one measurement of the untouched weights serves every held-out column
    if args.no_train:  # the same model held out from every domain: one run per column
        src = runs_dir / args.recipe / next(iter(plan_runs(domains, False)))
        for run in plan_runs(domains, False):
            dst = runs_dir / args.recipe / run / "measure.json"
            if not dst.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text((src / "measure.json").read_text())
    return print_table(runs_dir, args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
