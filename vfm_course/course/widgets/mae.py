"""The MAE mask-ratio explorer: the masked input, the reconstruction and the two pasted together."""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from ...core.validate import check_tensor
from ...layers.masking import check_mask_ratio
from ...models.mae import MaskedAutoencoder
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

MAX_MASK_RATIO = 0.95  # the slider's top: at least 5% of the patches stay visible


STATIC_MASK_RATIOS = (0.25, 0.5, 0.75, 0.9)


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
    check_model_type(mae_model, MaskedAutoencoder, "mae_views")
    ratio = check_mask_ratio(mask_ratio)
    image = check_tensor(image, "image", ndim=3, floating=True)
    device = next(mae_model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)  # noise is drawn on `device`
    with inference(mae_model):
        out = mae_model.reconstruct(to_model(image[None], mae_model), ratio, generator)
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
    check_model_type(mae_model, MaskedAutoencoder, "mae_mask_ratio_explorer")
    images = explorer_images(images, mae_model.encoder, "this MaskedAutoencoder")
    index = check_index(index, len(images))
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
                picture(axes[r, c], view, _MAE_TITLES[name] if r == 0 else "")
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
            picture(ax, view, titles[name], size=9)
        return {"image": i, "mask_ratio": ratio, "views": views}

    start = min(mae_model.cfg.mask_ratio, MAX_MASK_RATIO)
    controls = {
        "image": int_slider("image", 0, len(images) - 1, index),
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
