"""Object detection from scratch: boxes, IoU, NMS, set matching, and a CenterNet-style head.

Boxes are float tensors (N, 4). Three formats, as in ``torchvision.ops.box_convert``:
``"xyxy"`` (x1, y1, x2, y2) corners, the format every function here expects unless it says
otherwise; ``"xywh"`` (x1, y1, w, h), COCO's; ``"cxcywh"`` (cx, cy, w, h), DETR's. Pixel
coordinates are on pixel *edges* (a box around columns 3..7 has x1 = 3, x2 = 8), so a box's area
is just w * h, with no "+1" (the old Pascal VOC convention).

Every kernel equals its torchvision counterpart (``box_convert``, ``box_area``, ``box_iou``,
``generalized_box_iou``, ``nms``, ``batched_nms``; ``tests/test_detection.py``).

Two detectors' ideas meet here. DETR (Carion et al. 2020) predicts a *set* of boxes and trains
it against the ground truth after a one-to-one Hungarian matching (:func:`match_cost`,
:func:`hungarian_match`), which removes the need for NMS. CenterNet ("Objects as Points", Zhou
et al. 2019) is dense and anchor-free: every cell of the patch-token grid predicts a per-class
"an object is centred here" heatmap, the box size and the sub-cell offset of the centre; the
peaks of the heatmap are the detections (:class:`CenterNet`). It trains in minutes on a CPU, so
it is the lesson's live detector.
"""

from __future__ import annotations

import torch

from ..core.validate import check_choice, check_tensor, is_number

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


# --- box formats --------------------------------------------------------------------------------


def check_boxes(
    boxes: object, name: str = "boxes", fmt: str = "xyxy", batched: bool = False
) -> torch.Tensor:
    """Check a float (N, 4) box tensor (``batched``: any (..., 4)); return it.

    Rejects NaN/inf and boxes that are "inside out": x2 < x1 or y2 < y1 in ``"xyxy"``, a
    negative width or height in ``"xywh"`` / ``"cxcywh"``.
    """
    check_choice(fmt, "box format", BOX_FORMATS)
    boxes = check_tensor(boxes, name, floating=True)
    if (boxes.ndim == 0 or boxes.shape[-1] != 4) or (not batched and boxes.ndim != 2):
        want = "(..., 4)" if batched else "(N, 4)"
        raise ValueError(
            f"{name} must have shape {want}, one row of 4 numbers per box; got {tuple(boxes.shape)}"
        )
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{name} contain NaN or inf values")
    if fmt == "xyxy":
        bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
        what = "x2 < x1 or y2 < y1"
        hint = (
            "'xyxy' boxes are (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2; if yours are "
            "(x, y, w, h) or (cx, cy, w, h), convert them first with box_convert"
        )
    else:
        bad = (boxes[..., 2] < 0) | (boxes[..., 3] < 0)
        what, hint = "a negative width or height", f"'{fmt}' boxes end with (w, h) >= 0"
    if bool(bad.any()):
        i = tuple(torch.nonzero(bad)[0].tolist())
        first = [round(v, 4) for v in boxes[i].tolist()]
        where = i[0] if len(i) == 1 else i
        raise ValueError(f"{name}[{where}] = {first} has {what}: {hint}")
    return boxes


def _to_xyxy(boxes: torch.Tensor, fmt: str) -> torch.Tensor:
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack([a, b, a + c, b + d], dim=-1)
    if fmt == "cxcywh":
        return torch.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], dim=-1)
    return boxes


def _from_xyxy(boxes: torch.Tensor, fmt: str) -> torch.Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    if fmt == "cxcywh":
        return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)
    return boxes


def box_convert(boxes: torch.Tensor, in_fmt: str, out_fmt: str) -> torch.Tensor:
    """Convert (..., 4) boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Goes through ``"xyxy"`` like torchvision, so results agree to the last bit.
    """
    check_choice(out_fmt, "out_fmt", BOX_FORMATS)
    boxes = check_boxes(boxes, "boxes", in_fmt, batched=True)
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area of each "xyxy" box: (N, 4) -> (N,)."""
    boxes = check_boxes(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


# --- overlap ------------------------------------------------------------------------------------


def _inter_union(b1: torch.Tensor, b2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairwise intersection and union areas of checked "xyxy" boxes: (N, M) each."""
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])  # (N,)
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])  # (M,)
    top_left = torch.max(b1[:, None, :2], b2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(b1[:, None, 2:], b2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # (N, M, 2); 0 where they do not overlap
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    return inter, area1[:, None] + area2[None, :] - inter


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every pair: (N, 4), (M, 4) "xyxy" -> (N, M) in [0, 1].

    Two boxes of zero area give 0 / 0 = NaN, as in torchvision.
    """
    b1, b2 = check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    inter, union = _inter_union(b1, b2)
    return inter / union


def generalized_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of every pair: (N, 4), (M, 4) -> (N, M).

    GIoU = IoU - (area of the smallest enclosing box C not covered by the union) / area(C).
    It lies in (-1, 1] and, unlike IoU, still says *how far apart* two disjoint boxes are,
    which gives a loss a gradient when the boxes do not overlap (DETR's box loss uses it).
    """
    b1, b2 = check_boxes(boxes1, "boxes1"), check_boxes(boxes2, "boxes2")
    inter, union = _inter_union(b1, b2)
    iou = inter / union
    top_left = torch.min(b1[:, None, :2], b2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.max(b1[:, None, 2:], b2[None, :, 2:])  # (N, M, 2)
    wh = bottom_right - top_left  # (N, M, 2), never negative for valid boxes
    enclosing = wh[..., 0] * wh[..., 1]  # (N, M)
    return iou - (enclosing - union) / enclosing


# --- non-maximum suppression --------------------------------------------------------------------


def _check_scored(
    boxes: object, scores: object, iou_threshold: object
) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = check_boxes(boxes)
    scores = check_tensor(scores, "scores", ndim=1, floating=True)
    if len(scores) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(scores)} scores: one score per box")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    if not is_number(iou_threshold):
        raise ValueError(f"iou_threshold must be a number, got {iou_threshold!r}")
    return boxes, scores


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: keep the best box, drop every box overlapping it by
    IoU > ``iou_threshold``, repeat with the best box left.

    Args:
        boxes: (N, 4) "xyxy". scores: (N,). iou_threshold: boxes with IoU *above* it are
            suppressed (strictly, as torchvision).

    Returns:
        int64 (N_kept,) indices into ``boxes``, by decreasing score (ties: lower index first).
    """
    boxes, scores = _check_scored(boxes, scores, iou_threshold)
    order = scores.argsort(descending=True, stable=True)  # (N,)
    overlaps = box_iou(boxes[order], boxes[order]) > iou_threshold  # (N, N), in score order
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= overlaps[i]  # only boxes after i still matter
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Class-aware NMS: boxes only suppress boxes with the same ``idxs`` (category).

    Returns int64 indices of the kept boxes, by decreasing score. (torchvision gets the same
    result in one ``nms`` call by shifting each class's boxes far apart: the "coordinate trick".)
    """
    boxes, scores = _check_scored(boxes, scores, iou_threshold)
    idxs = check_tensor(idxs, "idxs", ndim=1)
    if len(idxs) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(idxs)} idxs: one category per box")
    kept = [torch.zeros(0, dtype=torch.int64, device=boxes.device)]
    for c in idxs.unique():
        members = torch.nonzero(idxs == c).squeeze(1)  # (n_c,)
        kept.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(kept)
    return keep[scores[keep].argsort(descending=True, stable=True)]
