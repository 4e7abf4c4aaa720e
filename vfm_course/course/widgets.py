"""Explorers for the lessons: a ViT's attention maps, MAE's mask ratio, position embeddings.

Each explorer runs in one of two modes:

* **interactive**: it returns an ``ipywidgets`` box (an :class:`Explorer`): sliders above a
  picture that is redrawn whenever a slider moves (JupyterLab, Notebook 7, VS Code, Colab);
* **static**: it draws one matplotlib Figure with a sensible default view (several layers and
  heads, several mask ratios, every position's similarity map) and returns it, so a notebook
  run without a widget front-end (nbval, ``jupyter nbconvert --execute``, a Jupyter Book build,
  plain Python) still stores a picture worth looking at.

The mode is decided by :func:`use_widgets`; the first rule that applies wins:

1. the explorer's ``interactive=`` argument, when it is ``True`` or ``False``;
2. the environment variable ``VFM_WIDGETS=static|interactive``;
3. :func:`widgets_available`: interactive inside an IPython kernel that has a comm manager (the
   channel widgets talk through), static in plain Python or a terminal IPython.

A kernel cannot see whether a front-end that draws widgets is attached: headless runs (nbval,
``nbconvert --execute``, a book build) execute in a real kernel too, so they should export
``VFM_WIDGETS=static`` to store the static pictures instead of widgets nobody can move.

The interactive picture is a PNG in an ``ipywidgets.Image``, drawn on a matplotlib ``Figure``
made without pyplot: no figure piles up in pyplot's list, the inline backend shows no stray
copy, and the same code runs (and is tested) outside a kernel. Every model is run under
``torch.no_grad()`` in eval mode, and its train/eval mode is restored afterwards.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import nn

from ..core.inference import eval_mode
from ..core.validate import check_images, check_tensor
from ..layers.masking import check_mask_ratio
from ..models.mae import MaskedAutoencoder
from ..models.vit import VisionTransformer
from .viz import overlay_heatmap, to_numpy_image

WIDGETS_ENV = "VFM_WIDGETS"
WIDGET_MODES = ("static", "interactive")
CLS_QUERY = -1  # the query index that stands for the class token
MAX_MASK_RATIO = 0.95  # the slider's top: at least 5% of the patches stay visible
STATIC_MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)
MAX_STATIC_LAYERS = 6  # the static attention figure shows at most this many layers ...
MAX_STATIC_HEADS = 6  # ... and heads, so stored notebooks stay light
PNG_DPI = 100


# ------------------------------------------------------------------------------- the mode


def widgets_available() -> bool:
    """True inside an IPython kernel with a comm manager (widgets can reach a front-end)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)  # a terminal IPython has a shell but no kernel
    return getattr(kernel, "comm_manager", None) is not None


def use_widgets(interactive: bool | None = None) -> bool:
    """Apply the module's rule: the argument, else ``$VFM_WIDGETS``, else
    :func:`widgets_available`."""
    if interactive is not None:
        if not isinstance(interactive, bool):
            raise TypeError(
                f"interactive must be True (widgets), False (a static figure) or None (decide "
                f"automatically), got {interactive!r}"
            )
        return interactive
    mode = os.environ.get(WIDGETS_ENV, "").strip().lower()
    if mode:
        if mode not in WIDGET_MODES:
            raise ValueError(
                f"the environment variable {WIDGETS_ENV} must be 'static' or 'interactive' "
                f"(or unset to decide automatically), got {mode!r}"
            )
        return mode == "interactive"
    return widgets_available()


class Explorer(widgets.VBox):
    """Sliders above a picture that ``draw`` redraws whenever a slider moves.

    ``controls`` maps names to the control widgets (set ``.value`` to move one from code);
    ``shown`` holds the data behind the current picture (what ``draw`` returned), so a test or
    a curious learner can read the numbers the picture is made of.

    Args:
        controls: name -> control widget; its value reaches ``draw`` under the same name.
        draw: ``draw(fig, values) -> shown``; draws on ``fig``, returns the data it drew.
        figsize: size of the picture in inches.
    """

    def __init__(
        self,
        controls: dict[str, widgets.ValueWidget],
        draw: Callable[[Figure, dict[str, object]], dict[str, object]],
        figsize: tuple[float, float],
    ) -> None:
        self.controls = controls
        self.picture = widgets.Image(format="png")
        self.shown: dict[str, object] = {}
        self._draw = draw
        self._figsize = figsize
        bar = widgets.HBox(list(controls.values()), layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([bar, self.picture])
        for control in controls.values():
            control.observe(self.redraw, names="value")
        self.redraw()

    def redraw(self, change: object = None) -> None:
        """Draw the picture for the controls' current values."""
        fig = Figure(figsize=self._figsize)  # no pyplot: nothing to close, nothing auto-shown
        self.shown = self._draw(fig, {name: c.value for name, c in self.controls.items()})
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=PNG_DPI, bbox_inches="tight")
        self.picture.value = buffer.getvalue()


# ---------------------------------------------------------------------------- input checks


def _check_model(model: object, cls: type, who: str, hint: str = "") -> None:
    if not isinstance(model, cls):
        raise TypeError(
            f"{who} needs a vfm_course {cls.__name__}, got {type(model).__name__}{hint}"
        )


def _check_images(images: object, vit: VisionTransformer, owner: str) -> torch.Tensor:
    """One (C, H, W) image or a (B, C, H, W) batch the ViT can read -> (B, C, H, W)."""
    images = check_tensor(images, "images", ndim=(3, 4), floating=True)
    if images.ndim == 3:
        images = images[None]  # (1, C, H, W): one image is a batch of one
    check_images(images, vit.cfg.in_chans, owner)
    vit.patch_embed.check_input(images)  # "images are 30x30 but this model was built for 32x32"
    if len(images) == 0:
        raise ValueError("images is an empty batch: pass at least one (C, H, W) image")
    return images


def _check_index(index: object, count: int) -> int:
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"index must be an integer (which image to show), got {index!r}")
    if not 0 <= index < count:
        raise ValueError(
            f"index {index} is out of range: there are {count} image(s), so pick 0..{count - 1}"
        )
    return index


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd while the explorer runs ``model``; the mode is restored."""
    with eval_mode(model), torch.no_grad():
        yield


def _to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    ref = next(model.parameters())
    return x.to(device=ref.device, dtype=ref.dtype)


def _int_slider(name: str, lo: int, hi: int, value: int) -> widgets.IntSlider:
    # Greyed out when there is nothing to choose (one image, one layer, ...).
    return widgets.IntSlider(value=value, min=lo, max=hi, description=name, disabled=lo == hi)


def _picture(ax: Axes, image: torch.Tensor | np.ndarray, title: str = "", size: int = 8) -> None:
    ax.imshow(to_numpy_image(image), cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=size)
    ax.axis("off")


# ------------------------------------------------------------------------- attention maps


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
    with _inference(model):
        maps = model.get_attention_maps(_to_model(image[None], model))  # depth x (1, h, L, L)
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
    _check_model(model, VisionTransformer, "attention_explorer", " (for an MAE, pass mae.encoder)")
    images = _check_images(images, model, "this VisionTransformer")
    index = _check_index(index, len(images))
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
        _picture(ax_img, img, title(i), size=9)
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
        "image": _int_slider("image", 0, len(images) - 1, index),
        "layer": _int_slider("layer", 0, cfg.depth - 1, 0),
        "head": _int_slider("head", 0, cfg.num_heads - 1, 0),
        "query": _int_slider(
            "query", CLS_QUERY if cfg.class_token else 0, cfg.num_patches - 1, first_query
        ),
    }
    controls["query"].tooltip = "-1 = the class token; 0..N-1 = a patch, in raster order"
    return Explorer(controls, draw, figsize=(6.4, 3.0))


# -------------------------------------------------------------------------- MAE mask ratio


def mae_views(
    mae_model: MaskedAutoencoder, image: torch.Tensor, mask_ratio: float, seed: int = 0
) -> dict[str, torch.Tensor]:
    """One image through ``mae_model`` at ``mask_ratio``, each view a (C, H, W) tensor on the CPU.

    Keys: ``"original"``, ``"masked"`` (hidden patches grey), ``"reconstruction"`` and
    ``"pasted"`` (visible patches with the predicted hidden ones), see
    ``MaskedAutoencoder.reconstruct``. The masking noise comes from a generator seeded with
    ``seed``, so the same call always hides the same patches, and because MAE keeps the
    lowest-noise patches, a higher ratio hides a *superset* of what a lower one hides.
    """
    _check_model(mae_model, MaskedAutoencoder, "mae_views")
    ratio = check_mask_ratio(mask_ratio)
    image = check_tensor(image, "image", ndim=3, floating=True)
    device = next(mae_model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)  # noise is drawn on `device`
    with _inference(mae_model):
        out = mae_model.reconstruct(_to_model(image[None], mae_model), ratio, generator)
    views = {"original": image.detach().float().cpu()}
    views.update({name: x[0].float().cpu() for name, x in out.items()})  # each (C, H, W)
    return views


_MAE_TITLES = {
    "original": "original",
    "masked": "masked",
    "reconstruction": "reconstruction",
    "pasted": "reconstruction\n+ visible",
}


def mae_mask_ratio_explorer(
    mae_model: MaskedAutoencoder,
    images: torch.Tensor,
    *,
    mask_ratios: Sequence[float] = STATIC_MASK_RATIOS,
    index: int = 0,
    seed: int = 0,
    interactive: bool | None = None,
) -> Explorer | Figure:
    """How much can MAE hide? Original, masked, reconstruction, and reconstruction + visible.

    Image ``i`` is always masked with noise from seed ``seed + i``, so moving the slider is
    deterministic and raising the ratio only hides more of the same image's patches.

    Args:
        mae_model: a course ``MaskedAutoencoder``.
        images: one (C, H, W) image or a (B, C, H, W) batch, values in [0, 1].
        mask_ratios: the ratios in the static figure, each in [0, 1).
        index: the image shown first (and in the static figure).
        seed: base seed of the masking noise.
        interactive: True / False / None (see the module docstring).

    Returns:
        Interactive: an :class:`Explorer` with controls ``image`` (0..B-1) and ``mask_ratio``
        (0.0..0.95, step 0.05, starting at the model's ratio); ``shown["views"]`` holds the
        (C, H, W) images drawn. Static: a Figure, one row per ratio in ``mask_ratios`` and four
        columns (original, masked, reconstruction, reconstruction + visible).
    """
    _check_model(mae_model, MaskedAutoencoder, "mae_mask_ratio_explorer")
    images = _check_images(images, mae_model.encoder, "this MaskedAutoencoder")
    index = _check_index(index, len(images))
    ratios = [check_mask_ratio(r) for r in mask_ratios]
    if not ratios:
        raise ValueError("mask_ratios is empty: give at least one ratio in [0, 1)")

    if not use_widgets(interactive):
        fig, axes = plt.subplots(
            len(ratios), 4, figsize=(5.6, 1.45 * len(ratios) + 0.3), squeeze=False
        )
        for r, ratio in enumerate(ratios):
            views = mae_views(mae_model, images[index], ratio, seed + index)
            for c, (name, view) in enumerate(views.items()):
                _picture(axes[r, c], view, _MAE_TITLES[name] if r == 0 else "")
            axes[r, 0].text(
                -0.1,
                0.5,
                f"{ratio:.0%}\nmasked",
                transform=axes[r, 0].transAxes,
                ha="right",
                va="center",
                fontsize=8,
            )
        fig.suptitle(f"image {index} at several mask ratios", fontsize=9)
        fig.tight_layout()
        plt.close(fig)  # shown once, as the cell's result, not again by the inline backend
        return fig

    def draw(fig: Figure, v: dict[str, object]) -> dict[str, object]:
        i, ratio = v["image"], round(float(v["mask_ratio"]), 2)  # a slider float, 0.75000001
        views = mae_views(mae_model, images[i], ratio, seed + i)
        titles = {**_MAE_TITLES, "original": f"image {i}", "masked": f"{ratio:.0%} masked"}
        for ax, (name, view) in zip(fig.subplots(1, 4), views.items(), strict=True):
            _picture(ax, view, titles[name], size=9)
        return {"image": i, "mask_ratio": ratio, "views": views}

    start = min(mae_model.cfg.mask_ratio, MAX_MASK_RATIO)
    controls = {
        "image": _int_slider("image", 0, len(images) - 1, index),
        "mask_ratio": widgets.FloatSlider(
            value=start,
            min=0.0,
            max=MAX_MASK_RATIO,
            step=0.05,
            description="mask ratio",
            readout_format=".2f",
        ),
    }
    return Explorer(controls, draw, figsize=(6.4, 2.0))


# --------------------------------------------------------------------- position embeddings


def pos_embed_similarity(model: VisionTransformer) -> torch.Tensor:
    """(N, N) cosine similarity between the position embeddings of every pair of patches.

    The class token's row (if any) is left out: it marks no position. Entry (i, j) compares
    patch i with patch j, in raster order; the diagonal is 1 and the matrix is symmetric.
    """
    _check_model(
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
    _check_model(model, VisionTransformer, "pos_embed_explorer", " (for an MAE, pass mae.encoder)")
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
        "row": _int_slider("row", 0, gh - 1, gh // 2),
        "col": _int_slider("col", 0, gw - 1, gw // 2),
    }
    return Explorer(controls, draw, figsize=(4.2, 3.4))
