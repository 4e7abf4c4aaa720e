"""Fixed sine-cosine position embeddings, 1-D and 2-D.

Attention is permutation-equivariant: shuffle the patch tokens and the outputs shuffle the same
way, so a ViT has no idea where a patch came from unless its position is added to the token.
The ViT paper learns one vector per position (Dosovitskiy et al. 2021); MAE (He et al. 2022)
uses fixed 2-D sine-cosine embeddings instead, which cost no parameters and train equally well.

The 1-D table is the Transformer's (Vaswani et al. 2017): position ``t`` gets
``[sin(t * w_0), ..., sin(t * w_{D/2-1}), cos(t * w_0), ..., cos(t * w_{D/2-1})]`` with
frequencies ``w_i = 1 / 10000^(2i / D)``, from one cycle per position down to one per ~63,000.
Properties the lesson checks (and ``tests/test_pos_embed.py`` asserts):

* every value lies in [-1, 1] (they are sines and cosines);
* every position gets a different row;
* the dot product of two rows depends only on the offset between positions (a sum of
  ``cos(w_i * offset)`` terms) and, for small offsets, falls as the offset grows: nearby
  patches look alike, distant ones do not.

The 2-D table (MAE's ``get_2d_sincos_pos_embed``) spends half the width on a 1-D embedding of
the column and half on the row, so the same properties hold along each axis.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.validate import check_positive_int, check_tensor


def sincos_pos_embed_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1-D sine-cosine embedding of (possibly fractional) positions.

    Args:
        embed_dim: ``D``, must be even (half sines, half cosines).
        positions: (M,) positions, any real numbers.

    Returns:
        (M, D) float32: ``[sin(pos * w), cos(pos * w)]`` with ``w_i = 10000^(-2i / D)``.
    """
    check_positive_int(embed_dim, "embed_dim")
    if embed_dim % 2 != 0:
        raise ValueError(
            f"embed_dim {embed_dim} must be even for a 1-D sin-cos embedding "
            f"(half the channels are sines, half cosines)"
        )
    positions = check_tensor(positions, "positions", ndim=1)
    # float64 like MAE's numpy code, so the table does not depend on the caller's dtype.
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)  # (D/2,)
    omega = 1.0 / 10000.0**omega  # (D/2,)
    angles = positions.double()[:, None] * omega[None, :]  # (M, D/2)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # (M, D)
    return emb.float()


def sincos_pos_embed_2d(
    embed_dim: int, grid_size: int | tuple[int, int], cls_token: bool = False
) -> torch.Tensor:
    """2-D sine-cosine position embedding for a ``Gh x Gw`` patch grid, as in MAE.

    Args:
        embed_dim: ``D``, must be divisible by 4 (sin and cos, for each of the two axes).
        grid_size: ``(Gh, Gw)``, or one int for a square grid.
        cls_token: if True, prepend an all-zero row for the class token (it has no position),
            giving ``L = 1 + Gh * Gw`` rows, the layout of a ViT ``pos_embed``.

    Returns:
        (L, D) float32, rows in raster order (row-major over the grid, matching ``patchify``
        and ``PatchEmbed``). Channels ``[:D/2]`` encode the column index and ``[D/2:]`` the row
        index; this is MAE's exact layout (its ``emb_h`` is computed from the first meshgrid
        output, which with ``meshgrid(grid_w, grid_h)`` is the column index).
    """
    check_positive_int(embed_dim, "embed_dim")
    if embed_dim % 4 != 0:
        raise ValueError(
            f"embed_dim {embed_dim} is not divisible by 4: a 2-D sin-cos position embedding "
            f"splits the width into sin and cos for each of the 2 axes; pick a multiple of 4 "
            f"(e.g. {4 * max(1, round(embed_dim / 4))}) or use learned position embeddings"
        )
    gh, gw = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    check_positive_int(gh, "grid height")
    check_positive_int(gw, "grid width")
    rows = torch.arange(gh, dtype=torch.float64)
    cols = torch.arange(gw, dtype=torch.float64)
    row_idx, col_idx = torch.meshgrid(rows, cols, indexing="ij")  # (Gh, Gw) each
    emb_col = sincos_pos_embed_1d(embed_dim // 2, col_idx.reshape(-1))  # (N, D/2)
    emb_row = sincos_pos_embed_1d(embed_dim // 2, row_idx.reshape(-1))  # (N, D/2)
    emb = torch.cat([emb_col, emb_row], dim=1)  # (N, D)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim), emb], dim=0)  # (1 + N, D)
    return emb


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
