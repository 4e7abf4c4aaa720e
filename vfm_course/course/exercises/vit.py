"""Lesson 02's exercises: patchify and 2-D sin-cos position embeddings."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...layers.patches import patchify
from ...layers.pos_embed import sincos_pos_embed_2d
from .checking import call_learner, diagnose, expect_tensor, passed, randn
from .exercise import Exercise, HiddenCase
from .hidden_inputs import (
    rand_expr,
)

# --- lesson 02: vision transformer -------------------------------------------------------------


def check_patchify(fn: Callable[[torch.Tensor, int], torch.Tensor]) -> bool:
    """Check ``fn(imgs, patch_size)``: (B, C, H, W) -> (B, N, P*P*C), patches in row-major
    grid order, pixels inside a patch ordered (P, P, C) as in MAE."""
    from ...layers.patches import patchify

    exercise = "patchify"
    g = torch.Generator().manual_seed(2)
    for B, C, H, W, P in [(2, 3, 8, 8, 4), (1, 1, 6, 4, 2), (3, 3, 32, 32, 8)]:
        imgs = randn(g, B, C, H, W)
        out = call_learner(exercise, fn, imgs, P)
        N = (H // P) * (W // P)
        out = expect_tensor(
            exercise,
            out,
            (B, N, P * P * C),
            "reshape to (B, C, Gh, P, Gw, P), permute so the grid axes come first and each "
            "patch's pixels last, then flatten",
        )
        grid = imgs.reshape(B, C, H // P, P, W // P, P)  # (B, C, Gh, P, Gw, P)
        wrong = {
            "each patch's pixels come out in (C, P, P) order; put the channel axis last "
            "(MAE's order: row, column, channel)": grid.permute(0, 2, 4, 1, 3, 5).reshape(B, N, -1),
            "the patch grid is walked column by column; walk it row by row (Gh before Gw)": (
                grid.permute(0, 4, 2, 3, 5, 1).reshape(B, N, -1)
            ),
            "a plain reshape without a permute mixes pixels of different patches": imgs.reshape(
                B, N, -1
            ),
        }
        diagnose(exercise, out, patchify(imgs, P), wrong, f"for images {B}x{C}x{H}x{W}, P={P}")
    return passed("patchify matches the reference on 3 image/patch sizes")


def check_sincos_pos_embed_2d(fn: Callable[[int, int], torch.Tensor]) -> bool:
    """Check ``fn(embed_dim, grid_size)`` -> (grid_size**2, embed_dim): the first half of the
    width encodes the column (x), the second half the row (y), each with the 1-D sin-cos table."""
    from ...layers.pos_embed import sincos_pos_embed_1d, sincos_pos_embed_2d

    exercise = "2-D sin-cos position embedding"
    for D, G in [(16, 4), (64, 8), (8, 3)]:
        out = call_learner(exercise, fn, D, G)
        out = expect_tensor(exercise, out, (G * G, D), "one row per patch, rows in grid order")
        ys, xs = torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij")
        ex = sincos_pos_embed_1d(D // 2, xs.reshape(-1).float())
        ey = sincos_pos_embed_1d(D // 2, ys.reshape(-1).float())
        wrong = {
            "rows and columns are swapped: the first half encodes the column (x), the second "
            "the row (y), as in MAE": torch.cat([ey, ex], dim=1),
            "each half must use D/2 of the width; you encoded with the full width D "
            "and cut": torch.cat(
                [
                    sincos_pos_embed_1d(D, xs.reshape(-1).float())[:, : D // 2],
                    sincos_pos_embed_1d(D, ys.reshape(-1).float())[:, : D // 2],
                ],
                dim=1,
            ),
        }
        diagnose(exercise, out.float(), sincos_pos_embed_2d(D, G), wrong, f"for D={D}, grid={G}")
    return passed("2-D sin-cos position embedding matches the reference (3 sizes)")


# --- the registry entries ---------------------------------------------------------------------

NOTEBOOK = "02_vision_transformer"
SETUP_CELL = "imports"  # the grader runs the notebook up to and including this cell

EXERCISES = (
    Exercise(
        name="patchify",
        notebook=NOTEBOOK,
        functions=("my_patchify",),
        cells=("ex-patchify",),
        checker=check_patchify,
        references=(patchify,),
        hidden=(
            HiddenCase("RGB, P=4", f"my_patchify({rand_expr(2, 3, 12, 12)}, 4)"),
            HiddenCase("gray, P=2", f"my_patchify({rand_expr(1, 1, 8, 8)}, 2)"),
        ),
        seed=7201,
        forbidden=("PatchEmbed", "unpatchify", "patch_embed_as_linear"),
    ),
    Exercise(
        name="sincos_pos_embed_2d",
        notebook=NOTEBOOK,
        functions=("my_sincos_2d",),
        cells=("ex-sincos_pos_embed_2d",),
        checker=check_sincos_pos_embed_2d,
        references=(sincos_pos_embed_2d,),
        hidden=(
            HiddenCase("D=16, G=3", "my_sincos_2d(16, 3)"),
            HiddenCase("D=8, G=5", "my_sincos_2d(8, 5)"),
        ),
        seed=7202,
        forbidden=("get_2d_sincos_pos_embed",),
    ),
)
