"""Data assembly: the faces a run trains and validates on (FER2013 and every whole-photo domain's training people,
with their doses) and the network it starts from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from fer_core.analysis.datasets import FaceArrays, describe_skipped, load_split
from fer_core.analysis.votes import read_votes
from fer_core.faces.preprocessing import PreprocessConfig
from fer_core.labels import EMOTIONS
from fer_core.model.checkpoint import CheckpointError, load_checkpoint
from fer_core.model.network import VARIANTS, build_model

from . import distributed
from .data_sources import DomainSpec, TrainingPool, assemble, domain_faces
from .distributed import Dist
from .fer_labels import with_vote_targets


def limit_per_class(data: FaceArrays, n: int, seed: int) -> FaceArrays:
    if n <= 0:
        return data
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.permutation(np.flatnonzero(data.labels == c))[:n] for c in np.unique(data.labels)])
    keep.sort()
    return FaceArrays(data.images[keep], data.labels[keep], names=None if data.names is None else data.names[keep])


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


def load_data(args: argparse.Namespace, preprocess: PreprocessConfig, cache: str | None, ctx: Dist,
              mixes_sources: bool) -> tuple[FaceArrays, FaceArrays, TrainingPool | None, dict, dict | None]:
    """FER2013's (or --data's) training and validation faces, limited as asked, with FER+ soft targets when
    --fer-labels asks, and the training pool of every --domain when sources are mixed: (train, validation, pool or
    None, faces per class an epoch sees, the label report or None)."""
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
    label_report = None
    if args.fer_labels == "ferplus-votes":
        try:
            train, label_report = with_vote_targets(train, read_votes(args.votes), args.fer_label_weight)
        except ValueError as e:  # no such file, not a votes file, FER2013 read from a CSV
            raise SystemExit(f"error: --fer-labels ferplus-votes: {e}") from None
        print(f"FER+ votes: {label_report['faces_with_votes']} of {label_report['faces']} FER2013 faces trained on "
              f"{args.fer_label_weight:g} x their FER2013 label + {1 - args.fer_label_weight:g} x their vote "
              f"distribution; the target's top class is the FER2013 label for "
              f"{label_report['target_argmax_agrees_with_fer2013']:.1%}", flush=True)
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
    return train, val, pool, counts, label_report
