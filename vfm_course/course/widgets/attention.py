"""The attention explorer: where each query patch (or the class token) of a ViT looks, per
layer and head."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ...core.validate import check_tensor
from ...models.vit import VisionTransformer
from ..viz import overlay_heatmap, to_numpy_image
from .explorer import (
    Explorer,
    check_index,
    check_model_type,
    explorer_images,
    inference,
    int_slider,
    picture,
    to_model,
    use_widgets,
)

CLS_QUERY = -1  # the query index that stands for the class token


MAX_STATIC_LAYERS = 6  # the static attention figure shows at most this many layers ...


MAX_STATIC_HEADS = 6  # ... and heads, so stored notebooks stay light


def query_attention(
    attn: torch.Tensor,
    head: int,
    query: int,
    grid_size: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Where one query looks: its attention weights on the patches, laid out on the grid.

    Args:
        attn: (h, L, L) attention probabilities of one layer for one image
            (``model.get_attention_maps(x)[layer][b]``).
        head: which head, 0..h-1.
        query: a patch index 0..N-1 in raster order, or ``CLS_QUERY`` (-1) for the class token.
        grid_size: (Gh, Gw).
        num_prefix_tokens: tokens before the patches (1 with a class token, else 0).

    Returns:
        (Gh, Gw) weights. They sum to 1 minus the weight the query puts on the prefix tokens
        (the rows of ``attn`` sum to 1 over *all* tokens); without a class token, to 1.
    """
    attn = check_tensor(attn, "attn", ndim=3, floating=True)
    heads, length, _ = attn.shape
    gh, gw = grid_size
    if length != gh * gw + num_prefix_tokens:
        raise ValueError(
            f"attention has {length} tokens but a {gh}x{gw} grid plus {num_prefix_tokens} "
            f"prefix token(s) makes {gh * gw + num_prefix_tokens}"
        )
    if not 0 <= head < heads:
        raise ValueError(
            f"head {head} is out of range: this layer has {heads} heads (0..{heads - 1})"
        )
    if query == CLS_QUERY:
        if num_prefix_tokens == 0:
            raise ValueError("this model has no class token: pick a patch as the query (0..N-1)")
        row = 0  # the class token is the first token
    elif 0 <= query < gh * gw:
        row = num_prefix_tokens + query
    else:
        raise ValueError(
            f"query {query} is out of range: pick a patch 0..{gh * gw - 1}"
            + (f" or {CLS_QUERY} for the class token" if num_prefix_tokens else "")
        )
    return attn[head, row, num_prefix_tokens:].reshape(gh, gw)  # (Gh, Gw)


def _image_attention(model: VisionTransformer, image: torch.Tensor) -> torch.Tensor:
    """(C, H, W) image -> (depth, h, L, L) attention probabilities, on the CPU."""
    with inference(model):
        maps = model.get_attention_maps(to_model(image[None], model))  # depth x (1, h, L, L)
    return torch.stack([m[0] for m in maps]).float().cpu()  # (depth, h, L, L)


def _query_name(query: int, grid_w: int) -> str:
    if query == CLS_QUERY:
        return "CLS token"
    return f"patch {query} (row {query // grid_w}, col {query % grid_w})"


def attention_explorer(
    model: VisionTransformer,
    images: torch.Tensor,
    labels: Sequence[object] | torch.Tensor | None = None,
    *,
    index: int = 0,
    interactive: bool | None = None,
) -> Explorer | Figure:
    """Explore a ViT's attention: pick the image, layer, head and query token.

    The picture shows the image (the query patch outlined) and the query's attention weights
    over the patch grid as a heat map on the image; the title says how much of the weight goes
    to the class token, which the grid cannot show.

    Args:
        model: a course ``VisionTransformer`` (for an MAE, pass ``mae.encoder``).
        images: one (C, H, W) image or a (B, C, H, W) batch, values in [0, 1].
        labels: optional, one per image (class names or ids), shown in the titles.
        index: the image shown first (and in the static figure).
        interactive: True / False / None (see the module docstring).

    Returns:
        Interactive: an :class:`Explorer` with controls ``image`` (0..B-1), ``layer``
        (0..depth-1), ``head`` (0..h-1) and ``query`` (``CLS_QUERY`` = -1 for the class token
        if there is one, else from 0, up to N-1); ``shown["map"]`` is the (Gh, Gw) map drawn.
        Static: a Figure, one row per layer (at most 6, evenly spaced) and one column per head
        (at most 6), showing where the class token looks (the centre patch without one).
    """
    check_model_type(
        model, VisionTransformer, "attention_explorer", " (for an MAE, pass mae.encoder)"
    )
    images = explorer_images(images, model, "this VisionTransformer")
    index = check_index(index, len(images))
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels (one per image)")
    cfg, prefix = model.cfg, model.num_prefix_tokens
    gh, gw = cfg.grid_size
    centre = (gh // 2) * gw + gw // 2
    first_query = CLS_QUERY if cfg.class_token else centre

    def title(i: int) -> str:
        if labels is None:
            return f"image {i}"
        label = labels[i]
        return f"image {i}: {label.item() if isinstance(label, torch.Tensor) else label}"

    if not use_widgets(interactive):
        attn = _image_attention(model, images[index])  # (depth, h, L, L)
        img = to_numpy_image(images[index])
        spread = np.linspace(0, cfg.depth - 1, MAX_STATIC_LAYERS).round().astype(int)
        layers = sorted(set(spread.tolist()))  # first, last and evenly spaced between
        heads = range(min(cfg.num_heads, MAX_STATIC_HEADS))
        fig, axes = plt.subplots(
            len(layers),
            len(heads),
            figsize=(1.5 * len(heads), 1.65 * len(layers) + 0.4),
            squeeze=False,
        )
        for r, layer in enumerate(layers):
            for c, head in enumerate(heads):
                heat = query_attention(attn[layer], head, first_query, cfg.grid_size, prefix)
                overlay_heatmap(axes[r, c], img, heat, f"layer {layer}, head {head}", size=7)
        fig.suptitle(f"{title(index)}: where the {_query_name(first_query, gw)} looks", fontsize=8)
        fig.tight_layout()
        plt.close(fig)  # shown once, as the cell's result, not again by the inline backend
        return fig

    cache: dict[int, torch.Tensor] = {}  # image index -> (depth, h, L, L); one image at a time

    def draw(fig: Figure, v: dict[str, object]) -> dict[str, object]:
        i, layer, head, query = v["image"], v["layer"], v["head"], v["query"]
        if i not in cache:
            cache.clear()
            cache[i] = _image_attention(model, images[i])
        attn = cache[i][layer]  # (h, L, L)
        heat = query_attention(attn, head, query, cfg.grid_size, prefix)  # (Gh, Gw)
        # A row of attention sums to 1 over all tokens: what the grid misses went to the CLS.
        on_cls = 1.0 - float(heat.sum())
        img = to_numpy_image(images[i])
        ax_img, ax_map = fig.subplots(1, 2)
        picture(ax_img, img, title(i), size=9)
        if query != CLS_QUERY:
            p = cfg.patch_size
            r, c = divmod(query, gw)
            ax_img.add_patch(
                Rectangle((c * p - 0.5, r * p - 0.5), p, p, fill=False, edgecolor="cyan", lw=2)
            )
        caption = f"layer {layer}, head {head}, query: {_query_name(query, gw)}"
        if prefix:
            caption += f"\n{on_cls:.0%} of its attention goes to the CLS token"
        heat_image = overlay_heatmap(ax_map, img, heat, caption, size=7)
        fig.colorbar(heat_image, ax=ax_map, fraction=0.046, label="attention weight")
        return {"image": i, "layer": layer, "head": head, "query": query, "map": heat}

    controls = {
        "image": int_slider("image", 0, len(images) - 1, index),
        "layer": int_slider("layer", 0, cfg.depth - 1, 0),
        "head": int_slider("head", 0, cfg.num_heads - 1, 0),
        "query": int_slider(
            "query", CLS_QUERY if cfg.class_token else 0, cfg.num_patches - 1, first_query
        ),
    }
    controls["query"].tooltip = "-1 = the class token; 0..N-1 = a patch, in raster order"
    return Explorer(controls, draw, figsize=(6.4, 3.0))
