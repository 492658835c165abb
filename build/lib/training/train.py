"""Train the Xception expression model from scratch.

    python -m training.train                      # default recipe -> artifacts/
    python -m training.train --resume             # continue a killed run from its last epoch
    python -m training.train --data fer2013.csv   # the original CSV instead of the Kaggle folders
    python -m training.train --init-weights artifacts/model_fer2013.pt --fer-dose 8000 \
        --domain ../shared/data/cfee:1500 --domain ../shared/data/tfeid:1500 --blend-prob 0.3 --camera-aug
                                                  # fine-tune on whole-photo domains (training people only)
    torchrun --nproc_per_node 2 -m training.train # DistributedDataParallel: 2 processes (GPUs: one each)

Writes to --out: model.pt (best epoch on validation), model_card.json, history.csv, and progress.json while it
runs (training/recipe/progress.py; the training-runs page reads it).
Per-epoch resume state goes to --work-dir (not shipped). Under torchrun, only rank 0 prints and writes them
(training/recipe/distributed.py has the plumbing); --batch-size is per process, the peak lr scales with --lr-scaling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_core.locations import FER_IMAGES, PROJECT_ROOT, SHARED_DATA
from fer_core.model.calibration import threshold_arg
from fer_core.model.variants import VARIANTS

from .recipe.fer_labels import FER_LABELS
from .recipe.options import CAMERA, JPEG, AugmentConfig, DomainSpec
from .recipe.outputs import require_torch

DEFAULT_DATA = FER_IMAGES


def positive(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
    return value


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--data", default=str(DEFAULT_DATA),
      help="Kaggle-layout root with train/ and validation/ (or val/, test/), or a fer2013.csv file (default: %(default)s)")
    a("--out", default=str(PROJECT_ROOT / "artifacts"), help="where model.pt, model_card.json, history.csv go (default: %(default)s)")
    a("--work-dir", default=str(PROJECT_ROOT / "runs" / "train"), help="resume state, one file per run (default: %(default)s)")
    a("--cache-dir", default=str(Path.home() / ".cache" / "fer_core"), help="decoded-image cache; '' disables (default: %(default)s)")
    a("--variant", default=None, choices=sorted(VARIANTS),
      help="model width/depth preset (default: small; with --init-weights, that checkpoint's variant; naming a "
           "variant with --init-weights loads those weights into it, e.g. small-fast from small: the same shapes)")
    a("--epochs", type=int, default=60, help="training epochs (default: %(default)s)")
    a("--batch-size", type=int, default=128,
      help="images per step of each process; under torchrun one optimizer step sees world size x this many "
           "(default: %(default)s)")
    a("--lr", type=float, default=3e-3,
      help="peak AdamW learning rate of the one-cycle schedule for one process; under torchrun it is scaled by "
           "--lr-scaling (default: %(default)s)")
    a("--lr-scaling", default="linear", choices=["linear", "sqrt", "none"],
      help="under torchrun, peak lr = --lr x world size (linear), x sqrt(world size), or --lr as given (none); "
           "a single process uses --lr (default: %(default)s)")
    a("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: %(default)s)")
    a("--warmup-epochs", type=float, default=3.0, help="linear warm-up length in epochs (default: %(default)s)")
    a("--label-smoothing", type=float, default=0.1, help="cross-entropy label smoothing (default: %(default)s)")
    a("--class-weight-power", type=float, default=0.5,
      help="loss weight of a class ~ count**-power; 0 = unweighted, 1 = fully balanced (default: %(default)s)")
    a("--mixup-alpha", type=float, default=0.0,
      help="Beta(alpha, alpha) of mixup/CutMix between images of a batch; 0 disables (default: %(default)s)")
    a("--cutmix-prob", type=float, default=0.5, help="share of mixed batches that use CutMix rather than mixup (default: %(default)s)")
    a("--optimizer", default="adamw", choices=["adamw", "sgd"], help="AdamW, or SGD with Nesterov momentum 0.9 (default: %(default)s)")
    a("--ema-decay", type=float, default=0.998, help="per-step decay of the weight EMA that is evaluated and shipped; 0 disables (default: %(default)s)")
    a("--init-weights", default="", help="start from this checkpoint (fine-tuning) instead of random weights; its variant is used")
    a("--teacher", default="",
      help="knowledge distillation: a trained checkpoint whose softened predictions on the same augmented batch "
           "join the loss (Hinton et al. 2015); default: none")
    a("--distill-weight", type=float, default=0.5,
      help="with --teacher: share of the distillation term in the loss, the rest is cross-entropy with the labels "
           "(default: %(default)s)")
    a("--distill-temperature", type=float, default=2.0,
      help="with --teacher: temperature that softens both networks' logits in the distillation term "
           "(default: %(default)s)")
    a("--domain", action="append", default=[], type=DomainSpec.parse, metavar="DIR[:DOSE]",
      help="a whole-photo domain added to training (repeatable): a labelled folder <dir>/<class>/<photo> whose file "
           "names name the person (<person>_<n>.jpg); the largest face of each photo, detected and aligned as the app "
           "does; only its training people (see --photo-test-fraction, --calibration-fraction). DOSE: faces drawn "
           "from it per epoch (default: each training face once)")
    a("--fer-labels", default="fer2013", choices=FER_LABELS,
      help="FER2013's training labels: its own one-hot labels, or mixed with FER+'s ten votes per face "
           "(training/recipe/fer_labels.py; contempt, unknown and not-a-face votes are dropped) (default: %(default)s)")
    a("--fer-label-weight", type=threshold_arg, default=0.5, metavar="A",
      help="with --fer-labels ferplus-votes: the target is A x the FER2013 label + (1 - A) x the vote distribution "
           "(default: %(default)s)")
    a("--votes", default=str(SHARED_DATA / "ferplus" / "train_votes.csv"),
      help="with --fer-labels ferplus-votes: the FER+ votes file of the training faces (default: %(default)s)")
    a("--fer-dose", type=int, default=0,
      help="FER2013 training images drawn per epoch, a fresh random subset each epoch (default: 0 = all, once)")
    a("--photos", default="",
      help="one whole-photo domain repeated --photo-repeat times per epoch: the same as --domain DIR:<repeat x faces>")
    a("--photo-repeat", type=int, default=8, help="with --photos: times each photo face is repeated per epoch (default: %(default)s)")
    a("--photo-test-fraction", type=float, default=0.3,
      help="share of the people of each domain held out for testing, never trained on; the same split as "
           "`training.evaluate --person-split test` (default: %(default)s)")
    a("--calibration-fraction", type=float, default=0.0,
      help="share of the people of each domain held out of training for calibration (`training.calibrate "
           "--domain`, `--person-split calibration`); the test people stay the same (default: %(default)s)")
    a("--blend-prob", type=threshold_arg, default=0.0,
      help="share of expressive whole-photo faces mixed with a neutral face of the same person, with the matching "
           "soft label, to teach faint expressions (default: %(default)s = off)")
    a("--blend-min-share", type=float, default=0.3,
      help="with --blend-prob: the expression's share a is drawn from U(this, 1) (default: %(default)s)")
    a("--camera-aug", action="store_true",
      help=f"add camera and lighting augmentation ({', '.join(f'{k}={v}' for k, v in CAMERA.items())}; "
           "training/recipe/augment.py)")
    a("--jpeg-aug", action="store_true",
      help=f"add JPEG compression at the model's resolution ({', '.join(f'{k}={v}' for k, v in JPEG.items())}, quality "
           f"{'-'.join(map(str, AugmentConfig.jpeg_quality))}; training/recipe/augment.py)")
    a("--grey-mix", type=threshold_arg, default=0.0, metavar="P",
      help="colour-to-grey variations: a share P of the faces made gray from their RGB crop with random channel "
           "weights around BT.601's, instead of the standard conversion (whole-photo domains are read in colour; "
           "FER2013 is gray and stays as it is) (default: %(default)s = off)")
    a("--mixstyle", type=threshold_arg, default=0.0, metavar="P",
      help="MixStyle (Zhou et al. 2021): with probability P per layer and batch, the early feature maps take a style "
           "(channel mean and std) mixed with another face's of the batch; training only (training/recipe/mixstyle.py) "
           "(default: %(default)s = off)")
    a("--mixstyle-alpha", type=positive, default=0.1,
      help="with --mixstyle: Beta(alpha, alpha) of the mixing weight (default: %(default)s)")
    a("--select", default="best", choices=["best", "last"],
      help="which epoch's EMA weights become model.pt: 'best' validation accuracy, or the 'last' epoch of the "
           "schedule (for fine-tuning, where FER2013 validation cannot see the gain on photos). With --resume after "
           "a finished run, 'last' writes the final weights without training further (default: %(default)s)")
    a("--limit-per-class", type=int, default=0, help="use at most N training images per class, for quick checks (default: all)")
    a("--limit-val", type=int, default=0, help="use a random N validation images, for quick checks (default: all)")
    a("--threads", type=int, default=0, help="torch CPU threads; 0 = all cores (default: %(default)s)")
    a("--no-bf16", action="store_true",
      help="train in fp32 instead of bf16 autocast (default: bf16 on a GPU and on CPUs with native bf16, "
           "AVX512-BF16 or AMX; fp32 on other CPUs, where bf16 is emulated and far slower)")
    a("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    a("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    a("--resume", action="store_true",
      help="continue from --work-dir/last.pt if it exists (same --epochs as the first run; under torchrun, the same "
           "world size: every rank restarts from rank 0's file)")
    a("--stop-after", type=int, default=0,
      help="stop after this many epochs of this invocation; continue later with --resume (default: run to the end)")
    a("--stream", action="store_true",
      help="for sets too large to decode into memory (folder layouts): decode each split once into a memory-mapped "
           "uint8 array in --cache-dir (or --work-dir/faces when --cache-dir is '') and preprocess each batch from "
           "it, so memory per process stays bounded; the same numbers as the default in-memory path, which "
           "FER2013 keeps because it is faster")
    a("--record-shards", action="store_true",
      help="write the training-set indices each process is given per epoch to "
           "--work-dir/shards/epoch<E>_rank<R>.txt (indices in the load order of the training set), to check "
           "that the ranks' shards are disjoint and cover the epoch")
    a("--dist-timeout", type=float, default=1800.0,
      help="under torchrun: seconds after which a collective (gradient all-reduce, barrier, the wait for a machine's "
           "first rank to decode the data) fails instead of waiting for a rank that hangs (default: %(default)s)")
    return p


def main(args: argparse.Namespace) -> dict:
    """Train as one process, or as one rank of a torchrun job (training/recipe/run.py); returns the model card (empty
    after --stop-after, and on the ranks other than 0). Without PyTorch: one line that says what to install."""
    require_torch("train a model")
    from .recipe.run import main as run

    return run(args)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
