"""Multi-crop (Caron et al. 2020, SwAV; used by DINO): two large "global" views and several
small "local" views of every image, batched.

The teacher sees only the global views, the student sees all of them, so the student must
predict from a small patch of the image what the teacher says about the whole: "local to
global" correspondence. Local views are cut from small areas and resized to a small side, so
each costs a fraction of a global one (a 16 px view through 8 px patches is 4 tokens, not 16).

Every view is an :func:`~vfm_course.data.augment.augment` of the whole batch (its own random
crop, flip, colour jitter, grayscale and blur per image), so no per-image Python loop runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..core.configs import config_from_dict
from ..core.validate import check_positive_int
from .augment import AugmentConfig, augment
from .colour import image_batch

# DINO's crop scales for 224 px images (global 0.4-1, local 0.05-0.4 of the area), and its
# colour jitter strengths apart from the hue: the course world needs full hue rotation, since
# its colour is drawn independently of the shape and two views sharing a hue could be matched
# by colour alone (lesson 03 measures this under SimCLR).
GLOBAL_AUGMENT = AugmentConfig(
    crop_scale=(0.4, 1.0), hue=0.5, brightness=0.8, contrast=0.8, saturation=0.8
)
LOCAL_AUGMENT = AugmentConfig(
    crop_scale=(0.05, 0.4), hue=0.5, brightness=0.8, contrast=0.8, saturation=0.8
)


@dataclass(frozen=True)
class MultiCropConfig:
    """``n_global`` views at the image's own size with ``global_augment`` and ``n_local``
    views of side ``local_size`` with ``local_augment``. ``n_local=0`` is plain two-view
    training (DINO's ablation without multi-crop)."""

    n_global: int = 2
    n_local: int = 4
    local_size: int = 16
    global_augment: AugmentConfig = GLOBAL_AUGMENT
    local_augment: AugmentConfig = LOCAL_AUGMENT

    def __post_init__(self) -> None:
        check_positive_int(self.n_global, "n_global")
        if self.n_global < 2:
            # With one teacher view, the student's copy of that same view is skipped and only
            # local views remain to compare; DINO's loss is defined for two or more.
            raise ValueError(f"n_global must be at least 2, got {self.n_global}")
        if isinstance(self.n_local, bool) or not isinstance(self.n_local, int) or self.n_local < 0:
            raise ValueError(f"n_local must be an integer >= 0, got {self.n_local!r}")
        check_positive_int(self.local_size, "local_size")
        for name in ("global_augment", "local_augment"):
            if not isinstance(getattr(self, name), AugmentConfig):
                raise TypeError(f"{name} must be an AugmentConfig")

    @property
    def n_crops(self) -> int:
        """V, the number of views per image."""
        return self.n_global + self.n_local

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultiCropConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


def multi_crop(
    x: torch.Tensor,
    cfg: MultiCropConfig = MultiCropConfig(),
    generator: torch.Generator | None = None,
) -> list[torch.Tensor]:
    """The views of every image: ``n_global`` tensors (B, C, H, W), then ``n_local`` tensors
    (B, C, s, s) with s = ``local_size``, all in [0, 1]. View v of row i comes from image i.

    Random numbers come from ``generator`` or (when None) torch's global RNG, which
    :func:`vfm_course.train.fit` seeds.
    """
    x = image_batch(x)
    if not isinstance(cfg, MultiCropConfig):
        raise TypeError(f"cfg must be a MultiCropConfig, got {type(cfg).__name__}")
    if cfg.local_size > x.shape[-1]:
        raise ValueError(
            f"local_size {cfg.local_size} is larger than the images ({x.shape[-1]} px): local "
            f"views are meant to be small"
        )
    views = [augment(x, cfg.global_augment, generator) for _ in range(cfg.n_global)]
    views += [
        augment(x, cfg.local_augment, generator, size=cfg.local_size) for _ in range(cfg.n_local)
    ]
    return views
