"""mIoU and COCO mAP from scratch, equal to torchmetrics on random predictions and edge cases."""

import warnings

import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.detection import MeanAveragePrecision

from vfm_course.eval import (
    iou_from_confusion,
    jaccard_index,
    mean_average_precision,
    segmentation_confusion_matrix,
)

# --- IoU / mIoU vs MulticlassJaccardIndex ---------------------------------------------------------


def tm_jaccard(preds, target, k, average, ignore_index=None):
    return MulticlassJaccardIndex(k, average=average, ignore_index=ignore_index)(preds, target)


@pytest.mark.parametrize("average", [None, "macro"])
@pytest.mark.parametrize("ignore_index", [None, 255, 0, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_jaccard_matches_torchmetrics(average, ignore_index, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    k = 5
    target = torch.randint(0, k, (3, 16, 16), generator=g)
    preds = torch.where(
        torch.rand(3, 16, 16, generator=g) < 0.6,
        target,
        torch.randint(0, k, (3, 16, 16), generator=g),
    )
    if ignore_index == 255:
        target[0, :4] = 255
    got = jaccard_index(preds, target, k, average, ignore_index)
    torch.testing.assert_close(got, tm_jaccard(preds, target, k, average, ignore_index))


@pytest.mark.parametrize("average", [None, "macro"])
def test_absent_classes_follow_torchmetrics(average) -> None:
    # class 3 is in neither preds nor target: its IoU is 0 (0 / 0 -> zero_division=0), and the
    # mean leaves it out. Class 2 is only predicted: IoU 0, and it counts in the mean.
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    preds = torch.tensor([[0, 2, 1, 1], [0, 1, 0, 1]])
    got = jaccard_index(preds, target, 4, average)
    torch.testing.assert_close(got, tm_jaccard(preds, target, 4, average))
    if average is None:
        assert got[3] == 0 and got[2] == 0
    else:
        torch.testing.assert_close(got, got.new_tensor((2 / 4 + 4 / 5 + 0) / 3))


def test_logits_perfect_and_confusion() -> None:
    target = torch.randint(0, 3, (2, 5, 5), generator=torch.Generator().manual_seed(3))
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()  # (B, K, H, W)
    assert jaccard_index(logits, target, 3) == 1
    cm = segmentation_confusion_matrix(target, target, 3)
    assert cm.sum() == 50 and torch.equal(cm, cm.diag().diag())
    torch.testing.assert_close(iou_from_confusion(cm, None), torch.ones(3))


def test_segmentation_metric_bad_input() -> None:
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="same shape"):
        jaccard_index(torch.zeros(2, 4, 5, dtype=torch.long), t, 3)
    with pytest.raises(ValueError, match="target contain class id 7, outside \\[0, 3\\)"):
        jaccard_index(t, torch.full((2, 4, 4), 7), 3)
    with pytest.raises(ValueError, match="no pixels"):
        jaccard_index(t[:0], t[:0], 3)
    with pytest.raises(ValueError, match="logits .* K = 4"):
        jaccard_index(torch.rand(2, 4, 4, 4), t, 3)
    with pytest.raises(ValueError, match="average must be"):
        jaccard_index(t, t, 3, average="micro")


# --- COCO mAP vs MeanAveragePrecision -------------------------------------------------------------


def tm_map(preds, targets, class_metrics=False):
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=class_metrics)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "more than 100 detections" etc.
        metric.update(preds, targets)
        return metric.compute()


def assert_same_map(preds, targets, class_metrics=True) -> None:
    got = mean_average_precision(preds, targets)
    want = tm_map(preds, targets, class_metrics)
    for key in ("map", "map_50", "map_75"):
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0, msg=key)
    if class_metrics and got["classes"].numel():
        assert torch.equal(got["classes"], want["classes"].reshape(-1).to(torch.int32))
        torch.testing.assert_close(
            got["map_per_class"], want["map_per_class"].reshape(-1), atol=1e-6, rtol=0
        )


def boxes(n, g, size=64.0, spread=0.8, scale=0.3):
    xy = torch.rand(n, 2, generator=g) * size * spread
    return torch.cat([xy, xy + 2 + torch.rand(n, 2, generator=g) * size * scale], 1)


def jitter(b, g, amount=3.0):
    """Noisy copies of boxes that stay valid (x2 >= x1)."""
    out = b + torch.randn(b.shape, generator=g) * amount
    return torch.cat([out[:, :2], torch.maximum(out[:, 2:], out[:, :2] + 0.5)], 1)


def random_detection_set(n_images, k, seed, max_gt=6, max_extra=8):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_images):
        n_gt = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        gt = boxes(n_gt, g)
        gl = torch.randint(0, k, (n_gt,), generator=g)
        # detections: noisy copies of some ground truth (sometimes the wrong class) + clutter
        found = torch.rand(n_gt, generator=g) < 0.8
        det = jitter(gt[found], g)
        dl = torch.where(
            torch.rand(len(det), generator=g) < 0.85,
            gl[found],
            torch.randint(0, k, (len(det),), generator=g),
        )
        n_extra = int(torch.randint(0, max_extra + 1, (1,), generator=g))
        det = torch.cat([det, boxes(n_extra, g)])
        dl = torch.cat([dl, torch.randint(0, k, (n_extra,), generator=g)])
        preds.append({"boxes": det, "scores": torch.rand(len(det), generator=g), "labels": dl})
        targets.append({"boxes": gt, "labels": gl})
    return preds, targets


@pytest.mark.parametrize("seed", range(6))
def test_map_matches_torchmetrics_on_random_detections(seed) -> None:
    preds, targets = random_detection_set(n_images=8, k=4, seed=seed)
    assert_same_map(preds, targets)


def test_map_perfect_and_empty_predictions() -> None:
    preds, targets = random_detection_set(5, 3, seed=11)
    perfect = [
        {"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
        for t in targets
    ]
    assert_same_map(perfect, targets)
    assert mean_average_precision(perfect, targets)["map"] == 1
    nothing = [
        {
            "boxes": torch.zeros(0, 4),
            "scores": torch.zeros(0),
            "labels": torch.zeros(0, dtype=torch.long),
        }
    ] * 5
    assert_same_map(nothing, targets)
    assert mean_average_precision(nothing, targets)["map"] == 0


def test_map_images_and_classes_without_ground_truth() -> None:
    preds, targets = random_detection_set(6, 4, seed=12)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    targets[1], targets[4] = dict(empty), dict(empty)  # images with detections, no ground truth
    preds[2]["labels"][:] = 7  # class 7 is only ever predicted: out of the mean (-1 per class)
    assert_same_map(preds, targets)
    got = mean_average_precision(preds, targets)
    assert got["map_per_class"][got["classes"] == 7].item() == -1


def test_map_no_ground_truth_at_all_is_minus_one() -> None:
    preds, _ = random_detection_set(3, 2, seed=13)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 3
    got = mean_average_precision(preds, empty)
    want = tm_map(preds, empty)
    assert got["map"] == want["map"] == -1 and got["map_50"] == want["map_50"] == -1


@pytest.mark.parametrize("seed", range(3))
def test_map_crowded_boxes_and_tied_scores(seed) -> None:
    g = torch.Generator().manual_seed(100 + seed)
    preds, targets = [], []
    for _ in range(4):
        centre = torch.rand(2, generator=g) * 30
        gt = torch.cat(
            [
                centre + torch.rand(10, 2, generator=g) * 4,
                centre + 12 + torch.rand(10, 2, generator=g) * 4,
            ],
            1,
        )
        det = torch.cat([jitter(gt, g, 1.5), jitter(gt, g, 1.5)])  # two guesses per box
        scores = (torch.rand(len(det), generator=g) * 3).round() / 3  # 4 score levels: many ties
        preds.append(
            {"boxes": det, "scores": scores, "labels": torch.zeros(len(det), dtype=torch.long)}
        )
        targets.append({"boxes": gt, "labels": torch.zeros(10, dtype=torch.long)})
    assert_same_map(preds, targets)


def test_map_integer_boxes_with_exact_threshold_ious() -> None:
    # IoU exactly 0.5 and 0.75 (integer corners): ">=" matches, as pycocotools
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    det = torch.tensor([[0.0, 0, 10, 5], [20, 0, 30, 7.5], [0, 0, 10, 10]])
    preds = [
        {
            "boxes": det,
            "scores": torch.tensor([0.9, 0.8, 0.3]),
            "labels": torch.zeros(3, dtype=torch.long),
        }
    ]
    targets = [{"boxes": gt, "labels": torch.zeros(2, dtype=torch.long)}]
    assert_same_map(preds, targets)


def test_map_keeps_at_most_100_detections_per_image_and_class() -> None:
    preds, targets = random_detection_set(3, 2, seed=14, max_gt=10)
    g = torch.Generator().manual_seed(15)
    extra = boxes(130, g)
    preds[0] = {
        "boxes": torch.cat([preds[0]["boxes"], extra]),
        "scores": torch.cat([preds[0]["scores"], torch.rand(130, generator=g)]),
        "labels": torch.cat([preds[0]["labels"], torch.zeros(130, dtype=torch.long)]),
    }
    assert_same_map(preds, targets)


def test_map_bad_input() -> None:
    preds, targets = random_detection_set(2, 2, seed=15)
    with pytest.raises(ValueError, match="predictions for 2 images but targets for 1"):
        mean_average_precision(preds, targets[:1])
    with pytest.raises(ValueError, match="empty"):
        mean_average_precision([], [])
    bad = [dict(p) for p in preds]
    bad[1]["boxes"] = bad[1]["boxes"][:, [2, 3, 0, 1]]
    if len(bad[1]["boxes"]):
        with pytest.raises(ValueError, match=r"preds\[1\]\['boxes'\]\[0\].*x2 < x1"):
            mean_average_precision(bad, targets)
    bad = [dict(t) for t in targets]
    bad[0]["labels"] = torch.zeros(len(bad[0]["boxes"]) + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"targets\[0\] has \d+ boxes but \d+ labels"):
        mean_average_precision(preds, bad)
    with pytest.raises(ValueError, match="keys boxes, scores, labels"):
        mean_average_precision([{"boxes": torch.zeros(0, 4)}] * 2, targets)


def test_map_rejects_non_finite_scores() -> None:
    # pycocotools ranks a NaN score anywhere; a silent number would hide a model's bug.
    target = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    for bad in (float("nan"), float("inf")):
        pred = [
            {
                "boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
                "scores": torch.tensor([bad]),
                "labels": torch.tensor([0]),
            }
        ]
        with pytest.raises(ValueError, match="NaN or inf"):
            mean_average_precision(pred, target)
