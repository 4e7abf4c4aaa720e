"""DETR's set matching (Carion et al. 2020): each ground-truth object is assigned the
prediction of lowest matching cost by the Hungarian algorithm, so every object is predicted
exactly once and duplicates are penalised. ``brute_force_match`` checks it on small inputs.
"""

from __future__ import annotations

import itertools
import math

import torch

from ..core.validate import check_tensor
from .boxes import box_convert, check_boxes, generalized_box_iou

# DETR's matching weights (Carion et al. 2020, section 4 and its HungarianMatcher).
COST_CLASS, COST_BBOX, COST_GIOU = 1.0, 5.0, 2.0


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
