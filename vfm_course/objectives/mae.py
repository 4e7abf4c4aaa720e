"""MAE pretraining as a ``loss_fn`` for the engine; the loss itself is the model's
``forward_loss`` (:func:`vfm_course.models.mae.masked_patch_loss`), as in the paper's code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..layers.masking import check_mask_ratio


def mae_loss_fn(
    mask_ratio: float | None = None,
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit` that pre-trains a
    :class:`MaskedAutoencoder`. ``batch`` is an images tensor or an ``(images, labels)`` pair;
    labels are ignored (MAE is self-supervised). ``mask_ratio=None`` uses the model's config."""
    if mask_ratio is not None and check_mask_ratio(mask_ratio) == 0.0:
        raise ValueError("mask_ratio must be > 0 for MAE training (the loss is on masked patches)")

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        imgs = batch[0] if isinstance(batch, list | tuple) else batch
        loss, _, _ = model(imgs, mask_ratio=mask_ratio)
        return loss, {}

    return loss_fn
