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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import nn

from ...core.inference import eval_mode
from ...core.validate import check_images, check_tensor, is_int
from ...models.vit import VisionTransformer
from ..viz import to_numpy_image

WIDGETS_ENV = "VFM_WIDGETS"
WIDGET_MODES = ("static", "interactive")
PNG_DPI = 100  # the static figures' resolution
# The widget draws at twice the resolution it is shown at: sharp on high-density (laptop)
# screens, and shown at its own size rather than stretched to the notebook's width.
WIDGET_PIXEL_RATIO = 2


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
        # Shown at the figure's own size, never stretched to the output area's width.
        self.picture = widgets.Image(format="png", layout=widgets.Layout(height="auto"))
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
        fig.savefig(buffer, format="png", dpi=PNG_DPI * WIDGET_PIXEL_RATIO, bbox_inches="tight")
        png = buffer.getvalue()
        width = int.from_bytes(png[16:20], "big")  # the IHDR chunk's width, in pixels
        self.picture.layout.width = f"{width // WIDGET_PIXEL_RATIO}px"
        self.picture.value = png


# ---------------------------------------------------------------------------- input checks


def check_model_type(model: object, cls: type, who: str, hint: str = "") -> None:
    if not isinstance(model, cls):
        raise TypeError(
            f"{who} needs a vfm_course {cls.__name__}, got {type(model).__name__}{hint}"
        )


def explorer_images(images: object, vit: VisionTransformer, owner: str) -> torch.Tensor:
    """One (C, H, W) image or a (B, C, H, W) batch the ViT can read -> (B, C, H, W)."""
    images = check_tensor(images, "images", ndim=(3, 4), floating=True)
    if images.ndim == 3:
        images = images[None]  # (1, C, H, W): one image is a batch of one
    check_images(images, vit.cfg.in_chans, owner)
    vit.patch_embed.check_input(images)  # "images are 30x30 but this model was built for 32x32"
    if len(images) == 0:
        raise ValueError("images is an empty batch: pass at least one (C, H, W) image")
    return images


def check_index(index: object, count: int) -> int:
    if not is_int(index):
        raise TypeError(f"index must be an integer (which image to show), got {index!r}")
    if not 0 <= index < count:
        raise ValueError(
            f"index {index} is out of range: there are {count} image(s), so pick 0..{count - 1}"
        )
    return index


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd while the explorer runs ``model``; the mode is restored."""
    with eval_mode(model), torch.no_grad():
        yield


def to_model(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    ref = next(model.parameters())
    return x.to(device=ref.device, dtype=ref.dtype)


def int_slider(name: str, lo: int, hi: int, value: int) -> widgets.IntSlider:
    # Greyed out when there is nothing to choose (one image, one layer, ...).
    return widgets.IntSlider(value=value, min=lo, max=hi, description=name, disabled=lo == hi)


def picture(ax: Axes, image: torch.Tensor | np.ndarray, title: str = "", size: int = 8) -> None:
    ax.imshow(to_numpy_image(image), cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=size)
    ax.axis("off")


# ------------------------------------------------------------------------- attention maps


# -------------------------------------------------------------------------- MAE mask ratio


# --------------------------------------------------------------------- position embeddings
