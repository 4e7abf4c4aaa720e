"""Segmentation read off a ViT's attention: DINO's "emergent segmentation" in miniature.

DINO (Caron et al. 2021, Sec. 4.2.1 and Fig. 3) found that the class token's attention in the
last block of a self-distilled ViT falls on the object, with no mask ever in the training. They
turn each map into a mask by keeping the most-attended patches that hold 60% of its mass, and
score that mask against the ground truth with the Jaccard index (IoU).

At the course's scale (a 4 x 4 grid of 8 px patches, objects covering about a fifth of the
image) a thresholded mask is coarse, so :func:`attention_on_object` adds a threshold-free
score: the share of the attention that lands on the object against the object's share of the
image.

Shapes: images (B, C, H, W); attention (B, h, N) over the N patches; masks (B, H, W) bool.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.validate import check_tensor


@torch.no_grad()
def cls_attention(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The last block's attention from the class token to every patch: (B, h, N), each head's
    row over the patches (the class token's attention to itself left out, so rows sum to < 1).

    ``model`` is a course :class:`~vfm_course.models.VisionTransformer` with a class token."""
    if not hasattr(model, "get_attention_maps") or not getattr(model, "has_class_token", False):
        raise TypeError("model must be a course VisionTransformer with a class token")
    prefix = model.num_prefix_tokens
    last = model.get_attention_maps(images)[-1]  # (B, h, L, L)
    return last[:, :, 0, prefix:]  # (B, h, N)


def top_mass_mask(attention: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Keep, per row, the most-attended patches until they hold ``mass`` of the row's total:
    the smallest such set (a patch is kept when the mass of the patches above it is still
    below ``mass``). ``attention`` (..., N) >= 0 -> bool mask of the same shape."""
    attention = check_tensor(attention, "attention", floating=True)
    if not 0 < mass <= 1:
        raise ValueError(f"mass is a fraction of the attention, in (0, 1]; got {mass!r}")
    if (attention < 0).any():
        raise ValueError("attention weights must be >= 0")
    values, order = attention.sort(dim=-1, descending=True)  # (..., N)
    share = values / values.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    before = share.cumsum(dim=-1) - share  # mass of the patches ranked above each one
    keep_sorted = before < mass
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def patch_mask_to_pixels(mask: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """(..., N) patch mask in raster order -> (..., size, size) pixel mask (nearest)."""
    gh, gw = grid
    if mask.shape[-1] != gh * gw:
        raise ValueError(f"mask has {mask.shape[-1]} patches, the grid {gh}x{gw} has {gh * gw}")
    lead = mask.shape[:-1]
    m = mask.reshape(-1, 1, gh, gw).float()  # (M, 1, Gh, Gw)
    m = F.interpolate(m, size=(size, size), mode="nearest")  # (M, 1, S, S)
    return m.reshape(*lead, size, size) > 0.5


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU (Jaccard) of boolean masks, over the last two dims: (..., H, W) -> (...). An empty
    union counts as IoU 1 (both masks agree there is nothing)."""
    pred = check_tensor(pred, "pred")
    target = check_tensor(target, "target")
    if pred.dtype != torch.bool or target.dtype != torch.bool:
        raise TypeError("pred and target must be bool masks")
    inter = (pred & target).sum(dim=(-2, -1)).float()
    union = (pred | target).sum(dim=(-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


@torch.no_grad()
def attention_iou(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, mass: float = 0.6
) -> dict[str, float]:
    """How well the class token's last-block attention outlines the objects: the mean over
    images of the IoU between :func:`top_mass_mask` of the attention and the object ``masks``
    (B, H, W) bool.

    Returns ``iou_mean_attention`` (the heads' attention averaged, then thresholded),
    ``iou_best_head`` (the best single head's mean IoU, DINO's Fig. 3 reads heads one by one)
    and ``iou_all_patches`` (the mask of the whole image: what an attention spread evenly over
    the image would score, the floor to beat)."""
    masks = _check_masks(images, masks)
    return _iou_scores(cls_attention(model, images).float(), masks, model.cfg.grid_size, mass)


def _iou_scores(
    attn: torch.Tensor, masks: torch.Tensor, grid: tuple[int, int], mass: float
) -> dict[str, float]:
    """:func:`attention_iou` from the attention (B, h, N) already computed."""
    size = masks.shape[-1]
    per_head = mask_iou(patch_mask_to_pixels(top_mass_mask(attn, mass), grid, size), masks[:, None])
    mean_attn = patch_mask_to_pixels(top_mass_mask(attn.mean(dim=1), mass), grid, size)
    everything = torch.ones_like(masks)
    return {
        "iou_mean_attention": mask_iou(mean_attn, masks).mean().item(),
        "iou_best_head": per_head.mean(dim=0).max().item(),
        "iou_all_patches": mask_iou(everything, masks).mean().item(),
    }


def _check_masks(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    masks = check_tensor(masks, "masks", ndim=3)
    if masks.dtype != torch.bool:
        raise TypeError(f"masks must be bool (B, H, W), got {masks.dtype}")
    if masks.shape[0] != images.shape[0] or masks.shape[1:] != images.shape[2:]:
        raise ValueError(
            f"masks {tuple(masks.shape)} must be (B, H, W) of the images {tuple(images.shape)}"
        )
    return masks


def _patch_size(model: torch.nn.Module, images: torch.Tensor) -> int:
    p = model.cfg.patch_size
    if images.shape[-1] % p or images.shape[-2] % p:
        raise ValueError(f"images must be a multiple of the patch size {p}, got {images.shape}")
    return p


@torch.no_grad()
def attention_on_object(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor
) -> dict[str, float]:
    """How much of the class token's last-block attention falls on the object, no threshold.

    Each patch's *coverage* is the share of its pixels inside the object mask; the attention
    row is scaled to sum to 1 over the patches; its mass on the object is the coverage-weighted
    sum. An attention that ignores the object puts on it the object's share of the image
    (``object_area``), so ``lift`` = mass / area is 1 for attention blind to the object, above
    1 when it concentrates on the object, below 1 when it avoids it.

    Returns ``object_mass`` (heads averaged), ``object_area``, ``lift`` and
    ``lift_best_head`` (the best single head's lift), each a mean over the images.
    """
    masks = _check_masks(images, masks)
    p = _patch_size(model, images)
    return _object_scores(cls_attention(model, images).float(), masks, p)


def _object_scores(attn: torch.Tensor, masks: torch.Tensor, patch: int) -> dict[str, float]:
    """:func:`attention_on_object` from the attention (B, h, N) already computed."""
    attn = attn / attn.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    coverage = F.avg_pool2d(masks[:, None].float(), patch).flatten(1)  # (B, N), raster order
    area = coverage.mean()
    per_head = (attn * coverage[:, None]).sum(dim=-1).mean(dim=0)  # (h,)
    mass = (attn.mean(dim=1) * coverage).sum(dim=-1).mean()
    return {
        "object_mass": mass.item(),
        "object_area": area.item(),
        "lift": (mass / area).item(),
        "lift_best_head": (per_head.max() / area).item(),
    }


@torch.no_grad()
def attention_scores(
    model: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor, mass: float = 0.6
) -> dict[str, float]:
    """:func:`attention_iou` and :func:`attention_on_object` in one dict, from one pass of the
    model (the attention of every layer is computed once, not once per score)."""
    masks = _check_masks(images, masks)
    p = _patch_size(model, images)
    attn = cls_attention(model, images).float()  # (B, h, N)
    return {
        **_iou_scores(attn, masks, model.cfg.grid_size, mass),
        **_object_scores(attn, masks, p),
    }
