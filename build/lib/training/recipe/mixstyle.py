"""MixStyle (Zhou, Yang, Qiao & Xiang, "Domain generalization with MixStyle", ICLR 2021): during training, the
early feature maps of a face take on a style (per-channel mean and standard deviation) mixed with another face's
of the same batch, so that a batch of FER2013 crops and one studio's photos shows the network studios in between.

    handles = attach_mixstyle(model, prob=0.5, alpha=0.1, gen=gen)   # training.train --mixstyle 0.5

The mixing runs only while the model is in training mode: evaluation, the shipped weights and the ONNX export are
untouched (it adds no parameter), and every prediction stays a function of one face. Random draws come from the
run's ``torch.Generator`` so that a run is reproducible and resumable.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .augment import numpy_rng


class MixStyle:
    """A forward hook that mixes the channel statistics of a module's output across the batch."""

    def __init__(self, prob: float, alpha: float, gen: torch.Generator, eps: float = 1e-6):
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"MixStyle probability must be in [0, 1], got {prob}")
        if alpha <= 0:
            raise ValueError(f"MixStyle alpha must be > 0, got {alpha}")
        self.prob, self.alpha, self.gen, self.eps = prob, alpha, gen, eps

    def __call__(self, module: nn.Module, _inputs, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training or output.shape[0] < 2:
            return None
        if torch.rand(1, generator=self.gen).item() >= self.prob:
            return None
        b = output.shape[0]
        x = output.float()
        mu = x.mean(dim=(2, 3), keepdim=True)
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt()
        mu, sig = mu.detach(), sig.detach()  # the style is mixed, not learned through (as in the paper)
        lam = torch.from_numpy(numpy_rng(self.gen).beta(self.alpha, self.alpha, b).astype(np.float32))
        lam = lam.view(b, 1, 1, 1).to(x.device)
        perm = torch.randperm(b, generator=self.gen).to(x.device)
        mixed_mu = lam * mu + (1 - lam) * mu[perm]
        mixed_sig = lam * sig + (1 - lam) * sig[perm]
        return ((x - mu) / sig * mixed_sig + mixed_mu).to(output.dtype)


def style_layers(model: nn.Module) -> list[nn.Module]:
    """Where the style is mixed: after the stem and the first two entry-flow blocks (the paper's res1-res2: early
    layers carry style, later ones the expression)."""
    return [model.stem, *list(model.entry_flow)[:2]]


def attach_mixstyle(model: nn.Module, prob: float, alpha: float, gen: torch.Generator) -> list:
    """Register MixStyle on ``model``'s early layers; returns the hook handles (``handle.remove()`` detaches)."""
    hook = MixStyle(prob, alpha, gen)
    return [layer.register_forward_hook(hook) for layer in style_layers(model)]
