"""Batched training augmentation on the output of ``fer_core.faces.preprocessing.faces_to_tensor``.

Augment like faces occur: horizontal flip, small rotation / scale / shift, brightness and
contrast, random erasing. Never a vertical flip. Optional camera and lighting changes (gamma, down- and
up-scaling, blur, sensor noise: :data:`CAMERA`; JPEG compression: :data:`JPEG`) imitate other cameras and studios
than FER2013's. Each sample gets its own random parameters,
drawn from one ``torch.Generator`` so a run is reproducible and resumable.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .options import CAMERA, JPEG, AugmentConfig  # noqa: F401  (CAMERA, JPEG: the presets live beside the config)


def numpy_rng(gen: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the run's ``gen``, for the distributions torch samples without a generator
    (Beta, Dirichlet): one draw from ``gen``, so a resumed run repeats it."""
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def camera_batch(x: torch.Tensor, mean: float, std: float, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Gamma, down- and up-scaling and blur of (B, 1, S, S) normalised faces (``mean``/``std`` of the
    normalisation), each per face with its own draw; ``x`` itself when all are off."""
    b, _, s, _ = x.shape
    dev = x.device
    if cfg.gamma != (1.0, 1.0):
        lo, hi = math.log(cfg.gamma[0]), math.log(cfg.gamma[1])
        gamma = torch.exp(_uniform(b, lo, hi, gen)).view(b, 1, 1, 1).to(dev, x.dtype)
        x = ((x * std + mean).clamp(0.0, 1.0) ** gamma - mean) / std
    if cfg.downscale_prob > 0:
        apply = torch.rand(b, generator=gen) < cfg.downscale_prob
        level = torch.randint(0, len(cfg.downscale_factors), (b,), generator=gen)
        x = x.clone()
        for k, factor in enumerate(cfg.downscale_factors):
            rows = torch.nonzero(apply & (level == k)).flatten().to(dev)
            if len(rows):
                small = F.interpolate(x[rows], size=max(4, round(s * factor)), mode="area")
                x[rows] = F.interpolate(small, size=s, mode="bilinear", align_corners=False)
    if cfg.blur_prob > 0:
        apply = torch.rand(b, generator=gen) < cfg.blur_prob
        sigma = _uniform(b, *cfg.blur_sigma, gen)
        radius = 3
        taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(-1, 1)) ** 2)
        kernel = kernel / kernel.sum(1, keepdim=True)
        kernel = torch.where(apply.view(-1, 1), kernel, (taps == 0).float().view(1, -1))  # identity when not drawn
        k = kernel.to(dev, x.dtype)
        xt = x.transpose(0, 1)  # (1, B, S, S): one group per face
        xt = F.conv2d(F.pad(xt, (radius, radius, 0, 0), mode="replicate"), k.view(b, 1, 1, -1), groups=b)
        xt = F.conv2d(F.pad(xt, (0, 0, radius, radius), mode="replicate"), k.view(b, 1, -1, 1), groups=b)
        x = xt.transpose(0, 1)
    if cfg.jpeg_prob > 0:
        x = jpeg_batch(x, mean, std, cfg, gen)
    return x


def jpeg_batch(x: torch.Tensor, mean: float, std: float, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """JPEG-compress a ``cfg.jpeg_prob`` share of (B, 1, S, S) normalised faces, each at its own quality drawn from
    ``cfg.jpeg_quality`` (OpenCV's codec on the CPU, as 8-bit gray images)."""
    b = x.shape[0]
    apply = torch.rand(b, generator=gen) < cfg.jpeg_prob
    quality = torch.randint(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1, (b,), generator=gen)
    rows = torch.nonzero(apply).flatten()
    if not len(rows):
        return x
    faces = ((x[rows.to(x.device)].detach().float().cpu() * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for face, q in zip(faces.numpy(), quality[rows].tolist()):
        ok, buf = cv2.imencode(".jpg", face[0], [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        out.append(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE) if ok else face[0])
    compressed = (torch.from_numpy(np.stack(out)).float().unsqueeze(1) / 255 - mean) / std
    x = x.clone()
    x[rows.to(x.device)] = compressed.to(x.device, x.dtype)
    return x


def augment_batch(x: torch.Tensor, std: float, cfg: AugmentConfig, gen: torch.Generator,
                  mean: float = 0.5) -> torch.Tensor:
    """(B, 1, S, S) normalised faces -> augmented copy. ``std`` converts [0, 1] brightness to normalised units
    (``mean`` too, for the camera changes, which work on [0, 1] intensities).

    Random parameters are drawn from ``gen`` on the CPU (one reproducible stream whatever the device) and
    moved to the batch's device, where the image work happens.
    """
    b, _, s, _ = x.shape
    dev = x.device
    x = camera_batch(x, mean, std, cfg, gen)
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
    if cfg.noise_std > 0:
        level = (torch.rand(b, generator=gen) * cfg.noise_std / std).view(b, 1, 1, 1)
        out = out + (torch.randn(out.shape, generator=gen) * level).to(dev, out.dtype)
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
    lam = float(numpy_rng(gen).beta(alpha, alpha))
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


# ITU-R BT.601 luma weights of R, G, B: OpenCV's (and the app's) colour-to-grey conversion
BT601 = (0.299, 0.587, 0.114)


class GreyVariation:
    """Colour-to-grey variations: a share ``prob`` of the faces of a batch is made gray from its RGB crop with its
    own channel weights, drawn from a Dirichlet around BT.601's (``concentration`` x the weights: 5 gives red a
    standard deviation of about 0.19), instead of the one conversion every camera pipeline and the app use. Skin,
    lips and shadows change brightness against each other as they do between sensors, white balances and
    conversions. Gray sources (FER2013) are stored as three equal channels, so any weights give back the face.

    ``colour``: (N, 3, S, S) uint8 RGB crops on the training device, row for row with the training tensor."""

    def __init__(self, colour: torch.Tensor, prob: float, mean: float, std: float, concentration: float = 5.0):
        if colour.ndim != 4 or colour.shape[1] != 3:
            raise ValueError(f"need (N, 3, S, S) RGB crops, got {tuple(colour.shape)}")
        self.colour, self.prob, self.mean, self.std = colour, prob, mean, std
        self.alpha = concentration * np.asarray(BT601)

    def __call__(self, idx: torch.Tensor, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The batch ``x`` (B, 1, S, S) of rows ``idx``, its drawn faces re-made gray with their own weights."""
        b = len(idx)
        apply = torch.rand(b, generator=gen) < self.prob
        weights = torch.from_numpy(numpy_rng(gen).dirichlet(self.alpha, size=b).astype(np.float32))
        rows = torch.nonzero(apply).flatten()
        if not len(rows):
            return x
        dev_rows = rows.to(x.device)
        rgb = self.colour[idx[dev_rows]].float() / 255.0  # (R, 3, S, S)
        gray = (rgb * weights[rows].view(-1, 3, 1, 1).to(x.device)).sum(1, keepdim=True)
        x = x.clone()
        x[dev_rows] = ((gray - self.mean) / self.std).to(x.dtype)
        return x
