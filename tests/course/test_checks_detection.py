"""Lesson 06 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.detection import check_box_convert, check_box_iou, check_nms
from vfm_course.dense import box_convert, box_iou, nms


def _corners(a, b):
    """Intersection corners and areas of (N, 4) and (M, 4) "xyxy" boxes."""
    top_left = torch.max(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])  # (N, M, 2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (M,)
    return top_left, bottom_right, area_a[:, None], area_b[None, :]


def iou_no_clamp(a, b):
    top_left, bottom_right, area_a, area_b = _corners(a, b)
    inter = (bottom_right - top_left).prod(-1)  # negative "overlaps" for disjoint boxes
    return inter / (area_a + area_b - inter)


def iou_union_twice(a, b):
    top_left, bottom_right, area_a, area_b = _corners(a, b)
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter / (area_a + area_b)


def test_box_iou_checker(capsys) -> None:
    assert check_box_iou(box_iou)
    assert capsys.readouterr().out.startswith("✓")


def nms_ascending(boxes, scores, thr):
    return nms(boxes, -scores, thr)  # starts from the lowest score


def nms_inverted(boxes, scores, thr):
    ious, keep = box_iou(boxes, boxes), []
    for i in scores.argsort(descending=True).tolist():
        if all(ious[i, j] >= thr for j in keep):  # keeps the overlapping boxes instead
            keep.append(i)
    return torch.tensor(keep)


def nms_suppressed_suppress(boxes, scores, thr):
    ious, order = box_iou(boxes, boxes), scores.argsort(descending=True).tolist()
    keep = [i for i in order if not any(ious[i, j] > thr and scores[j] > scores[i] for j in order)]
    return torch.tensor(keep)


def test_nms_checker(capsys) -> None:
    assert check_nms(nms)
    assert check_nms(lambda b, s, t: nms(b, s, t).tolist())  # a list of indices is fine too
    assert capsys.readouterr().out.startswith("✓")


def convert_full_width(boxes, in_fmt, out_fmt):
    if in_fmt == "cxcywh":  # x1 = cx - w instead of cx - w / 2
        cx, cy, w, h = boxes.unbind(-1)
        boxes, in_fmt = torch.stack([cx - w, cy - h, cx + w, cy + h], -1), "xyxy"
    return box_convert(boxes, in_fmt, out_fmt)


def convert_keeps_corner(boxes, in_fmt, out_fmt):
    if in_fmt == "xyxy" and out_fmt == "xywh":
        return boxes.clone()  # forgot to turn the far corner into a width and height
    return box_convert(boxes, in_fmt, out_fmt)


def test_box_convert_checker(capsys) -> None:
    assert check_box_convert(box_convert)
    assert capsys.readouterr().out.startswith("✓")


# Each checker rejects a known-wrong (or unfinished) answer with the hint that names the mistake.
WRONG_ANSWERS = [
    pytest.param(check_box_iou, (iou_no_clamp,), "clamp the intersection", id="box_iou-0"),
    pytest.param(
        check_box_iou, (iou_union_twice,), "counts the intersection twice", id="box_iou-1"
    ),
    pytest.param(
        check_box_iou,
        (lambda a, b: box_iou(a, b).diagonal(),),
        r"shape \(4,\), expected \(5, 4\)",
        id="box_iou-2",
    ),
    pytest.param(check_box_iou, (unfinished,), "not finished", id="box_iou-3"),
    pytest.param(
        check_nms, (lambda b, s, t: nms(b, s, t).sort().values,), "wrong order", id="nms-4"
    ),
    pytest.param(check_nms, (nms_ascending,), "start from the \\*highest\\* score", id="nms-5"),
    pytest.param(check_nms, (nms_inverted,), "IoU is \\*above\\* the threshold", id="nms-6"),
    pytest.param(
        check_nms, (nms_suppressed_suppress,), "only suppressed by boxes you \\*kept\\*", id="nms-7"
    ),
    pytest.param(
        check_nms,
        (lambda b, s, t: torch.zeros(len(b), dtype=torch.bool),),
        "kept \\*indices\\*",
        id="nms-8",
    ),
    pytest.param(check_nms, (unfinished,), "not finished", id="nms-9"),
    pytest.param(check_box_convert, (convert_full_width,), "half the width", id="box_convert-10"),
    pytest.param(
        check_box_convert,
        (convert_keeps_corner,),
        "ends with the width and height",
        id="box_convert-11",
    ),
    pytest.param(
        check_box_convert,
        (lambda b, i, o: box_convert(b, i, o) + 1,),
        "converting 'xyxy' -> 'xyxy'",
        id="box_convert-12",
    ),
    pytest.param(check_box_convert, (unfinished,), "not finished", id="box_convert-13"),
]


@pytest.mark.parametrize("checker, answer, hint", WRONG_ANSWERS)
def test_checker_names_the_mistake(checker, answer, hint) -> None:
    with pytest.raises(AssertionError, match=hint):
        checker(*answer)
