"""Grad-CAM (Selvaraju et al., ICCV 2017): the baseline that ``training.experiments.explain_faithfulness`` measures the app's
explanations against (needs torch).

Grad-CAM weights the feature maps of one convolutional stage by the mean gradient of a class's logit with respect
to them, keeps the positive part and upsamples it to the crop. The app used it until 2026-12-03; on FER2013
validation faces it failed the deletion test and gave empty maps on confident faces (docs/explanations.md), so the
app now explains with occlusion sensitivity (:mod:`fer_core.model.explain`).

Which stage: the middle flow's output is 6x6 for a 48x48 face (an 8x8-pixel cell each) and is followed only by the
exit flow, pooling and the dense head; the exit flow's output is 3x3. The network is run stage by stage (no hooks
on a shared model).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from fer_core.faces.preprocessing import PreprocessConfig, faces_to_tensor

STAGES = ("middle_flow", "exit_flow")  # Xception stages whose output Grad-CAM can explain
DEFAULT_STAGE = "middle_flow"


def _split(model: nn.Module, stage: str):
    """(input -> stage output, stage output -> logits) for an :class:`fer_core.model.network.Xception`."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if stage == "middle_flow":
        return (lambda x: model.middle_flow(model.entry_flow(model.stem(x))),
                lambda a: model.head(model.pool(model.exit_flow(a))))
    return (lambda x: model.exit_flow(model.middle_flow(model.entry_flow(model.stem(x)))),
            lambda a: model.head(model.pool(a)))


def grad_cam_maps(model: nn.Module, batch: torch.Tensor, classes: Sequence[int] | None = None,
                  stage: str = DEFAULT_STAGE) -> np.ndarray:
    """(1, 1, S, S) preprocessed face -> (K, h, w) float32 Grad-CAM maps (>= 0, not normalised) at the stage's
    resolution, one per class in ``classes`` (all classes by default). ``model`` must be in eval mode."""
    if batch.ndim != 4 or len(batch) != 1:
        raise ValueError(f"need one preprocessed face (1, 1, S, S), got {tuple(batch.shape)}")
    if model.training:
        raise ValueError("explain an eval-mode model (dropout and batch statistics change the gradients)")
    features, rest = _split(model, stage)
    with torch.enable_grad():
        acts = features(batch)  # (1, K, h, w)
        logits = rest(acts)[0]
        classes = list(range(len(logits))) if classes is None else list(classes)
        maps = []
        for n, c in enumerate(classes):
            (grad,) = torch.autograd.grad(logits[c], acts, retain_graph=n < len(classes) - 1)
            weights = grad.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): how much each channel raises the logit
            maps.append(torch.relu((weights * acts).sum(dim=1))[0].detach())
    return torch.stack(maps).cpu().numpy().astype(np.float32)


def grad_cam_crop(model: nn.Module, preprocess: PreprocessConfig, crop: np.ndarray,
                 classes: Sequence[int] | None = None, stage: str = DEFAULT_STAGE) -> np.ndarray:
    """A (H, W) uint8 gray face crop -> (K, H, W) float32 heatmaps in [0, 1], one per class in ``classes`` (all by
    default), at the crop's own size. Each map is divided by its own maximum (an all-zero map stays zero: nothing
    in the face raised that class's logit)."""
    crop = np.asarray(crop)
    if crop.ndim != 2:
        raise ValueError(f"need a (H, W) gray crop, got shape {crop.shape}")
    maps = grad_cam_maps(model, faces_to_tensor([crop], preprocess), classes, stage)
    h, w = crop.shape
    out = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_CUBIC) for m in maps]).clip(0, None)
    peak = out.reshape(len(out), -1).max(axis=1)
    return (out / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)
