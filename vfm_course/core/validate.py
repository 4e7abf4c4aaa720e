"""Input checks that fail early, in the learner's words, instead of deep inside a matmul.

Every public function of the package calls these on what it is given. They raise
``ValueError`` / ``TypeError`` with a sentence that names the argument and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch


def check_tensor(
    x: object,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = False,
    shape: Sequence[int | None] | None = None,
) -> torch.Tensor:
    """Check that ``x`` is a tensor with the expected rank / dtype / shape; return it.

    ``shape`` entries that are ``None`` are not checked (for example ``(None, 3, None, None)``).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(
                f"{name} must have {want} dimensions, got {x.ndim} (shape {tuple(x.shape)})"
            )
    if floating and not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32/bfloat16/...), got {x.dtype}; "
            f"convert it with .float()"
        )
    if shape is not None:
        if x.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(x.shape, shape, strict=False)
        ):
            pretty = tuple("*" if s is None else s for s in shape)
            raise ValueError(f"{name} must have shape {pretty}, got {tuple(x.shape)}")
    return x


def check_positive_int(value: object, name: str) -> int:
    """Check that ``value`` is an int > 0 (bools are rejected); return it."""
    if not is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_divisible(value: int, divisor: int, what: str, by_what: str) -> None:
    """Raise a sentence like 'image size 30 is not divisible by patch size 4'."""
    if value % divisor != 0:
        raise ValueError(f"{what} {value} is not divisible by {by_what} {divisor}")


def check_heads(width: int, num_heads: int, what: str = "width", heads: str = "heads") -> None:
    """Multi-head attention splits ``width`` channels into ``num_heads`` equal heads: raise a
    sentence naming both and a width that would work if it does not divide."""
    if width % num_heads != 0:
        fit = num_heads * max(1, width // num_heads)
        count = f"{num_heads} heads" if heads == "heads" else f"{heads} {num_heads}"
        raise ValueError(
            f"{what} {width} is not divisible by {count}: each head gets {what} // {heads} "
            f"channels, so pick a width that splits evenly (e.g. {what}={fit})"
        )


def check_choice(value: object, name: str, choices: Sequence[object]) -> None:
    """Raise if ``value`` is not one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {options}; got {value!r}")


def check_images(x: object, in_chans: int, owner: str) -> torch.Tensor:
    """Check ``x`` is a float (B, C, H, W) batch with ``in_chans`` channels; return it.

    ``owner`` names what expects the images, e.g. "this SmallCNN".
    """
    x = check_tensor(x, "images", ndim=4, floating=True)
    if x.shape[1] != in_chans:
        raise ValueError(
            f"images have {x.shape[1]} channels but {owner} expects in_chans={in_chans} "
            f"(shape {tuple(x.shape)}; images are (B, C, H, W))"
        )
    return x


def resolve_config(cfg: object, presets: Mapping[str, Any], cls: type, what: str) -> Any:
    """A model's config from ``cfg``: an instance of ``cls``, or the name of one of ``presets``.

    ``what`` names the model family in errors ("MAE", "SimCLR", ...).
    """
    if isinstance(cfg, str):
        if cfg not in presets:
            raise ValueError(
                f"unknown {what} preset {cfg!r}; the presets are: {', '.join(presets)}"
            )
        cfg = presets[cfg]
    if not isinstance(cfg, cls):
        raise TypeError(f"cfg must be a {cls.__name__} or a preset name, got {type(cfg).__name__}")
    return cfg


# ----------------------------------------------------------------------------- numbers


def is_int(x: object) -> bool:
    """An integer, and not a bool (``True`` is an ``int`` in Python but never meant as one)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# ----------------------------------------------------------------------------- distillation


def check_labels(labels: object, n: int) -> torch.Tensor:
    labels = check_tensor(labels, "labels", ndim=1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class ids (int64), got {labels.dtype}")
    if len(labels) != n:
        raise ValueError(f"there are {n} images/logits but {len(labels)} labels")
    return labels


# ----------------------------------------------------------------------------- the loss


def check_temperature(temperature: object) -> float:
    if not is_number(temperature):
        raise TypeError(f"temperature must be a number, got {type(temperature).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
    return float(temperature)
