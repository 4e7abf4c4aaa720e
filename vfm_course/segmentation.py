"""Dense prediction from patch tokens, and semantic segmentation on top of it.

A ViT's patch tokens already form a low-resolution feature map: token ``n`` belongs to grid
cell ``(n // Gw, n % Gw)``. Dropping the class token and folding the sequence back into the grid
gives a (B, D, Gh, Gw) map that any dense head can read (SETR, Zheng et al. 2021; Segmenter,
Strudel et al. 2021; DINOv2's linear segmentation probe, Oquab et al. 2023).

The course encoders were pretrained on 32x32 images; lesson 06's scenes are 64x64. The encoder
is weight-shared over patches, so only the position embedding depends on the image size:
:func:`resize_vit` rebuilds the ViT for the new size and resamples the grid part of
``pos_embed`` bicubically (ViT paper, section 3.2; timm's ``resample_abs_pos_embed``).

Heads: ``"linear"`` is a per-token linear classifier (a 1x1 conv) whose (B, K, Gh, Gw) logits
are upsampled bilinearly to the image (the "linear" baseline of Segmenter and DINOv2);
``"conv"`` is a small decoder that upsamples progressively, x2 at a time, with a 3x3 conv after
each step (SETR-PUP, simplified), so it can draw edges finer than one patch.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from .torchvision_data import IGNORE_INDEX
from .validate import check_choice, check_positive_int, check_tensor
from .vit import VisionTransformer

SEG_HEADS = ("linear", "conv")


# --- from a 32x32 encoder to a 64x64 one ---------------------------------------------------------


def resample_pos_embed(
    pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Resize the grid part of a (1, L, D) position embedding to ``new_grid`` = (Gh, Gw).

    The prefix rows (class token) are kept; the patch rows are reshaped to their square grid,
    resampled bicubically (``align_corners=False``, as timm) and flattened back. Returns
    (1, prefix + Gh * Gw, D).
    """
    check_tensor(pos_embed, "pos_embed", ndim=3, floating=True)
    if pos_embed.shape[0] != 1:
        raise ValueError(f"pos_embed must have shape (1, L, D), got {tuple(pos_embed.shape)}")
    if isinstance(num_prefix_tokens, bool) or num_prefix_tokens not in (0, 1):
        raise ValueError(f"num_prefix_tokens must be 0 or 1, got {num_prefix_tokens!r}")
    gh, gw = (check_positive_int(g, "new_grid entries") for g in new_grid)
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = math.isqrt(grid.shape[1])
    if old * old != grid.shape[1]:
        raise ValueError(
            f"pos_embed has {grid.shape[1]} patch rows after {num_prefix_tokens} prefix row(s), "
            f"which is not a square grid"
        )
    d = grid.shape[2]
    grid = grid.reshape(1, old, old, d).permute(0, 3, 1, 2)  # (1, D, G, G)
    # float32 for the resampling: bicubic interpolation is not implemented for every dtype.
    # antialias only matters when shrinking (it low-passes first), as timm does.
    grid = F.interpolate(
        grid.float(), size=(gh, gw), mode="bicubic", align_corners=False, antialias=True
    )
    grid = grid.to(pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, gh * gw, d)  # (1, Gh*Gw, D)
    return torch.cat([prefix, grid], dim=1)  # (1, prefix + Gh*Gw, D)


def resize_vit(model: VisionTransformer, img_size: int) -> VisionTransformer:
    """A copy of ``model`` that takes ``img_size`` x ``img_size`` images.

    Every weight is copied; ``pos_embed`` is resampled with :func:`resample_pos_embed`. A frozen
    sin-cos table (MAE) is resampled too rather than recomputed, so the positions stay in the
    range the encoder was trained on (MAE's fine-tuning code does the same).
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"model must be a course VisionTransformer, got {type(model).__name__}")
    cfg = dataclasses.replace(model.cfg, img_size=img_size)  # validates the size vs the patch
    new = VisionTransformer(cfg)
    state = dict(model.state_dict())
    state["pos_embed"] = resample_pos_embed(
        model.pos_embed.detach(), cfg.grid_size, model.num_prefix_tokens
    )
    new.load_state_dict(state, strict=True)
    ref = next(model.parameters())
    return new.to(device=ref.device, dtype=ref.dtype).train(model.training)


def tokens_to_feature_map(
    tokens: torch.Tensor, grid_size: tuple[int, int], num_prefix_tokens: int = 1
) -> torch.Tensor:
    """(B, L, D) encoder tokens -> (B, D, Gh, Gw) feature map of the patch tokens.

    Patches are numbered row by row (``PatchEmbed`` flattens the conv output that way), so the
    patch tokens reshape straight into the grid.
    """
    check_tensor(tokens, "tokens", ndim=3, floating=True)
    gh, gw = grid_size
    B, L, D = tokens.shape
    if L != num_prefix_tokens + gh * gw:
        raise ValueError(
            f"tokens have length {L}, but a {gh}x{gw} patch grid plus {num_prefix_tokens} "
            f"prefix token(s) needs {num_prefix_tokens + gh * gw}"
        )
    x = tokens[:, num_prefix_tokens:]  # (B, N, D)
    return x.transpose(1, 2).reshape(B, D, gh, gw)  # (B, D, Gh, Gw)


class DenseEncoder(nn.Module):
    """A course ViT used as a dense feature extractor: images -> (B, D, Gh, Gw).

    Args:
        encoder: a course ``VisionTransformer`` (e.g. from ``recipes.load_course_encoder``).
        img_size: the image side the dense model will see; the encoder is resized with
            :func:`resize_vit` if it differs (``None``: keep the encoder's size).
        frozen: if True the encoder's weights get no gradient and it runs under ``no_grad``
            (a "linear probe" of dense features); if False it is fine-tuned with the head.

    Shapes:
        forward: (B, C, H, W) -> (B, D, H / P, W / P).
    """

    def __init__(
        self, encoder: VisionTransformer, img_size: int | None = None, frozen: bool = True
    ) -> None:
        super().__init__()
        if not isinstance(encoder, VisionTransformer):
            raise TypeError(
                f"encoder must be a course VisionTransformer, got {type(encoder).__name__}"
            )
        if img_size is not None and img_size != encoder.cfg.img_size:
            encoder = resize_vit(encoder, img_size)
        self.encoder = encoder
        self.frozen = bool(frozen)
        self.embed_dim = encoder.embed_dim
        self.patch_size = encoder.cfg.patch_size
        self.grid_size = encoder.cfg.grid_size
        if self.frozen:
            encoder.requires_grad_(False)
            encoder.eval()

    def train(self, mode: bool = True) -> DenseEncoder:
        """Like ``nn.Module.train``, but a frozen encoder stays in eval mode."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D, Gh, Gw) features (the encoder checks the images)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            tokens = self.encoder.forward_features(images)  # (B, L, D)
        return tokens_to_feature_map(tokens, self.grid_size, self.encoder.num_prefix_tokens)


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
    check_positive_int(batch_size, "batch_size")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = [
            model(images[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(out)
