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
import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel

from fer_core.faces.preprocessing import PreprocessConfig, faces_to_tensor
from fer_core.files import atomic_path, write_text_atomically
from fer_core.locations import FER_IMAGES, PROJECT_ROOT, SHARED_DATA
from fer_core.model.calibration import threshold_arg
from fer_core.model.checkpoint import save_checkpoint
from fer_core.model.network import VARIANTS, build_model, count_macs, count_parameters
from fer_core.model.onnx_file import write_onnx_beside

from .outputs import require_writable_dir
from .recipe import distributed
from .recipe.assembly import initial_model, load_data, load_trained
from .recipe.augment import CAMERA, JPEG, AugmentConfig, GreyVariation
from .recipe.data_sources import DomainSpec, IntensityBlend
from .recipe.distributed import Dist
from .recipe.fer_labels import FER_LABELS
from .recipe.loop import (
    class_weights,
    evaluate,
    make_optimizer,
    seed_everything,
    train_one_epoch,
    use_bf16,
    warmed_up_ema,
)
from .recipe.mixstyle import attach_mixstyle
from .recipe.progress import TrainingProgress
from .recipe.state import hardware, model_card, read_resume_state, record_shard, restore_resume_state, run_identity
from .recipe.streaming import StreamedFaces

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


def main(args: argparse.Namespace) -> dict:
    """Train as one process, or as one rank of a torchrun job (see training/recipe/distributed.py); returns the model
    card (empty after --stop-after, and on the ranks other than 0)."""
    ctx, device = distributed.setup(args.device, args.dist_timeout)
    progress = TrainingProgress(args.out, enabled=ctx.is_main)
    with progress.final_status():  # an exception ends the file as "failed" (Ctrl+C: "stopped")
        card = train(args, ctx, device, progress)
    distributed.cleanup(ctx)
    return card


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
    if args.fer_labels != "fer2013" and (args.blend_prob or args.mixup_alpha):
        raise SystemExit("error: --fer-labels ferplus-votes gives soft targets; --blend-prob and --mixup-alpha mix "
                         "labels too: choose one.")
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

    train, val, pool, counts, label_report = load_data(args, preprocess, cache, ctx, mixes_sources)

    if args.stream:  # uint8 on disk, each batch preprocessed when it is drawn
        train_x = StreamedFaces(train.images, preprocess, device)
        val_x = StreamedFaces(val.images, preprocess, device, torch.channels_last)
    else:  # (N, 1, 48, 48) once, kept on the training device; augmentation wraps it per batch
        train_x = faces_to_tensor(train.images, preprocess).to(device)
        val_x = faces_to_tensor(val.images, preprocess).to(device, memory_format=torch.channels_last)  # once
    train_y = torch.from_numpy(train.labels).to(device)
    targets = pool.targets if pool is not None else train.targets
    train_t = torch.from_numpy(targets).to(device) if targets is not None else None  # (N, 7) soft labels

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
                                   aug, gen, device, epoch, order, ctx, teacher, blend, progress.step, grey, train_t))
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
    card = model_card(args, shipped, preprocess, aug, n_params, macs, launcher, device, precision, spread,
                      prior_seconds, this_slice, slices, best, history, train, val, pool, counts, blend, label_report)
    write_text_atomically(out / "model_card.json", json.dumps(card, indent=2))
    progress.finish("finished", f"model.pt is epoch {best.get('epoch')}: validation accuracy {best['val_acc']:.4f}")
    print(f"Done in {prior_seconds / 60:.1f} min. Best epoch {best.get('epoch')}: val acc {best['val_acc']:.4f}, "
          f"macro-F1 {best.get('val_macro_f1', 0):.4f}. Wrote {out}/model.pt, model_card.json, history.csv", flush=True)
    return card


if __name__ == "__main__":
    main(get_args_parser().parse_args())
