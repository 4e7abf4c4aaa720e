"""Small helpers shared by the tests (models, inputs, stand-in answers)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vfm_course.layers import lora_layers
from vfm_course.models import (
    VisionTransformer,
    vit_config,
)

K = 6


def small_vit(seed: int = 0, **overrides: object) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(vit_config("vit_course_tiny", **{"depth": 3, **overrides}))


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def labels(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


def randomise_lora_B(model: nn.Module, seed: int = 1) -> None:
    """Non-zero B, so the adapters actually change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.1)


def trainable_names(model: nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def unfinished(*args: object, **kwargs: object) -> None:
    """An exercise answer the learner has not written yet, as the student notebooks have it."""
    raise NotImplementedError


def assert_golden(value: float, golden: float, n: int, what: str) -> None:
    """``value`` is an accuracy-like fraction of ``n`` items from a deterministic tiny run, pinned
    to the ``golden`` value that run produced. One item of slack: a CPU with other SIMD widths
    sums in another order, which can flip one borderline prediction (never more in these runs).
    """
    assert abs(value - golden) <= 1 / n + 1e-9, f"{what}: got {value!r}, golden {golden!r}"


def installed_package(root: Path) -> Path:
    """A stand-in for site-packages/vfm_course under ``root``: no pyproject.toml above it."""
    package = root / "site-packages" / "vfm_course"
    package.mkdir(parents=True)
    return package
