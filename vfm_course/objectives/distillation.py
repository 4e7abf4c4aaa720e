"""Knowledge distillation (Hinton et al. 2015): a student learns the teacher's
softened class probabilities as well as the labels. Shapes: logits (B, K), labels (B,).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.validate import check_labels, check_tensor, is_number


def _check_kd(temperature: object, alpha: object) -> None:
    if not is_number(temperature) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not is_number(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha (the weight of the teacher term) must be in [0, 1], got {alpha!r}")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.5,
) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015), a scalar:
    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE``.

    A temperature ``T > 1`` softens both distributions, so the teacher's "dark knowledge" (which
    wrong classes it finds plausible) shows in the targets. Soft-target gradients shrink as
    ``1 / T^2``; multiplying by ``T^2`` keeps their weight against the label term independent of
    ``T``. The KL is summed over classes and averaged over the batch ("batchmean"). The teacher
    is a fixed target: no gradient flows into ``teacher_logits``. Logits (B, K), labels (B,).
    """
    check_tensor(student_logits, "student_logits", ndim=2, floating=True)
    check_tensor(teacher_logits, "teacher_logits", ndim=2, floating=True)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape (B, K), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    labels = check_labels(labels, len(student_logits))
    _check_kd(temperature, alpha)
    T = float(temperature)
    log_p_student = F.log_softmax(student_logits / T, dim=-1)  # (B, K)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / T, dim=-1)  # (B, K), a fixed target
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    ce = F.cross_entropy(student_logits, labels)
    return alpha * T**2 * kl + (1 - alpha) * ce


def distillation_loss_fn(
    teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5
) -> Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]:
    """A ``loss_fn`` for :func:`fit` that trains the student on :func:`distillation_loss`.

    The teacher runs frozen, in eval mode, without gradients, on the batch's device.
    """
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
    _check_kd(temperature, alpha)
    teacher.eval().requires_grad_(False)

    def loss_fn(student: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        with torch.no_grad():
            teacher_logits = teacher.to(x.device)(x)  # (B, K)
        logits = student(x)  # (B, K)
        loss = distillation_loss(logits, teacher_logits, y, temperature, alpha)
        return loss, {"acc": (logits.argmax(1) == y).float().mean().item()}

    return loss_fn
