"""What a run keeps about itself: the resume state of an interrupted run (checked before use), the shard record,
and the model card (hardware, library versions, data, selection).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fer_core.labels import EMOTIONS

from .distributed import Dist

RESUME_KEYS = {"model", "optimizer", "scheduler", "generator", "history", "best", "epoch", "train_seconds"}


def run_identity(args: argparse.Namespace, train_images: int, world_size: int = 1) -> dict:
    """The settings a resumed run must share with the run that wrote last.pt (stored in last.pt as "run")."""
    return {"variant": args.variant, "epochs": args.epochs, "batch_size": args.batch_size, "train_images": train_images,
            "optimizer": args.optimizer, "ema": args.ema_decay > 0, "seed": args.seed, "world_size": world_size,
            "teacher": args.teacher, "fer_dose": args.fer_dose,
            "domains": [f"{d.path}:{d.dose}" for d in args.domain] + ([f"{args.photos}:x{args.photo_repeat}"]
                                                                       if args.photos else []),
            "blend_prob": args.blend_prob, "camera_aug": args.camera_aug, "mixstyle": args.mixstyle,
            "jpeg_aug": args.jpeg_aug, "grey_mix": args.grey_mix,
            **({"fer_labels": args.fer_labels, "fer_label_weight": args.fer_label_weight}
               if args.fer_labels != "fer2013" else {})}


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


def record_shard(work: Path, ctx: Dist, epoch: int, order: torch.Tensor, batch_size: int) -> None:
    """--record-shards: this rank's training-set indices of ``epoch``, one per line, in the order trained."""
    folder = work / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    trained = len(order) // batch_size * batch_size
    np.savetxt(folder / f"epoch{epoch:03d}_rank{ctx.rank}.txt", order.numpy(), fmt="%d",
               header=f"epoch {epoch}, rank {ctx.rank} of {ctx.world_size}: {len(order)} indices into the training "
                      f"set (load order); the first {trained} are trained on (the ragged last batch is dropped)")


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


def model_card(args, shipped, preprocess, aug, n_params: int, macs: int, launcher: str, device, precision: str,
               spread: dict, seconds: float, this_slice: dict, slices: list, best: dict, history: list,
               train, val, pool, counts: dict, blend, label_report: dict | None = None) -> dict:
    """The model card of a finished run: what was trained, on what, how, where and how it did on validation."""
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
                     "wall_time_seconds": round(seconds, 1),
                     "hardware": this_slice["hardware"],  # where this invocation ran (the last slice)
                     "slices": slices,  # each invocation: command, hardware, start, epochs trained, seconds
                     "epochs_run": len(history), "selected_epoch": best.get("epoch"),
                     "selection": ("highest validation accuracy (no TTA) of the EMA weights" if args.select == "best"
                                   else "the EMA weights of the last epoch (fixed schedule)")},
        "data": {"source": str(args.data), "train_images": len(train), "train_class_counts": counts,
                 "sources": pool.report() if pool is not None else None,
                 "people_split": ({"people": "train part of fer_core.analysis.datasets.split_by_person (seed 0)",
                                   "test_fraction": args.photo_test_fraction,
                                   "calibration_fraction": args.calibration_fraction} if pool is not None else None),
                 "intensity_blends": ({"prob": args.blend_prob, "min_share": args.blend_min_share,
                                       "blendable_faces": blend.blendable} if blend is not None else None),
                 "fer2013_labels": label_report or {"labels": "fer2013"},
                 "validation_images": len(val)},
        "validation": {"split": "FER2013 PublicTest (validation folder)", "tta": False, **best},
        "library_versions": library_versions(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return card
