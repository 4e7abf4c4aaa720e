"""Adversarial examples and training: FGSM (Goodfellow et al. 2015), PGD and
adversarial training (Madry et al. 2018).

Images are what the course's loaders return and the course models read directly: float
(B, C, H, W) in [0, 1], no mean/std normalisation, so the attacks clamp to [0, 1] by default
(``bounds``). Attacks run the model in eval mode and restore its mode afterwards.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.inference import eval_mode
from ..core.validate import check_choice, check_labels, check_positive_int, check_tensor, is_number


def _check_epsilon(epsilon: object) -> None:
    if not is_number(epsilon) or not epsilon >= 0:
        raise ValueError(f"epsilon (the largest change per pixel) must be >= 0, got {epsilon!r}")


def _check_attack(
    model: object, images: object, labels: object, epsilon: object, bounds: object
) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    images = check_tensor(images, "images", ndim=4, floating=True)
    if not torch.isfinite(images).all():
        raise ValueError("images hold NaN or inf values: an attack needs finite pixels")
    labels = check_labels(labels, len(images))
    _check_epsilon(epsilon)
    if bounds is not None:
        lo, hi = bounds
        if not lo < hi:
            raise ValueError(f"bounds must be (low, high) with low < high, got {bounds!r}")
        if epsilon >= hi - lo:
            warnings.warn(
                f"epsilon {epsilon:g} is at least the whole pixel range {bounds}: every pixel may "
                f"be set to anything, so this is not a small perturbation (images in [0, 1] "
                f"usually take epsilon = 8/255, about 0.031)",
                stacklevel=3,
            )
        if images.numel() and (images.min() < lo - 1e-6 or images.max() > hi + 1e-6):
            raise ValueError(
                f"images range over [{images.min().item():.3g}, {images.max().item():.3g}], "
                f"outside the valid range bounds={bounds}; for normalised inputs pass the "
                f"normalised range, or bounds=None to skip clamping"
            )
    return images, labels


def _clamp(x: torch.Tensor, bounds: tuple[float, float] | None) -> torch.Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def _input_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(summed cross-entropy) / d(x). Only the input's gradient is computed: the model's
    parameters get no ``.grad`` (autograd.grad, not backward)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():  # also when called under no_grad (e.g. in an eval_fn)
        # Summed, not averaged: each image's gradient is its own loss's, whatever B is.
        loss = F.cross_entropy(model(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one step of size ``epsilon`` along
    the sign of the loss gradient, ``clamp(x + epsilon * sign(grad_x loss), *bounds)``.

    The sign is the steepest ascent direction under an L-infinity budget: every pixel moves by
    exactly ``epsilon``. The model runs in eval mode (its mode is restored after) and its
    parameters get no gradients. images (B, C, H, W) in ``bounds``, labels (B,) -> (B, C, H, W).
    """
    images, labels = _check_attack(model, images, labels, epsilon, bounds)
    if epsilon == 0:
        return images.detach().clone()
    with eval_mode(model):
        grad = _input_gradient(model, images, labels)  # (B, C, H, W)
    return _clamp(images.detach() + epsilon * grad.sign(), bounds)


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    random_start: bool = True,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent on the loss, L-infinity ball (Madry et al. 2018).

    Start at a uniformly random point of the ``epsilon``-ball around ``x`` (``random_start``),
    then ``steps`` times: step ``step_size`` along the gradient's sign, project back into the
    ball (clip to ``[x - epsilon, x + epsilon]``) and into the valid range ``bounds``. The
    default step size ``2.5 * epsilon / steps`` (the robustness library of Madry's group) lets a
    walk cross the ball even after projections. Random starts (from ``generator``) avoid the
    flat, gradient-masked point at ``x`` itself. Model in eval mode (restored after), no
    parameter gradients. images (B, C, H, W) in ``bounds``, labels (B,) -> (B, C, H, W).
    """
    images, labels = _check_attack(model, images, labels, epsilon, bounds)
    check_positive_int(steps, "steps")
    if step_size is None:
        step_size = 2.5 * epsilon / steps
    elif not is_number(step_size) or not step_size > 0:
        raise ValueError(f"step_size must be > 0 (None: 2.5 * epsilon / steps), got {step_size!r}")
    x = images.detach()
    if epsilon == 0:
        return x.clone()
    x_adv = x
    if random_start:
        device = generator.device if generator is not None else x.device
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
        x_adv = _clamp(x + epsilon * (2 * noise.to(x.device) - 1), bounds)  # uniform in the ball
    with eval_mode(model):
        for _ in range(steps):
            grad = _input_gradient(model, x_adv, labels)  # (B, C, H, W)
            x_adv = x_adv + step_size * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - epsilon), x + epsilon)  # project onto the ball
            x_adv = _clamp(x_adv, bounds)
    return x_adv.detach()


ATTACKS = ("fgsm", "pgd")


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epsilons: Sequence[float],
    attack: str = "pgd",
    steps: int = 10,
    batch_size: int = 256,
    seed: int = 0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> dict[float, float]:
    """Accuracy on attacked ``images`` for each budget in ``epsilons`` (``{epsilon: acc}``;
    epsilon 0 is the clean accuracy). Batches go to the model's device; PGD's random starts
    come from ``seed``, so a call repeats exactly."""
    check_choice(attack, "attack", ATTACKS)
    check_positive_int(batch_size, "batch_size")
    if isinstance(epsilons, (int, float)) or len(epsilons) == 0:
        raise ValueError(f"epsilons must be a non-empty list of budgets, got {epsilons!r}")
    images, labels = _check_attack(model, images, labels, 0.0, bounds)
    device = next(model.parameters()).device
    results = {}
    for eps in epsilons:
        _check_epsilon(eps)
        generator = torch.Generator(device).manual_seed(seed)
        correct = 0
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device)
            y = labels[i : i + batch_size].to(device)
            if attack == "fgsm":
                x_adv = fgsm(model, x, y, eps, bounds)
            else:
                x_adv = pgd(model, x, y, eps, steps, bounds=bounds, generator=generator)
            with torch.no_grad(), eval_mode(model):
                correct += (model(x_adv).argmax(1) == y).sum().item()
        results[float(eps)] = correct / len(images)
    return results


def adversarial_loss_fn(
    epsilon: float,
    steps: int = 3,
    step_size: float | None = None,
    clean_weight: float = 0.0,
    bounds: tuple[float, float] | None = (0.0, 1.0),
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn`` for :func:`fit`: adversarial training (Madry et al. 2018).

    Each batch is replaced by its PGD examples (the inner maximisation), and the model learns
    on those (the outer minimisation). ``clean_weight`` mixes in the clean loss,
    ``(1 - w) * CE(adv) + w * CE(clean)``; Goodfellow et al. 2015 used ``w = 0.5``. The attack
    runs the model in eval mode; the training step then runs in the mode ``fit`` set (train).
    """
    _check_epsilon(epsilon)
    check_positive_int(steps, "steps")
    if not is_number(clean_weight) or not 0 <= clean_weight <= 1:
        raise ValueError(f"clean_weight must be in [0, 1], got {clean_weight!r}")

    def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        x_adv = pgd(model, x, y, epsilon, steps, step_size, bounds=bounds)
        logits = model(x_adv)  # (B, K)
        loss = F.cross_entropy(logits, y)
        if clean_weight > 0:
            loss = (1 - clean_weight) * loss + clean_weight * F.cross_entropy(model(x), y)
        return loss, {"adv_acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn
