"""Image-caption pairs from the shapes world, for mini-CLIP (lesson 03)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.validate import check_choice
from .datasets import SPLIT_SEEDS
from .loaders import images_to_tensor
from .shapes import ShapesConfig, generate_shapes
from .tokenizer import Tokenizer

# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CaptionData:
    """Captioned shapes: ``images`` float32 (n, 3, H, W) in [0, 1], ``tokens`` int64 (n, T),
    ``labels`` and ``colours`` int64 (n,), ``captions`` the n sentences."""

    images: torch.Tensor
    tokens: torch.Tensor
    labels: torch.Tensor
    colours: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def load_caption_data(
    split: str,
    n: int,
    config: ShapesConfig = ShapesConfig(),  # noqa: B008 (frozen: a shared default is safe)
    tokenizer: Tokenizer | None = None,
) -> CaptionData:
    """The shapes world's ``split`` with its captions tokenized; the images are the same as
    ``data.load_shapes(split, n, config)`` (same seeds)."""
    check_choice(split, "split", tuple(SPLIT_SEEDS))
    tokenizer = Tokenizer() if tokenizer is None else tokenizer
    data = generate_shapes(n, config, seed=SPLIT_SEEDS[split])
    return CaptionData(
        images=images_to_tensor(data.images),
        tokens=tokenizer.encode(data.captions),
        labels=torch.from_numpy(data.labels),
        colours=torch.from_numpy(data.colours),
        captions=data.captions,
    )
