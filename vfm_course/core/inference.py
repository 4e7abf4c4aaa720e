"""Batched inference in eval mode: the one helper every evaluation uses.

:func:`eval_mode` switches a model to eval mode (dropout off, batch-norm running statistics)
and restores whatever mode it had, even if the body raises; :func:`predict` runs a model over
a large tensor in batches without gradients and concatenates the outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .validate import check_positive_int, check_tensor

# ----------------------------------------------------------------------------- adversarial


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block and restore its mode (train or eval) after.

    Attacks use it so that dropout cannot randomise the gradient and BatchNorm neither uses
    batch statistics nor updates its running averages while the attack probes the model.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def predict(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Run ``model`` over ``images`` (B, C, H, W) in batches; return outputs on the CPU."""
    check_tensor(images, "images", floating=True)
    check_positive_int(batch_size, "batch_size")
    if device is None:
        params = list(model.parameters()) if isinstance(model, nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    try:
        outs = [
            model(images[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:  # restore the mode even when the model raises
        if was_training:
            model.train()
    return torch.cat(outs)
