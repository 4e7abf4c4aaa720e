"""What each patch of an image shows, exactly, in a world with plain backgrounds.

Lesson 04 asks where an MAE's loss comes from. On the course world (one shape on a plain,
noise-free background) every patch is one of three kinds, and pixel equality tells which,
with no threshold to choose:

- ``"background"``: all its pixels equal the image's background colour (its corner pixel);
- ``"interior"``: all its pixels equal one other colour, so it lies inside the shape;
- ``"edge"``: anything else; it holds part of the shape's anti-aliased outline.

A threshold on the patch's pixel spread cannot make this split: a plain background's tint
(its three channels differ by up to 0.12) gives a uniform patch a spread of its own.
"""

from __future__ import annotations

import torch

from ..core.validate import check_tensor
from ..layers.patches import patchify

PATCH_KINDS = ("background", "interior", "edge")


def patch_kinds(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Index into :data:`PATCH_KINDS` for every patch, in :func:`patchify`'s order.

    Args:
        images: (B, C, H, W) on a plain background: the four corner pixels of each image are
            equal (checked), and that colour is taken as the background's.
        patch_size: ``P``; H and W must be multiples of it.

    Returns:
        (B, N) int64, N = (H / P) * (W / P).
    """
    images = check_tensor(images, "images", ndim=4)
    corners = images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]  # (B, C, 4)
    plain = (corners == corners[:, :, :1]).all(dim=(1, 2))  # (B,)
    if not plain.all():
        bad = (~plain).nonzero().flatten()[:5].tolist()
        raise ValueError(
            f"patch_kinds needs plain backgrounds (all four corner pixels equal), but images "
            f"{bad} have differing corners: a gradient, noise or a shape in the corner"
        )
    B, C = images.shape[:2]
    pixels = patchify(images, patch_size).reshape(B, -1, patch_size * patch_size, C)  # (B,N,P²,C)
    background = corners[:, :, 0][:, None, None, :]  # (B, 1, 1, C)
    is_background = (pixels == background).all(dim=(2, 3))  # (B, N)
    is_uniform = (pixels == pixels[:, :, :1]).all(dim=(2, 3))  # (B, N)
    kinds = torch.full(is_background.shape, PATCH_KINDS.index("edge"), dtype=torch.long)
    kinds[is_uniform] = PATCH_KINDS.index("interior")
    kinds[is_background] = PATCH_KINDS.index("background")
    return kinds
