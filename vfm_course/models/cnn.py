"""A small convolutional network, the ViT's sparring partner in the inductive-bias lesson.

A convolution builds in two assumptions about images that a ViT has to learn from data:

* **locality**: a 3x3 kernel looks only at neighbouring pixels, so edges and corners are found
  by construction, and wider context comes from stacking layers and pooling;
* **translation equivariance**: the same kernel slides over every position, so a shape moved
  across the image gives the same features, moved (and after global pooling, the same vector).

A ViT shares weights across patches too, but relates patches only through attention and learned
position embeddings; with little data and few steps it has to discover locality itself
(Dosovitskiy et al. 2021, Sec. 3.1 "Inductive bias"; it overtakes CNNs only with large-scale
pre-training). Lesson 02 trains both on the same images for the same time and prints the gap.

``SmallCNN(width=32)`` has about 0.24 M parameters, about half of ``vit_course_tiny``, so the
CNN's head start cannot be blamed on size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.validate import check_images, check_positive_int, is_int


def conv_bn_relu(in_chans: int, out_chans: int) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm's shift replaces it) -> BatchNorm -> ReLU; keeps H, W."""
    return nn.Sequential(
        nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_chans),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class CNNConfig:
    """A :class:`SmallCNN`'s arguments, stored in its checkpoints so the registry rebuilds it."""

    in_chans: int = 3
    num_classes: int = 6
    width: int = 32


# The CNN arm of lesson 02's comparisons (the ViT presets live in ``vit.PRESETS``).
CNN_PRESETS: dict[str, CNNConfig] = {"cnn_course_tiny": CNNConfig()}


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages (widths w, 2w, 4w, 4w), 2x max-pool after the first three,
    global average pool, linear head.

    Args:
        in_chans: ``C``, input channels (3 for RGB, 1 for digits).
        num_classes: ``K``; 0 gives no head (``forward`` returns the pooled features).
        width: ``w``, channels of the first stage.

    Shapes:
        forward: (B, C, H, W) -> (B, K); needs ``H, W >= 8`` (three 2x poolings).
        forward_features: (B, C, H, W) -> (B, 4w), the globally pooled features.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 6, width: int = 32) -> None:
        super().__init__()
        check_positive_int(in_chans, "in_chans")
        check_positive_int(width, "width")
        if not is_int(num_classes) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.cfg = CNNConfig(in_chans, num_classes, width)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = 4 * width
        # Pooling halves the resolution while widening the channels: each stage sees a
        # receptive field twice as large, building global context from local features.
        self.features = nn.Sequential(
            conv_bn_relu(in_chans, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * width, 4 * width),
            nn.MaxPool2d(2),
            conv_bn_relu(4 * width, 4 * width),
        )
        # Global average pooling makes the output invariant to where a shape sits in the image.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, 4w) pooled features."""
        x = check_images(x, self.in_chans, "this SmallCNN")
        _, _, height, width = x.shape
        if height < 8 or width < 8:
            raise ValueError(
                f"SmallCNN needs images of at least 8x8 pixels (it pools by 2 three times), "
                f"got {height}x{width}"
            )
        x = self.features(x)  # (B, 4w, H/8, W/8)
        return self.pool(x).flatten(1)  # (B, 4w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, K) logits."""
        return self.head(self.forward_features(x))

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` if ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
