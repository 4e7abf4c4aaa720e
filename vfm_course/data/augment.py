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

# torchvision's (ITU-R 601-2 luma) weights for R, G, B.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
# 3 x 3 is about 10% of a 32-pixel image, the kernel size SimCLR uses relative to image size.
BLUR_KERNEL_SIZE = 3

# ----------------------------------------------------------------------------- augmentations


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """(n,) uniform samples in [low, high) on ``device``, drawn from ``generator`` (on its own
    device) or from torch's global RNG for ``device`` when it is None."""
    where = generator.device if generator is not None else device
    return (low + (high - low) * torch.rand(n, generator=generator, device=where)).to(device)


def _per_sample(f: torch.Tensor | float, x: torch.Tensor, name: str) -> torch.Tensor:
    """A number or a (B,) tensor of factors -> (B, 1, 1, 1) to broadcast over each image."""
    f = torch.as_tensor(f, dtype=x.dtype, device=x.device)
    if f.ndim == 0:
        f = f.expand(x.shape[0])
    if f.shape != (x.shape[0],):
        raise ValueError(
            f"{name} must be a number or one value per image (B,) = "
            f"({x.shape[0]},), got shape {tuple(f.shape)}"
        )
    if (f < 0).any():
        raise ValueError(f"{name} must be >= 0, got {f.min().item():.3g}")
    return f.view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def _images(x: object) -> torch.Tensor:
    """Check ``x`` is a float (B, C, H, W) batch with 1 or 3 channels (as torchvision does)."""
    x = check_tensor(x, "images", ndim=4, floating=True)
    if x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 channels (B, C, H, W), got shape {tuple(x.shape)}"
        )
    return x


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


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma 0.2989 R + 0.587 G + 0.114 B (torchvision's weights;
    a 1-channel image is returned as it is)."""
    x = _images(x)
    if x.shape[1] == 1:
        return x.clone()
    r, g, b = x.unbind(dim=1)  # (B, H, W) each
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: f * x + (1 - f) * other, clamped to the valid range [0, 1].
    f > 1 extrapolates away from ``other``, which is how a factor can *increase* contrast."""
    return (f * x + (1 - f) * other).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Scale image i by f[i] (blend with black); f (B,) >= 0, 1 leaves the image unchanged."""
    x = _images(x)
    return _blend(x, torch.zeros_like(x), _per_sample(f, x, "brightness factor"))


def adjust_contrast(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Blend image i with the mean of its grayscale (a flat gray image) by f[i]."""
    x = _images(x)
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(x, mean, _per_sample(f, x, "contrast factor"))


def adjust_saturation(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Blend image i with its own grayscale by f[i] (0 = gray, 1 = unchanged)."""
    x = _images(x)
    f = _per_sample(f, x, "saturation factor")
    return x if x.shape[1] == 1 else _blend(x, rgb_to_grayscale(x), f)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 3, H, W) hue, saturation, value, each in [0, 1].

    The hexcone model (Smith 1978): value is the largest channel, saturation the spread over
    it, and hue says which channel is largest and how far the next one pulls towards it, in
    sixths of the colour wheel. Gray pixels (spread 0) get hue 0 and saturation 0.
    """
    r, g, b = x.unbind(dim=1)  # (B, H, W) each
    v, _ = x.max(dim=1)  # (B, H, W)
    spread = v - x.min(dim=1).values  # (B, H, W)
    gray = spread == 0
    s = torch.where(v > 0, spread / torch.where(v > 0, v, 1.0), 0.0)
    d = torch.where(gray, 1.0, spread)  # avoid 0/0 on gray pixels; their hue is set to 0
    # Distance of each channel below the max, in units of the spread: 0 for the max channel.
    rc, gc, bc = (v - r) / d, (v - g) / d, (v - b) / d
    h = torch.where(r == v, bc - gc, torch.where(g == v, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(gray, 0.0, torch.remainder(h / 6.0, 1.0))
    return torch.stack([h, s, v], dim=1)  # (B, 3, H, W)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_rgb_to_hsv`: (B, 3, H, W) HSV -> RGB, each in [0, 1]."""
    h, s, v = hsv.unbind(dim=1)  # (B, H, W) each
    # Each channel k rises and falls along the wheel: v - v*s*clamp(min(t, 4 - t), 0, 1)
    # with t = (6h + k) mod 6, k = 5, 3, 1 for R, G, B (the piecewise-linear hexcone).
    out = []
    for k in (5.0, 3.0, 1.0):
        t = torch.remainder(6.0 * h + k, 6.0)
        out.append(v - v * s * torch.clamp(torch.minimum(t, 4.0 - t), 0.0, 1.0))
    return torch.stack(out, dim=1)  # (B, 3, H, W)


def adjust_hue(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Rotate image i's hues by f[i] turns of the colour wheel (f in [-0.5, 0.5]; 0 = unchanged;
    +-0.5 swaps every colour for its opposite). Brightness (value) and saturation stay, so a
    red square can become any colour but stays a square. A 1-channel image has no hue."""
    x = _images(x)
    f = torch.as_tensor(f, dtype=x.dtype, device=x.device)
    f = f.expand(x.shape[0]) if f.ndim == 0 else f
    if f.shape != (x.shape[0],):
        raise ValueError(
            f"hue factor must be a number or one value per image (B,) = ({x.shape[0]},), "
            f"got shape {tuple(f.shape)}"
        )
    if (f.abs() > 0.5).any():
        raise ValueError(f"hue factor must be in [-0.5, 0.5], got {f.abs().max().item():.3g}")
    if x.shape[1] == 1:
        return x.clone()
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + f.view(-1, 1, 1), 1.0)  # (B, H, W)
    return _hsv_to_rgb(torch.stack([h, hsv[:, 1], hsv[:, 2]], dim=1))


def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int = BLUR_KERNEL_SIZE
) -> torch.Tensor:
    """Blur image i with a Gaussian of std ``sigma[i]`` pixels (torchvision's kernel).

    The kernel is ``exp(-t^2 / (2 sigma^2))`` at ``t = -(k-1)/2 .. (k-1)/2``, normalised to sum 1,
    applied along rows then columns (a 2-D Gaussian is separable: k + k multiplies per pixel
    instead of k * k) after reflect-padding the border, as torchvision does.
    """
    x = _images(x)
    B, C, H, W = x.shape
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    check_positive_int(kernel_size, "kernel_size")
    pad = kernel_size // 2
    if pad >= min(H, W):
        raise ValueError(f"kernel_size {kernel_size} is too large for {H}x{W} images")
    sigma = _per_sample(sigma, x, "sigma").view(B, 1)  # (B, 1)
    if (sigma == 0).any():
        raise ValueError("sigma must be > 0")
    t = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - pad  # (k,)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)  # (B, k)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # (B*C, k)
    # Fold the batch into channels so a grouped conv applies each image's own kernel.
    y = F.pad(x.reshape(1, B * C, H, W), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernel.view(B * C, 1, 1, kernel_size), groups=B * C)  # along rows
    y = F.conv2d(y, kernel.view(B * C, 1, kernel_size, 1), groups=B * C)  # along columns
    return y.reshape(B, C, H, W)  # (B, C, H, W)


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
    x: torch.Tensor, cfg: AugmentConfig = AugmentConfig(), generator: torch.Generator | None = None
) -> torch.Tensor:
    """One random SimCLR view of every image: (B, C, H, W) in [0, 1] -> same shape, in [0, 1].

    Every image draws its own parameters, from ``generator`` or (when None) torch's global RNG,
    which :func:`vfm_course.train.fit` seeds. Unlike torchvision's ``ColorJitter``, the jitter
    applies brightness, contrast, saturation, hue in a fixed order (torchvision shuffles it);
    images not jittered get factor 1 (hue shift 0), the identity.
    """
    x = _images(x)
    if not isinstance(cfg, AugmentConfig):
        raise TypeError(f"cfg must be an AugmentConfig, got {type(cfg).__name__}")
    B, C, H, W = x.shape
    dev = x.device

    def coin(p: float) -> torch.Tensor:  # (B,) bool, True with probability p
        return _uniform(B, 0.0, 1.0, generator, dev) < p

    def factors(s: float, on: torch.Tensor) -> torch.Tensor:  # (B,), 1 where not jittered
        return torch.where(on, _uniform(B, max(0.0, 1 - s), 1 + s, generator, dev), 1.0)

    boxes = random_resized_crop_boxes(B, H, W, cfg.crop_scale, cfg.crop_ratio, generator)
    x = resized_crop(x, boxes.to(dev), (H, W))
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
