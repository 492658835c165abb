"""Train the Xception expression model from scratch.

    python -m training.train                      # default recipe -> artifacts/
    python -m training.train --resume             # continue a killed run from its last epoch
    python -m training.train --data fer2013.csv   # the original CSV instead of the Kaggle folders
    python -m training.train --init-weights artifacts/model_fer2013.pt --fer-dose 8000 \
        --domain ../shared/data/cfee:1500 --domain ../shared/data/tfeid:1500 --blend-prob 0.3 --camera-aug
                                                  # fine-tune on whole-photo domains (training people only)
    torchrun --nproc_per_node 2 -m training.train # DistributedDataParallel: 2 processes (GPUs: one each)

Writes to --out: model.pt (best epoch on validation), model_card.json, history.csv, and progress.json while it
runs (training/progress.py; the training-runs page reads it).
Per-epoch resume state goes to --work-dir (not shipped). Under torchrun, only rank 0 prints and writes them
(training/distributed.py has the plumbing); --batch-size is per process, the peak lr scales with --lr-scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from fer_core.calibration import negative_log_likelihood, threshold_arg
from fer_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fer_core.datasets import FER_IMAGES, FaceArrays, describe_skipped, load_split
from fer_core.files import atomic_path, write_text_atomically
from fer_core.inference import predict_probabilities
from fer_core.onnx_model import write_onnx_beside
from fer_core.labels import EMOTIONS
from fer_core.metrics import classification_summary
from fer_core.model import VARIANTS, build_model, count_macs, count_parameters
from fer_core.preprocessing import PreprocessConfig, faces_to_tensor

from . import distributed
from .augment import CAMERA, JPEG, AugmentConfig, GreyVariation, augment_batch, mix_batch
from .mixstyle import attach_mixstyle
from .data_sources import DomainSpec, IntensityBlend, TrainingPool, assemble, domain_faces
from .distributed import SINGLE, Dist
from .outputs import require_writable_dir
from .progress import TrainingProgress
from .streaming import StreamedFaces

PROJECT_ROOT = Path(__file__).resolve().parent.parent
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
           "training/augment.py)")
    a("--jpeg-aug", action="store_true",
      help=f"add JPEG compression at the model's resolution ({', '.join(f'{k}={v}' for k, v in JPEG.items())}, quality "
           f"{'-'.join(map(str, AugmentConfig.jpeg_quality))}; training/augment.py)")
    a("--grey-mix", type=threshold_arg, default=0.0, metavar="P",
      help="colour-to-grey variations: a share P of the faces made gray from their RGB crop with random channel "
           "weights around BT.601's, instead of the standard conversion (whole-photo domains are read in colour; "
           "FER2013 is gray and stays as it is) (default: %(default)s = off)")
    a("--mixstyle", type=threshold_arg, default=0.0, metavar="P",
      help="MixStyle (Zhou et al. 2021): with probability P per layer and batch, the early feature maps take a style "
           "(channel mean and std) mixed with another face's of the batch; training only (training/mixstyle.py) "
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


def seed_everything(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def limit_per_class(data: FaceArrays, n: int, seed: int) -> FaceArrays:
    if n <= 0:
        return data
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(data.labels == c))[:n] for c in np.unique(data.labels)])
    keep.sort()
    return FaceArrays(data.images[keep], data.labels[keep])


def class_weights(labels: np.ndarray, power: float, counts: np.ndarray | None = None) -> torch.Tensor:
    """Loss weights ~ count**-power, scaled so that the average weight per training image is 1. ``counts``: the
    images per class an epoch sees, when it is not one pass over ``labels`` (doses)."""
    counts = (np.bincount(labels, minlength=len(EMOTIONS)) if counts is None else np.asarray(counts)).astype(np.float64)
    w = np.where(counts > 0, np.maximum(counts, 1) ** -power, 0.0)
    w = w * counts.sum() / (w * counts).sum()
    return torch.tensor(w, dtype=torch.float32)


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay), or SGD with Nesterov momentum 0.9 and L2 weight decay."""
    if args.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                               weight_decay=args.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def ship(path: Path, model, preprocess: PreprocessConfig, args: argparse.Namespace, epoch: int,
         summary: dict, write: bool = True) -> dict:
    """Write ``model`` as the shipped checkpoint of ``epoch`` (unless not ``write``: the ranks other than 0 under
    torchrun); returns the model card's record of that epoch (its validation ``summary``: accuracy, macro-F1,
    per-class recall)."""
    if write:
        trained_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        save_checkpoint(path, model, preprocess,
                        meta={"epoch": epoch, "variant": args.variant, "seed": args.seed, "trained_at": trained_at})
        write_onnx_beside(path)  # the app's copy (ONNX Runtime, no torch): model.pt -> model.onnx
    return {"epoch": epoch, "val_acc": summary["accuracy"], "val_macro_f1": summary["macro_f1"],
            "per_class_recall": {k: v["recall"] for k, v in summary["per_class"].items()}}


def training_pool(args: argparse.Namespace, train: FaceArrays, preprocess: PreprocessConfig) -> TrainingPool:
    """FER2013's training faces and the training people of every --domain (and --photos), with their doses."""
    specs = list(args.domain)
    if args.photos:
        specs.append(DomainSpec(Path(args.photos), -args.photo_repeat))  # dose fixed below, once the faces are known
    domains = []
    for spec in specs:
        try:
            faces = domain_faces(spec, preprocess.image_size, args.photo_test_fraction, args.calibration_fraction,
                                 args.cache_dir or None, colour=bool(args.grey_mix))
        except (FileNotFoundError, ValueError) as e:  # a missing folder, a foreign class folder, no faces
            raise SystemExit(f"error: --domain {spec.path}: {e}") from None
        if spec.dose < 0:
            spec = DomainSpec(spec.path, -spec.dose * len(faces))
        domains.append((spec, faces))
    pool = assemble(train, args.fer_dose, domains)
    for row in pool.report():
        print(f"source {row['source']}: {row['faces']} faces"
              + (f" of {row['people']} training people" if row["people"] else "")
              + f", {row['dose_per_epoch']} per epoch (x{row['repeats_per_epoch']})", flush=True)
    return pool


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                       label_smoothing: float) -> torch.Tensor:
    """Cross-entropy against (B, C) soft labels with label smoothing; each face is weighted by the class weights of
    its label (mixed as the label is) and the sum normalised by the batch's total weight, as ``F.cross_entropy``
    normalises with class indices (one-hot targets give its value up to how the smoothing term is weighted)."""
    target = target * (1.0 - label_smoothing) + label_smoothing / target.shape[1]
    per_face = -(target * F.log_softmax(logits, dim=1)).sum(1)
    face_weight = (target * weights).sum(1) / target.sum(1)
    return (per_face * face_weight).sum() / face_weight.sum()


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def cpu_has_native_bf16() -> bool:
    """True when this CPU does bf16 matrix maths in hardware (AVX512-BF16 or AMX tiles, via oneDNN).

    Without it oneDNN emulates bf16 and a training step is about 20x slower than in fp32. torch.cpu's probes are
    private; where they are missing, a short timing of both precisions decides.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(probe is None for probe in probes):
        return _bf16_not_slower()
    return any(probe() for probe in probes if probe is not None)


def _bf16_not_slower(repeats: int = 10) -> bool:
    """Time a (256, 256) matmul under bf16 autocast and in fp32 on the CPU; True if bf16 is not over 1.5x slower."""
    cpu = torch.device("cpu")
    x, w = torch.randn(256, 256), torch.randn(256, 256)

    def seconds(bf16: bool) -> float:
        with autocast(cpu, bf16):
            x @ w  # warm-up: kernel selection
            start = time.perf_counter()
            for _ in range(repeats):
                x @ w
        return time.perf_counter() - start

    return seconds(True) <= 1.5 * seconds(False)


def use_bf16(args: argparse.Namespace, device: torch.device) -> tuple[bool, str]:
    """Whether to train under bf16 autocast, and why (printed): not with --no-bf16, always on a GPU, and on a
    CPU only when it has native bf16 (:func:`cpu_has_native_bf16`)."""
    if args.no_bf16:
        return False, "fp32 (--no-bf16)"
    if device.type != "cpu":
        return True, f"bf16 autocast on {device.type}"
    if cpu_has_native_bf16():
        return True, "bf16 autocast (this CPU has native bf16: AVX512-BF16 or AMX)"
    return False, "fp32: this CPU has no native bf16 (AVX512-BF16/AMX), where bf16 autocast is about 20x slower"


EMA_WARMUP_STEPS = 10


def warmed_up_ema(decay: float):
    """The update of the weight EMA (an ``AveragedModel`` multi_avg_fn): step t keeps a share
    min(decay, (1 + t) / (EMA_WARMUP_STEPS + t)) of the average, the warm-up of timm's and TensorFlow's EMA.

    Why a warm-up: with a fixed 0.998 from the first step, the average still holds 0.998^t of the random
    initial weights (41 % after two FER2013 epochs of 224 steps, 17 % after four, 4 % after seven), and its
    BatchNorm statistics are averaged over networks that changed fast at the peak learning rate. The first model's
    EMA predicted a single class (18 % validation accuracy) for epochs 3-7 while the raw model already had 43-53 %
    training accuracy (artifacts/history_fer2013.csv). With the warm-up the average follows the model early on and
    only becomes long once the model changes slowly.
    """
    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        keep = torch.clamp((1.0 + n_averaged) / (EMA_WARMUP_STEPS + n_averaged), max=decay)  # on the device: no sync
        for ema_p, p in zip(ema_params, params, strict=True):
            if torch.is_floating_point(ema_p):
                ema_p.lerp_(p, (1.0 - keep).to(ema_p.dtype))
            else:  # integer buffers (BatchNorm's batch counter)
                ema_p.copy_(p)
    return update


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened distributions, times T^2 so that its gradients keep
    their size as T changes (Hinton, Vinyals & Dean 2015)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True) * temperature ** 2


def train_one_epoch(model, ema, optimizer, scheduler, images: torch.Tensor | StreamedFaces, labels: torch.Tensor,
                    args, weights: torch.Tensor, preprocess: PreprocessConfig, aug: AugmentConfig,
                    gen: torch.Generator, device: torch.device, epoch: int, order: torch.Tensor | None = None,
                    ctx: Dist = SINGLE, teacher: torch.nn.Module | None = None,
                    blend: IntensityBlend | None = None, on_step=None, grey: GreyVariation | None = None) -> dict:
    """One pass over the shuffled training set, or over this rank's shard of it.

    ``images`` is the (N, 1, S, S) preprocessed tensor (or :class:`StreamedFaces` standing for it) and ``labels``
    its (N,) labels, both on ``device``: augmentation runs there too (random draws stay on the CPU generator), and
    the running loss and accuracy stay on the device between progress updates, so a GPU is not stalled by a host
    sync at every step. ``order``: the indices to train on, in order (default: a permutation drawn from ``gen``);
    ``model`` may be wrapped in DistributedDataParallel, and the returned loss and accuracy are over all ranks.
    ``teacher``: a frozen network in eval mode whose predictions on the same batch are distilled (:func:`distill_loss`).
    ``blend``: same-person intensity blends with soft labels (:class:`training.data_sources.IntensityBlend`).
    ``on_step(n)``: called after the n-th step (:meth:`training.progress.TrainingProgress.step`).
    ``grey``: colour-to-grey variations of the drawn faces (:class:`training.augment.GreyVariation`).
    """
    model.train()
    if order is None:
        order = torch.randperm(len(labels), generator=gen)
    order = order.to(device)  # one transfer per epoch, not per step
    steps = len(order) // args.batch_size  # drop the ragged last batch: BatchNorm dislikes tiny batches
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    bar = tqdm(range(steps), desc=f"epoch {epoch}/{args.epochs}", leave=False, file=sys.stderr,
               mininterval=1.0 if sys.stderr.isatty() else 30.0, disable=not ctx.is_main)
    for step in bar:
        idx = order[step * args.batch_size:(step + 1) * args.batch_size]
        soft = None
        if blend is not None:
            x, soft = blend(idx, images, labels, gen)
            x = augment_batch(x, preprocess.std, aug, gen, preprocess.mean)
            y, lam = labels[idx], 1.0
        else:
            x = images[idx] if grey is None else grey(idx, images[idx], gen)
            x = augment_batch(x, preprocess.std, aug, gen, preprocess.mean)
            x, y, y_mix, lam = mix_batch(x, labels[idx], args.mixup_alpha, args.cutmix_prob, gen)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, not args.no_bf16):
            logits = model(x).float()
        if soft is not None:
            loss = soft_cross_entropy(logits, soft, weights, args.label_smoothing)
        else:
            loss = F.cross_entropy(logits, y, weight=weights, label_smoothing=args.label_smoothing)
        if lam < 1.0:  # mixup/CutMix: the loss against both images' labels, weighted by their shares
            loss = lam * loss + (1.0 - lam) * F.cross_entropy(logits, y_mix, weight=weights,
                                                              label_smoothing=args.label_smoothing)
        if teacher is not None:
            with torch.no_grad(), autocast(device, not args.no_bf16):
                teacher_logits = teacher(x).float()
            loss = ((1.0 - args.distill_weight) * loss
                    + args.distill_weight * distill_loss(logits, teacher_logits, args.distill_temperature))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(distributed.unwrap(model))
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{total_loss.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}", refresh=False)
        if on_step is not None:
            on_step(step + 1)
    loss_sum, correct_sum, seen_sum = distributed.sum_across_ranks([total_loss, correct, seen], ctx, device)
    return {"train_loss": loss_sum / seen_sum, "train_acc": correct_sum / seen_sum}


def evaluate(model, images: torch.Tensor | StreamedFaces, labels: np.ndarray, device: torch.device, bf16: bool,
             tta: bool, ctx: Dist = SINGLE) -> dict:
    """Validation metrics of a model on preprocessed faces on ``device`` (selection uses validation only).

    Under torchrun every rank predicts one slice and all get the whole set's metrics (``model`` must be the same
    on every rank: :func:`distributed.broadcast_module`)."""
    start, stop = distributed.shard_bounds(len(labels), ctx)
    with autocast(device, bf16):
        if isinstance(images, StreamedFaces):  # a piece at a time: memory bounded
            probs = np.concatenate([predict_probabilities(model, x, tta=tta) for x in images.chunks(start, stop)])
        else:
            probs = predict_probabilities(model, images[start:stop], tta=tta)
    probs = distributed.gather_rows(probs, len(labels), ctx, device)
    nll = negative_log_likelihood(probs, labels)
    summary = classification_summary(labels, probs.argmax(1), EMOTIONS)
    return {"val_loss": nll, "val_acc": summary["accuracy"], "val_macro_f1": summary["macro_f1"], "summary": summary}


RESUME_KEYS = {"model", "optimizer", "scheduler", "generator", "history", "best", "epoch", "train_seconds"}


def load_trained(path: str) -> torch.nn.Module:
    """A checkpoint's network (SystemExit with the reason when it cannot be read or is not a seven-class model)."""
    try:
        model, _, names, _ = load_checkpoint(path)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    if tuple(names) != EMOTIONS:
        raise SystemExit(f"{path} has classes {names}, not {EMOTIONS}.")
    return model


def initial_model(args: argparse.Namespace) -> torch.nn.Module:
    """The network training starts from: random weights of ``--variant``, or ``--init-weights`` (in its own variant,
    or loaded into ``--variant`` when one is named and the weight shapes match). Resolves ``args.variant``."""
    if not args.init_weights:
        args.variant = args.variant or "small"
        return build_model(args.variant)
    trained = load_trained(args.init_weights)
    if args.variant is None:
        args.variant = next((name for name, config in VARIANTS.items() if config == trained.config), "custom")
        print(f"Starting from {args.init_weights} (variant {args.variant})", flush=True)
        return trained.train()
    model = build_model(args.variant)
    try:
        model.load_state_dict(trained.state_dict())
    except RuntimeError as e:
        raise SystemExit(f"--init-weights {args.init_weights} does not fit --variant {args.variant}: "
                         f"{str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}") from None
    print(f"Starting from {args.init_weights}, its weights in variant {args.variant}", flush=True)
    return model


def run_identity(args: argparse.Namespace, train_images: int, world_size: int = 1) -> dict:
    """The settings a resumed run must share with the run that wrote last.pt (stored in last.pt as "run")."""
    return {"variant": args.variant, "epochs": args.epochs, "batch_size": args.batch_size, "train_images": train_images,
            "optimizer": args.optimizer, "ema": args.ema_decay > 0, "seed": args.seed, "world_size": world_size,
            "teacher": args.teacher, "fer_dose": args.fer_dose,
            "domains": [f"{d.path}:{d.dose}" for d in args.domain] + ([f"{args.photos}:x{args.photo_repeat}"]
                                                                       if args.photos else []),
            "blend_prob": args.blend_prob, "camera_aug": args.camera_aug, "mixstyle": args.mixstyle,
            "jpeg_aug": args.jpeg_aug, "grey_mix": args.grey_mix}


def read_resume_state(path: Path, run: dict) -> dict:
    """last.pt of an interrupted run, checked to be readable, complete and written by a run with the same ``run``
    settings; SystemExit with a message that says what to do otherwise (never a traceback)."""
    fresh = f"delete {path} (or choose another --work-dir) to start afresh"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: torch raises several types
        raise SystemExit(f"error: cannot read the resume state {path} ({type(e).__name__}: {e}); it is damaged or "
                         f"not a training state: {fresh}.") from None
    if not isinstance(state, dict) or not RESUME_KEYS <= state.keys():
        raise SystemExit(f"error: {path} is not a training.train resume state (missing "
                         f"{sorted(RESUME_KEYS - set(state) if isinstance(state, dict) else RESUME_KEYS)}): {fresh}.")
    saved = state.get("run") or {}
    if saved:
        saved = {"world_size": 1, **saved}  # written before world sizes were stored: by a single process
    if not saved and isinstance(state["scheduler"], dict):  # written before "run" was stored: the step count tells
        saved = {"epochs x steps": state["scheduler"].get("total_steps")}
        run = {"epochs x steps": run["epochs"] * (run["train_images"] // run["batch_size"])}
    changed = [f"{k} {saved[k]!r} then, {v!r} now" for k, v in run.items() if k in saved and saved[k] != v]
    if changed:
        raise SystemExit(f"error: {path} was written by a run with other settings ({'; '.join(changed)}). Resume "
                         f"with the first run's arguments, or {fresh}.")
    return state


def restore_resume_state(state: dict, path: Path, model, optimizer, scheduler, ema, gen: torch.Generator,
                         device: torch.device, rank: int = 0) -> None:
    """Load ``state`` into the run's objects, random number generators included, so that the resumed run
    continues exactly as the uninterrupted one would have (dropout draws from torch's global generator).
    Under torchrun each rank takes its own generators from the state's "rank_rng" list."""
    rng = state["rank_rng"][rank] if state.get("rank_rng") else state
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        gen.set_state(rng["generator"])
        if rng.get("torch_rng") is not None:
            torch.set_rng_state(rng["torch_rng"])
        if device.type == "cuda" and rng.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(rng["cuda_rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise SystemExit(f"error: the resume state {path} does not fit this run's model or optimizer "
                         f"({type(e).__name__}: {str(e)[:300]}); resume with the first run's arguments, or delete "
                         f"it (or choose another --work-dir) to start afresh.") from None
    if state.get("torch_rng") is None:
        print(f"warning: {path} predates saved random states; the resumed run will not repeat the uninterrupted "
              f"one exactly.", file=sys.stderr)


def hardware(device: torch.device) -> dict:
    """What this process trains on, for the model card: CPU model and cores, torch threads, GPU, host."""
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):  # not Linux: platform.processor() it is
        pass
    return {"cpu": cpu or "unknown", "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "host": platform.node()}


def library_versions() -> dict:
    import cv2
    import sklearn
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "opencv": cv2.__version__, "scikit-learn": sklearn.__version__, "platform": platform.platform()}


def main(args: argparse.Namespace) -> dict:
    """Train as one process, or as one rank of a torchrun job (see training/distributed.py); returns the model
    card (empty after --stop-after, and on the ranks other than 0)."""
    ctx, device = distributed.setup(args.device, args.dist_timeout)
    progress = TrainingProgress(args.out, enabled=ctx.is_main)
    with progress.final_status():  # an exception ends the file as "failed" (Ctrl+C: "stopped")
        card = train(args, ctx, device, progress)
    distributed.cleanup(ctx)
    return card


def record_shard(work: Path, ctx: Dist, epoch: int, order: torch.Tensor, batch_size: int) -> None:
    """--record-shards: this rank's training-set indices of ``epoch``, one per line, in the order trained."""
    folder = work / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    trained = len(order) // batch_size * batch_size
    np.savetxt(folder / f"epoch{epoch:03d}_rank{ctx.rank}.txt", order.numpy(), fmt="%d",
               header=f"epoch {epoch}, rank {ctx.rank} of {ctx.world_size}: {len(order)} indices into the training "
                      f"set (load order); the first {trained} are trained on (the ragged last batch is dropped)")


def train(args: argparse.Namespace, ctx: Dist, device: torch.device, progress: TrainingProgress | None = None) -> dict:
    started = time.time()
    progress = progress or TrainingProgress(args.out, enabled=False)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    gen = seed_everything(distributed.rank_seed(args.seed, ctx))  # augmentation + dropout: one stream per rank
    if ctx.is_main:  # now, not at the end of epoch 1
        out = require_writable_dir(args.out, "--out")
        work = require_writable_dir(args.work_dir, "--work-dir")
    else:  # only rank 0 writes there (--record-shards excepted); another machine may not have these folders
        out, work = Path(args.out), Path(args.work_dir)
    progress.begin(epochs=args.epochs, data=str(args.data), world_size=ctx.world_size)
    mixes_sources = bool(args.photos or args.domain or args.fer_dose or args.blend_prob)
    if args.stream and (Path(args.data).suffix.lower() == ".csv" or mixes_sources):
        raise SystemExit("error: --stream reads the train/ and validation/ folders of a folder layout; a CSV file is "
                         "read whole, and whole-photo faces and doses are held in memory: leave out --stream or "
                         "--photos/--domain/--fer-dose/--blend-prob.")
    if ctx.enabled and mixes_sources:
        raise SystemExit("error: --photos/--domain/--fer-dose/--blend-prob train in one process; run them without "
                         "torchrun.")
    if args.grey_mix and not (args.domain or args.photos):
        raise SystemExit("error: --grey-mix varies how colour photos become gray: it needs a --domain (FER2013 is "
                         "gray already).")
    if args.grey_mix and args.blend_prob:
        raise SystemExit("error: --grey-mix and --blend-prob both remake the drawn faces; choose one.")
    if args.blend_prob and args.mixup_alpha:
        raise SystemExit("error: --blend-prob and --mixup-alpha both mix faces; choose one.")
    bf16, precision = distributed.from_main(lambda: use_bf16(args, device), ctx)  # one precision for all ranks
    args.no_bf16 = not bf16  # the card records the precision actually used
    if ctx.enabled:
        print(f"torchrun: {ctx.world_size} processes, {ctx.backend}, this rank on {device}", flush=True)
    print(f"Precision: {precision}", flush=True)
    preprocess = PreprocessConfig()
    aug = AugmentConfig(**(CAMERA if args.camera_aug else {}), **(JPEG if args.jpeg_aug else {}))
    cache = args.cache_dir or None
    if args.stream:
        cache = args.cache_dir or str(work / "faces")

    print(f"Loading data from {args.data} ...", flush=True)
    try:
        with distributed.local_main_first(ctx):  # one process per machine decodes and caches, the others read that
            train = load_split(args.data, "train", preprocess.image_size, cache, memmap=args.stream)
            val = load_split(args.data, "validation", preprocess.image_size, cache, memmap=args.stream)
    except (OSError, ValueError) as e:  # a missing data folder or split, no images, a folder that is no class
        print(f"error: --data {args.data}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    for split, data in (("train", train), ("validation", val)):
        if data.skipped:  # unreadable or unsupported files are named and left out, not an abort
            print(describe_skipped(data.skipped, f"the {split} split"), file=sys.stderr, flush=True)
    train = limit_per_class(train, args.limit_per_class, args.seed)
    if args.limit_val:
        keep = np.sort(np.random.default_rng(args.seed).permutation(len(val))[: args.limit_val])
        val = FaceArrays(val.images[keep], val.labels[keep])
    pool = training_pool(args, train, preprocess) if mixes_sources else None
    if pool is not None:
        train = FaceArrays(pool.images, pool.labels)
        counts = pool.epoch_class_counts()
    else:
        counts = {name: int((train.labels == i).sum()) for i, name in enumerate(EMOTIONS)}
    print(f"train: {len(train)} images, per epoch {counts}; validation: {len(val)} images"
          + (" (memory-mapped, preprocessed per batch)" if args.stream else ""), flush=True)
    unseen = [name for name, n in counts.items() if not n]
    if unseen:  # the model would be written all the same, never having seen them
        print(f"warning: no training images of {', '.join(unseen)}: the model cannot learn to recognise "
              f"{'it' if len(unseen) == 1 else 'them'}; add images to those class folders.", file=sys.stderr, flush=True)

    if args.stream:  # uint8 on disk, each batch preprocessed when it is drawn
        train_x = StreamedFaces(train.images, preprocess, device)
        val_x = StreamedFaces(val.images, preprocess, device, torch.channels_last)
    else:  # (N, 1, 48, 48) once, kept on the training device; augmentation wraps it per batch
        train_x = faces_to_tensor(train.images, preprocess).to(device)
        val_x = faces_to_tensor(val.images, preprocess).to(device, memory_format=torch.channels_last)  # once
    train_y = torch.from_numpy(train.labels).to(device)

    model = initial_model(args).to(device, memory_format=torch.channels_last)
    teacher = None
    if args.teacher:
        teacher = load_trained(args.teacher).eval().to(device, memory_format=torch.channels_last)
        teacher.requires_grad_(False)
        print(f"Distilling {args.teacher} (weight {args.distill_weight}, temperature {args.distill_temperature})",
              flush=True)
    net = distributed.wrap_model(model, ctx, device)  # before the EMA copies it: rank 0's weights everywhere
    n_params, macs = count_parameters(model), count_macs(build_model(model.config), preprocess.image_size)
    print(f"Xception '{args.variant}': {n_params:,} parameters, {macs / 1e6:.1f} M MACs per face", flush=True)
    optimizer = make_optimizer(model, args)
    sampler = distributed.shard_sampler(len(train_y), args.seed, ctx)  # None: one process shuffles as before
    epoch_size = pool.epoch_size if pool is not None else len(train_y)
    steps_per_epoch = (len(sampler) if sampler is not None else epoch_size) // args.batch_size
    if steps_per_epoch == 0:
        raise SystemExit(f"--batch-size {args.batch_size} is larger than the training set "
                         f"({len(sampler) if sampler is not None else epoch_size} images per process).")
    if args.epochs * steps_per_epoch < 3:  # the one-cycle schedule needs a step up, a peak and a step down
        raise SystemExit(f"error: {args.epochs} epoch(s) of {steps_per_epoch} step(s) is too short a schedule (at least "
                         f"3 steps): more data per epoch, more --epochs or a smaller --batch-size.")
    peak_lr = args.lr * distributed.lr_factor(args.lr_scaling, ctx.world_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=peak_lr, total_steps=args.epochs * steps_per_epoch,
        pct_start=min(0.5, max(args.warmup_epochs / args.epochs, 1.5 / (args.epochs * steps_per_epoch))), anneal_strategy="cos", div_factor=25, final_div_factor=1e3)
    ema = AveragedModel(model, multi_avg_fn=warmed_up_ema(args.ema_decay), use_buffers=True) if args.ema_decay > 0 else None
    grey = None
    if args.grey_mix:
        grey = GreyVariation(torch.from_numpy(pool.colour).permute(0, 3, 1, 2).contiguous().to(device), args.grey_mix,
                             preprocess.mean, preprocess.std)
        print(f"colour-to-grey variations: {args.grey_mix:.0%} of the faces drawn gray with their own channel "
              f"weights", flush=True)
    if args.mixstyle:  # after the EMA copied the model: the hooks mix styles in training only, never in the EMA
        attach_mixstyle(model, args.mixstyle, args.mixstyle_alpha, gen)
        print(f"MixStyle after the stem and the first two entry blocks: probability {args.mixstyle}, "
              f"Beta({args.mixstyle_alpha}, {args.mixstyle_alpha})", flush=True)
    weights = class_weights(train.labels, args.class_weight_power,  # by the classes an epoch sees
                            None if pool is None else list(counts.values())).to(device)
    blend = IntensityBlend(pool, args.blend_prob, args.blend_min_share) if pool is not None and args.blend_prob else None
    if blend is not None:
        print(f"intensity blends: {blend.blendable} faces have a neutral face of their person; each is blended "
              f"with probability {args.blend_prob} (expression share U({args.blend_min_share}, 1))", flush=True)
    spread = {**distributed.describe(ctx, device), "batch_size_per_process": args.batch_size,
              "batch_size_per_step": args.batch_size * ctx.world_size, "lr_scaling": args.lr_scaling,
              "peak_lr": peak_lr}
    if ctx.enabled:
        print(f"batch {args.batch_size} per process x {ctx.world_size} = {spread['batch_size_per_step']} per step; "
              f"peak lr {peak_lr:.2e} ({args.lr_scaling} scaling of --lr {args.lr:g})", flush=True)

    history: list[dict] = []
    slices: list[dict] = []  # one per invocation (a run stopped and resumed across sessions has several)
    best = {"val_acc": -1.0}
    start_epoch, prior_seconds = 1, 0.0
    state_path = work / "last.pt"
    run = run_identity(args, epoch_size, ctx.world_size)
    if args.resume:  # rank 0 reads the file; every rank gets its contents
        state = distributed.from_main(lambda: read_resume_state(state_path, run) if state_path.exists() else None, ctx)
        if state is not None:
            restore_resume_state(state, state_path, model, optimizer, scheduler, ema, gen, device, ctx.rank)
            history, best, slices = state["history"], state["best"], state.get("slices", [])
            start_epoch, prior_seconds = state["epoch"] + 1, state["train_seconds"]
            print(f"Resumed from {state_path} after epoch {state['epoch']} (best val acc {best['val_acc']:.4f})",
                  flush=True)

    launcher = (f"torchrun --nnodes {spread['nodes']} --nproc_per_node {ctx.local_world_size} -m training.train "
                if ctx.enabled else "python -m training.train ")
    this_slice = {"command": launcher + shlex.join(sys.argv[1:]), "hardware": hardware(device),
                  "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "first_epoch": None, "last_epoch": None, "seconds": 0.0}
    slices.append(this_slice)
    shipped = ema.module if ema is not None else model
    last_epoch = args.epochs if not args.stop_after else min(args.epochs, start_epoch + args.stop_after - 1)
    progress.update(command=this_slice["command"], hardware=this_slice["hardware"], first_epoch=start_epoch,
                    last_epoch=last_epoch, steps_per_epoch=steps_per_epoch,
                    images_per_step=args.batch_size * ctx.world_size)
    for epoch in range(start_epoch, last_epoch + 1):
        t0 = time.time()
        progress.start_epoch(epoch)
        row = {"epoch": epoch, "lr": scheduler.get_last_lr()[0]}
        order = (distributed.epoch_indices(sampler, epoch) if sampler is not None
                 else pool.epoch_order(gen) if pool is not None else torch.randperm(len(train_y), generator=gen))
        if args.record_shards:
            record_shard(work, ctx, epoch, order, args.batch_size)
        row.update(train_one_epoch(net, ema, optimizer, scheduler, train_x, train_y, args, weights, preprocess,
                                   aug, gen, device, epoch, order, ctx, teacher, blend, progress.step, grey))
        distributed.broadcast_module(shipped, ctx)  # rank 0's EMA (BatchNorm statistics) on every rank
        metrics = evaluate(shipped, val_x, val.labels, device, not args.no_bf16, tta=False, ctx=ctx)
        summary = metrics.pop("summary")
        row.update(metrics)
        row["seconds"] = time.time() - t0
        history.append(row)
        print(f"epoch {epoch:3d}  loss {row['train_loss']:.4f}  train acc {row['train_acc']:.4f}  "
              f"val acc {row['val_acc']:.4f}  val macro-F1 {row['val_macro_f1']:.4f}  lr {row['lr']:.2e}  "
              f"{row['seconds']:.0f}s", flush=True)
        if ctx.is_main:
            write_text_atomically(out / "history.csv", pd.DataFrame(history).to_csv(index=False))
        if args.select == "last" or row["val_acc"] > best["val_acc"]:
            best = ship(out / "model.pt", shipped, preprocess, args, epoch, summary, write=ctx.is_main)
        train_seconds = prior_seconds + (time.time() - (t0 if epoch > start_epoch else started))
        prior_seconds = train_seconds
        this_slice.update(first_epoch=this_slice["first_epoch"] or epoch, last_epoch=epoch,
                          seconds=round(time.time() - started, 1))
        rank_rng = distributed.gather_objects(  # every rank's generators, so that each resumes exactly
            {"generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}, ctx)
        if ctx.is_main:
            with atomic_path(state_path) as tmp:  # a kill mid-write leaves the previous epoch's state
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                            **rank_rng[0],  # rank 0's (the only) generators: dropout draws from torch_rng
                            "rank_rng": rank_rng if ctx.world_size > 1 else None,
                            "run": run, "history": history, "best": best, "epoch": epoch,
                            "train_seconds": train_seconds, "slices": slices}, tmp)
        progress.end_epoch(epoch, time.time() - t0)

    if last_epoch < args.epochs:
        print(f"Stopped after epoch {last_epoch} of {args.epochs}; continue with --resume.", flush=True)
        progress.finish("stopped", f"stopped after epoch {last_epoch} of {args.epochs} (--stop-after); "
                                   "`--resume` continues it")
        return {}
    if args.select == "last" and history and best.get("epoch") != len(history):
        # --resume --select last after a run that selected its best epoch: ship the last one's weights now
        distributed.broadcast_module(shipped, ctx)
        summary = evaluate(shipped, val_x, val.labels, device, not args.no_bf16, tta=False, ctx=ctx)["summary"]
        best = ship(out / "model.pt", shipped, preprocess, args, len(history), summary, write=ctx.is_main)
    if not ctx.is_main:
        return {}
    card = {
        "name": f"FER Xception-{args.variant}",
        "task": "facial expression recognition, 7 classes, 48x48 grayscale faces",
        "classes": list(EMOTIONS),
        "architecture": {"family": "Xception (entry flow, 8-block middle flow, exit flow + dense head)",
                         "variant": args.variant, "config": shipped.config.to_dict(),
                         "parameters": n_params, "macs_per_face": macs},
        "preprocessing": preprocess.to_dict(),
        "augmentation": aug.to_dict(),
        "training": {"command": launcher + shlex.join(sys.argv[1:]),
                     "arguments": {**vars(args), "domain": [f"{d.path}:{d.dose}" for d in args.domain]},
                     "device": str(device), "precision": precision,
                     "distributed": spread,
                     "wall_time_seconds": round(prior_seconds, 1),
                     "hardware": this_slice["hardware"],  # where this invocation ran (the last slice)
                     "slices": slices,  # each invocation: command, hardware, start, epochs trained, seconds
                     "epochs_run": len(history), "selected_epoch": best.get("epoch"),
                     "selection": ("highest validation accuracy (no TTA) of the EMA weights" if args.select == "best"
                                   else "the EMA weights of the last epoch (fixed schedule)")},
        "data": {"source": str(args.data), "train_images": len(train), "train_class_counts": counts,
                 "sources": pool.report() if pool is not None else None,
                 "people_split": ({"people": "train part of fer_core.datasets.split_by_person (seed 0)",
                                   "test_fraction": args.photo_test_fraction,
                                   "calibration_fraction": args.calibration_fraction} if pool is not None else None),
                 "intensity_blends": ({"prob": args.blend_prob, "min_share": args.blend_min_share,
                                       "blendable_faces": blend.blendable} if blend is not None else None),
                 "validation_images": len(val)},
        "validation": {"split": "FER2013 PublicTest (validation folder)", "tta": False, **best},
        "library_versions": library_versions(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_text_atomically(out / "model_card.json", json.dumps(card, indent=2))
    progress.finish("finished", f"model.pt is epoch {best.get('epoch')}: validation accuracy {best['val_acc']:.4f}")
    print(f"Done in {prior_seconds / 60:.1f} min. Best epoch {best.get('epoch')}: val acc {best['val_acc']:.4f}, "
          f"macro-F1 {best.get('val_macro_f1', 0):.4f}. Wrote {out}/model.pt, model_card.json, history.csv", flush=True)
    return card


if __name__ == "__main__":
    main(get_args_parser().parse_args())
