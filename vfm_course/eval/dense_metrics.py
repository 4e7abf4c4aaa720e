"""Dense metrics: per-class IoU and mIoU from a confusion matrix, and COCO mean
average precision, each tested equal to torchmetrics on the same predictions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..core.validate import check_positive_int, check_tensor
from ..dense.boxes import box_iou, check_boxes
from .classification import confusion_matrix

# --- segmentation: IoU from a confusion matrix ---------------------------------------------------


def segmentation_confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """(K, K) pixel counts, row = true class, column = predicted class.

    ``preds`` are class ids (B, H, W), or logits (B, K, H, W) whose arg-max is taken; ``target``
    int (B, H, W). Pixels whose target is ``ignore_index`` are left out entirely (as torchmetrics).
    """
    check_positive_int(num_classes, "num_classes")
    target = check_tensor(target, "target", ndim=(1, 2, 3, 4))
    preds = check_tensor(preds, "preds")
    if preds.is_floating_point() and preds.ndim == target.ndim + 1:
        if preds.shape[1] != num_classes:
            raise ValueError(
                f"preds look like logits (B, K, H, W) with K = {preds.shape[1]}, "
                f"but num_classes is {num_classes}"
            )
        preds = preds.argmax(1)  # (B, H, W)
    if preds.shape != target.shape:
        raise ValueError(
            f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must have the same "
            f"shape (B, H, W): one predicted class per target pixel"
        )
    if preds.is_floating_point() or target.is_floating_point():
        raise TypeError(
            "preds and target must hold integer class ids (or preds logits (B, K, H, W))"
        )
    if target.numel() == 0:
        raise ValueError("preds and target are empty: there are no pixels to score")
    keep = (
        target != ignore_index
        if ignore_index is not None
        else torch.ones_like(target, dtype=torch.bool)
    )
    preds, target = preds[keep].long(), target[keep].long()  # (n_pixels,)
    for name, v in (("preds", preds), ("target", target)):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= num_classes):
            extra = f" or ignore_index {ignore_index}" if name == "target" else ""
            raise ValueError(
                f"{name} contain class id {int(v.min()) if int(v.min()) < 0 else int(v.max())}, "
                f"outside [0, {num_classes}){extra}"
            )
    return confusion_matrix(preds, target, num_classes)


def iou_from_confusion(
    confmat: torch.Tensor, average: str | None = "macro", ignore_index: int | None = None
) -> torch.Tensor:
    """IoU_k = TP / (TP + FP + FN) per class from a (K, K) confusion matrix.

    ``average=None``: the (K,) per-class IoUs; a class absent from both predictions and targets
    has 0 / 0, reported as 0 (torchmetrics' ``zero_division=0``). ``"macro"``: their mean
    (mIoU) over the classes that *do* occur in predictions or targets, leaving out
    ``ignore_index`` if it names a class, exactly as torchmetrics weights them.
    """
    check_tensor(confmat, "confmat", ndim=2)
    if confmat.shape[0] != confmat.shape[1]:
        raise ValueError(f"confmat must be square (K, K), got {tuple(confmat.shape)}")
    if average not in (None, "none", "macro"):
        raise ValueError(f"average must be None, 'none' or 'macro', got {average!r}")
    confmat = confmat.double()
    tp = confmat.diag()  # (K,)
    denom = confmat.sum(0) + confmat.sum(1) - tp  # TP + FP + FN, (K,)
    iou = torch.where(denom > 0, tp / denom.clamp(min=1), torch.zeros_like(tp))
    if average in (None, "none"):
        return iou.float()
    present = denom > 0  # appears as a prediction or a target
    if ignore_index is not None and 0 <= ignore_index < len(iou):
        present[ignore_index] = False
    if not bool(present.any()):
        raise ValueError("no class occurs in preds or target: the mean IoU is undefined")
    return iou[present].mean().float()


def jaccard_index(
    preds: torch.Tensor,
    target: torch.Tensor,
    num_classes: int,
    average: str | None = "macro",
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Per-class IoU (``average=None``) or mIoU (``"macro"``) of predicted segmentation maps.

    The same numbers as ``MulticlassJaccardIndex(num_classes, average, ignore_index)``; see
    :func:`segmentation_confusion_matrix` and :func:`iou_from_confusion`.
    """
    confmat = segmentation_confusion_matrix(preds, target, num_classes, ignore_index)
    return iou_from_confusion(confmat, average, ignore_index)


# --- detection: COCO mean average precision ------------------------------------------------------

# torchmetrics' thresholds, made in float32 (torch.linspace(...).tolist()); pycocotools' own
# float64 ones differ in the last bits, which matters when a recall lands exactly on one.
COCO_IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10).double()
COCO_RECALL_THRESHOLDS = torch.linspace(0.0, 1.0, 101).double()


def _check_detections(
    preds: object, targets: object
) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
    """Check torchmetrics-style lists of dicts, one per image; return them."""
    for name, value in (("preds", preds), ("targets", targets)):
        if not isinstance(value, (list, tuple)):
            raise TypeError(
                f"{name} must be a list of dicts (one per image), got {type(value).__name__}"
            )
    if len(preds) != len(targets):
        raise ValueError(f"got predictions for {len(preds)} images but targets for {len(targets)}")
    if len(preds) == 0:
        raise ValueError("preds and targets are empty: there are no images to score")
    for name, items, keys in (
        ("preds", preds, ("boxes", "scores", "labels")),
        ("targets", targets, ("boxes", "labels")),
    ):
        for i, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in keys):
                raise ValueError(f"{name}[{i}] must be a dict with keys {', '.join(keys)}")
            n = len(check_boxes(item["boxes"], f"{name}[{i}]['boxes']"))
            for k in keys[1:]:
                check_tensor(item[k], f"{name}[{i}]['{k}']", ndim=1)
                if len(item[k]) != n:
                    raise ValueError(f"{name}[{i}] has {n} boxes but {len(item[k])} {k}")
            if item["labels"].is_floating_point():
                raise TypeError(f"{name}[{i}]['labels'] must be integer class ids")
            if name == "preds" and not torch.isfinite(item["scores"]).all():
                raise ValueError(
                    f"preds[{i}]['scores'] holds NaN or inf: a detection's score ranks it, so "
                    f"every score must be a finite number (check the model's outputs)"
                )
    return list(preds), list(targets)


def _match_image(ious: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """COCO's greedy matching in one image and class: (T, D) bool, detection d is a true
    positive at threshold t. ``ious`` (D, G), detections sorted by decreasing score."""
    matched = torch.zeros(len(thresholds), len(ious), dtype=torch.bool)
    for t, thr in enumerate(thresholds.tolist()):
        taken = [False] * ious.shape[1]
        for d, row in enumerate(ious.tolist()):
            # The best still-free ground truth with IoU >= thr; like pycocotools, a later one
            # of equal IoU replaces an earlier one.
            best, best_iou = -1, min(thr, 1 - 1e-10)
            for g, iou in enumerate(row):
                if taken[g] or iou < best_iou:
                    continue
                best, best_iou = g, iou
            if best >= 0:
                taken[best] = True
                matched[t, d] = True
    return matched


def average_precision(scores: torch.Tensor, is_tp: torch.Tensor, n_gt: int) -> torch.Tensor:
    """COCO's average precision of one class at one IoU threshold, from matched detections.

    scores (D,) and is_tp (D,) bool (detection d was matched to a true box), over all images,
    in any order; ``n_gt`` >= 1 true boxes -> a float64 scalar. The detections are ranked by
    score (stable: ties keep the given order); after each one, precision = TP / (detections so
    far) and recall = TP / n_gt; precision is made non-increasing in recall (each point takes
    the best precision at any higher recall) and read at the 101 recall levels 0, 0.01, ..., 1
    (the first detection reaching each level; 0 beyond the highest recall reached). AP is the
    mean of the 101 values, pycocotools' rule.
    """
    check_tensor(scores, "scores", ndim=1)
    check_tensor(is_tp, "is_tp", ndim=1)
    if len(scores) != len(is_tp):
        raise ValueError(f"scores ({len(scores)}) and is_tp ({len(is_tp)}) differ in length")
    check_positive_int(n_gt, "n_gt")
    order = scores.detach().cpu().double().argsort(descending=True, stable=True)
    tp = is_tp.detach().cpu()[order].double()  # (D,), best score first
    tp_sum, fp_sum = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = tp_sum / n_gt
    precision = tp_sum / (tp_sum + fp_sum + np.finfo(np.float64).eps)
    precision = precision.flip(0).cummax(0).values.flip(0)  # the non-increasing envelope
    idx = torch.searchsorted(recall.contiguous(), COCO_RECALL_THRESHOLDS, side="left")  # (101,)
    reached = idx < len(recall)
    sampled = torch.zeros(len(COCO_RECALL_THRESHOLDS), dtype=torch.float64)
    sampled[reached] = precision[idx[reached]]
    return sampled.mean()


def detection_matches(
    preds: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    label: int,
    iou_thresholds: torch.Tensor = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Every image's detections of class ``label`` matched to its true boxes of that class.

    Per image, the detections (best score first, at most ``max_detections``) are matched
    greedily to still-free true boxes with IoU >= each threshold, as in COCO. Returns the
    pooled scores (D,) float64, ``is_tp`` (T, D) bool for the T thresholds, and the number of
    true boxes of the class: the inputs of :func:`average_precision`.
    """
    preds, targets = _check_detections(preds, targets)
    check_positive_int(max_detections, "max_detections")
    thresholds = torch.as_tensor(iou_thresholds, dtype=torch.float64).reshape(-1)
    return _matches(preds, targets, label, thresholds, max_detections)


def _matches(preds, targets, label: int, thresholds: torch.Tensor, max_detections: int):
    scores, hits, n_gt = [], [], 0
    for p, t in zip(preds, targets, strict=True):
        gt = t["boxes"][t["labels"] == label].detach().cpu().double()  # (G, 4)
        mine = p["labels"] == label
        det, sc = p["boxes"][mine].detach().cpu().double(), p["scores"][mine].detach().cpu()
        order = sc.double().argsort(descending=True, stable=True)[:max_detections]
        det, sc = det[order], sc[order].double()  # (D, 4), (D,)
        n_gt += len(gt)
        ious = box_iou(det, gt) if len(gt) and len(det) else torch.zeros(len(det), len(gt))
        hits.append(_match_image(ious, thresholds))  # (T, D)
        scores.append(sc)
    return torch.cat(scores), torch.cat(hits, dim=1), n_gt


def mean_average_precision(
    preds: list[dict[str, torch.Tensor]],
    targets: list[dict[str, torch.Tensor]],
    max_detections: int = 100,
    average_precision_fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] = (
        average_precision
    ),
) -> dict[str, torch.Tensor]:
    """COCO box mAP (Lin et al. 2014), the numbers of torchmetrics' ``MeanAveragePrecision``.

    Per class and IoU threshold: every image's detections of that class, best score first and
    at most ``max_detections`` per image, are matched greedily to still-free ground truth with
    IoU >= threshold; the precision-recall curve of all images' detections, pooled and sorted by
    score (stable: ties keep image order), is made non-increasing and read at 101 recall points
    0, 0.01, ..., 1 (0 beyond the highest recall reached); AP is their mean. mAP averages AP over
    classes that have ground truth (a class only predicted does not count) and over the IoU
    thresholds 0.5, 0.55, ..., 0.95; ``map_50`` and ``map_75`` use one threshold. With no ground
    truth at all every value is -1, as in pycocotools. Area range "all"; no crowd boxes. The
    per-class AP is :func:`average_precision` of :func:`detection_matches`;
    ``average_precision_fn`` lets a lesson score with its own AP of the same contract.

    The IoU thresholds are torchmetrics' float32 ``linspace(0.5, 0.95, 10)`` (so 0.55 is
    0.550000012), not pycocotools' float64 ones: a detection whose IoU lies between the two
    (within about 1e-8 of a threshold) can count in one and not the other.

    Args:
        preds: per image ``{"boxes": (D, 4) xyxy, "scores": (D,), "labels": int (D,)}``.
        targets: per image ``{"boxes": (G, 4) xyxy, "labels": int (G,)}``.

    Returns:
        ``{"map", "map_50", "map_75"}`` scalars and ``"map_per_class"`` (C,) for the sorted
        ``"classes"`` (C,) seen in preds or targets (-1 for a class without ground truth).
    """
    preds, targets = _check_detections(preds, targets)
    check_positive_int(max_detections, "max_detections")
    thr = COCO_IOU_THRESHOLDS
    all_labels = [p["labels"] for p in preds] + [t["labels"] for t in targets]
    classes = torch.cat([lab.long().cpu() for lab in all_labels]).unique()  # sorted
    precision = torch.full((len(thr), len(classes)), -1.0, dtype=torch.float64)  # AP per (t, c)
    for ci, c in enumerate(classes.tolist()):
        scores, hits, n_gt = _matches(preds, targets, c, thr, max_detections)
        if n_gt == 0:
            continue  # AP undefined: left at -1 and out of the mean
        for ti in range(len(thr)):
            precision[ti, ci] = float(average_precision_fn(scores, hits[ti], n_gt))
    has_gt = precision[0] > -1  # (C,)

    def mean(values: torch.Tensor) -> torch.Tensor:
        return values[has_gt].mean().float() if bool(has_gt.any()) else torch.tensor(-1.0)

    per_class = torch.where(has_gt, precision.mean(0), torch.full_like(precision[0], -1.0))
    return {
        "map": mean(precision.mean(0)),
        "map_50": mean(precision[0]),
        "map_75": mean(precision[5]),
        "map_per_class": per_class.float(),
        "classes": classes.to(torch.int32),
    }
