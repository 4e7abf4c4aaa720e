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

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .segmentation import DenseEncoder
from .validate import check_choice, check_positive_int, check_tensor
from .vit import VisionTransformer

BOX_FORMATS = ("xyxy", "xywh", "cxcywh")

# DETR's matching weights (Carion et al. 2020, section 4 and its HungarianMatcher).
COST_CLASS, COST_BBOX, COST_GIOU = 1.0, 5.0, 2.0


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
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, (int, float)):
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


# --- DETR's set matching ------------------------------------------------------------------------


def match_cost(
    pred_logits: torch.Tensor,
    pred_boxes: torch.Tensor,
    tgt_labels: torch.Tensor,
    tgt_boxes: torch.Tensor,
    cost_class: float = COST_CLASS,
    cost_bbox: float = COST_BBOX,
    cost_giou: float = COST_GIOU,
) -> torch.Tensor:
    """DETR's matching cost between Q predictions and T targets: (Q, T).

    cost = cost_class * (-p(target class)) + cost_bbox * L1(boxes) + cost_giou * (-GIoU).
    The class term uses the probability, not its log, so it is on the same scale as the box
    terms (DETR, appendix A.1).

    Args:
        pred_logits: (Q, K') class logits (DETR's K' = K + 1 includes "no object").
        pred_boxes: (Q, 4) "cxcywh", normalised to [0, 1] by the image size, as DETR.
        tgt_labels: int64 (T,) in [0, K'). tgt_boxes: (T, 4) "cxcywh", normalised.
    """
    check_tensor(pred_logits, "pred_logits", ndim=2, floating=True)
    pred_boxes = check_boxes(pred_boxes, "pred_boxes", "cxcywh")
    tgt_boxes = check_boxes(tgt_boxes, "tgt_boxes", "cxcywh")
    check_tensor(tgt_labels, "tgt_labels", ndim=1)
    if len(pred_logits) != len(pred_boxes):
        raise ValueError(f"{len(pred_logits)} pred_logits rows but {len(pred_boxes)} pred_boxes")
    if len(tgt_labels) != len(tgt_boxes):
        raise ValueError(f"{len(tgt_labels)} tgt_labels but {len(tgt_boxes)} tgt_boxes")
    k = pred_logits.shape[1]
    if len(tgt_labels) and not (0 <= int(tgt_labels.min()) and int(tgt_labels.max()) < k):
        raise ValueError(f"tgt_labels must lie in [0, {k}) to index the {k} logits")
    prob = pred_logits.softmax(-1)  # (Q, K')
    c_class = -prob[:, tgt_labels.long()]  # (Q, T)
    c_bbox = torch.cdist(pred_boxes, tgt_boxes, p=1)  # (Q, T), L1 over the 4 numbers
    c_giou = -generalized_box_iou(
        box_convert(pred_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
    )
    return cost_class * c_class + cost_bbox * c_bbox + cost_giou * c_giou


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-to-one assignment of minimal total cost (Kuhn 1955; solved by scipy's
    ``linear_sum_assignment``, a Jonker-Volgenant variant, in O(n^3) instead of n! tries).

    Args:
        cost: (Q, T) cost of giving prediction q to target t.

    Returns:
        ``(pred_idx, tgt_idx)``, int64 of length min(Q, T), sorted by ``pred_idx``:
        prediction ``pred_idx[i]`` is matched to target ``tgt_idx[i]``.
    """
    from scipy.optimize import linear_sum_assignment

    check_tensor(cost, "cost", ndim=2, floating=True)
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost contains NaN or inf; check the boxes and logits it came from")
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    device = cost.device
    return torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)


def brute_force_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`hungarian_match` by trying every assignment (for tiny Q, T; tests and lesson).

    With Q >= T it tries every ordered choice of T distinct predictions; with Q < T, of Q
    distinct targets. Returns the same ``(pred_idx, tgt_idx)`` layout.
    """
    check_tensor(cost, "cost", ndim=2, floating=True)
    q, t = cost.shape
    if math.perm(max(q, t), min(q, t)) > 200_000:
        raise ValueError(f"a {q}x{t} cost has too many assignments to try; use hungarian_match")
    flip = q < t
    c = cost.T if flip else cost  # (rows, cols) with rows >= cols
    cols = torch.arange(c.shape[1])
    best, best_rows = math.inf, ()
    for rows in itertools.permutations(range(c.shape[0]), c.shape[1]):
        total = c[list(rows), cols].sum().item() if rows else 0.0
        if total < best:
            best, best_rows = total, rows
    rows = torch.tensor(best_rows, dtype=torch.int64)
    pred, tgt = (cols, rows) if flip else (rows, cols)
    order = pred.argsort()
    return pred[order], tgt[order]


# --- CenterNet: objects as points ---------------------------------------------------------------


def gaussian_radius(width: float, height: float, min_overlap: float = 0.7) -> float:
    """How far (in cells) a centre may be off and the box still have IoU >= ``min_overlap``.

    A copy of a w x h box shifted by (r, r) overlaps it by (w - r)(h - r) out of a union of
    2wh - (w - r)(h - r); IoU >= t solves to r <= the smaller root of
    r^2 - (w + h) r + wh (1 - 2t / (1 + t)) = 0. (CornerNet, Law & Deng 2018, bounds corner
    shifts the same way; CenterNet reuses that radius for its centre heatmaps.)
    """
    if not 0 < min_overlap < 1:
        raise ValueError(f"min_overlap must be in (0, 1), got {min_overlap}")
    w, h = max(float(width), 0.0), max(float(height), 0.0)
    a = 2 * min_overlap / (1 + min_overlap)
    return ((w + h) - math.sqrt((w - h) ** 2 + 4 * w * h * a)) / 2


def encode_centernet_targets(
    boxes: Sequence[torch.Tensor | np.ndarray],
    labels: Sequence[torch.Tensor | np.ndarray],
    num_classes: int,
    grid_size: tuple[int, int],
    stride: int,
    min_overlap: float = 0.7,
) -> torch.Tensor:
    """Dense training targets from per-image boxes: (B, K + 5, Gh, Gw).

    Channels: ``[0, K)`` the class heatmaps, a Gaussian of sigma (2r + 1) / 6 around each object
    centre cell (r = :func:`gaussian_radius`; max over objects of a class), exactly 1 at the
    centre; ``K, K+1`` the box (w, h) in cells; ``K+2, K+3`` the offset of the centre inside its
    cell, in [0, 1) (it undoes the rounding to the grid); ``K+4`` 1 at object centres, where
    size and offset are supervised. Two centres in one cell: the later object's size wins.

    Args:
        boxes: per image, (k_i, 4) "xyxy" in pixels. labels: per image, int (k_i,) in [0, K).
        grid_size: (Gh, Gw), the feature map. stride: pixels per cell (the patch size P).
    """
    check_positive_int(num_classes, "num_classes")
    check_positive_int(stride, "stride")
    gh, gw = (check_positive_int(g, "grid_size entries") for g in grid_size)
    if len(boxes) != len(labels):
        raise ValueError(f"got boxes for {len(boxes)} images but labels for {len(labels)}")
    k = num_classes
    out = torch.zeros(len(boxes), k + 5, gh, gw)
    ys = torch.arange(gh, dtype=torch.float32)[:, None]  # (Gh, 1)
    xs = torch.arange(gw, dtype=torch.float32)[None, :]  # (1, Gw)
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        b = check_boxes(torch.as_tensor(b, dtype=torch.float32), f"boxes[{i}]")
        lab = torch.as_tensor(lab)
        if lab.shape != (len(b),):
            raise ValueError(f"labels[{i}] has shape {tuple(lab.shape)}, expected ({len(b)},)")
        if len(lab) and (int(lab.min()) < 0 or int(lab.max()) >= k):
            raise ValueError(f"labels[{i}] must lie in [0, {k}), got {lab.tolist()}")
        for (x1, y1, x2, y2), c in zip((b / stride).tolist(), lab.tolist(), strict=True):
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), gw - 1), min(int(cy), gh - 1)  # the centre's cell
            w, h = x2 - x1, y2 - y1
            sigma = (2 * gaussian_radius(w, h, min_overlap) + 1) / 6
            g = torch.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma**2))  # (Gh, Gw)
            out[i, c] = torch.maximum(out[i, c], g)
            out[i, k : k + 5, iy, ix] = torch.tensor([w, h, cx - ix, cy - iy, 1.0])
    return out


def centernet_focal_loss(
    logits: torch.Tensor, heatmap: torch.Tensor, alpha: float = 2.0, beta: float = 4.0
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.

    At centres (target 1): -(1 - p)^alpha log p, the focal loss of Lin et al. 2017, which
    silences easy, already-confident cells. Elsewhere: -(1 - y)^beta p^alpha log(1 - p), where
    the (1 - y)^beta factor forgives a positive guess next to a true centre (y near 1).
    logits and heatmap (B, K, Gh, Gw).
    """
    check_tensor(logits, "logits", ndim=4, floating=True)
    check_tensor(heatmap, "heatmap", shape=tuple(logits.shape), floating=True)
    p = logits.sigmoid()
    pos = heatmap == 1
    # logsigmoid(x) = log p and logsigmoid(-x) = log(1 - p), without log(0) for large |x|.
    pos_loss = ((1 - p) ** alpha * F.logsigmoid(logits))[pos].sum()
    neg_loss = ((1 - heatmap) ** beta * p**alpha * F.logsigmoid(-logits))[~pos].sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)


def centernet_loss(
    outputs: torch.Tensor,
    targets: torch.Tensor,
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The CenterNet objective: focal heatmap loss + ``size_weight`` * L1(size) +
    ``offset_weight`` * L1(offset), the box terms only at object centres (weights as the paper).

    Args:
        outputs: (B, K + 4, Gh, Gw) from :class:`CenterNetHead` (heatmap logits, size, offset).
        targets: (B, K + 5, Gh, Gw) from :func:`encode_centernet_targets`.

    Returns:
        the scalar loss and its parts ``{"heatmap", "size", "offset"}`` as floats.
    """
    check_tensor(outputs, "outputs", ndim=4, floating=True)
    check_tensor(targets, "targets", ndim=4, floating=True)
    k = outputs.shape[1] - 4
    if targets.shape != (outputs.shape[0], k + 5, *outputs.shape[2:]):
        raise ValueError(
            f"targets have shape {tuple(targets.shape)}, but outputs {tuple(outputs.shape)} "
            f"(K + 4 channels, K = {k}) need targets of shape "
            f"{(outputs.shape[0], k + 5, *outputs.shape[2:])} (K + 5 channels)"
        )
    heat = centernet_focal_loss(outputs[:, :k], targets[:, :k])
    centre = targets[:, k + 4] > 0  # (B, Gh, Gw)
    if bool(centre.any()):
        pred = outputs[:, k : k + 4].permute(0, 2, 3, 1)[centre]  # (n_objects, 4)
        want = targets[:, k : k + 4].permute(0, 2, 3, 1)[centre]  # (n_objects, 4)
        size = F.l1_loss(pred[:, :2], want[:, :2])
        offset = F.l1_loss(pred[:, 2:], want[:, 2:])
    else:  # no object in the batch: only the heatmap learns (keep the graph connected)
        size = offset = outputs[:, k:].sum() * 0.0
    loss = heat + size_weight * size + offset_weight * offset
    return loss, {"heatmap": heat.item(), "size": size.item(), "offset": offset.item()}


def centernet_loss_fn(size_weight: float = 0.1, offset_weight: float = 1.0):
    """The objective for ``train.fit``: batches are (inputs, targets (B, K + 5, Gh, Gw)); the
    inputs are images for :class:`CenterNet` or cached feature maps for a bare head."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        inputs, targets = batch
        return centernet_loss(model(inputs), targets, size_weight, offset_weight)

    return loss_fn


@torch.no_grad()
def decode_centernet(
    outputs: torch.Tensor,
    stride: int,
    top_k: int = 100,
    score_threshold: float = 0.05,
    nms_iou: float | None = None,
    image_size: tuple[int, int] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Head outputs (B, K + 4, Gh, Gw) -> per image ``{"boxes", "scores", "labels"}``.

    A detection is a local maximum of a class heatmap: a cell equal to the max of its 3x3
    neighbourhood (a max-pool replaces NMS, the paper's main simplification). The ``top_k``
    best peaks over all classes are kept if their score exceeds ``score_threshold``; their box
    is centred at (cell + offset) * stride with size (w, h) * stride. ``nms_iou`` optionally runs
    class-aware NMS after all; ``image_size`` (H, W) clips boxes to the image.
    Boxes are "xyxy" pixels, the format of ``metrics.mean_average_precision`` and torchmetrics.
    """
    check_tensor(outputs, "outputs", ndim=4, floating=True)
    check_positive_int(stride, "stride")
    check_positive_int(top_k, "top_k")
    B, c, gh, gw = outputs.shape
    k = c - 4
    if k < 1:
        raise ValueError(f"outputs have {c} channels; CenterNet outputs have K + 4 (K >= 1)")
    heat = outputs[:, :k].float().sigmoid()  # (B, K, Gh, Gw)
    peaks = heat == F.max_pool2d(heat, kernel_size=3, stride=1, padding=1)
    heat = heat * peaks
    scores, idx = heat.flatten(1).topk(min(top_k, k * gh * gw), dim=1)  # (B, k_top)
    labels, cell = idx // (gh * gw), idx % (gh * gw)  # (B, k_top)
    iy, ix = cell // gw, cell % gw
    regs = outputs[:, k:].float().flatten(2)  # (B, 4, Gh*Gw)
    regs = regs.gather(2, cell[:, None, :].expand(-1, 4, -1))  # (B, 4, k_top)
    w, h = regs[:, 0].clamp(min=0) * stride, regs[:, 1].clamp(min=0) * stride
    cx, cy = (ix + regs[:, 2]) * stride, (iy + regs[:, 3]) * stride
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)  # (B, k_top, 4)
    if image_size is not None:
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, image_size[1])
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, image_size[0])
    results = []
    for b in range(B):
        keep = scores[b] > score_threshold
        det = {"boxes": boxes[b][keep], "scores": scores[b][keep], "labels": labels[b][keep]}
        if nms_iou is not None:
            kept = batched_nms(det["boxes"], det["scores"], det["labels"], nms_iou)
            det = {name: v[kept] for name, v in det.items()}
        results.append(det)
    return results


class CenterNetHead(nn.Module):
    """Feature map (B, D, Gh, Gw) -> (B, K + 4, Gh, Gw): class heatmap logits, size, offset.

    Three small branches (3x3 conv, ReLU, 1x1 conv), as CenterNet's heads. The heatmap bias
    starts at -log((1 - 0.1) / 0.1), so every cell first predicts p = 0.1: with thousands of
    empty cells per object, a 0.5 start would flood the first steps with background loss
    (the prior initialisation of RetinaNet, Lin et al. 2017).
    """

    def __init__(self, embed_dim: int, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        for value, name in (
            (embed_dim, "embed_dim"),
            (num_classes, "num_classes"),
            (hidden, "hidden"),
        ):
            check_positive_int(value, name)
        self.num_classes = num_classes

        def branch(out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(embed_dim, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, out, 1)
            )

        self.heatmap, self.size, self.offset = branch(num_classes), branch(2), branch(2)
        nn.init.constant_(self.heatmap[-1].bias, -math.log((1 - 0.1) / 0.1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, Gh, Gw) -> (B, K + 4, Gh, Gw)."""
        check_tensor(features, "features", ndim=4, floating=True)
        return torch.cat([self.heatmap(features), self.size(features), self.offset(features)], 1)


class CenterNet(nn.Module):
    """A course ViT's patch tokens (:class:`~vfm_course.segmentation.DenseEncoder`) +
    :class:`CenterNetHead`. ``frozen`` trains the head only; ``img_size`` resizes the encoder.

    Shapes:
        forward: (B, C, H, W) -> (B, K + 4, H / P, W / P).
    """

    def __init__(
        self,
        encoder: VisionTransformer,
        num_classes: int,
        img_size: int | None = None,
        frozen: bool = True,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.backbone = DenseEncoder(encoder, img_size, frozen)
        self.head = CenterNetHead(self.backbone.embed_dim, num_classes, hidden)
        self.num_classes, self.stride = num_classes, self.backbone.patch_size
        self.grid_size = self.backbone.grid_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, K + 4, Gh, Gw)."""
        return self.head(self.backbone(images))

    def encode_targets(
        self,
        boxes: Sequence[torch.Tensor | np.ndarray],
        labels: Sequence[torch.Tensor | np.ndarray],
    ) -> torch.Tensor:
        """:func:`encode_centernet_targets` for this model's grid, stride and classes."""
        return encode_centernet_targets(
            boxes, labels, self.num_classes, self.grid_size, self.stride
        )

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        top_k: int = 100,
        score_threshold: float = 0.05,
        nms_iou: float | None = None,
        batch_size: int = 64,
    ) -> list[dict[str, torch.Tensor]]:
        """Per image ``{"boxes", "scores", "labels"}``; see :func:`decode_centernet`."""
        check_positive_int(batch_size, "batch_size")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            out = []
            for i in range(0, len(images), batch_size):
                raw = self(images[i : i + batch_size].to(device)).cpu()  # (B, K + 4, Gh, Gw)
                size = tuple(images.shape[-2:])
                out += decode_centernet(raw, self.stride, top_k, score_threshold, nms_iou, size)
        finally:
            self.train(was_training)
        return out
