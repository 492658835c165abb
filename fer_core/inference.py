"""Inference: images -> one prediction per face.

:func:`predict_probabilities` is the single place where logits become probabilities; training-time
evaluation, ``training.evaluate``, the CLI and the app pages all go through it.
"""

from __future__ import annotations

import torch
import numpy as np
from torch import nn


@torch.no_grad()
def predict_probabilities(model: nn.Module, batch: torch.Tensor, tta: bool = True, batch_size: int = 512) -> np.ndarray:
    """(N, 1, S, S) preprocessed faces -> (N, C) float32 softmax probabilities.

    With ``tta`` the probabilities of the face and its horizontal mirror image are averaged.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(batch), batch_size):
        x = batch[start:start + batch_size]
        probs = torch.softmax(model(x).float(), dim=1)
        if tta:
            probs = (probs + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1)) / 2
        out.append(probs)
    model.train(was_training)
    if not out:
        return np.zeros((0, getattr(getattr(model, "config", None), "num_classes", 7)), np.float32)
    return torch.cat(out).cpu().numpy().astype(np.float32)
