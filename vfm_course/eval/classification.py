"""Classification metrics, the evaluation loop the lessons share, and dense-prediction metrics.

Segmentation: per-class IoU and mIoU from a confusion matrix (:func:`jaccard_index`), equal to
``torchmetrics.classification.MulticlassJaccardIndex``. Detection: COCO-style mean average
precision (:func:`mean_average_precision`), equal to
``torchmetrics.detection.MeanAveragePrecision(iou_type="bbox")`` with its default pycocotools
backend (``tests/test_dense_metrics.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..core.inference import predict
from ..core.validate import check_tensor


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
