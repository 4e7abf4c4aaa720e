"""Classification metrics and the evaluation loop the lessons share.

Dense-prediction metrics (IoU, mAP) join this module in the detection lesson.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .validate import check_positive_int, check_tensor


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose arg-max matches the label. logits (B, K), labels (B,)."""
    check_tensor(logits, "logits", ndim=2)
    check_tensor(labels, "labels", ndim=1)
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"logits has {logits.shape[0]} rows but labels has {labels.shape[0]} entries"
        )
    if logits.shape[0] == 0:
        raise ValueError("cannot compute accuracy of an empty batch")
    return (logits.argmax(dim=1) == labels).float().mean().item()


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


def evaluate_classifier(
    model: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 512,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on a labelled set."""
    logits = predict(model, images, batch_size)
    labels = labels.to(logits.device)
    return {
        "acc": accuracy(logits, labels),
        "loss": nn.functional.cross_entropy(logits, labels).item(),
    }


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class."""
    check_tensor(preds, "preds", ndim=1)
    check_tensor(labels, "labels", ndim=1)
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)
