"""Box ops, NMS and matching against torchvision / brute force; the CenterNet head end to end."""

import itertools

import pytest
import torch
import torchvision.ops as tv

from vfm_course.data import generate_scenes
from vfm_course.dense import (
    CenterNet,
    CenterNetHead,
    batched_nms,
    box_area,
    box_convert,
    box_iou,
    brute_force_match,
    centernet_focal_loss,
    centernet_loss,
    decode_centernet,
    encode_centernet_targets,
    gaussian_radius,
    generalized_box_iou,
    hungarian_match,
    match_cost,
    nms,
)
from vfm_course.models import VisionTransformer, vit_config

FORMATS = ("xyxy", "xywh", "cxcywh")


def random_boxes(n: int, seed: int = 0, size: float = 64.0, integer: bool = False) -> torch.Tensor:
    """(n, 4) valid xyxy boxes inside a size x size image (integer corners: many exact ties)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * size * 0.8
    wh = torch.rand(n, 2, generator=g) * size * 0.3
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes.round() if integer else boxes


# --- formats, area, IoU, GIoU vs torchvision ------------------------------------------------------


@pytest.mark.parametrize(("in_fmt", "out_fmt"), list(itertools.product(FORMATS, FORMATS)))
def test_box_convert_matches_torchvision(in_fmt: str, out_fmt: str) -> None:
    boxes = tv.box_convert(random_boxes(50), "xyxy", in_fmt)
    torch.testing.assert_close(
        box_convert(boxes, in_fmt, out_fmt), tv.box_convert(boxes, in_fmt, out_fmt)
    )
    # batched leading dimensions and a round trip
    batched = boxes.reshape(5, 10, 4)
    back = box_convert(box_convert(batched, in_fmt, out_fmt), out_fmt, in_fmt)
    torch.testing.assert_close(back, batched, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("integer", [False, True])
def test_area_iou_giou_match_torchvision(integer: bool) -> None:
    a, b = random_boxes(40, 1, integer=integer), random_boxes(30, 2, integer=integer)
    a[3] = b[5]  # identical boxes: IoU 1
    a[4] = torch.tensor([0.0, 0.0, 0.0, 10.0])  # zero width
    torch.testing.assert_close(box_area(a), tv.box_area(a))
    # rounding can make zero-area boxes: a pair of them is 0 / 0 = NaN in both
    torch.testing.assert_close(box_iou(a, b), tv.box_iou(a, b), equal_nan=True)
    torch.testing.assert_close(
        generalized_box_iou(a, b), tv.generalized_box_iou(a, b), equal_nan=True
    )
    assert box_iou(a, b)[3, 5] == 1 and generalized_box_iou(a, b)[3, 5] == 1


def test_iou_edge_cases_like_torchvision() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 5, 5]])
    b = torch.tensor([[10.0, 0, 20, 10], [0, 0, 10, 10], [5, 5, 5, 5]])  # touching, same, point
    got, want = box_iou(a, b), tv.box_iou(a, b)
    torch.testing.assert_close(got, want, equal_nan=True)
    assert got[0, 0] == 0 and got[0, 1] == 1 and got[2, 2].isnan()  # 0 / 0, as torchvision
    torch.testing.assert_close(
        generalized_box_iou(a, b), tv.generalized_box_iou(a, b), equal_nan=True
    )
    assert generalized_box_iou(a, b)[1, 1] < 0  # disjoint: GIoU says how far apart
    assert box_iou(a[:0], b).shape == (0, 3) and box_iou(a, b[:0]).shape == (3, 0)


def test_float64_and_gradients() -> None:
    a, b = random_boxes(6, 3).double(), random_boxes(5, 4).double()
    torch.testing.assert_close(box_iou(a, b), tv.box_iou(a, b))
    a.requires_grad_(True)
    (1 - generalized_box_iou(a, b)).sum().backward()
    assert torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


# --- NMS vs torchvision ---------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nms_matches_torchvision(threshold: float, seed: int) -> None:
    boxes = random_boxes(200, seed)
    scores = torch.rand(200, generator=torch.Generator().manual_seed(seed + 10))
    assert torch.equal(nms(boxes, scores, threshold), tv.nms(boxes, scores, threshold))


def test_nms_ties_and_duplicates() -> None:
    boxes = random_boxes(60, 5, integer=True)
    boxes[10:20] = boxes[0]  # exact duplicates
    scores = (torch.rand(60, generator=torch.Generator().manual_seed(6)) * 4).round() / 4  # ties
    for thr in (0.0, 0.5, 1.0):
        assert torch.equal(nms(boxes, scores, thr), tv.nms(boxes, scores, thr))
    empty = torch.zeros(0, 4)
    assert nms(empty, torch.zeros(0), 0.5).shape == (0,)
    assert nms(empty, torch.zeros(0), 0.5).dtype == torch.int64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_nms_matches_torchvision(seed: int) -> None:
    boxes = random_boxes(300, seed)
    g = torch.Generator().manual_seed(seed + 20)
    scores, idxs = torch.rand(300, generator=g), torch.randint(0, 5, (300,), generator=g)
    for thr in (0.3, 0.6):
        assert torch.equal(
            batched_nms(boxes, scores, idxs, thr), tv.batched_nms(boxes, scores, idxs, thr)
        )
    # boxes of different classes never suppress each other
    two = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    s = torch.tensor([0.9, 0.8])
    assert batched_nms(two, s, torch.tensor([0, 1]), 0.5).tolist() == [0, 1]
    assert batched_nms(two, s, torch.tensor([0, 0]), 0.5).tolist() == [0]


def test_batched_nms_tied_scores_keep_the_same_set() -> None:
    boxes = random_boxes(80, 7, integer=True)
    g = torch.Generator().manual_seed(8)
    scores = torch.randint(0, 4, (80,), generator=g).float()
    idxs = torch.randint(0, 3, (80,), generator=g)
    got, want = batched_nms(boxes, scores, idxs, 0.4), tv.batched_nms(boxes, scores, idxs, 0.4)
    assert sorted(got.tolist()) == sorted(want.tolist())
    assert torch.equal(scores[got], scores[want])  # same order of scores


# --- bad input ------------------------------------------------------------------------------------


def test_bad_boxes_are_explained() -> None:
    good = random_boxes(4)
    flipped = good.clone()
    flipped[2] = flipped[2, [2, 3, 0, 1]]
    with pytest.raises(ValueError, match=r"boxes1\[2\].*x2 < x1 or y2 < y1"):
        box_iou(flipped, good)
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        box_iou(good[:, :3], good)
    with pytest.raises(ValueError, match="shape \\(N, 4\\)"):
        box_area(good[None])
    nan = good.clone()
    nan[1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        generalized_box_iou(good, nan)
    with pytest.raises(TypeError, match="floating-point"):
        box_area(good.long())
    with pytest.raises(ValueError, match="negative width or height"):
        box_convert(torch.tensor([[1.0, 1, -2, 3]]), "xywh", "xyxy")
    with pytest.raises(ValueError, match="out_fmt must be one of"):
        box_convert(good, "xyxy", "yxyx")
    with pytest.raises(ValueError, match="4 boxes but 3 scores"):
        nms(good, torch.rand(3), 0.5)
    with pytest.raises(ValueError, match="4 boxes but 2 idxs"):
        batched_nms(good, torch.rand(4), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="scores contain NaN"):
        nms(good, torch.tensor([0.1, float("nan"), 0.2, 0.3]), 0.5)


# --- DETR matching --------------------------------------------------------------------------------


def detr_like(q: int, t: int, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(q, k + 1, generator=g)
    pred = torch.cat([torch.rand(q, 2, generator=g), torch.rand(q, 2, generator=g) * 0.5], 1)
    tgt = torch.cat([torch.rand(t, 2, generator=g), torch.rand(t, 2, generator=g) * 0.5], 1)
    return logits, pred, torch.randint(0, k, (t,), generator=g), tgt


def test_match_cost_is_detr_formula() -> None:
    logits, pred, labels, tgt = detr_like(5, 3)
    cost = match_cost(logits, pred, labels, tgt)
    p = logits.softmax(-1)
    giou = tv.generalized_box_iou(
        tv.box_convert(pred, "cxcywh", "xyxy"), tv.box_convert(tgt, "cxcywh", "xyxy")
    )
    for i, j in itertools.product(range(5), range(3)):
        want = -p[i, labels[j]] + 5 * (pred[i] - tgt[j]).abs().sum() - 2 * giou[i, j]
        torch.testing.assert_close(cost[i, j], want)


@pytest.mark.parametrize(("q", "t"), [(1, 1), (3, 3), (5, 2), (6, 4), (7, 3), (2, 5)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hungarian_equals_brute_force(q: int, t: int, seed: int) -> None:
    cost = match_cost(*detr_like(q, t, seed=seed))
    rows, cols = hungarian_match(cost)
    b_rows, b_cols = brute_force_match(cost)
    assert len(rows) == min(q, t) and torch.equal(rows, rows.sort().values)
    assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
    torch.testing.assert_close(cost[rows, cols].sum(), cost[b_rows, b_cols].sum())
    assert torch.equal(rows, b_rows) and torch.equal(cols, b_cols)  # random costs: unique optimum


def test_matching_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        hungarian_match(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    logits, pred, labels, tgt = detr_like(3, 2)
    with pytest.raises(ValueError, match="tgt_labels must lie in"):
        match_cost(logits, pred, labels + 10, tgt)
    with pytest.raises(ValueError, match="3 pred_logits rows but 2 pred_boxes"):
        match_cost(logits, pred[:2], labels, tgt)
    assert hungarian_match(torch.zeros(3, 0))[0].shape == (0,)


# --- CenterNet ------------------------------------------------------------------------------------


def test_gaussian_radius_keeps_the_overlap() -> None:
    for w, h, t in [(3.0, 3.0, 0.7), (2.0, 5.0, 0.5), (10.0, 1.0, 0.3)]:
        r = gaussian_radius(w, h, t)
        box = torch.tensor([[0.0, 0, w, h]])
        shifted = box + r
        torch.testing.assert_close(
            tv.box_iou(box, shifted)[0, 0], torch.tensor(t), atol=1e-5, rtol=0
        )
    with pytest.raises(ValueError, match="min_overlap"):
        gaussian_radius(2, 2, 1.5)


def test_encode_then_decode_recovers_the_boxes() -> None:
    scenes = generate_scenes(6, seed=3)
    targets = encode_centernet_targets(scenes.boxes, scenes.labels, 6, (16, 16), 4)
    assert targets.shape == (6, 11, 16, 16)
    k = 6
    assert targets[:, :k].max() == 1 and targets[:, :k].min() >= 0
    n_objects = sum(len(b) for b in scenes.boxes)
    assert int(targets[:, k + 4].sum()) == n_objects  # no two centres share a cell here
    # A perfect prediction: heatmap logits +-inf-like at centres, size/offset from the targets.
    heat = targets[:, :k]
    logits = torch.where(
        heat == 1, torch.tensor(20.0), torch.log(heat.clamp(1e-6, 0.99) / 0.99) - 5
    )
    outputs = torch.cat([logits, targets[:, k : k + 4]], 1)
    dets = decode_centernet(outputs, stride=4, score_threshold=0.5)
    for det, boxes, labels in zip(dets, scenes.boxes, scenes.labels, strict=True):
        order = det["labels"].argsort(stable=True)
        assert sorted(det["labels"].tolist()) == sorted(labels.tolist())
        iou = tv.box_iou(det["boxes"], torch.as_tensor(boxes))
        assert (iou.max(1).values > 0.999).all()
        assert det["scores"][order].min() > 0.99
    loss, parts = centernet_loss(outputs, targets)
    assert parts["size"] == 0 and parts["offset"] == 0 and loss < 0.01


def test_focal_loss_matches_its_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, generator=g)
    heat = torch.rand(2, 3, 5, 5, generator=g) * 0.9
    heat[0, 1, 2, 2] = heat[1, 0, 4, 0] = 1
    p = logits.sigmoid()
    pos = heat == 1
    want = (
        -(
            ((1 - p) ** 2 * p.log())[pos].sum()
            + ((1 - heat) ** 4 * p**2 * (1 - p).log())[~pos].sum()
        )
        / 2
    )
    torch.testing.assert_close(centernet_focal_loss(logits, heat), want)


def test_decode_picks_peaks_and_nms() -> None:
    out = torch.full((1, 2 + 4, 8, 8), -10.0)
    out[0, 2:4] = 2.0  # every box 8x8 pixels
    out[0, 4:6] = 0.5
    out[0, 0, 3, 3], out[0, 0, 3, 4] = 3.0, 2.0  # a neighbour of a peak is not a peak
    out[0, 1, 6, 1] = 1.0
    (det,) = decode_centernet(out, stride=4, score_threshold=0.3)
    assert det["labels"].tolist() == [0, 1]
    torch.testing.assert_close(det["boxes"][0], torch.tensor([10.0, 10, 18, 18]))
    out[0, 0, 3, 5] = 2.9  # a second peak of class 0 overlapping the first
    (det,) = decode_centernet(out, stride=4, score_threshold=0.3)
    assert det["labels"].tolist() == [0, 0, 1]
    out[0, 2:4] = 4.0  # 16x16 boxes: the two class-0 boxes now overlap by IoU 1/3
    (det,) = decode_centernet(out, stride=4, score_threshold=0.3, nms_iou=0.3)
    assert det["labels"].tolist() == [0, 1]
    (det,) = decode_centernet(out, stride=4, top_k=1, score_threshold=0.0)
    assert len(det["boxes"]) == 1


def test_bad_targets_are_explained() -> None:
    with pytest.raises(ValueError, match=r"labels\[0\] must lie in \[0, 6\)"):
        encode_centernet_targets(
            [torch.tensor([[0.0, 0, 4, 4]])], [torch.tensor([6])], 6, (4, 4), 4
        )
    with pytest.raises(ValueError, match=r"boxes\[0\]\[0\].*x2 < x1"):
        encode_centernet_targets(
            [torch.tensor([[5.0, 0, 4, 4]])], [torch.tensor([0])], 6, (4, 4), 4
        )
    with pytest.raises(ValueError, match="K \\+ 5 channels"):
        centernet_loss(torch.zeros(1, 10, 4, 4), torch.zeros(1, 10, 4, 4))


def tiny_encoder() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(vit_config("vit_course_tiny", num_classes=0, depth=1))


@pytest.mark.parametrize("frozen", [True, False])
def test_centernet_trains_and_freezes(frozen: bool) -> None:
    scenes = generate_scenes(8, seed=1)
    images = torch.from_numpy(scenes.images).permute(0, 3, 1, 2).float() / 255  # (B, 3, 64, 64)
    model = CenterNet(tiny_encoder(), num_classes=6, img_size=64, frozen=frozen)
    targets = model.encode_targets(scenes.boxes, scenes.labels)
    out = model(images)
    assert out.shape == (8, 10, 16, 16)
    loss, _ = centernet_loss(out, targets)
    loss.backward()
    enc_grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is None for g in enc_grads) if frozen else any(g is not None for g in enc_grads)
    assert all(p.grad is not None for p in model.head.parameters())
    model.train()
    assert model.backbone.encoder.training is (not frozen)
    dets = model.predict(images[:3], score_threshold=0.0, top_k=5)
    assert len(dets) == 3 and all(d["boxes"].shape == (5, 4) for d in dets)
    assert all((d["boxes"] >= 0).all() and (d["boxes"] <= 64).all() for d in dets)


def test_head_bias_starts_at_the_prior() -> None:
    head = CenterNetHead(96, 6)
    torch.testing.assert_close(head.heatmap[-1].bias.sigmoid(), torch.full((6,), 0.1))
    assert head(torch.zeros(2, 96, 4, 4)).shape == (2, 10, 4, 4)
