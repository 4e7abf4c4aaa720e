"""The position-embedding explorer: how similar each patch position's embedding is to every
other's."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ...models.vit import VisionTransformer
from .explorer import (
    Explorer,
    check_model_type,
    int_slider,
    use_widgets,
)


def pos_embed_similarity(model: VisionTransformer) -> torch.Tensor:
    """(N, N) cosine similarity between the position embeddings of every pair of patches.

    The class token's row (if any) is left out: it marks no position. Entry (i, j) compares
    patch i with patch j, in raster order; the diagonal is 1 and the matrix is symmetric.
    """
    check_model_type(
        model, VisionTransformer, "pos_embed_similarity", " (for an MAE, pass mae.encoder)"
    )
    with torch.no_grad():
        pos = model.pos_embed[0, model.num_prefix_tokens :].float().cpu()  # (N, D)
        unit = F.normalize(pos, dim=-1)  # (N, D), each row of length 1
        return unit @ unit.T  # (N, N)


def pos_embed_explorer(
    model: VisionTransformer, *, interactive: bool | None = None
) -> Explorer | Figure:
    """Which positions does a patch's position embedding resemble? (ViT paper, Fig. 7 centre.)

    A trained ViT learns embeddings in which nearby patches, and patches in the same row or
    column, look alike: it rediscovers the 2-D grid from data. Sin-cos embeddings
    (``pos_embed="sincos"``) have that structure by construction; a fresh learned one is noise.

    Args:
        model: a course ``VisionTransformer``, with or without a class token.
        interactive: True / False / None (see the module docstring).

    Returns:
        Interactive: an :class:`Explorer` with controls ``row`` (0..Gh-1) and ``col``
        (0..Gw-1); ``shown["similarity"]`` is the (Gh, Gw) map drawn. Static: a Figure with one
        axes holding every position's (Gh, Gw) similarity map as a tile of a Gh x Gw mosaic,
        plus a colour bar.
    """
    check_model_type(
        model, VisionTransformer, "pos_embed_explorer", " (for an MAE, pass mae.encoder)"
    )
    gh, gw = model.cfg.grid_size
    sim = pos_embed_similarity(model).reshape(gh, gw, gh, gw)  # (Gh, Gw, Gh, Gw): query, key
    # One colour scale for every position (so maps compare), stretched from the lowest
    # similarity to 1: sin-cos similarities all sit well above 0, and a fixed -1..1 scale
    # would wash their structure out.
    style = dict(cmap="viridis", vmin=float(sim.min()), vmax=1.0, interpolation="nearest")

    if not use_widgets(interactive):
        # Tiles one cell apart, the gaps NaN (drawn blank), as the paper's small multiples.
        mosaic = np.full((gh * (gh + 1) - 1, gw * (gw + 1) - 1), np.nan)
        for r in range(gh):
            for c in range(gw):
                top, left = r * (gh + 1), c * (gw + 1)
                mosaic[top : top + gh, left : left + gw] = sim[r, c].numpy()
        fig, ax = plt.subplots(figsize=(4.4, 3.8))
        tiles = ax.imshow(mosaic, **style)
        ax.set_xticks([c * (gw + 1) + (gw - 1) / 2 for c in range(gw)], range(gw), fontsize=7)
        ax.set_yticks([r * (gh + 1) + (gh - 1) / 2 for r in range(gh)], range(gh), fontsize=7)
        ax.set(xlabel="input patch column", ylabel="input patch row")
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
        fig.colorbar(tiles, ax=ax, fraction=0.046, label="cosine similarity")
        ax.set_title("position embedding similarity", fontsize=9)
        fig.tight_layout()
        plt.close(fig)  # shown once, as the cell's result, not again by the inline backend
        return fig

    def draw(fig: Figure, v: dict[str, object]) -> dict[str, object]:
        r, c = v["row"], v["col"]
        ax = fig.subplots()
        heat = ax.imshow(sim[r, c].numpy(), **style)
        ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor="red", lw=2))
        fig.colorbar(heat, ax=ax, fraction=0.046, label="cosine similarity")
        ax.set(xlabel="column", ylabel="row")
        ax.set_title(f"similarity to the position embedding of (row {r}, col {c})", fontsize=9)
        return {"row": r, "col": c, "similarity": sim[r, c]}

    controls = {
        "row": int_slider("row", 0, gh - 1, gh // 2),
        "col": int_slider("col", 0, gw - 1, gw // 2),
    }
    return Explorer(controls, draw, figsize=(4.2, 3.4))
