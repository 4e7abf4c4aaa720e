"""Images to token sequences: patchify / unpatchify and the ViT patch embedding.

A ViT reads an image as a sequence of ``N = (H / P) * (W / P)`` non-overlapping ``P x P``
patches, each flattened and linearly projected to width ``D`` (Dosovitskiy et al. 2021,
"An Image is Worth 16x16 Words", Sec. 3.1). Two equivalent ways to compute that projection:

* ``patchify`` + a matrix multiply (the definition in the paper), and
* a ``Conv2d`` with ``kernel_size = stride = P`` (what timm's ``PatchEmbed.proj`` does, because
  one strided convolution is a single fast kernel and needs no reshape of the input).

``patch_embed_as_linear`` computes the first with the weights of the second, so the lesson can
show that they are the same function. The pixel order inside a patch is ``(P, P, C)`` (row,
column, channel) as in MAE's ``patchify`` (He et al. 2022), so MAE-style pixel targets and
reconstructions line up with this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_divisible, check_images, check_positive_int, check_tensor


def _check_images(imgs: object, patch_size: int, name: str = "imgs") -> torch.Tensor:
    """Check a (B, C, H, W) batch whose sides are multiples of ``patch_size``."""
    imgs = check_tensor(imgs, name, ndim=4)
    check_positive_int(patch_size, "patch_size")
    _, _, height, width = imgs.shape
    check_divisible(
        height, patch_size, "image size" if height == width else "image height", "patch size"
    )
    check_divisible(width, patch_size, "image width", "patch size")
    return imgs


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images into flattened, non-overlapping patches, in raster (row-major) order.

    Args:
        imgs: (B, C, H, W) images; ``H`` and ``W`` must be multiples of ``patch_size``.
        patch_size: ``P``, the side of a square patch in pixels.

    Returns:
        (B, N, P*P*C) with ``N = Gh * Gw``, ``Gh = H // P``, ``Gw = W // P``. Patch ``n`` is
        grid cell ``(n // Gw, n % Gw)``; inside a patch the pixels are ordered ``(P, P, C)``
        (row, column, channel), the same layout as MAE's ``patchify``.
    """
    imgs = _check_images(imgs, patch_size)
    b, c, height, width = imgs.shape
    p = patch_size
    gh, gw = height // p, width // p
    x = imgs.reshape(b, c, gh, p, gw, p)  # (B, C, Gh, P, Gw, P)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, Gh, Gw, P, P, C)
    return x.reshape(b, gh * gw, p * p * c)  # (B, N, P*P*C)


def unpatchify(
    x: torch.Tensor,
    patch_size: int,
    grid_size: int | tuple[int, int] | None = None,
    channels: int = 3,
) -> torch.Tensor:
    """Inverse of :func:`patchify`: put flattened patches back into images.

    Args:
        x: (B, N, P*P*C) patches in raster order, pixels ordered ``(P, P, C)``.
        patch_size: ``P``.
        grid_size: ``(Gh, Gw)`` or one int for a square grid; ``None`` means square,
            ``Gh = Gw = sqrt(N)``.
        channels: ``C``, channels per pixel (3 for RGB, 1 for grayscale).

    Returns:
        (B, C, Gh*P, Gw*P) images; ``unpatchify(patchify(imgs, P), P, ..., C)`` equals ``imgs``
        exactly (it only moves numbers around).
    """
    x = check_tensor(x, "x", ndim=3)
    p = check_positive_int(patch_size, "patch_size")
    c = check_positive_int(channels, "channels")
    b, n, width = x.shape
    if width != p * p * c:
        raise ValueError(
            f"each patch must hold patch_size * patch_size * channels = {p}*{p}*{c} = {p * p * c} "
            f"numbers, but x has {width} per patch (shape {tuple(x.shape)})"
        )
    if grid_size is None:
        side = round(n**0.5)
        if side * side != n:
            raise ValueError(
                f"{n} patches do not form a square grid; pass grid_size=(Gh, Gw) to unpatchify"
            )
        gh = gw = side
    else:
        gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
        if gh * gw != n:
            raise ValueError(f"grid_size {gh}x{gw} holds {gh * gw} patches, but x has N = {n}")
    x = x.reshape(b, gh, gw, p, p, c)  # (B, Gh, Gw, P, P, C)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, Gh, P, Gw, P)
    return x.reshape(b, c, gh * p, gw * p)  # (B, C, H, W)


class PatchEmbed(nn.Module):
    """Split an image into patches and project each to width ``D`` with one strided conv.

    Parameter names follow timm (``proj`` is the ``Conv2d``), so weights map one-to-one onto
    ``timm.layers.PatchEmbed``. Images must be square and exactly ``img_size`` pixels, like
    timm's default ``strict_img_size=True``: the position embedding that follows has one row
    per patch of that fixed grid.

    Args:
        img_size: side of the square input image, in pixels.
        patch_size: ``P``; must divide ``img_size``.
        in_chans: ``C``, input channels.
        embed_dim: ``D``, output width per patch.

    Shapes:
        forward: (B, C, H, W) -> (B, N, D) with ``N = (H // P) * (W // P)``.
    """

    def __init__(
        self, img_size: int = 32, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96
    ) -> None:
        super().__init__()
        check_positive_int(img_size, "img_size")
        check_positive_int(patch_size, "patch_size")
        check_positive_int(in_chans, "in_chans")
        check_positive_int(embed_dim, "embed_dim")
        check_divisible(img_size, patch_size, "image size", "patch size")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.grid_size = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        # kernel_size == stride == P: every output pixel sees exactly one patch, no overlap,
        # so this conv is the per-patch linear projection of the ViT paper.
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def check_input(self, x: object) -> torch.Tensor:
        """Check that ``x`` is a (B, C, img_size, img_size) float batch; return it."""
        x = check_images(x, self.in_chans, "this patch embedding")
        _, _, height, width = x.shape
        if height != self.img_size or width != self.img_size:
            check_divisible(height, self.patch_size, "image size", "patch size")
            check_divisible(width, self.patch_size, "image width", "patch size")
            raise ValueError(
                f"images are {height}x{width} but this model was built for "
                f"{self.img_size}x{self.img_size} (img_size={self.img_size}); resize the images "
                f"or build the model with img_size={height}"
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, N, D) patch tokens in raster order."""
        x = self.check_input(x)
        x = self.proj(x)  # (B, D, Gh, Gw)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)

    def extra_repr(self) -> str:
        return f"img_size={self.img_size}, patch_size={self.patch_size}, grid={self.grid_size}"


def conv_weight_as_linear(embed: PatchEmbed) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The conv kernel of ``embed`` as a (D, P*P*C) matrix acting on :func:`patchify` rows.

    The conv weight is stored (D, C, P, P); ``patchify`` orders a patch's pixels (P, P, C), so
    the kernel is permuted to match before it is flattened.

    Returns:
        ``(weight, bias)``: weight (D, P*P*C), bias (D,) or ``None``.
    """
    w = embed.proj.weight  # (D, C, P, P)
    w = w.permute(0, 2, 3, 1)  # (D, P, P, C)
    w = w.reshape(w.shape[0], -1)  # (D, P*P*C)
    return w, embed.proj.bias


def patch_embed_as_linear(embed: PatchEmbed, x: torch.Tensor) -> torch.Tensor:
    """Compute ``embed(x)`` the way the ViT paper writes it: patchify, then a matrix multiply.

    Args:
        embed: a :class:`PatchEmbed` (its conv weights are reused, nothing is copied).
        x: (B, C, H, W) images of the size ``embed`` was built for.

    Returns:
        (B, N, D), equal to ``embed(x)`` up to float rounding (about 1e-6).
    """
    x = embed.check_input(x)
    patches = patchify(x, embed.patch_size)  # (B, N, P*P*C)
    weight, bias = conv_weight_as_linear(embed)  # (D, P*P*C), (D,)
    return F.linear(patches, weight, bias)  # (B, N, D)
