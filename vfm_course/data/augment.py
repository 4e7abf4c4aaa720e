"""Batched image augmentations for contrastive learning (SimCLR's pipeline), in plain torch.

Each image in a batch gets its own random crop, flip, colour jitter, grayscale and blur, with no
per-image Python loop, so the augmentations run on the GPU beside the model. Each step is a
small function with torchvision's formula (tested equal to ``torchvision.transforms.v2``), so a
notebook can show them one at a time; :func:`augment` chains them and :func:`two_views` makes
the pair of views SimCLR compares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.configs import config_from_dict
from ..core.validate import check_positive_int, check_tensor
from .colour import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    image_batch,
    rgb_to_grayscale,
)

# ----------------------------------------------------------------------------- augmentations


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(n,) uniform samples in [low, high) on ``device``, drawn from ``generator`` (on its own
    device) or from torch's global RNG for ``device`` when it is None."""
    where = generator.device if generator is not None else device
    return (low + (high - low) * torch.rand(n, generator=generator, device=where)).to(device)


def _check_pair(value: object, name: str, low: float, high: float) -> None:
    ok = isinstance(value, tuple) and len(value) == 2 and low <= value[0] <= value[1] <= high
    if not ok:
        raise ValueError(
            f"{name} must be a pair (min, max) with {low} <= min <= max <= {high}, got {value!r}"
        )


def random_resized_crop_boxes(
    B: int,
    H: int,
    W: int,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample B crop boxes as torchvision's ``RandomResizedCrop`` does, vectorised.

    Each box covers a fraction of the image area drawn from U(``scale``) with aspect ratio
    (width / height) log-uniform in ``ratio``. torchvision retries up to 10 times until a box
    fits; here a box that does not fit is clamped to the image instead (one pass, no loop).
    Boxes are continuous (sub-pixel), which :func:`resized_crop` handles exactly.

    Returns:
        (B, 4) float32 boxes ``(top, left, height, width)`` in pixels, inside the image.
    """
    check_positive_int(B, "B")
    check_positive_int(H, "H")
    check_positive_int(W, "W")
    _check_pair(tuple(scale), "scale", 1e-6, 1.0)
    _check_pair(tuple(ratio), "ratio", 1e-6, math.inf)
    cpu = torch.device("cpu")
    area = H * W * _uniform(B, scale[0], scale[1], generator, cpu)  # (B,)
    log_ratio = _uniform(B, math.log(ratio[0]), math.log(ratio[1]), generator, cpu)
    aspect = torch.exp(log_ratio)  # width / height
    w = torch.sqrt(area * aspect).clamp(max=W)
    h = torch.sqrt(area / aspect).clamp(max=H)
    top = (H - h) * _uniform(B, 0.0, 1.0, generator, cpu)
    left = (W - w) * _uniform(B, 0.0, 1.0, generator, cpu)
    return torch.stack([top, left, h, w], dim=1)  # (B, 4)


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Crop box ``i`` out of image ``i`` and resize it to ``size``, bilinearly, in one call.

    One affine map per image sends the output grid onto its box, then ``F.grid_sample`` reads
    the pixels. Output pixel j (of S) samples the source at ``left + (j + 0.5) * w / S - 0.5``:
    the pixel-centre rule of crop-then-``F.interpolate(mode="bilinear", align_corners=False)``.
    The two are identical wherever the sample falls inside the box: everywhere when the box is
    at least S pixels along that axis. When a box is *enlarged*, the outermost output pixels
    sample up to half a box pixel outside it: interpolate clamps to the box edge, while this
    function blends in the image's real neighbouring pixels (and clamps only at the image
    border, where the two agree again).

    Args:
        x: (B, C, H, W) images.
        boxes: (B, 4) ``(top, left, height, width)`` in pixels, may be fractional.
        size: output side S, or ``(S_h, S_w)``.

    Returns:
        (B, C, S_h, S_w) crops.
    """
    x = check_tensor(x, "images", ndim=4, floating=True)
    B, C, H, W = x.shape
    boxes = check_tensor(boxes, "boxes", shape=(B, 4)).to(x)
    sh, sw = (size, size) if isinstance(size, int) else tuple(size)
    check_positive_int(sh, "size")
    check_positive_int(sw, "size")
    if (boxes[:, 2:] <= 0).any():
        raise ValueError("every box needs height > 0 and width > 0 (boxes are top, left, h, w)")
    top, left, h, w = boxes.unbind(dim=1)  # (B,) each
    # affine_grid works in normalised coordinates: -1 and +1 are the outer edges of the image
    # (align_corners=False), so pixel u sits at (2u + 1) / W - 1. Solving for the map that
    # sends the output's edges onto the box's edges gives scale w / W and shift (2l + w)/W - 1.
    zero = torch.zeros_like(h)
    theta = torch.stack(
        [
            torch.stack([w / W, zero, (2 * left + w) / W - 1], dim=1),
            torch.stack([zero, h / H, (2 * top + h) / H - 1], dim=1),
        ],
        dim=1,
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, C, sh, sw], align_corners=False)  # (B, S_h, S_w, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def hflip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry in the (B,) bool ``flip`` is True."""
    x = check_tensor(x, "images", ndim=4)
    flip = check_tensor(flip, "flip", shape=(x.shape[0],))
    if flip.dtype != torch.bool:
        raise TypeError(f"flip must be a bool tensor (B,), got {flip.dtype}")
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass(frozen=True)
class AugmentConfig:
    """SimCLR's augmentation pipeline (Chen et al. 2020, Appendix A), applied per image.

    A random resized crop (area fraction ``crop_scale``, aspect ``crop_ratio``) and a
    horizontal flip with ``flip_p``; with ``jitter_p`` a colour jitter (brightness, contrast,
    saturation factors uniform in [1 - s, 1 + s], then a hue rotation uniform in [-hue, hue]
    turns); grayscale with ``grayscale_p``; a Gaussian
    blur with ``blur_p`` and sigma uniform in ``blur_sigma``. SimCLR found crop + colour the
    essential pair: crops alone can be solved by matching colour histograms.
    """

    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.0  # SimCLR uses 0.1; 0.5 makes colour carry nothing at all
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.0)

    def __post_init__(self) -> None:
        _check_pair(self.crop_scale, "crop_scale", 1e-6, 1.0)
        _check_pair(self.crop_ratio, "crop_ratio", 1e-6, math.inf)
        _check_pair(self.blur_sigma, "blur_sigma", 1e-6, math.inf)
        for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability, so between 0 and 1; got {value!r}")
        for name in ("brightness", "contrast", "saturation"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue is at most half a turn, so between 0 and 0.5; got {self.hue!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AugmentConfig:
        """Rebuild from the form a checkpoint stores (``dataclasses.asdict`` + "__type__")."""
        return config_from_dict(cls, d)


def augment(
    x: torch.Tensor,
    cfg: AugmentConfig = AugmentConfig(),
    generator: torch.Generator | None = None,
    size: int | None = None,
) -> torch.Tensor:
    """One random SimCLR view of every image: (B, C, H, W) in [0, 1] -> (B, C, S, S) in
    [0, 1], where the crop is resized to side S = ``size`` (default: the input's H x W).

    Every image draws its own parameters, from ``generator`` or (when None) torch's global RNG,
    which :func:`vfm_course.train.fit` seeds. Unlike torchvision's ``ColorJitter``, the jitter
    applies brightness, contrast, saturation, hue in a fixed order (torchvision shuffles it);
    images not jittered get factor 1 (hue shift 0), the identity.
    """
    x = image_batch(x)
    if not isinstance(cfg, AugmentConfig):
        raise TypeError(f"cfg must be an AugmentConfig, got {type(cfg).__name__}")
    B, C, H, W = x.shape
    dev = x.device

    def coin(p: float) -> torch.Tensor:  # (B,) bool, True with probability p
        return _uniform(B, 0.0, 1.0, generator, dev) < p

    def factors(s: float, on: torch.Tensor) -> torch.Tensor:  # (B,), 1 where not jittered
        return torch.where(on, _uniform(B, max(0.0, 1 - s), 1 + s, generator, dev), 1.0)

    boxes = random_resized_crop_boxes(B, H, W, cfg.crop_scale, cfg.crop_ratio, generator)
    x = resized_crop(x, boxes.to(dev), (H, W) if size is None else size)
    H, W = x.shape[-2:]  # the crop's size from here on
    x = hflip(x, coin(cfg.flip_p))
    jitter = coin(cfg.jitter_p)
    x = adjust_brightness(x, factors(cfg.brightness, jitter))
    x = adjust_contrast(x, factors(cfg.contrast, jitter))
    x = adjust_saturation(x, factors(cfg.saturation, jitter))
    if cfg.hue > 0:  # skipped at 0 so configs without hue draw the same random numbers as before
        shift = torch.where(jitter, _uniform(B, -cfg.hue, cfg.hue, generator, dev), 0.0)
        x = adjust_hue(x, shift)
    gray = coin(cfg.grayscale_p).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    x = torch.where(gray, rgb_to_grayscale(x).expand(B, C, H, W), x)
    blur = coin(cfg.blur_p).view(-1, 1, 1, 1)
    sigma = _uniform(B, cfg.blur_sigma[0], cfg.blur_sigma[1], generator, dev)
    return torch.where(blur, gaussian_blur(x, sigma), x)


def two_views(
    x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent augmentations of the same images: the positive pairs of SimCLR."""
    return augment(x, cfg, generator), augment(x, cfg, generator)


def random_flip_shift(x: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Batch augmentation: random horizontal flip and a random shift of up to ``max_shift``
    pixels (reflect-padded crop). x (B, C, H, W). Uses torch's global RNG (seeded by fit).

    Why: a ViT has no built-in translation equivariance, so showing it shifted copies is the
    cheapest way to teach it (Touvron et al. 2021, DeiT, lean heavily on augmentation).
    """
    B, _, H, W = x.shape
    flip = torch.rand(B, device=x.device) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    padded = nn.functional.pad(x, (max_shift,) * 4, mode="reflect")  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,)).tolist()  # one shift per batch: cheap
    return padded[:, :, dy : dy + H, dx : dx + W]
