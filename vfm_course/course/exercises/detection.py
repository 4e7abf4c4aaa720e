"""Lesson 06's exercises: box formats, IoU, NMS."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...dense.boxes import box_convert, box_iou, nms
from .checking import call_learner, diagnose, expect_tensor, fail, passed
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    boxes_expr,
    clustered_expr,
    rand_expr,
    sized_expr,
)

# --- lesson 06: detection ----------------------------------------------------------------------


def _random_boxes(g: torch.Generator, n: int, size: float = 64.0) -> torch.Tensor:
    """(n, 4) valid "xyxy" boxes inside a size x size image."""
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    return torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=g) * size * 0.3], dim=1)


def check_box_convert(fn: Callable[[torch.Tensor, str, str], torch.Tensor]) -> bool:
    """Check ``fn(boxes, in_fmt, out_fmt)`` for every pair of "xyxy", "xywh", "cxcywh"."""
    ex = "check_box_convert"
    g = torch.Generator().manual_seed(601)
    formats = ("xyxy", "xywh", "cxcywh")
    xyxy = _random_boxes(g, 7)
    for in_fmt in formats:
        boxes = box_convert(xyxy, "xyxy", in_fmt)
        for out_fmt in formats:
            out = expect_tensor(
                ex,
                call_learner(ex, fn, boxes, in_fmt, out_fmt),
                (7, 4),
                "return one row of 4 numbers per box: (N, 4)",
            )
            x1, y1, x2, y2 = xyxy.unbind(-1)
            w, h = x2 - x1, y2 - y1
            wrong = {
                "the centre is the midpoint (x1 + x2) / 2, not x1 + w": torch.stack(
                    [x1 + w, y1 + h, w, h], -1
                ),
                "from (cx, cy, w, h) the corner is cx - w / 2: half the width, not all of it": (
                    torch.stack([x1 - w / 2, y1 - h / 2, x2 + w / 2, y2 + h / 2], -1)
                ),
                "(x, y, w, h) ends with the width and height, x2 - x1 and y2 - y1, not the "
                "far corner": xyxy,
                "x and y are swapped: boxes are (x, ...) first, then y": box_convert(
                    xyxy[:, [1, 0, 3, 2]], "xyxy", out_fmt
                ),
            }
            wrong = {k: v for k, v in wrong.items() if v.shape == out.shape}
            case = f"converting {in_fmt!r} -> {out_fmt!r}"
            diagnose(ex, out, box_convert(boxes, in_fmt, out_fmt), wrong, case)
    return passed("box_convert matches the reference for all 9 pairs of formats")


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
        name="box_convert",
        notebook=NOTEBOOK,
        functions=("my_box_convert",),
        cells=("ex3-box-convert",),
        checker=check_box_convert,
        references=(box_convert,),
        hidden=(
            HiddenCase("cxcywh to xyxy", f"my_box_convert({sized_expr(6)}, 'cxcywh', 'xyxy')"),
            HiddenCase("xyxy to xywh", f"my_box_convert({boxes_expr(6)}, 'xyxy', 'xywh')"),
            HiddenCase("xywh to cxcywh", f"my_box_convert({sized_expr(5)}, 'xywh', 'cxcywh')"),
        ),
        seed=7603,
        forbidden=("box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh"),
    ),
)
