"""Lesson 06 checkers pass the reference and fail known-wrong answers with the right hint."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import unfinished
from vfm_course.course.exercises.detection import (
    check_average_precision,
    check_box_iou,
    check_heatmap_peaks,
    check_nms,
)
from vfm_course.dense import box_iou, heatmap_peaks, nms
from vfm_course.eval import average_precision, detection_matches, mean_average_precision


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


def peaks_no_suppression(heat, k):
    scores, idx = heat.flatten(1).topk(k, dim=1)
    cells = heat.shape[2] * heat.shape[3]
    return scores, idx // cells, idx % cells // heat.shape[3], idx % heat.shape[3]


def peaks_bug(heat, k, bug):
    scores, labels, ys, xs = heatmap_peaks(heat, k)
    _, K, gh, gw = heat.shape
    idx = (labels * gh + ys) * gw + xs
    if bug == "labels":
        return scores, idx % K, ys, xs
    if bug == "swap":
        return scores, labels, xs, ys
    if bug == "rows_by_gh":
        cell = ys * gw + xs
        return scores, labels, cell // gh, cell % gh
    raise ValueError(bug)


def test_heatmap_peaks_checker(capsys) -> None:
    assert check_heatmap_peaks(heatmap_peaks)
    assert capsys.readouterr().out.startswith("✓")
    hints = {
        "labels": "class is index // \\(Gh \\* Gw\\)",
        "swap": "x and y are swapped",
        "rows_by_gh": "y = cell // Gw",
    }
    for bug, hint in hints.items():
        with pytest.raises(AssertionError, match=hint):
            check_heatmap_peaks(lambda h, k, bug=bug: peaks_bug(h, k, bug))


def ap_sklearn(scores, is_tp, n_gt):
    """Area under the raw step curve, the way scikit-learn's average_precision_score reads it."""
    order = scores.argsort(descending=True)
    tp = is_tp[order].double()
    precision = tp.cumsum(0) / torch.arange(1, len(tp) + 1)
    return (precision * tp).sum() / n_gt


def ap_no_envelope(scores, is_tp, n_gt):
    order = scores.argsort(descending=True)
    tp = is_tp[order].double()
    recall = tp.cumsum(0) / n_gt
    precision = tp.cumsum(0) / torch.arange(1, len(tp) + 1)
    levels = torch.linspace(0, 1, 101).double()
    idx = torch.searchsorted(recall, levels)
    ok = idx < len(recall)
    out = torch.zeros(101, dtype=torch.float64)
    out[ok] = precision[idx[ok]]
    return out.mean()


def ap_float64_levels(scores, is_tp, n_gt):
    """The right algorithm read at float64 levels, which sit a hair above torchmetrics' float32
    ones where a recall lands exactly on a level."""
    order = scores.argsort(descending=True)
    tp = is_tp[order].double()
    recall = tp.cumsum(0) / n_gt
    precision = tp.cumsum(0) / torch.arange(1, len(tp) + 1)
    precision = precision.flip(0).cummax(0).values.flip(0)
    levels = torch.linspace(0, 1, 101, dtype=torch.float64)
    idx = torch.searchsorted(recall, levels)
    ok = idx < len(recall)
    out = torch.zeros(101, dtype=torch.float64)
    out[ok] = precision[idx[ok]]
    return out.mean()


def test_average_precision_checker(capsys) -> None:
    assert check_average_precision(average_precision)
    assert check_average_precision(lambda s, t, n: float(average_precision(s, t, n)))
    assert capsys.readouterr().out.startswith("✓")
    wrong = {
        "rank the detections by score": lambda s, t, n: average_precision(
            torch.linspace(1, 0, len(s)), t, n
        ),
        "not made non-increasing": ap_no_envelope,
        "divides by the number of true boxes": lambda s, t, n: average_precision(
            s, t, max(1, int(t.sum()))
        ),
        "area under the raw step curve": ap_sklearn,
        "read at COCO_RECALL_THRESHOLDS": ap_float64_levels,
        "return one number": lambda s, t, n: average_precision(s, t, n).reshape(1),
    }
    for hint, fn in wrong.items():
        with pytest.raises(AssertionError, match=hint):
            check_average_precision(fn)


def test_package_ap_equals_the_mean_average_precision_it_feeds():
    g = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(6):
        xy = torch.rand(4, 2, generator=g) * 40
        gt = torch.cat([xy, xy + 8 + 8 * torch.rand(4, 2, generator=g)], 1)
        det = gt + torch.randn(4, 4, generator=g)
        preds.append(
            {
                "boxes": det,
                "scores": torch.rand(4, generator=g),
                "labels": torch.zeros(4, dtype=torch.long),
            }
        )
        targets.append({"boxes": gt, "labels": torch.zeros(4, dtype=torch.long)})
    scores, hits, n_gt = detection_matches(preds, targets, 0, iou_thresholds=[0.5])
    assert hits.shape == (1, 24) and n_gt == 24
    ap = average_precision(scores, hits[0], n_gt)
    assert abs(ap.item() - mean_average_precision(preds, targets)["map_50"].item()) < 1e-6
    with pytest.raises(ValueError, match="n_gt"):
        average_precision(scores, hits[0], 0)
    with pytest.raises(ValueError, match="differ in length"):
        average_precision(scores, hits[0][:3], n_gt)


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
    pytest.param(
        check_heatmap_peaks,
        (peaks_no_suppression,),
        "not the k highest \\*peaks\\*",
        id="heatmap_peaks-10",
    ),
    pytest.param(
        check_heatmap_peaks,
        (lambda h, k: heatmap_peaks(h, k)[:3],),
        "return four tensors",
        id="heatmap_peaks-11",
    ),
    pytest.param(check_heatmap_peaks, (unfinished,), "not finished", id="heatmap_peaks-12"),
    pytest.param(check_average_precision, (unfinished,), "not finished", id="average_precision-13"),
]


@pytest.mark.parametrize("checker, answer, hint", WRONG_ANSWERS)
def test_checker_names_the_mistake(checker, answer, hint) -> None:
    with pytest.raises(AssertionError, match=hint):
        checker(*answer)
