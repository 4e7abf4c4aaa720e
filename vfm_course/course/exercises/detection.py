"""Lesson 06's exercises: IoU, NMS, CenterNet's focal loss and peak decoding, average precision."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...dense.boxes import box_iou, nms
from ...dense.centernet import centernet_focal_loss, heatmap_peaks
from ...eval.dense_metrics import COCO_RECALL_THRESHOLDS, average_precision
from .centernet import check_centernet_focal_loss, check_heatmap_peaks
from .checking import call_learner, close, diagnose, expect_tensor, fail, passed
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    boxes_expr,
    clustered_expr,
    rand_expr,
    randn_expr,
)

# --- lesson 06: detection ----------------------------------------------------------------------


def _random_boxes(g: torch.Generator, n: int, size: float = 64.0) -> torch.Tensor:
    """(n, 4) valid "xyxy" boxes inside a size x size image."""
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * size * 0.3], dim=1)


def check_box_iou(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> bool:
    """Check ``fn(boxes1, boxes2)``: (N, 4), (M, 4) "xyxy" -> (N, M) pairwise IoU."""
    ex = "check_box_iou"
    g = torch.Generator().manual_seed(602)
    for n, m in [(5, 4), (1, 6), (8, 8)]:
        a, b = _random_boxes(g, n), _random_boxes(g, m)
        a[0] = b[0]  # one identical pair: IoU 1
        if n > 1:
            a[1] = torch.tensor([100.0, 100, 110, 110])  # far away from everything: IoU 0
        out = expect_tensor(
            ex,
            call_learner(ex, fn, a, b),
            (n, m),
            "one IoU per pair: broadcast boxes1[:, None] against boxes2[None, :] -> (N, M)",
        )
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        lt = torch.max(a[:, None, :2], b[None, :, :2])
        rb = torch.min(a[:, None, 2:], b[None, :, 2:])
        raw = (rb - lt).prod(-1)  # no clamp: negative "overlaps" for disjoint boxes
        inter = (rb - lt).clamp(min=0).prod(-1)
        union = area_a[:, None] + area_b[None, :] - inter
        wrong = {
            "disjoint boxes got a non-zero overlap: clamp the intersection's width and height "
            "at 0 before multiplying, (rb - lt).clamp(min=0)": raw
            / (area_a[:, None] + area_b[None, :] - raw),
            "the union counts the intersection twice: union = area1 + area2 - intersection": inter
            / (area_a[:, None] + area_b[None, :]),
            "that is intersection / union's complement; IoU = intersection / union": inter
            / (area_a[:, None] + area_b[None, :] - 2 * inter).clamp(min=1e-9),
            "the intersection's corners: top-left is the max of the two top-lefts, "
            "bottom-right the min of the two bottom-rights": (
                (
                    torch.max(a[:, None, 2:], b[None, :, 2:])
                    - torch.min(a[:, None, :2], b[None, :, :2])
                ).prod(-1)
                / union
            ),
        }
        diagnose(ex, out, box_iou(a, b), wrong, f"for {n} boxes against {m}")
    return passed("box_iou matches the reference (identical, overlapping and disjoint boxes)")


def check_nms(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> bool:
    """Check ``fn(boxes, scores, iou_threshold)`` -> int64 indices kept, by decreasing score."""
    ex = "check_nms"
    g = torch.Generator().manual_seed(603)
    for n, thr in [(30, 0.5), (60, 0.3), (20, 0.7)]:
        centres = torch.rand(4, 2, generator=g) * 40  # 4 clusters of overlapping boxes
        pick = torch.randint(0, 4, (n,), generator=g)
        xy = centres[pick] + torch.randn(n, 2, generator=g) * 3
        boxes = torch.cat([xy, xy + 10 + torch.rand(n, 2, generator=g) * 4], dim=1)
        scores = torch.rand(n, generator=g)
        out = call_learner(ex, fn, boxes, scores, thr)
        if isinstance(out, list):
            out = torch.tensor(out, dtype=torch.int64)
        if not isinstance(out, torch.Tensor) or out.ndim != 1:
            fail(ex, "return a 1-D tensor of the kept boxes' indices", "e.g. torch.tensor(keep)")
        if out.is_floating_point() or out.dtype == torch.bool:
            fail(
                ex,
                f"your function returned a {out.dtype} tensor; return the kept *indices* (int64)",
                "collect the index of each kept box, not a mask or the boxes themselves",
            )
        expected = nms(boxes, scores, thr)
        if torch.equal(out.long(), expected):
            continue
        case = f"for {n} boxes in 4 clusters, iou_threshold={thr}"
        if sorted(out.tolist()) == sorted(expected.tolist()):
            fail(ex, f"right boxes, wrong order {case}", "return them by decreasing score")
        order = scores.argsort(descending=True)
        ious = box_iou(boxes, boxes)
        # known-wrong variants: compare the kept sets
        ascending = _greedy(order.flip(0), ious, thr, above=True)
        inverted = _greedy(order, ious, thr, above=False)
        no_update = [
            int(i)
            for i in order
            if not any(ious[i, j] > thr for j in order if scores[j] > scores[i])
        ]
        hints = {
            "start from the *highest* score: sort with descending=True": ascending,
            "suppress boxes whose IoU is *above* the threshold (they overlap the kept box), "
            "keep the rest": inverted,
            "a box is only suppressed by boxes you *kept*: a box already suppressed must not "
            "suppress others": no_update,
        }
        for hint, wrong in hints.items():
            if sorted(out.tolist()) == sorted(wrong):
                fail(ex, f"wrong boxes kept {case}", hint)
        fail(
            ex,
            f"kept {sorted(out.tolist())} {case}, expected {sorted(expected.tolist())}",
            "loop over boxes by decreasing score; keep one if no kept box overlaps it by IoU > "
            "iou_threshold",
        )
    return passed("nms keeps the same boxes, in the same order, as the reference")


def _greedy(order: torch.Tensor, ious: torch.Tensor, thr: float, above: bool) -> list[int]:
    """Greedy NMS over ``order``, suppressing IoU above (right) or below (wrong) ``thr``."""
    keep: list[int] = []
    for i in order.tolist():
        if all((ious[i, j].item() <= thr) if above else (ious[i, j].item() >= thr) for j in keep):
            keep.append(i)
    return keep


# --- the registry entries ---------------------------------------------------------------------


def _ap_variant(scores: torch.Tensor, is_tp: torch.Tensor, n_gt: int, bug: str) -> float:
    """Average precision with one known mistake."""
    order = torch.arange(len(scores)) if bug == "unsorted" else scores.argsort(descending=True)
    tp = is_tp[order].double()
    tp_sum, fp_sum = tp.cumsum(0), (1 - tp).cumsum(0)
    recall = tp_sum / (tp_sum[-1] if bug == "recall_of_found" else n_gt)
    precision = tp_sum / (tp_sum + fp_sum)
    if bug == "area":  # the un-interpolated step area, sum of precision x recall increments
        steps = torch.diff(recall, prepend=torch.zeros(1))
        return float((precision * steps).sum())
    if bug != "no_envelope":
        precision = precision.flip(0).cummax(0).values.flip(0)
    levels = COCO_RECALL_THRESHOLDS  # float32 values, as torchmetrics stores them
    if bug == "voc11":
        levels = torch.linspace(0, 1, 11).double()
    elif bug == "float64_levels":
        levels = torch.linspace(0, 1, 101, dtype=torch.float64)
    idx = torch.searchsorted(recall.contiguous(), levels, side="left")
    reached = idx < len(recall)
    sampled = torch.zeros(len(levels), dtype=torch.float64)
    sampled[reached] = precision[idx[reached]]
    return float(sampled.mean())


def check_average_precision(fn: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]) -> bool:
    """Check ``fn(scores, is_tp, n_gt)`` -> COCO's 101-point interpolated AP (a scalar)."""
    ex = "check_average_precision"
    g = torch.Generator().manual_seed(604)
    cases = [(12, 8), (30, 20), (9, 14), (25, 6)]
    for D, n_gt in cases:
        scores = torch.rand(D, generator=g)
        # Good detections score higher, as in a real detector, but not perfectly.
        is_tp = torch.rand(D, generator=g) < 0.2 + 0.6 * scores
        is_tp[is_tp.cumsum(0) > n_gt] = False  # never more hits than true boxes
        out = call_learner(ex, fn, scores, is_tp, n_gt)
        if isinstance(out, float):
            out = torch.tensor(out, dtype=torch.float64)
        out = expect_tensor(ex, out, (), "return one number, the AP of this class: a scalar")
        expected = average_precision(scores, is_tp, n_gt)
        case = f"for {D} detections ({int(is_tp.sum())} true positives) and {n_gt} true boxes"
        wrong = {
            "rank the detections by score first (best first): precision and recall are read "
            "going down the ranking": "unsorted",
            "the precision is not made non-increasing: each point takes the best precision "
            "at any *higher* recall (a running max from the right) before it is read": (
                "no_envelope"
            ),
            "recall divides by the number of true boxes n_gt, not by the true positives "
            "found: missed objects must cost recall": "recall_of_found",
            "that is the 11-point rule of Pascal VOC 2007: COCO reads the curve at 101 recall "
            "levels 0, 0.01, ..., 1": "voc11",
            "that is the area under the raw step curve (scikit-learn's average_precision_score):"
            " COCO reads the non-increasing envelope at 101 recall levels and averages": "area",
            "off at a recall that lands exactly on a level (e.g. 7 / 20 = 0.35): read at "
            "COCO_RECALL_THRESHOLDS, torchmetrics' levels, whose float32 0.35 is a hair below "
            "the float64 0.35 of torch.linspace(0, 1, 101, dtype=torch.float64)": "float64_levels",
        }
        variants = {
            hint: torch.tensor(_ap_variant(scores, is_tp, n_gt, bug), dtype=torch.float64)
            for hint, bug in wrong.items()
        }
        variants = {h: v for h, v in variants.items() if not close(v, expected)}
        diagnose(ex, out, expected, variants, case)
    return passed(f"AP matches the COCO reference on {len(cases)} ranked lists")


# Heatmap targets for the hidden cases: uniform values, those above 0.9 turned into centres (1).
CENTRES_EXPR = (
    "(lambda h: _torch.where(h > 0.9, _torch.ones_like(h), 0.9 * h))"
    "(_torch.rand({}, {}, {}, {}, generator=_g))"
)

NOTEBOOK = "06_detection_segmentation"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="box_iou",
        notebook=NOTEBOOK,
        functions=("my_box_iou",),
        cells=("ex1-box-iou",),
        checker=check_box_iou,
        references=(box_iou,),
        hidden=(
            HiddenCase("5 boxes against 4", f"my_box_iou({boxes_expr(5)}, {boxes_expr(4)})"),
            HiddenCase("3 boxes against 7", f"my_box_iou({boxes_expr(3)}, {boxes_expr(7)})"),
        ),
        seed=7601,
        forbidden=("generalized_box_iou", "box_area", "match_cost"),
    ),
    Exercise(
        name="nms",
        notebook=NOTEBOOK,
        functions=("my_nms",),
        cells=("ex2-nms",),
        checker=check_nms,
        references=(nms,),
        hidden=(
            HiddenCase("25 boxes, IoU 0.5", f"my_nms({clustered_expr(25)}, {rand_expr(25)}, 0.5)"),
            HiddenCase("40 boxes, IoU 0.3", f"my_nms({clustered_expr(40)}, {rand_expr(40)}, 0.3)"),
        ),
        seed=7602,
        forbidden=("batched_nms",),
    ),
    Exercise(
        name="centernet_focal_loss",
        notebook=NOTEBOOK,
        functions=("my_focal_loss",),
        cells=("ex-focal-loss",),
        checker=check_centernet_focal_loss,
        references=(centernet_focal_loss,),
        hidden=(
            HiddenCase(
                "2 images, 3 classes, 5x5 grid",
                f"my_focal_loss(2 * {randn_expr(2, 3, 5, 5)}, {CENTRES_EXPR.format(2, 3, 5, 5)})",
            ),
            HiddenCase(
                "1 image, 4 classes, 6x4 grid",
                f"my_focal_loss(3 * {randn_expr(1, 4, 6, 4)}, {CENTRES_EXPR.format(1, 4, 6, 4)})",
            ),
        ),
        seed=7605,
        forbidden=("centernet_loss", "centernet_loss_fn", "sigmoid_focal_loss"),
    ),
    Exercise(
        name="heatmap_peaks",
        notebook=NOTEBOOK,
        functions=("my_heatmap_peaks",),
        cells=("ex3-heatmap-peaks",),
        checker=check_heatmap_peaks,
        references=(heatmap_peaks,),
        hidden=(
            HiddenCase(
                "2 images, 3 classes, 5x6 grid", f"my_heatmap_peaks({rand_expr(2, 3, 5, 6)}, 5)"
            ),
            HiddenCase(
                "1 image, 4 classes, 8x8 grid", f"my_heatmap_peaks({rand_expr(1, 4, 8, 8)}, 10)"
            ),
        ),
        seed=7603,
        forbidden=("decode_centernet",),
    ),
    Exercise(
        name="average_precision",
        notebook=NOTEBOOK,
        functions=("my_average_precision",),
        cells=("ex4-average-precision",),
        checker=check_average_precision,
        references=(average_precision,),
        hidden=(
            HiddenCase(
                "15 detections, 20 true boxes",
                f"my_average_precision({rand_expr(15)}, {rand_expr(15)} < 0.6, 20)",
            ),
            HiddenCase(
                "40 detections, 40 true boxes",
                f"my_average_precision({rand_expr(40)}, {rand_expr(40)} < 0.5, 40)",
            ),
        ),
        seed=7604,
        forbidden=("mean_average_precision", "detection_matches", "average_precision_score"),
    ),
)
