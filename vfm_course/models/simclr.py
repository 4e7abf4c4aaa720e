"""SimCLR's model: an encoder (course ViT or SmallCNN) plus a projection head (Chen et al. 2020).

The loss reads the projection ``z``; downstream tasks read the encoder's features ``h`` (the
paper found ``h`` transfers better than ``z``). Shapes: (B, C, H, W) -> z (B, E).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.configs import config_from_dict
from ..core.validate import check_choice, check_positive_int, check_temperature, resolve_config
from ..data.augment import AugmentConfig
from .cnn import SmallCNN
from .vit import VisionTransformer, ViTConfig, vit_config

# ----------------------------------------------------------------------------- SimCLR


class ProjectionHead(nn.Module):
    """SimCLR's projection g(h): Linear -> BatchNorm1d -> ReLU -> Linear, (B, D) -> (B, out).

    The loss is computed on g(h), but downstream tasks (linear probe, kNN) read the encoder's
    h: the loss makes g invariant to colour, crop position, ... and g throws that information
    away, while h keeps it. SimCLR measured h > 10% better than g(h) in a linear probe (Sec. 4.2).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        for value, name in ((in_dim, "in_dim"), (hidden_dim, "hidden_dim"), (out_dim, "out_dim")):
            check_positive_int(value, name)
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = nn.BatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden_dim, out_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(h))))


@dataclass(frozen=True)
class SimCLRConfig:
    """A SimCLR model and its objective: a ViT backbone (``num_classes=0``), the projection
    head's widths, the NT-Xent temperature and the augmentations.

    ``arch="cnn"`` swaps the ViT for a :class:`~vfm_course.models.SmallCNN` of width
    ``cnn_width`` (features 4 * width; only ``encoder.in_chans`` is read), the encoder SimCLR
    itself used (a ResNet): lesson 03 compares the two under the same objective.
    """

    encoder: ViTConfig
    proj_hidden_dim: int = 256
    proj_dim: int = 64
    temperature: float = 0.2
    augment: AugmentConfig = AugmentConfig()
    arch: str = "vit"
    cnn_width: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, ViTConfig):
            raise TypeError(f"encoder must be a ViTConfig, got {type(self.encoder).__name__}")
        if self.encoder.num_classes != 0:
            raise ValueError(
                f"the SimCLR encoder is a backbone; build it with num_classes=0 "
                f"(got num_classes={self.encoder.num_classes})"
            )
        check_positive_int(self.proj_hidden_dim, "proj_hidden_dim")
        check_positive_int(self.proj_dim, "proj_dim")
        check_choice(self.arch, "arch", ("vit", "cnn"))
        check_positive_int(self.cnn_width, "cnn_width")
        check_temperature(self.temperature)
        if not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"augment must be an AugmentConfig, got {type(self.augment).__name__}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SimCLRConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


# SimCLR's colour-distortion strength for brightness, contrast and saturation (its ImageNet
# recipe, Chen et al. 2020 Appendix A; AugmentConfig's default is 0.4).
STRONG_COLOUR = 0.8


def _course_vit_simclr(patch_size: int, colour: float) -> SimCLRConfig:
    """The course ViT under SimCLR with ``patch_size`` patches and colour jitter ``colour``.

    Full hue rotation in every preset: colour is drawn independently of the shape, and without
    hue jitter the two views of an image share their hue, so matching colours could find the
    partner without any shape (lesson 03 measures both settings on the CNN)."""
    return SimCLRConfig(
        encoder=vit_config("vit_course_tiny", num_classes=0, patch_size=patch_size),
        augment=AugmentConfig(
            crop_scale=(0.5, 1.0), hue=0.5, brightness=colour, contrast=colour, saturation=colour
        ),
    )


SIMCLR_PRESETS: dict[str, SimCLRConfig] = {
    # The course ViT that learns under SimCLR at a CPU budget: 8x8 patches (a 4x4 grid, so one
    # token holds a recognisable piece of the outline) and SimCLR's strong colour jitter.
    # Lesson 03 crosses the two changes (the three presets below) at the same budget.
    "simclr_course_tiny": _course_vit_simclr(8, STRONG_COLOUR),
    # The course backbone itself (4x4 patches, as lessons 02 and 04-06), strong colour jitter.
    "simclr_course_tiny_p4": _course_vit_simclr(4, STRONG_COLOUR),
    # 8x8 patches with the default colour jitter (0.4).
    "simclr_course_tiny_mild": _course_vit_simclr(8, 0.4),
    # The first recipe (4x4 patches, colour jitter 0.4): its encoder stays at its random init.
    "simclr_course_tiny_p4_mild": _course_vit_simclr(4, 0.4),
    # The same objective with a SmallCNN encoder (lesson 03's comparison).
    "simclr_cnn_tiny": SimCLRConfig(
        encoder=vit_config("vit_course_tiny", num_classes=0),
        arch="cnn",
        augment=AugmentConfig(crop_scale=(0.5, 1.0), hue=0.5),
    ),
    # The full profile's model: ViT-Tiny width, a 1024-128 projection head, and the crop scale
    # SimSiam uses on CIFAR-10.
    "simclr_course_small": SimCLRConfig(
        encoder=vit_config("vit_course_small", num_classes=0),
        proj_hidden_dim=1024,
        proj_dim=128,
        augment=AugmentConfig(crop_scale=(0.2, 1.0)),
    ),
}


class SimCLR(nn.Module):
    """Encoder f (a ViT backbone, or a SmallCNN with ``arch="cnn"``) and projection g;
    ``forward`` gives z = g(f(x)) for the loss, ``features`` gives h = f(x) for evaluation.

    Shapes:
        forward: (B, C, H, W) -> (B, proj_dim); features: (B, C, H, W) -> (B, D).
    """

    def __init__(self, cfg: SimCLRConfig | str) -> None:
        super().__init__()
        cfg = resolve_config(cfg, SIMCLR_PRESETS, SimCLRConfig, "SimCLR")
        self.cfg = cfg
        if cfg.arch == "cnn":
            self.encoder = SmallCNN(cfg.encoder.in_chans, num_classes=0, width=cfg.cnn_width)
        else:
            self.encoder = VisionTransformer(cfg.encoder)
        width = self.encoder.num_features  # D: embed_dim for the ViT, 4 * width for the CNN
        self.projector = ProjectionHead(width, cfg.proj_hidden_dim, cfg.proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.encoder(x))
