"""Semantic segmentation heads on the ViT's patch-token feature map.

A linear head classifies each patch token on its own; a context head mixes neighbouring tokens
with a 3x3 convolution first. Masks (B, H, W) int64 class ids; logits (B, K, H, W).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.inference import predict
from ..core.validate import check_choice, check_positive_int, check_tensor
from ..data.real import IGNORE_INDEX
from ..models.dense_features import DenseEncoder
from ..models.vit import VisionTransformer

SEG_HEADS = ("linear", "conv")


# --- the segmentation head and model -------------------------------------------------------------


class SegmentationHead(nn.Module):
    """Feature map (B, D, Gh, Gw) -> per-pixel class logits (B, K, Gh * P, Gw * P).

    Args:
        embed_dim: ``D``, channels of the feature map.
        num_classes: ``K``, including background.
        patch_size: ``P``, the upsampling factor back to pixels.
        kind: ``"linear"`` (1x1 conv, then bilinear upsampling) or ``"conv"`` (progressive x2
            upsampling with 3x3 convs; needs ``P`` a power of two).
        hidden: channels of the conv decoder.
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        patch_size: int,
        kind: str = "linear",
        hidden: int = 64,
    ) -> None:
        super().__init__()
        for value, name in (
            (embed_dim, "embed_dim"),
            (patch_size, "patch_size"),
            (hidden, "hidden"),
        ):
            check_positive_int(value, name)
        check_positive_int(num_classes, "num_classes")
        check_choice(kind, "kind", SEG_HEADS)
        self.kind, self.patch_size, self.num_classes = kind, patch_size, num_classes
        if kind == "linear":
            # BatchNorm then a linear map per token: DINOv2's linear segmentation probe.
            self.norm = nn.BatchNorm2d(embed_dim)
            self.classifier = nn.Conv2d(embed_dim, num_classes, kernel_size=1)
            return
        steps = int(math.log2(patch_size))
        if 2**steps != patch_size:
            raise ValueError(
                f"the conv decoder upsamples x2 at a time, so patch size {patch_size} must be a "
                f"power of two; use kind='linear' instead"
            )
        layers: list[nn.Module] = [nn.Conv2d(embed_dim, hidden, 1), nn.GELU()]
        for _ in range(steps):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(hidden, hidden, 3, padding=1),
                nn.BatchNorm2d(hidden),
                nn.GELU(),
            ]
        self.decoder = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(hidden, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, Gh, Gw) -> (B, K, Gh * P, Gw * P) logits."""
        check_tensor(features, "features", ndim=4, floating=True)
        size = (features.shape[2] * self.patch_size, features.shape[3] * self.patch_size)
        if self.kind == "linear":
            logits = self.classifier(self.norm(features))  # (B, K, Gh, Gw)
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return self.classifier(self.decoder(features))  # (B, K, H, W)


class SegmentationModel(nn.Module):
    """Encoder (:class:`DenseEncoder`) + :class:`SegmentationHead`: images -> (B, K, H, W)."""

    def __init__(
        self,
        encoder: VisionTransformer,
        num_classes: int,
        head: str = "linear",
        img_size: int | None = None,
        frozen: bool = True,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        self.backbone = DenseEncoder(encoder, img_size, frozen)
        self.head = SegmentationHead(
            self.backbone.embed_dim, num_classes, self.backbone.patch_size, head, hidden
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, K, H, W) logits."""
        return self.head(self.backbone(images))


def check_masks(
    masks: object, num_classes: int, ignore_index: int | None, name: str = "masks"
) -> torch.Tensor:
    """Check integer label maps (B, H, W) with values in [0, K) or ``ignore_index``; return them."""
    masks = check_tensor(masks, name, ndim=3)
    if masks.is_floating_point() or masks.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids (int64), got {masks.dtype}")
    valid = (masks >= 0) & (masks < num_classes)
    if ignore_index is not None:
        valid |= masks == ignore_index
    if not bool(valid.all()):
        bad = masks[~valid][0].item()
        raise ValueError(
            f"{name} contain class id {bad}, but there are {num_classes} classes (0 to "
            f"{num_classes - 1})"
            + (f" plus ignore_index {ignore_index}" if ignore_index is not None else "")
        )
    return masks


def segmentation_loss(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean per-pixel cross-entropy. logits (B, K, H, W), masks int64 (B, H, W); pixels labelled
    ``ignore_index`` count in neither the sum nor the mean."""
    check_tensor(logits, "logits", ndim=4, floating=True)
    masks = check_masks(masks, logits.shape[1], ignore_index)
    if masks.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"masks have shape {tuple(masks.shape)} but the logits {tuple(logits.shape)} need "
            f"masks of shape {(logits.shape[0], *logits.shape[2:])} (B, H, W)"
        )
    if bool((masks == ignore_index).all()):
        raise ValueError("every pixel is ignore_index: there is nothing to learn from")
    return F.cross_entropy(logits, masks.long(), ignore_index=ignore_index)


def segmentation_loss_fn(ignore_index: int = IGNORE_INDEX):
    """The objective for ``train.fit``: batches are (images (B, C, H, W), masks (B, H, W))."""

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        images, masks = batch
        logits = model(images)
        loss = segmentation_loss(logits, masks, ignore_index)
        keep = masks != ignore_index
        acc = (logits.argmax(1) == masks)[keep].float().mean().item()
        return loss, {"pixel_acc": acc}

    return loss_fn


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Arg-max class per pixel: images (B, C, H, W) -> int64 (B, H, W), on the CPU."""
    check_tensor(images, "images", ndim=4, floating=True)
    return predict(model, images, batch_size, map_output=lambda logits: logits.argmax(1))
