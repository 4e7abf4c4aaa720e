"""Pictures the lessons share: image grids, patch grids, attention maps, training curves.

Every function returns the matplotlib Figure (so notebooks can save or tweak it) and draws
small figures at a modest dpi, so the committed, executed notebooks stay light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ..core.validate import check_positive_int, check_tensor
from ..train.history import History


def to_numpy_image(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] or (H, W, C) uint8 array -> (H, W, C) or (H, W)."""
    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu()
        if img.ndim == 3 and img.shape[0] in (1, 3):
            img = img.permute(1, 2, 0)  # (H, W, C)
        img = img.clamp(0, 1).numpy()
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]  # (H, W): grayscale
    return img


def show_images(
    images: torch.Tensor | np.ndarray | Sequence,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    size: float = 1.3,
    cmap: str = "gray",
) -> Figure:
    """A grid of images with optional titles (one per image)."""
    check_positive_int(ncols, "ncols")
    n = len(images)
    if n == 0:
        raise ValueError("show_images needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.2 * nrows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(to_numpy_image(images[i]), cmap=cmap, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def show_patch_grid(image: torch.Tensor, patch_size: int) -> Figure:
    """The image cut into P x P patches: with grid lines, and as the token sequence."""
    check_tensor(image, "image", ndim=3)
    check_positive_int(patch_size, "patch_size")
    _, H, W = image.shape
    if H % patch_size or W % patch_size:
        raise ValueError(f"image size {H}x{W} is not divisible by patch size {patch_size}")
    gh, gw = H // patch_size, W // patch_size
    patches = image.reshape(-1, gh, patch_size, gw, patch_size).permute(1, 3, 0, 2, 4)
    patches = patches.reshape(gh * gw, -1, patch_size, patch_size)  # (N, C, P, P)
    fig = plt.figure(figsize=(9, 2.6))
    ax = fig.add_axes((0.0, 0.05, 0.25, 0.9))
    ax.imshow(to_numpy_image(image), cmap="gray", interpolation="nearest")
    for k in range(1, gh):
        ax.axhline(k * patch_size - 0.5, color="white", lw=1)
    for k in range(1, gw):
        ax.axvline(k * patch_size - 0.5, color="white", lw=1)
    ax.set_title(f"{H}x{W} image, {gh}x{gw} grid of {patch_size}x{patch_size} patches", fontsize=8)
    ax.axis("off")
    n_show = min(len(patches), 32)
    for i in range(n_show):
        sub = fig.add_axes((0.28 + (i % 16) * 0.045, 0.5 - (i // 16) * 0.42, 0.04, 0.36))
        sub.imshow(to_numpy_image(patches[i]), cmap="gray", interpolation="nearest")
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(str(i), fontsize=6)
    return fig


def overlay_heatmap(
    ax: Axes, image: torch.Tensor | np.ndarray, heat: torch.Tensor, title: str = "", size: int = 8
) -> AxesImage:
    """Draw ``image`` in grey with a (Gh, Gw) ``heat`` map stretched over it; returns the heat
    map's image (for a colour bar). Shared by :func:`show_attention` and the widgets."""
    img = to_numpy_image(image)
    ax.imshow(img, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=size)
    ax.axis("off")
    return ax.imshow(
        heat.detach().cpu().numpy(),
        cmap="inferno",
        alpha=0.6,
        extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5),
        interpolation="nearest",
    )


def show_attention(
    image: torch.Tensor,
    attn: torch.Tensor,
    grid_size: tuple[int, int],
    query: int = 0,
    num_prefix_tokens: int = 1,
    title: str = "",
) -> Figure:
    """Where token ``query`` looks, per head, over the image.

    attn (h, L, L) for one image and one layer; the first ``num_prefix_tokens`` keys (the CLS
    token) are dropped and the rest reshaped onto the (Gh, Gw) patch grid.
    """
    check_tensor(attn, "attn", ndim=3)
    gh, gw = grid_size
    heads, L, _ = attn.shape
    if L != gh * gw + num_prefix_tokens:
        raise ValueError(
            f"attention has {L} tokens but a {gh}x{gw} grid plus {num_prefix_tokens} prefix "
            f"token(s) makes {gh * gw + num_prefix_tokens}"
        )
    maps = attn[:, query, num_prefix_tokens:].reshape(heads, gh, gw)  # (h, Gh, Gw)
    img = to_numpy_image(image)
    fig, axes = plt.subplots(1, heads + 1, figsize=(1.6 * (heads + 1), 1.9))
    axes[0].imshow(img, cmap="gray", interpolation="nearest")
    axes[0].set_title("image", fontsize=8)
    for i in range(heads):
        overlay_heatmap(axes[i + 1], img, maps[i], f"head {i}")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(
    histories: Mapping[str, History],
    metric: str | None = "acc",
    x: str = "step",
    train_metric: str | None = None,
    chance: float | None = None,
) -> Figure:
    """Training loss and (if recorded) an eval metric for several runs side by side.

    ``x="step"`` plots against optimizer steps; ``x="seconds"`` against wall time, which is
    the fair axis when models of different cost are compared. ``train_metric`` (an eval key
    measured on training images) is drawn dashed in the run's colour beside ``metric``, so a
    generalisation gap is visible; ``chance`` draws the chance level as a grey line.
    """
    if x not in ("step", "seconds"):
        raise ValueError(f"x must be 'step' or 'seconds', got {x!r}")
    has_metric = metric is not None and any(metric in h.evals for h in histories.values())
    fig, axes = plt.subplots(1, 2 if has_metric else 1, figsize=(9 if has_metric else 5, 3))
    axes = np.atleast_1d(axes)
    for name, h in histories.items():
        scale = h.seconds / max(1, h.steps[-1]) if (x == "seconds" and h.steps) else 1.0
        (line,) = axes[0].plot(np.array(h.steps) * scale, h.loss, label=name, lw=1.2)
        if has_metric and metric in h.evals:
            steps = np.array(h.eval_steps) * scale
            axes[1].plot(steps, h.evals[metric], "o-", color=line.get_color(), label=name, ms=3)
            if train_metric in h.evals:
                axes[1].plot(steps, h.evals[train_metric], "--", color=line.get_color(), lw=1)
    xlabel = "optimizer step" if x == "step" else "seconds of training"
    axes[0].set(xlabel=xlabel, ylabel="training loss", yscale="log")
    if has_metric:
        label = f"eval {metric}" + (f" (dashed: {train_metric})" if train_metric else "")
        axes[1].set(xlabel=xlabel, ylabel=label)
        if chance is not None:
            axes[1].axhline(chance, color="grey", ls=":", lw=1, label="chance")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_data_size(
    results: Mapping[str, Mapping[int, tuple[float, float]]], chance: float | None = None
) -> Figure:
    """Accuracy against training-set size: ``results[arm][n] = (train_acc, test_acc)``.

    Test accuracy is solid, train accuracy dashed in the same colour: the distance between them
    is the generalisation gap, and where both are high the arm has fitted *and* generalised.
    """
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for arm, by_n in results.items():
        ns = sorted(by_n)
        (line,) = ax.plot(ns, [by_n[n][1] for n in ns], "o-", label=f"{arm} test", ms=4)
        ax.plot(
            ns,
            [by_n[n][0] for n in ns],
            "s--",
            color=line.get_color(),
            ms=3,
            lw=1,
            label=f"{arm} train",
        )
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(xscale="log", xlabel="training images", ylabel="accuracy", ylim=(0, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_label_efficiency(
    table: Mapping[str, Mapping[float, tuple[float, float]]], chance: float | None = None
) -> Figure:
    """Probe accuracy against the share of labels: ``table[encoder][fraction] = (mean, std)``,
    as :func:`vfm_course.eval.label_efficiency` returns it; error bars are one std over the
    labelled subsets."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, by_fraction in table.items():
        fractions = sorted(by_fraction)
        means = [by_fraction[f][0] for f in fractions]
        stds = [by_fraction[f][1] for f in fractions]
        ax.errorbar(
            [100 * f for f in fractions], means, yerr=stds, fmt="o-", ms=4, capsize=3, label=name
        )
    if chance is not None:
        ax.axhline(chance, color="grey", ls=":", lw=1, label="chance")
    ax.set(
        xscale="log",
        xlabel="labelled training images (%)",
        ylabel="linear-probe accuracy",
        ylim=(0, 1.02),
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion(cm: torch.Tensor, class_names: Sequence[str], title: str = "") -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), normalised per row."""
    import seaborn as sns

    cm = cm.float()
    norm = (cm / cm.sum(1, keepdim=True).clamp(min=1)).numpy()
    fig, ax = plt.subplots(figsize=(4, 3.4))
    sns.heatmap(
        norm,
        annot=True,
        fmt=".2f",
        cmap="Blues",
        vmin=0,
        vmax=1,
        cbar=False,
        ax=ax,
        xticklabels=class_names,
        yticklabels=class_names,
        annot_kws={"fontsize": 7},
    )
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig
