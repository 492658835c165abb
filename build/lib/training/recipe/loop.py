"""The training loop: one epoch, validation, the losses, the weight EMA, the optimizer and the precision.

Everything :mod:`training.train` runs per step and per epoch; it reads no files and writes none.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from fer_core.analysis.metrics import classification_summary
from fer_core.faces.preprocessing import PreprocessConfig
from fer_core.labels import EMOTIONS
from fer_core.model.calibration import negative_log_likelihood
from fer_core.model.inference import predict_probabilities

from . import distributed
from .augment import AugmentConfig, GreyVariation, augment_batch, mix_batch
from .data_sources import IntensityBlend
from .distributed import SINGLE, Dist
from .streaming import StreamedFaces


def seed_everything(seed: int) -> torch.Generator:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


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
                    blend: IntensityBlend | None = None, on_step=None, grey: GreyVariation | None = None,
                    targets: torch.Tensor | None = None) -> dict:
    """One pass over the shuffled training set, or over this rank's shard of it.

    ``images`` is the (N, 1, S, S) preprocessed tensor (or :class:`StreamedFaces` standing for it) and ``labels``
    its (N,) labels, both on ``device``: augmentation runs there too (random draws stay on the CPU generator), and
    the running loss and accuracy stay on the device between progress updates, so a GPU is not stalled by a host
    sync at every step. ``order``: the indices to train on, in order (default: a permutation drawn from ``gen``);
    ``model`` may be wrapped in DistributedDataParallel, and the returned loss and accuracy are over all ranks.
    ``teacher``: a frozen network in eval mode whose predictions on the same batch are distilled (:func:`distill_loss`).
    ``blend``: same-person intensity blends with soft labels (:class:`training.recipe.data_sources.IntensityBlend`).
    ``on_step(n)``: called after the n-th step (:meth:`training.recipe.progress.TrainingProgress.step`).
    ``grey``: colour-to-grey variations of the drawn faces (:class:`training.recipe.augment.GreyVariation`).
    ``targets``: (N, 7) soft labels on ``device`` (FER+ votes, :mod:`training.recipe.fer_labels`), trained on with
    :func:`soft_cross_entropy` instead of ``labels`` (which still count the training accuracy).
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
            if targets is not None:  # soft labels (never with mixup: training.train refuses the pair)
                soft = targets[idx]
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
