"""CenterNet, objects as points (Zhou et al. 2019), on the course ViT's patch-token map.

Each object is a peak in a per-class heatmap at its centre (a Gaussian target whose radius
grows with the box), plus a regressed width and height; decoding keeps local maxima, so no
anchor boxes and, with one peak per object, little need for NMS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.inference import eval_mode
from ..core.validate import check_positive_int, check_tensor
from ..models.dense_features import DenseEncoder
from ..models.vit import VisionTransformer
from .boxes import batched_nms, check_boxes

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
    heatmap_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = centernet_focal_loss,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The CenterNet objective: focal heatmap loss + ``size_weight`` * L1(size) +
    ``offset_weight`` * L1(offset), the box terms only at object centres (weights as the paper).

    Args:
        outputs: (B, K + 4, Gh, Gw) from :class:`CenterNetHead` (heatmap logits, size, offset).
        targets: (B, K + 5, Gh, Gw) from :func:`encode_centernet_targets`.
        heatmap_loss: ``(logits, heatmap) -> scalar`` for the heatmap term (default
            :func:`centernet_focal_loss`; lesson 06 passes the learner's).

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
    heat = heatmap_loss(outputs[:, :k], targets[:, :k])
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


def centernet_loss_fn(
    size_weight: float = 0.1,
    offset_weight: float = 1.0,
    heatmap_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = centernet_focal_loss,
):
    """The objective for ``train.fit``: batches are (inputs, targets (B, K + 5, Gh, Gw)); the
    inputs are images for :class:`CenterNet` or cached feature maps for a bare head."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        inputs, targets = batch
        return centernet_loss(model(inputs), targets, size_weight, offset_weight, heatmap_loss)

    return loss_fn


@torch.no_grad()
def heatmap_peaks(
    heat: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` highest local maxima of class heatmaps, over all classes and positions.

    heat (B, K, Gh, Gw) of scores -> ``(scores, labels, ys, xs)``, each (B, k') with
    k' = min(k, K Gh Gw), best first. A cell is a peak when it equals the max of its 3x3
    neighbourhood in its own class map (a stride-1 max-pool, padded so borders compete only
    with the cells they have); other cells score 0. This is CenterNet's replacement for NMS.
    """
    check_tensor(heat, "heat", ndim=4, floating=True)
    check_positive_int(k, "k")
    B, n_classes, gh, gw = heat.shape
    peaks = heat == F.max_pool2d(heat, kernel_size=3, stride=1, padding=1)  # (B, K, Gh, Gw)
    flat = (heat * peaks).flatten(1)  # (B, K*Gh*Gw), class-major: index = (c * Gh + y) * Gw + x
    scores, idx = flat.topk(min(k, flat.shape[1]), dim=1)  # (B, k')
    labels, cell = idx // (gh * gw), idx % (gh * gw)
    return scores, labels, cell // gw, cell % gw


def decode_centernet(
    outputs: torch.Tensor,
    stride: int,
    top_k: int = 100,
    score_threshold: float = 0.05,
    nms_iou: float | None = None,
    image_size: tuple[int, int] | None = None,
    peaks: Callable[[torch.Tensor, int], tuple[torch.Tensor, ...]] = heatmap_peaks,
) -> list[dict[str, torch.Tensor]]:
    """Head outputs (B, K + 4, Gh, Gw) -> per image ``{"boxes", "scores", "labels"}``.

    A detection is a local maximum of a class heatmap: a cell equal to the max of its 3x3
    neighbourhood (:func:`heatmap_peaks`; a max-pool replaces NMS, the paper's main
    simplification; ``peaks`` lets a lesson pass its own version with the same contract). The
    ``top_k`` best peaks over all classes are kept if their score exceeds ``score_threshold``;
    their box is centred at (cell + offset) * stride with size (w, h) * stride. ``nms_iou``
    optionally runs class-aware NMS after all; ``image_size`` (H, W) clips boxes to the image.
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
    scores, labels, iy, ix = peaks(heat, top_k)  # (B, k_top) each
    cell = iy * gw + ix  # (B, k_top)
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
    """A course ViT's patch tokens (:class:`~vfm_course.models.DenseEncoder`) +
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
        out = []
        with eval_mode(self):
            for i in range(0, len(images), batch_size):
                raw = self(images[i : i + batch_size].to(device)).cpu()  # (B, K + 4, Gh, Gw)
                size = tuple(images.shape[-2:])
                out += decode_centernet(raw, self.stride, top_k, score_threshold, nms_iou, size)
        return out
