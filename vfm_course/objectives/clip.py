"""CLIP's symmetric image-text contrastive loss (Radford et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_tensor

# --- the loss ----------------------------------------------------------------------------------


def clip_loss(logits_per_image: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy of a (B, B) logit matrix whose matching pairs are on the
    diagonal: the mean of image->text (rows) and text->image (columns) classification."""
    logits = check_tensor(logits_per_image, "logits_per_image", ndim=2, floating=True)
    B = logits.shape[0]
    if logits.shape[1] != B:
        raise ValueError(
            f"logits_per_image must be square (B images x B captions), got {tuple(logits.shape)}"
        )
    if B < 2:
        raise ValueError("clip_loss needs a batch of at least 2 pairs (1 pair has no negatives)")
    targets = torch.arange(B, device=logits.device)  # image i belongs with caption i
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def clip_loss_fn() -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn(model, batch)`` for :func:`vfm_course.train.fit` with batch = (images, tokens).

    Logs ``acc_i2t`` (fraction of images whose own caption scores highest) and ``temperature``.
    """

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("a CLIP batch must be a pair (images, tokens), e.g. from BatchLoader")
        images, tokens = batch
        logits = model(images, tokens)  # (B, B)
        targets = torch.arange(len(logits), device=logits.device)
        acc = (logits.argmax(dim=1) == targets).float().mean().item()
        return clip_loss(logits), {"acc_i2t": acc, "temperature": 1 / model.scale().item()}

    return loss_fn
