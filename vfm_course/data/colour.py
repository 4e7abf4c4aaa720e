"""Colour and blur operations on image batches, each equal to torchvision's (tested): grayscale,
brightness, contrast, saturation, hue (an RGB -> HSV round trip) and Gaussian blur. Every
op takes a per-image factor (a (B,) tensor) or one number for the whole batch; images are
float (B, C, H, W) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.validate import check_positive_int, check_tensor, is_int

# torchvision's (ITU-R 601-2 luma) weights for R, G, B.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


# 3 x 3 is about 10% of a 32-pixel image, the kernel size SimCLR uses relative to image size.
BLUR_KERNEL_SIZE = 3


def per_sample(f: torch.Tensor | float, x: torch.Tensor, name: str) -> torch.Tensor:
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


def image_batch(x: object) -> torch.Tensor:
    """Check ``x`` is a float (B, C, H, W) batch with 1 or 3 channels (as torchvision does)."""
    x = check_tensor(x, "images", ndim=4, floating=True)
    if x.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have 1 or 3 channels (B, C, H, W), got shape {tuple(x.shape)}"
        )
    return x


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma 0.2989 R + 0.587 G + 0.114 B (torchvision's weights;
    a 1-channel image is returned as it is)."""
    x = image_batch(x)
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
    x = image_batch(x)
    return _blend(x, torch.zeros_like(x), per_sample(f, x, "brightness factor"))


def adjust_contrast(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Blend image i with the mean of its grayscale (a flat gray image) by f[i]."""
    x = image_batch(x)
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(x, mean, per_sample(f, x, "contrast factor"))


def adjust_saturation(x: torch.Tensor, f: torch.Tensor | float) -> torch.Tensor:
    """Blend image i with its own grayscale by f[i] (0 = gray, 1 = unchanged)."""
    x = image_batch(x)
    f = per_sample(f, x, "saturation factor")
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
    x = image_batch(x)
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
    x = image_batch(x)
    B, C, H, W = x.shape
    if not is_int(kernel_size) or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
    check_positive_int(kernel_size, "kernel_size")
    pad = kernel_size // 2
    if pad >= min(H, W):
        raise ValueError(f"kernel_size {kernel_size} is too large for {H}x{W} images")
    sigma = per_sample(sigma, x, "sigma").view(B, 1)  # (B, 1)
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
