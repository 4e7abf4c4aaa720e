"""Supervised classification: cross-entropy on (optionally augmented) labelled images."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def classification_loss(augment: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """The supervised objective: cross-entropy on (optionally augmented) images."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        if augment is not None:
            x = augment(x)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn
