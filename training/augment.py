"""Batched training augmentation on the output of ``fer_core.preprocessing.faces_to_tensor``.

Augment like faces occur: horizontal flip, small rotation / scale / shift, brightness and
contrast, random erasing. Never a vertical flip. Each sample gets its own random parameters,
drawn from one ``torch.Generator`` so a run is reproducible and resumable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    hflip: float = 0.5  # probability
    max_rotation_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    max_shift: float = 0.1  # fraction of the image side
    brightness: float = 0.25  # +- on [0, 1] intensities
    contrast: tuple[float, float] = (0.7, 1.3)
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.02, 0.2)  # fraction of the image

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def augment_batch(x: torch.Tensor, std: float, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """(B, 1, S, S) normalised faces -> augmented copy. ``std`` converts [0, 1] brightness to normalised units.

    Random parameters are drawn from ``gen`` on the CPU (one reproducible stream whatever the device) and
    moved to the batch's device, where the image work happens.
    """
    b, _, s, _ = x.shape
    dev = x.device
    angle = _uniform(b, -cfg.max_rotation_deg, cfg.max_rotation_deg, gen) * math.pi / 180
    scale = _uniform(b, *cfg.scale, gen)
    flip = torch.where(torch.rand(b, generator=gen) < cfg.hflip, -1.0, 1.0)
    shift = _uniform(2 * b, -cfg.max_shift, cfg.max_shift, gen).view(b, 2) * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(dev, x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    contrast = _uniform(b, *cfg.contrast, gen).view(b, 1, 1, 1).to(dev)
    brightness = (_uniform(b, -cfg.brightness, cfg.brightness, gen) / std).view(b, 1, 1, 1).to(dev)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness

    if cfg.erase_prob > 0:
        area = _uniform(b, *cfg.erase_area, gen) * s * s
        aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), gen))
        h = (area * aspect).sqrt().clamp(1, s).floor()
        w = (area / aspect).sqrt().clamp(1, s).floor()
        top = (torch.rand(b, generator=gen) * (s - h + 1)).floor()
        left = (torch.rand(b, generator=gen) * (s - w + 1)).floor()
        rows = torch.arange(s).view(1, s, 1)
        cols = torch.arange(s).view(1, 1, s)
        box = ((rows >= top.view(b, 1, 1)) & (rows < (top + h).view(b, 1, 1))
               & (cols >= left.view(b, 1, 1)) & (cols < (left + w).view(b, 1, 1)))
        apply = (torch.rand(b, generator=gen) < cfg.erase_prob).view(b, 1, 1)
        noise = torch.randn(out.shape, generator=gen)
        out = torch.where((box & apply).unsqueeze(1).to(dev), noise.to(dev), out)
    return out


def mix_batch(x: torch.Tensor, y: torch.Tensor, alpha: float, cutmix_prob: float,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mixup or CutMix of a batch with a shuffled copy of itself.

    Returns (mixed x, labels a, labels b, lam); the loss is ``lam * CE(a) + (1 - lam) * CE(b)``.
    With probability ``cutmix_prob`` a random box of the partner is pasted in (CutMix; lam becomes
    the kept area), else the two images are blended (mixup). ``alpha`` <= 0 returns the batch unchanged.
    """
    if alpha <= 0:
        return x, y, y, 1.0
    b, _, s, _ = x.shape
    # torch's Beta sampler takes no generator: seed numpy from the run's generator so resumes reproduce.
    lam = float(np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen))).beta(alpha, alpha))
    perm = torch.randperm(b, generator=gen).to(x.device)
    if torch.rand(1, generator=gen).item() < cutmix_prob:
        side = int(round(s * math.sqrt(1.0 - lam)))
        cy, cx = torch.randint(0, s, (2,), generator=gen).tolist()
        y0, y1 = max(cy - side // 2, 0), min(cy + side - side // 2, s)
        x0, x1 = max(cx - side // 2, 0), min(cx + side - side // 2, s)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (s * s)
    else:
        x = lam * x + (1.0 - lam) * x[perm]
    return x, y, y[perm], lam
