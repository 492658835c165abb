"""One training run from start to finish: set up (devices, seeds, folders, precision), assemble the data, build the
network, train epoch by epoch with per-epoch resume state, and write model.pt, its ONNX copy, history.csv and the
model card. :mod:`training.train` parses the command line and hands its arguments to :func:`main`.
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
from fer_core.model.checkpoint import save_checkpoint
from fer_core.model.network import build_model, count_macs, count_parameters
from fer_core.model.onnx_file import write_onnx_beside

from . import distributed
from .assembly import initial_model, load_data, load_trained
from .augment import CAMERA, JPEG, AugmentConfig, GreyVariation
from .data_sources import IntensityBlend
from .distributed import Dist
from .loop import class_weights, evaluate, make_optimizer, seed_everything, train_one_epoch, use_bf16, warmed_up_ema
from .mixstyle import attach_mixstyle
from .outputs import require_writable_dir
from .progress import TrainingProgress
from .state import hardware, model_card, read_resume_state, record_shard, restore_resume_state, run_identity
from .streaming import StreamedFaces


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
